package integration

import (
	"fmt"
	"github.com/pbsfs/pbsfs/internal/testutil"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReadOnly: with --read-only, rm -r is refused and nothing goes.
func TestReadOnly(t *testing.T) {
	testutil.RequireFUSE(t)
	e := newEnv(t)
	conf := filepath.Join(t.TempDir(), "a.conf")
	os.WriteFile(conf, []byte("a"), 0o644)
	snap := e.backup(t, "host", "h", t0, "a.conf:"+conf)
	mnt, _ := e.mount(t, "--read-only")
	out, err := run("rm", "-r", filepath.Join(mnt, "host/h", snap))
	if err == nil || !strings.Contains(out, "Read-only file system") {
		t.Errorf("rm -r on a read-only mount: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(e.store, "host/h", snap, "index.json.blob")); err != nil {
		t.Errorf("snapshot lost files: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "host/h", snap, "a.conf")); err != nil || string(got) != "a" {
		t.Errorf("read on a read-only mount: %q, %v", got, err)
	}
}

// TestAllowOther: other users get in, and the kernel enforces the stored
// modes (default_permissions): in a store whose chunks everyone may read
// on disk, nobody reads a 0644 file of an archive but not a 0600 one, and
// cannot prune.
func TestAllowOther(t *testing.T) {
	requireSetpriv(t)
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	os.Chmod(src, 0o755)
	os.WriteFile(filepath.Join(src, "public"), []byte("public"), 0o644)
	os.WriteFile(filepath.Join(src, "secret"), []byte("secret"), 0o600)
	snap := e.backup(t, "ct", "1", t0, "root.pxar:"+src)
	openToAll(t, e.store)
	openChunks(t, e.store)
	mnt, _ := e.mount(t, "--allow-other")
	os.Chmod(filepath.Dir(mnt), 0o755) // let nobody reach the mount point
	asNobody := func(args ...string) (string, error) { return as(65534, 65534, args...) }
	dir := filepath.Join(mnt, "ct/1", snap, "root.pxar")
	if out, err := asNobody("cat", filepath.Join(dir, "public")); err != nil || out != "public" {
		t.Errorf("nobody reads public: %q, %v", out, err)
	}
	if out, err := asNobody("cat", filepath.Join(dir, "secret")); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("nobody reads secret: %q, %v", out, err)
	}
	if out, err := asNobody("rm", "-r", filepath.Join(mnt, "ct/1", snap)); err == nil {
		t.Errorf("nobody pruned a snapshot: %q", out)
	}
	if _, err := os.Stat(filepath.Join(e.store, "ct/1", snap)); err != nil {
		t.Errorf("snapshot after nobody's rm: %v", err)
	}
}

// requireSetpriv skips a test that runs commands as other users when
// setpriv is not installed; it needs FUSE too.
func requireSetpriv(t *testing.T) {
	t.Helper()
	testutil.RequireFUSE(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not installed")
	}
}

// as runs a command as uid:gid with no other groups.
func as(uid, gid int, args ...string) (string, error) {
	return run("setpriv", append([]string{fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", gid), "--clear-groups"}, args...)...)
}

// openToAll lets every user search the directories above dir (the test's
// temporary directories are 0700).
func openToAll(t *testing.T, dir string) {
	t.Helper()
	for d := filepath.Dir(dir); d != filepath.Clean(os.TempDir()) && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAllowOtherDiskModes: with --allow-other the mount grants no user
// more than the datastore on disk does. The store is laid out as PBS
// keeps it (everything owned by backup:backup, .chunks 0750, directories
// 0755, files 0644). Checked as second users through the real binary's
// mount, beside the same reads on disk: nobody lists the hierarchy and
// reads index.json as on disk, but reads no image and cannot enter a pxar
// archive (it cannot read the chunks on disk); a member of the backup
// group reads both, and inside the archive the archived modes apply; a
// snapshot directory made 0700 on disk is closed to both.
func TestAllowOtherDiskModes(t *testing.T) {
	requireSetpriv(t)
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "public"), []byte("public"), 0o644)
	os.WriteFile(filepath.Join(src, "secret"), []byte("secret"), 0o600)
	img := filepath.Join(t.TempDir(), "disk.img")
	randomFile(t, img, 1<<20, 7)
	open := e.backup(t, "vm", "100", t0, "drive-scsi0.img:"+img, "root.pxar:"+src)
	closed := e.backup(t, "vm", "100", t0.Add(time.Hour), "drive-scsi0.img:"+img)
	openToAll(t, e.store)
	const backupID = 34
	err := filepath.Walk(e.store, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, backupID, backupID)
	})
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(e.store, ".chunks"), 0o750)
	os.Chmod(filepath.Join(e.store, "vm/100", closed), 0o700)
	mnt, _ := e.mount(t, "--allow-other")
	os.Chmod(filepath.Dir(mnt), 0o755)

	const member = 4321 // a user whose group is backup
	snapDir := filepath.Join(mnt, "vm/100", open)
	disk := filepath.Join(e.store, "vm/100", open)
	chunk := ""
	filepath.Walk(filepath.Join(e.store, ".chunks"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && chunk == "" {
			chunk = p
		}
		return nil
	})
	for _, tc := range []struct {
		who      string
		uid, gid int
		path     string
		onDisk   string // the same read on disk, which must agree
		ok       bool
	}{
		{"nobody", 65534, 65534, filepath.Join(mnt, "vm/100"), filepath.Join(e.store, "vm/100"), true},
		{"nobody", 65534, 65534, filepath.Join(snapDir, "index.json"), filepath.Join(disk, "index.json.blob"), true},
		{"nobody", 65534, 65534, filepath.Join(snapDir, "drive-scsi0.img"), chunk, false},
		{"nobody", 65534, 65534, filepath.Join(snapDir, "root.pxar", "public"), chunk, false},
		{"nobody", 65534, 65534, filepath.Join(mnt, "vm/100", closed, "index.json"), filepath.Join(e.store, "vm/100", closed, "index.json.blob"), false},
		{"member", member, backupID, filepath.Join(snapDir, "drive-scsi0.img"), chunk, true},
		{"member", member, backupID, filepath.Join(snapDir, "root.pxar", "public"), chunk, true},
		{"member", member, backupID, filepath.Join(snapDir, "root.pxar", "secret"), "", false},
		{"member", member, backupID, filepath.Join(mnt, "vm/100", closed, "drive-scsi0.img"), filepath.Join(e.store, "vm/100", closed, "drive-scsi0.img.fidx"), false},
	} {
		cmd := []string{"head", "-c", "16", tc.path}
		if strings.HasSuffix(tc.path, "vm/100") {
			cmd = []string{"ls", tc.path}
		}
		out, err := as(tc.uid, tc.gid, cmd...)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %s: %v (%s), want ok=%v", tc.who, tc.path, err, strings.TrimSpace(out), tc.ok)
		}
		if !tc.ok && err != nil && !strings.Contains(out, "Permission denied") {
			t.Errorf("%s: %s: %s, want Permission denied", tc.who, tc.path, out)
		}
		if tc.onDisk != "" {
			dcmd := append(cmd[:len(cmd)-1:len(cmd)-1], tc.onDisk)
			if _, derr := as(tc.uid, tc.gid, dcmd...); (derr == nil) != tc.ok {
				t.Errorf("%s: on disk %s: %v, but the mount's %s must agree (ok=%v)", tc.who, tc.onDisk, derr, tc.path, tc.ok)
			}
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(snapDir, "drive-scsi0.img"), &st); err != nil || st.Uid != backupID || st.Gid != backupID || st.Mode&0o7777 != 0o640 {
		t.Errorf("image: uid %d gid %d mode %o, %v; want backup:backup 0640", st.Uid, st.Gid, st.Mode&0o7777, err)
	}
}

// TestSignalWhileBusy: SIGINT with a file open detaches the mount at once
// and the process exits 0 when the file is closed.
func TestSignalWhileBusy(t *testing.T) {
	testutil.RequireFUSE(t)
	e := newEnv(t)
	conf := filepath.Join(t.TempDir(), "a.conf")
	os.WriteFile(conf, []byte("a"), 0o644)
	snap := e.backup(t, "host", "h", t0, "a.conf:"+conf)
	mnt := t.TempDir()
	d := e.newDaemon(nil, "mount", e.store, mnt).start(t, mnt)
	d.waitMounted(t, mnt, true, "mount did not come up")
	f, err := os.Open(filepath.Join(mnt, "host/h", snap, "a.conf"))
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(os.Interrupt)
	d.waitMounted(t, mnt, false, "still mounted after SIGINT")
	buf := make([]byte, 1)
	if _, err := f.ReadAt(buf, 0); err != nil || buf[0] != 'a' {
		t.Errorf("open file after the detach: %q, %v", buf, err)
	}
	f.Close()
	if err := d.exit(t, 10*time.Second, "pbsfs mount did not exit after the last file closed"); err != nil {
		t.Errorf("pbsfs mount: %v\n%s", err, d.logs.String())
	}
}
