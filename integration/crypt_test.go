package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/internal/testutil"
	"github.com/pbsfs/pbsfs/store"
)

func mustRef(t *testing.T, s string) store.SnapshotRef {
	t.Helper()
	ref, err := store.ParseSnapshot("", s)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// tryEnv runs the binary with extra environment variables and returns its
// exit code, stdout and stderr.
func (e *env) tryEnv(extra []string, args ...string) (int, string, string) {
	var out bytes.Buffer
	code, errs := e.runEnv(extra, &out, args...)
	return code, out.String(), errs
}

// runEnv runs the binary with extra environment variables, its stdout
// written to stdout (nil: thrown away), and returns the exit code (-1 if
// it did not run) and stderr.
func (e *env) runEnv(extra []string, stdout io.Writer, args ...string) (int, string) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "PBSFS_RUNTIME_DIR="+e.run, "PBSFS_STORE="+e.store), extra...)
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdout, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	return code, errb.String()
}

// TestEncryptedRoundTrip makes encrypted backups of a tree of every entry
// kind and of an image with the binary and a scrypt key file, then reads
// them back with cat, restore and the mount; without the key, with
// another key and with a wrong password it records the errors. A store
// holding plain and encrypted snapshots is collected and verified.
func TestEncryptedRoundTrip(t *testing.T) {
	testutil.RequireFUSE(t)
	e := newEnv(t)
	cfg := t.TempDir()
	home := []string{"XDG_CONFIG_HOME=" + cfg, "HOME=" + cfg}
	pw := append([]string{"PBS_ENCRYPTION_PASSWORD=correct horse"}, home...)
	keyA := filepath.Join(cfg, "a.json")
	keyB := filepath.Join(cfg, "b.json")
	if code, out, errs := e.tryEnv(pw, "key", "create", "--kdf", "scrypt", "--hint", "horse", keyA); code != 0 {
		t.Fatalf("key create: %d %s %s", code, out, errs)
	}
	if code, _, errs := e.tryEnv(home, "key", "create", "--kdf", "none", keyB); code != 0 {
		t.Fatalf("key create none: %s", errs)
	}
	if code, _, errs := e.tryEnv(pw, "key", "create", keyA); code != 1 || !strings.Contains(errs, "never overwritten") {
		t.Errorf("key create over an existing file: %d %s", code, errs)
	}
	st, _ := os.Stat(keyA)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", st.Mode())
	}
	_, show, _ := e.tryEnv(home, "key", "show", keyA)
	t.Logf("pbsfs key show:\n%s", show)
	fpLine := ""
	for _, l := range strings.Split(show, "\n") {
		if strings.HasPrefix(l, "fingerprint: ") {
			fpLine = strings.TrimPrefix(l, "fingerprint: ")
		}
	}
	if !strings.Contains(show, "kdf: scrypt") || !strings.Contains(show, "hint: horse") || len(fpLine) != 95 {
		t.Fatalf("key show:\n%s", show)
	}
	shortA := fpLine[:23]

	src := filepath.Join(t.TempDir(), "src")
	info := genTree(t, src, 400)
	img := filepath.Join(t.TempDir(), "disk.img")
	randomFile(t, img, 13<<20+777, 5)
	conf := filepath.Join(t.TempDir(), "qemu-server.conf")
	os.WriteFile(conf, []byte("memory: 4096\n"), 0o644)

	withA := append([]string{"PBSFS_KEYFILE=" + keyA}, pw...)
	when := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	code, out, errs := e.tryEnv(withA, "backup", "--no-progress", "--type", "ct", "--id", "100", "--time", when.Format(time.RFC3339), "root.pxar:"+src)
	if code != 0 || !strings.Contains(out, "crypt-mode encrypt, key "+shortA) {
		t.Fatalf("encrypted backup: %d %s %s", code, out, errs)
	}
	code, out, errs = e.tryEnv(pw, "backup", "--no-progress", "--keyfile", keyA, "--type", "vm", "--id", "200", "--time", when.Format(time.RFC3339),
		"drive-scsi0.img:"+img, "qemu-server.conf:"+conf)
	if code != 0 {
		t.Fatalf("encrypted image backup: %d %s %s", code, out, errs)
	}
	// A plain snapshot beside them (the default key is ignored: none).
	e.backup(t, "vm", "300", when, "drive-scsi0.img:"+img)
	snapTime := "2026-11-20T10:00:00Z"

	t.Run("cat and restore with the key", func(t *testing.T) {
		code, out, errs := e.tryEnv(withA, "cat", "vm/200/"+snapTime, "drive-scsi0.img")
		want, _ := os.ReadFile(img)
		if code != 0 || out != string(want) {
			t.Errorf("cat image: exit %d, %d bytes, %s", code, len(out), errs)
		}
		code, out, _ = e.tryEnv(withA, "cat", "vm/200/"+snapTime, "qemu-server.conf")
		if code != 0 || out != "memory: 4096\n" {
			t.Errorf("cat conf: %d %q", code, out)
		}
		target := filepath.Join(t.TempDir(), "restore")
		if code, out, errs := e.tryEnv(withA, "restore", "--no-progress", "ct/100/"+snapTime, "root.pxar", target); code != 0 {
			t.Fatalf("restore: %d %s %s", code, out, errs)
		}
		args := []string{"-r", "--no-dereference"}
		for _, s := range info.specials {
			args = append(args, "-x", s)
		}
		if out, err := run("diff", append(args, src, target)...); err != nil {
			t.Errorf("diff -r restored: %v\n%.2000s", err, out)
		}
		diffLines(t, "stat restored", statLines(t, target), statLines(t, src))
		diffLines(t, "xattrs restored", xattrs(t, target), xattrs(t, src))
		imgOut := filepath.Join(t.TempDir(), "img")
		if code, _, errs := e.tryEnv(withA, "restore", "vm/200/"+snapTime, "drive-scsi0.img", imgOut); code != 0 {
			t.Errorf("restore image: %s", errs)
		} else if out, err := run("cmp", img, imgOut); err != nil {
			t.Errorf("cmp restored image: %v %s", err, out)
		}
	})

	mountEnv := func(t *testing.T, envs []string, extra ...string) string {
		mnt := t.TempDir()
		args := append(append([]string{"mount"}, extra...), e.store, mnt)
		startMount(t, mnt, append([]string{"PBSFS_RUNTIME_DIR=" + e.run}, envs...), bin, args...)
		return mnt
	}
	t.Run("mount with the key", func(t *testing.T) {
		// The archive root takes its mode from the index file, less what
		// .chunks denies (see TestEndToEnd): open it so it equals src's.
		openChunks(t, e.store)
		mnt := mountEnv(t, pw, "--keyfile", keyB, "--keyfile", keyA)
		root := filepath.Join(mnt, "ct/100", snapTime, "root.pxar")
		args := []string{"-r", "--no-dereference"}
		for _, s := range info.specials {
			args = append(args, "-x", s)
		}
		if out, err := run("diff", append(args, src, root)...); err != nil {
			t.Errorf("diff -r through the mount: %v\n%.2000s", err, out)
		}
		// The root of an archive the mount decrypts is its user's alone
		// (0700, fs/gate.go); below it, the archived metadata.
		got, want := statLines(t, root), statLines(t, src)
		private := fmt.Sprintf(".|41c0|%d|%d|", os.Getuid(), os.Getgid())
		for i, l := range got {
			if !strings.HasPrefix(l, ".|") {
				continue
			}
			if !strings.HasPrefix(l, private) {
				t.Errorf("encrypted archive root %q, want %q...", l, private)
			}
			for _, w := range want {
				if strings.HasPrefix(w, ".|") {
					got[i] = w
				}
			}
		}
		diffLines(t, "stat mount", got, want)
		diffLines(t, "xattrs mount", xattrs(t, root), xattrs(t, src))
		for _, vm := range []string{"vm/200", "vm/300"} {
			if out, err := run("cmp", img, filepath.Join(mnt, vm, snapTime, "drive-scsi0.img")); err != nil {
				t.Errorf("cmp %s image: %v %s", vm, err, out)
			}
		}
		if got, err := os.ReadFile(filepath.Join(mnt, "vm/200", snapTime, "qemu-server.conf")); err != nil || string(got) != "memory: 4096\n" {
			t.Errorf("conf through the mount: %q %v", got, err)
		}
		if got := fingerprintXattr(t, filepath.Join(mnt, "vm/200", snapTime)); got != fpLine {
			t.Errorf("key-fingerprint xattr: %q", got)
		}
	})
	t.Run("mount without the key", func(t *testing.T) {
		for name, extra := range map[string][]string{"no key": nil, "other key": {"--keyfile", keyB}} {
			mnt := mountEnv(t, home, extra...)
			snap := filepath.Join(mnt, "vm/200", snapTime)
			if out, err := run("ls", snap); err != nil || out != "drive-scsi0.img\nindex.json\nqemu-server.conf\n" {
				t.Errorf("%s: ls: %q %v", name, out, err)
			}
			for _, f := range []string{"drive-scsi0.img", "qemu-server.conf"} {
				_, err := os.ReadFile(filepath.Join(snap, f))
				if !errors.Is(err, syscall.EACCES) {
					t.Errorf("%s: read %s: %v, want EACCES", name, f, err)
				}
				t.Logf("%s: read %s: %v", name, f, err)
			}
			out, err := run("cat", filepath.Join(snap, "drive-scsi0.img"))
			t.Logf("%s: cat through the mount: %s", name, strings.TrimSpace(out))
			if err == nil || !strings.Contains(out, "Permission denied") {
				t.Errorf("%s: cat: %v %s", name, err, out)
			}
			_, err = os.ReadDir(filepath.Join(mnt, "ct/100", snapTime, "root.pxar"))
			if !errors.Is(err, syscall.EACCES) {
				t.Errorf("%s: ls root.pxar: %v, want EACCES", name, err)
			}
			if got := fingerprintXattr(t, snap); got != fpLine {
				t.Errorf("%s: key-fingerprint xattr: %q", name, got)
			}
			if out, err := run("cmp", img, filepath.Join(mnt, "vm/300", snapTime, "drive-scsi0.img")); err != nil {
				t.Errorf("%s: plain snapshot: %v %s", name, err, out)
			}
		}
		code, out, errs := e.tryEnv(append([]string{"PBS_ENCRYPTION_PASSWORD=wrong horse"}, home...), "mount", "--keyfile", keyA, e.store, t.TempDir())
		t.Logf("mount with a wrong password: exit %d: %s", code, strings.TrimSpace(errs))
		if code != 1 || !strings.Contains(errs, "unable to decrypt key (password hint: horse)") || out != "" {
			t.Errorf("mount with a wrong password: %d %q", code, errs)
		}
	})

	t.Run("errors", func(t *testing.T) {
		cases := []struct {
			name string
			env  []string
			args []string
			want string
		}{
			{"no key", home, []string{"cat", "vm/200/" + snapTime, "drive-scsi0.img"},
				"pbsfs cat: vm/200/" + snapTime + "/drive-scsi0.img.fidx: missing key - manifest was created with key " + shortA},
			{"no key blob", home, []string{"cat", "vm/200/" + snapTime, "qemu-server.conf"},
				"pbsfs cat: vm/200/" + snapTime + "/qemu-server.conf.blob: missing key - manifest was created with key " + shortA},
			{"no key restore", home, []string{"restore", "ct/100/" + snapTime, "root.pxar", filepath.Join(t.TempDir(), "x")},
				"missing key - manifest was created with key " + shortA},
			{"other key", home, []string{"cat", "--keyfile", keyB, "vm/200/" + snapTime, "drive-scsi0.img"},
				"wrong key - manifest's key " + shortA + " does not match provided key "},
			{"wrong password", append([]string{"PBS_ENCRYPTION_PASSWORD=wrong horse"}, home...), []string{"cat", "--keyfile", keyA, "vm/200/" + snapTime, "drive-scsi0.img"},
				"pbsfs cat: load key " + keyA + ": unable to decrypt key (password hint: horse)"},
			{"no password", home, []string{"cat", "--keyfile", keyA, "vm/200/" + snapTime, "drive-scsi0.img"},
				"no password given: set PBS_ENCRYPTION_PASSWORD (or PBS_ENCRYPTION_PASSWORD_FD, _FILE, _CMD), or run on a terminal"},
		}
		for _, tc := range cases {
			code, out, errs := e.tryEnv(tc.env, tc.args...)
			if code != 1 || !strings.Contains(errs, tc.want) || out != "" {
				t.Errorf("%s: exit %d, stdout %d bytes, stderr %q; want exit 1 and %q", tc.name, code, len(out), errs, tc.want)
			}
			t.Logf("%s: exit %d: %s", tc.name, code, strings.TrimSpace(errs))
		}
	})

	t.Run("verify and gc", func(t *testing.T) {
		// Forget nothing, age every chunk, collect: every chunk of the
		// plain and encrypted snapshots must stay.
		// An encrypted snapshot with chunks of its own, then forgotten:
		// only its chunks are garbage.
		img2 := filepath.Join(t.TempDir(), "other.img")
		randomFile(t, img2, 9<<20, 77)
		withOwn := chunkNames(t, e.store)
		if code, out, errs := e.tryEnv(withA, "backup", "--no-progress", "--type", "vm", "--id", "201", "--time", when.Format(time.RFC3339), "drive-scsi0.img:"+img2); code != 0 {
			t.Fatalf("backup vm/201: %s %s", out, errs)
		}
		own := len(chunkNames(t, e.store)) - len(withOwn)
		e.pbsfs(t, "forget", "vm/201/"+snapTime)
		before := chunkNames(t, e.store)
		gcLock := filepath.Join(e.run, "pbsfs", e.open(t).Name(), "gc.lock")
		ageChunks(t, e.store, gcLock, time.Now().Add(-72*time.Hour))
		code, out, errs := e.tryEnv(home, "gc", "--no-progress", "--cutoff", "1m")
		if code != 0 || !strings.Contains(out, fmt.Sprintf("Removed chunks: %d\n", own)) {
			t.Fatalf("gc: %d %s %s", code, out, errs)
		}
		after := chunkNames(t, e.store)
		for name := range withOwn {
			if !after[name] {
				t.Errorf("gc removed chunk %s", name)
			}
		}
		t.Logf("gc kept all %d chunks of 1 plain and 2 encrypted snapshots, removed the %d of the forgotten encrypted one (%d before):\n%s", len(withOwn), own, len(before), out)
		code, out, errs = e.tryEnv(home, "verify", "--no-progress")
		if code != 0 || !strings.Contains(out, "3 ok, 0 failed") {
			t.Errorf("verify without key: %d %s %s", code, out, errs)
		}
		t.Logf("verify without key: %s", strings.TrimSpace(out))
		code, out, errs = e.tryEnv(withA, "verify", "--no-progress")
		if code != 0 || !strings.Contains(out, "3 ok, 0 failed") {
			t.Errorf("verify with key: %d %s %s", code, out, errs)
		}
		t.Logf("verify with key: %s", strings.TrimSpace(out))

		// A truncated encrypted chunk: verify without the key finds it
		// (CRC), names it and marks the snapshot failed.
		s := e.open(t)
		idx, err := s.OpenIndex(mustRef(t, "vm/200/"+snapTime), "drive-scsi0.img.fidx")
		if err != nil {
			t.Fatal(err)
		}
		d, _, _ := idx.Chunk(1)
		p := s.Chunks().Path(d)
		raw, _ := os.ReadFile(p)
		if err := os.WriteFile(p, raw[:len(raw)/2], 0o644); err != nil {
			t.Fatal(err)
		}
		code, out, errs = e.tryEnv(home, "verify", "--no-progress")
		t.Logf("verify without key, truncated chunk: exit %d\n%s", code, out)
		if code != 1 || !strings.Contains(out, "2 ok, 1 failed") || !strings.Contains(out, d.String()) || !strings.Contains(out, "crc") {
			t.Errorf("verify of a truncated encrypted chunk: %d %s %s", code, out, errs)
		}
	})
}

// chunkNames returns the chunk file names of a datastore.
func chunkNames(t *testing.T, root string) map[string]bool {
	names := map[string]bool{}
	filepath.WalkDir(filepath.Join(root, ".chunks"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && len(d.Name()) == 64 {
			names[d.Name()] = true
		}
		return nil
	})
	if len(names) == 0 {
		t.Fatal("no chunks")
	}
	return names
}

// fingerprintXattr returns the user.pbs.key-fingerprint of a snapshot directory.
func fingerprintXattr(t *testing.T, dir string) string {
	buf := make([]byte, 256)
	n, err := syscall.Getxattr(dir, "user.pbs.key-fingerprint", buf)
	if err != nil {
		t.Errorf("getxattr %s: %v", dir, err)
		return ""
	}
	return string(buf[:n])
}
