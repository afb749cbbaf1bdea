package integration

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/store"
	"golang.org/x/sys/unix"
)

// fsKind is a file system a datastore is tested on: mkfs makes it on a
// loop device (nil for tmpfs), setup returns the directory to put the
// store in below the mount point.
type fsKind struct {
	name  string
	mkfs  []string // command and flags; the device is appended
	opts  string   // mount options
	setup func(t *testing.T, mnt string) string
}

func fsKinds() []fsKind {
	plain := func(t *testing.T, mnt string) string { return mnt }
	return []fsKind{
		{name: "ext4", mkfs: []string{"mkfs.ext4", "-q", "-F", "-E", "nodiscard"}, setup: plain},
		{name: "xfs", mkfs: []string{"mkfs.xfs", "-q", "-f", "-K"}, setup: plain},
		{name: "btrfs", mkfs: []string{"mkfs.btrfs", "-q", "-f", "-K"}, setup: plain},
		{name: "btrfs-subvolume", mkfs: []string{"mkfs.btrfs", "-q", "-f", "-K"}, setup: func(t *testing.T, mnt string) string {
			return btrfsSubvolume(t, filepath.Join(mnt, "sv"))
		}},
		// A subvol= mount: the mount shows a subvolume as its root.
		{name: "btrfs-subvol-mount", mkfs: []string{"mkfs.btrfs", "-q", "-f", "-K"}, opts: "subvol=sv", setup: plain},
		{name: "tmpfs", setup: plain},
	}
}

func btrfsSubvolume(t *testing.T, p string) string {
	t.Helper()
	if out, err := run("btrfs", "subvolume", "create", p); err != nil {
		t.Fatalf("btrfs subvolume create: %v\n%s", err, out)
	}
	return p
}

// requireLoop skips the test when loop devices, mount or the mkfs tool
// cannot be used here; with PBSFS_REQUIRE_FUSE=1 (CI) it fails instead.
func requireLoop(t *testing.T, k fsKind) {
	t.Helper()
	skip := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("PBSFS_REQUIRE_FUSE") == "1" && os.Getenv("PBSFS_ALLOW_NO_LOOP") != "1" {
			t.Fatalf(format+" (CI: .ci/run installs the tools; PBSFS_ALLOW_NO_LOOP=1 allows a skip)", args...)
		}
		t.Skipf(format, args...)
	}
	if os.Geteuid() != 0 {
		skip("%s: mounting needs root", k.name)
	}
	if k.mkfs == nil {
		return
	}
	if _, err := exec.LookPath(k.mkfs[0]); err != nil {
		skip("%s: %s not installed (apt-get install btrfs-progs xfsprogs)", k.name, k.mkfs[0])
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		skip("%s: no loop devices here: %v", k.name, err)
	}
}

// mountFS makes a file system of kind k on a loop device backed by a file
// in a temporary directory and mounts it; cleanup unmounts it and detaches
// the device, even when the test fails.
func mountFS(t *testing.T, k fsKind) string {
	t.Helper()
	requireLoop(t, k)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if k.mkfs == nil {
		if out, err := run("mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", mnt); err != nil {
			t.Fatalf("mount tmpfs: %v\n%s", err, out)
		}
		t.Cleanup(func() { unmountFS(t, mnt) })
		return mnt
	}
	img := filepath.Join(dir, "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 512<<20); err != nil {
		t.Fatal(err)
	}
	// mkfs on the image file, not the loop device: mkfs.xfs stats every
	// mount point to see whether the device is in use, and hangs on a
	// FUSE mount whose daemon is stuck (another test's, on a shared box).
	if out, err := run(k.mkfs[0], append(k.mkfs[1:], img)...); err != nil {
		t.Fatalf("%s: %v\n%s", k.mkfs[0], err, out)
	}
	out, err := run("losetup", "-f", "--show", img)
	if err != nil {
		requireLoopFailed(t, k, fmt.Sprintf("losetup: %v: %s", err, out))
	}
	dev := strings.TrimSpace(out)
	t.Cleanup(func() {
		if out, err := run("losetup", "-d", dev); err != nil {
			t.Errorf("losetup -d %s: %v\n%s", dev, err, out)
		}
	})
	if k.opts != "" { // subvol=: make the subvolume first
		if out, err := run("mount", dev, mnt); err != nil {
			t.Fatalf("mount %s: %v\n%s", k.name, err, out)
		}
		btrfsSubvolume(t, filepath.Join(mnt, "sv"))
		if out, err := run("umount", mnt); err != nil {
			t.Fatalf("umount: %v\n%s", err, out)
		}
	}
	args := []string{dev, mnt}
	if k.opts != "" {
		args = []string{"-o", k.opts, dev, mnt}
	}
	if out, err := run("mount", args...); err != nil {
		t.Fatalf("mount %s: %v\n%s", k.name, err, out)
	}
	t.Cleanup(func() { unmountFS(t, mnt) })
	return mnt
}

