package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/internal/testutil"
	"golang.org/x/sys/unix"
)

// tryMount runs pbsfs mount ARGS with $PBSFS_STORE set to the store, as
// a user with the variable in the profile does, and expects a refusal:
// if the mount comes up anyway, it is torn down (aborted through the
// FUSE connection if need be, since a mount of the store on itself
// deadlocks) and the test fails.
func (e *env) tryMount(t *testing.T, args ...string) (string, int) {
	t.Helper()
	testutil.RequireFUSE(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"mount"}, args...)...)
	cmd.Env = append(os.Environ(), "PBSFS_RUNTIME_DIR="+e.run, "PBSFS_STORE="+e.store)
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	mnt := args[len(args)-1]
	real, _ := filepath.EvalSymlinks(mnt)
	before := testutil.MountCount(real)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		t.Errorf("pbsfs mount %q did not refuse within 5 s\n%s", args, out.String())
		cmd.Process.Kill()
		<-done
	}
	if real != "" && testutil.MountCount(real) > before {
		t.Errorf("pbsfs mount %q mounted", args)
		unix.Unmount(real, unix.MNT_DETACH)
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	}
	return out.String(), code
}

// TestMountRefusals: pbsfs mount refuses mount points that would hang
// the mount or hide files, says why and what to do, and leaves no mount.
func TestMountRefusals(t *testing.T) {
	testutil.RequireFUSE(t)
	e := newEnv(t)
	conf := filepath.Join(t.TempDir(), "a.conf")
	os.WriteFile(conf, []byte("a"), 0o644)
	e.backup(t, "host", "h", t0, "a.conf:"+conf)
	base := t.TempDir()
	link := filepath.Join(base, "link-to-store")
	os.Symlink(e.store, link)
	full := filepath.Join(base, "full")
	os.Mkdir(full, 0o755)
	os.WriteFile(filepath.Join(full, "mine"), []byte("mine"), 0o644)
	other := newEnv(t) // a second store, given positionally
	missing := filepath.Join(base, "missing")

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		// The case: PBSFS_STORE=/srv/ds, then pbsfs mount /srv/ds.
		{"store on itself, from PBSFS_STORE", []string{e.store}, []string{"is the datastore itself", "$PBSFS_STORE", "pbsfs mount STORE MOUNTPOINT"}},
		{"store on itself", []string{e.store, e.store}, []string{"is the datastore itself"}},
		{"symlink to the store", []string{e.store, link}, []string{"is the datastore itself"}},
		{"inside the store", []string{filepath.Join(e.store, "host")}, []string{"is inside the datastore"}},
		{"inside the store, .chunks", []string{e.store, filepath.Join(e.store, ".chunks")}, []string{"is inside the datastore"}},
		{"store inside the mount point", []string{e.store, filepath.Dir(e.store)}, []string{"is inside mount point"}},
		{"non-empty", []string{e.store, full}, []string{"is not empty (it holds mine)", "--nonempty"}},
		{"missing", []string{e.store, missing}, []string{"does not exist", "mkdir -p " + missing}},
		// PBSFS_STORE is a default: a positional STORE wins over it.
		{"OTHER MNT with PBSFS_STORE set", []string{other.store, missing}, []string{"does not exist"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := e.tryMount(t, tc.args...)
			if code == 0 {
				t.Fatalf("exit 0\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("exit %d, output lacks %q:\n%s", code, w, out)
				}
			}
			if strings.Contains(out, "given twice") {
				t.Errorf("environment default treated as a flag:\n%s", out)
			}
		})
	}
	if b, err := os.ReadFile(filepath.Join(full, "mine")); err != nil || string(b) != "mine" {
		t.Errorf("non-empty mount point's file: %q %v", b, err)
	}

	t.Run("already mounted", func(t *testing.T) {
		mnt, _ := e.mount(t)
		out, code := e.tryMount(t, e.store, mnt)
		if code != 1 || !strings.Contains(out, "is already mounted (fuse.pbsfs)") || !strings.Contains(out, "--nonempty") {
			t.Errorf("second mount on %s: exit %d\n%s", mnt, code, out)
		}
		if n := testutil.MountCount(mnt); n != 1 {
			t.Errorf("%d mounts stacked on %s", n, mnt)
		}
		if _, err := os.Stat(filepath.Join(mnt, "host/h")); err != nil {
			t.Errorf("first mount after the refusal: %v", err)
		}
	})
	t.Run("--nonempty", func(t *testing.T) {
		startMount(t, full, []string{"PBSFS_RUNTIME_DIR=" + e.run}, bin, "mount", "--nonempty", e.store, full)
		if _, err := os.Stat(filepath.Join(full, "host/h")); err != nil {
			t.Errorf("mount with --nonempty: %v", err)
		}
	})
}