func requireLoopFailed(t *testing.T, k fsKind, why string) {
	t.Helper()
	if os.Getenv("PBSFS_REQUIRE_FUSE") == "1" && os.Getenv("PBSFS_ALLOW_NO_LOOP") != "1" {
		t.Fatalf("%s: %s", k.name, why)
	}
	t.Skipf("%s: loop devices unusable here: %s", k.name, why)
}

func unmountFS(t *testing.T, mnt string) {
	for i := 0; ; i++ {
		out, err := run("umount", mnt)
		if err == nil {
			return
		}
		if i == 50 {
			t.Errorf("umount %s: %v\n%s", mnt, err, out)
			run("umount", "-l", mnt)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestGCOnFileSystems runs pbsfs gc on a datastore on each file system:
// two snapshots, the older forgotten, every chunk aged three days. The
// collection must remove exactly the chunks only the forgotten snapshot
// used, keep every referenced one (verify passes) and never refuse with a
// foreign-holder error.
func TestGCOnFileSystems(t *testing.T) {
	src := t.TempDir()
	imgA, imgB := filepath.Join(src, "a.img"), filepath.Join(src, "b.img")
	randomFile(t, imgA, 8<<20, 11)
	randomFile(t, imgB, 8<<20, 12)
	tree := filepath.Join(src, "tree")
	genTree(t, tree, 40)
	for _, k := range fsKinds() {
		t.Run(k.name, func(t *testing.T) {
			dir := k.setup(t, mountFS(t, k))
			e := &env{store: filepath.Join(dir, "store"), run: t.TempDir()}
			s, err := store.Create(e.store, store.Options{RuntimeDir: e.run, LazyChunkDirs: true})
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			t1 := e.backup(t, "vm", "100", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), "drive-scsi0.img:"+imgA, "root.pxar:"+tree)
			e.backup(t, "vm", "100", time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), "drive-scsi0.img:"+imgB, "root.pxar:"+tree)
			before := chunkFiles(t, e.store)
			e.pbsfs(t, "forget", "vm/100/"+t1)
			ageChunks(t, e.store, filepath.Join(t.TempDir(), "unused.lock"), time.Now().Add(-72*time.Hour))
			out := e.pbsfs(t, "gc", "--no-progress", "--cutoff", "1m")
			referenced, after := referencedChunks(t, e), chunkFiles(t, e.store)
			verify, verr := e.try("verify", "--no-progress")
			t.Logf("%s: %d chunk files before, %d after, %d referenced; gc: %s; verify: %s",
				k.name, before, after, referenced, oneLine(out), oneLine(verify))
			if verr != nil || !strings.Contains(verify, " 0 failed") {
				t.Fatalf("verify after gc: %v\n%s", verr, verify)
			}
			if after != referenced {
				t.Errorf("%d chunk files after gc, %d referenced", after, referenced)
			}
			// Image A's two chunks were only in the forgotten snapshot;
			// the self-test's chunk of zeros came in during the run.
			if !strings.Contains(out, "Removed chunks: 2\n") {
				t.Errorf("gc output: want 2 chunks removed (image A's)\n%s", out)
			}
		})
	}
}

// TestGCBtrfsSubvolumesSameInode puts two stores in two btrfs subvolumes,
// where their .lock files get the same inode number and /proc/locks names
// both the same way. A process holding the other store's .lock must not
// stop a collection, a process holding this store's .lock must.
func TestGCBtrfsSubvolumesSameInode(t *testing.T) {
	k := fsKinds()[2]
	mnt := mountFS(t, k)
	var envs [2]*env
	for i := range envs {
		sv := btrfsSubvolume(t, filepath.Join(mnt, fmt.Sprintf("sv%d", i)))
		envs[i] = &env{store: filepath.Join(sv, "pbs"), run: t.TempDir()}
		s, err := store.Create(envs[i].store, store.Options{RuntimeDir: envs[i].run, LazyChunkDirs: true})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	var st0, st1 unix.Stat_t
	unix.Stat(filepath.Join(envs[0].store, ".lock"), &st0)
	unix.Stat(filepath.Join(envs[1].store, ".lock"), &st1)
	if st0.Ino != st1.Ino || st0.Dev == st1.Dev {
		t.Fatalf(".lock files: inodes %d and %d, devices %d and %d; the test needs equal inodes in two subvolumes",
			st0.Ino, st1.Ino, st0.Dev, st1.Dev)
	}
	// A PBS-like holder of store 1's .lock.
	stop := holdLock(t, filepath.Join(envs[1].store, ".lock"))
	if out, err := envs[0].try("gc", "--no-progress"); err != nil {
		t.Fatalf("gc of store 0 refused because of a lock on store 1: %v\n%s", err, out)
	}
	out, err := envs[1].try("gc", "--no-progress")
	if err == nil || !strings.Contains(out, "held by") {
		t.Fatalf("gc of store 1 with a foreign holder: %v\n%s", err, out)
	}
	stop()
	if out, err := envs[1].try("gc", "--no-progress"); err != nil {
		t.Fatalf("gc of store 1 after the holder left: %v\n%s", err, out)
	}
}

// holdLock starts a process (this test binary, see holdLockMain) that
// holds a POSIX read lock on path, as a PBS daemon's writer does, until
// stop is called.
func holdLock(t *testing.T, path string) (stop func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PBSFS_TEST_HOLDLOCK="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		stdin.Close()
		cmd.Wait()
		t.Fatalf("lock holder: %q", line)
	}
	done := false
	stop = func() {
		if !done {
			done = true
			stdin.Close()
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	return stop
}

// holdLockMain is the lock holder's process: a read lock on the whole
// file, "ready", then wait for stdin to close.
func holdLockMain(path string) int {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &unix.Flock_t{Type: unix.F_RDLCK}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// TestSameNamedStores: two stores /a/pbs and /b/pbs sharing one runtime
// directory (as every store of a host shares /run/proxmox-backup) get
// different names, so their locks never meet: a backup into one while the
// other's group is locked, a collection of one while the other's runs, and
// backups and collections of both at once all succeed.
func TestSameNamedStores(t *testing.T) {
	dir, run := t.TempDir(), t.TempDir()
	var envs [2]*env
	var names [2]string
	for i, sub := range []string{"a", "b"} {
		envs[i] = &env{store: filepath.Join(dir, sub, "pbs"), run: run}
		s, err := store.Create(envs[i].store, store.Options{RuntimeDir: run, LazyChunkDirs: true})
		if err != nil {
			t.Fatal(err)
		}
		names[i] = s.Name()
		s.Close()
	}
	if names[0] == names[1] {
		t.Fatalf("both stores are named %q", names[0])
	}
	src := t.TempDir()
	img := filepath.Join(src, "disk.img")
	randomFile(t, img, 6<<20, 21)
	when := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

	// Store a's group vm/100 is locked (a backup running there).
	sa := envs[0].open(t)
	gl, err := sa.Locks().LockGroup(nil, "vm", "100", true)
	if err != nil {
		t.Fatal(err)
	}
	envs[1].backup(t, "vm", "100", when, "drive-scsi0.img:"+img)
	gl.Unlock()
	// Store a's collection is running (its gc lock held).
	gcLock := filepath.Join(run, "pbsfs", names[0], "gc.lock")
	os.MkdirAll(filepath.Dir(gcLock), 0o755)
	f, err := os.OpenFile(gcLock, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	envs[1].pbsfs(t, "gc", "--no-progress")
	if out, err := envs[0].try("gc", "--no-progress"); err == nil || !strings.Contains(out, "running") {
		t.Errorf("gc of store a while its gc lock is held: %v\n%s", err, out)
	}
	f.Close()

	// Both at once: a backup and a collection of each store.
	errs := make(chan error, 4)
	for i, e := range envs {
		go func() {
			out, err := e.try("backup", "--no-progress", "--type", "vm", "--id", "100",
				"--time", when.Add(time.Hour).Format(time.RFC3339), "drive-scsi0.img:"+img)
			if err != nil {
				err = fmt.Errorf("backup into store %d: %v\n%s", i, err, out)
			}
			errs <- err
		}()
		go func() {
			out, err := e.try("gc", "--no-progress")
			if err != nil {
				err = fmt.Errorf("gc of store %d: %v\n%s", i, err, out)
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for i, e := range envs {
		if out, err := e.try("verify", "--no-progress"); err != nil || !strings.Contains(out, " 0 failed") {
			t.Errorf("verify store %d: %v\n%s", i, err, out)
		}
	}
}