// TestStatfs: df on the mount shows the file system holding the store,
// and names up to 255 bytes.
func TestStatfs(t *testing.T) {
	testutil.RequireFUSE(t)
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "etc"), 0o755)
	snap := e.backup(t, "ct", "1", t0, "root.pxar:"+src)
	mnt, _ := e.mount(t)
	var want, got unix.Statfs_t
	if err := unix.Statfs(e.store, &want); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{mnt, filepath.Join(mnt, "ct/1", snap, "root.pxar/etc")} {
		if err := unix.Statfs(p, &got); err != nil {
			t.Fatal(err)
		}
		if got.Blocks != want.Blocks || got.Bsize != want.Bsize || got.Files != want.Files || got.Namelen != 255 {
			t.Errorf("statfs %s: blocks %d bsize %d files %d namelen %d; store's file system: %d %d %d",
				p, got.Blocks, got.Bsize, got.Files, got.Namelen, want.Blocks, want.Bsize, want.Files)
		}
		// Free space moves with other tests; it must be the store's, give
		// or take what they wrote meanwhile.
		if got.Bfree == 0 || got.Bavail == 0 || got.Ffree == 0 || diff(got.Bfree, want.Bfree) > want.Blocks/10 {
			t.Errorf("statfs %s: bfree %d bavail %d ffree %d; store's: %d %d %d", p, got.Bfree, got.Bavail, got.Ffree, want.Bfree, want.Bavail, want.Ffree)
		}
	}
	out, err := run("df", "-P", mnt)
	if err != nil || !strings.Contains(out, mnt) || strings.Contains(out, " 0 ") {
		t.Errorf("df: %v\n%s", err, out)
	}
	t.Log(out)
}

func diff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}

// TestReadOnlyRemoveOnce: rm -r of a snapshot on a --read-only mount is
// refused at its manifest, as for a protected snapshot: a couple of
// "Read-only file system" lines, not one per file of its archive.
func TestReadOnlyRemoveOnce(t *testing.T) {
	testutil.RequireFUSE(t)
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	for d := range 10 {
		dir := filepath.Join(src, fmt.Sprintf("d%d", d))
		os.MkdirAll(dir, 0o755)
		for f := range 100 {
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", f)), []byte("x"), 0o644)
		}
	}
	conf := filepath.Join(t.TempDir(), "a.conf")
	os.WriteFile(conf, []byte("a"), 0o644)
	snap := e.backup(t, "ct", "1", t0, "a.conf:"+conf, "root.pxar:"+src)
	mnt, _ := e.mount(t, "--read-only")
	out, err := run("rm", "-r", filepath.Join(mnt, "ct/1", snap))
	lines := strings.Count(out, "\n")
	t.Logf("rm -r on a read-only mount: %d lines\n%s", lines, out)
	if err == nil || !strings.Contains(out, "index.json': Read-only file system") {
		t.Errorf("rm -r: %v\n%s", err, out)
	}
	// index.json, a.conf, root.pxar: one line per entry of the snapshot
	// directory at most, none from inside the archive (1,000 files).
	if lines > 3 || strings.Contains(out, "root.pxar/") {
		t.Errorf("rm -r printed %d lines, or walked the archive:\n%s", lines, out)
	}
	if _, err := os.Stat(filepath.Join(e.store, "ct/1", snap, "index.json.blob")); err != nil {
		t.Errorf("snapshot lost files: %v", err)
	}
	if err := unix.Rmdir(filepath.Join(mnt, "ct/1", snap)); err != unix.EROFS {
		t.Errorf("rmdir of the snapshot: %v, want EROFS", err)
	}
	if err := unix.Setxattr(filepath.Join(mnt, "ct/1", snap), "user.pbs.protected", []byte("1"), 0); err != unix.EROFS {
		t.Errorf("setxattr protected: %v, want EROFS", err)
	}
	if out, err := run("rm", "-r", filepath.Join(mnt, "ct/1")); err == nil {
		t.Errorf("rm -r of the group: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(e.store, "ct/1", snap, "root.pxar.didx")); err != nil {
		t.Errorf("group rm -r removed files: %v", err)
	}
}
