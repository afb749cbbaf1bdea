package fs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/store"
	"golang.org/x/sys/unix"
)

var (
	t0  = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	vm  = store.GroupRef{Type: store.TypeVM, ID: "100"}
	ct  = store.GroupRef{Type: store.TypeCT, ID: "200"}
	web = store.GroupRef{NS: "prod", Type: store.TypeHost, ID: "web"}
)

func readDirNames(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1) // getdents order
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestHierarchy(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, nil)
	for i := range 2 {
		backup(t, s, snap{g: vm, t: t0.Add(time.Duration(i) * time.Hour), blobs: map[string][]byte{"qemu-server.conf": []byte("x")}})
	}
	backup(t, s, snap{g: ct, t: t0, blobs: map[string][]byte{"pct.conf": []byte("y")}})
	if err := s.CreateNamespace("prod"); err != nil {
		t.Fatal(err)
	}
	backup(t, s, snap{g: web, t: t0, blobs: map[string][]byte{"a.conf": []byte("z")}})
	// A backup in progress stays hidden until it finishes.
	running, err := s.StartBackup(ctx, vm, t0.Add(5*time.Hour), store.BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer running.Abort()
	if err := running.AddBlob(ctx, "qemu-server.conf", []byte("new")); err != nil {
		t.Fatal(err)
	}

	mnt, _ := mountStore(t, s, Options{})
	tests := []struct {
		dir  string
		want []string
	}{
		{"", []string{"ct", "vm", "ns"}},
		{"vm", []string{"100"}},
		{"vm/100", []string{"2026-11-20T10:00:00Z", "2026-11-20T11:00:00Z", "latest"}},
		{"ns", []string{"prod"}},
		{"ns/prod", []string{"host"}},
		{"ns/prod/host/web", []string{"2026-11-20T10:00:00Z", "latest"}},
		{"vm/100/2026-11-20T11:00:00Z", []string{"index.json", "qemu-server.conf"}},
	}
	for _, tc := range tests {
		t.Run(tc.dir, func(t *testing.T) {
			if got := readDirNames(t, filepath.Join(mnt, tc.dir)); !slices.Equal(got, tc.want) {
				t.Errorf("listing %q = %q, want %q", tc.dir, got, tc.want)
			}
		})
	}
	if got, err := os.Readlink(filepath.Join(mnt, "vm/100/latest")); err != nil || got != "2026-11-20T11:00:00Z" {
		t.Errorf("latest -> %q, %v", got, err)
	}
	fi, err := os.Stat(filepath.Join(mnt, "vm/100/latest"))
	if err != nil || !fi.IsDir() || !fi.ModTime().Equal(t0.Add(time.Hour)) {
		t.Errorf("stat latest: %v, %v; want a directory with mtime %v", fi, err, t0.Add(time.Hour))
	}
	if _, err := os.Stat(filepath.Join(mnt, "vm/100/2026-11-20T15:00:00Z")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("in-progress snapshot: %v, want ENOENT", err)
	}
	if err := running.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.Readlink(filepath.Join(mnt, "vm/100/latest")); got != "2026-11-20T15:00:00Z" {
		t.Errorf("latest after the backup landed -> %q", got)
	}
	if got := readDirNames(t, filepath.Join(mnt, "vm/100")); len(got) != 4 {
		t.Errorf("listing after the backup landed: %q", got)
	}
	// Writes are refused.
	for name, op := range map[string]func() error{
		"create": func() error { return os.WriteFile(filepath.Join(mnt, "vm/100/x"), nil, 0o644) },
		"mkdir":  func() error { return os.Mkdir(filepath.Join(mnt, "vm/101"), 0o755) },
		"rename": func() error { return os.Rename(filepath.Join(mnt, "vm/100"), filepath.Join(mnt, "vm/101")) },
		"chmod":  func() error { return os.Chmod(filepath.Join(mnt, "vm/100/latest/qemu-server.conf"), 0o600) },
		"write": func() error {
			f, err := os.OpenFile(filepath.Join(mnt, "vm/100/latest/qemu-server.conf"), os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		},
	} {
		if err := op(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", name, err)
		}
	}
}

func TestImageBlobsManifest(t *testing.T) {
	s := newStore(t, nil)
	img := randomBytes(1, 9<<20+4321)
	ref := backup(t, s, snap{g: vm, t: t0, image: img, log: []byte("client log\n"),
		blobs: map[string][]byte{"qemu-server.conf": []byte("memory: 2048\n")}, pxarDir: func() string {
			d := t.TempDir()
			os.WriteFile(filepath.Join(d, "f"), []byte("x"), 0o644)
			return d
		}()})
	mnt, _ := mountStore(t, s, Options{})
	dir := filepath.Join(mnt, "vm/100", ref.TimeString())

	// The order rm -r depends on: index.json first, archive trees last,
	// the catalog hidden.
	want := []string{"index.json", "client.log", "qemu-server.conf", "drive-scsi0.img", "root.pxar"}
	if got := readDirNames(t, dir); !slices.Equal(got, want) {
		t.Errorf("snapshot lists %q, want %q", got, want)
	}
	got, err := os.ReadFile(filepath.Join(dir, "drive-scsi0.img"))
	if err != nil || !bytes.Equal(got, img) {
		t.Fatalf("image: %d bytes, %v; want the %d bytes backed up", len(got), err, len(img))
	}
	f, err := os.Open(filepath.Join(dir, "drive-scsi0.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, tc := range []struct {
		off  int64
		n    int
		want int
	}{
		{0, 4096, 4096},
		{4<<20 - 100, 200, 200}, // across a chunk boundary
		{int64(len(img)) - 10, 4096, 10},
		{int64(len(img)), 10, 0},
		{8 << 20, 1 << 20, 1 << 20},
	} {
		buf := make([]byte, tc.n)
		k, err := f.ReadAt(buf, tc.off)
		if k != tc.want || !bytes.Equal(buf[:k], img[tc.off:tc.off+int64(k)]) {
			t.Errorf("ReadAt(%d, %d) = %d, %v; want %d matching bytes", tc.n, tc.off, k, err, tc.want)
		}
	}
	for name, want := range map[string]string{"qemu-server.conf": "memory: 2048\n", "client.log": "client log\n"} {
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
	var man struct {
		ID    string `json:"backup-id"`
		Files []struct{ Filename string }
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil || json.Unmarshal(b, &man) != nil || man.ID != "100" || len(man.Files) != 4 {
		t.Errorf("index.json: %s, %v", b, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "drive-scsi0.img"))
	// The index file's 0644, less others' read: .chunks is 0750 (gate.go).
	if err != nil || fi.Size() != int64(len(img)) || !fi.ModTime().Equal(t0) || fi.Mode() != 0o640 {
		t.Errorf("stat image: %v, %v", fi, err)
	}
}

// statT is the part of a stat the mount must reproduce.
type statT struct {
	Mode, UID, GID, Nlink uint32
	Size                  int64
	Mtime                 unix.Timespec
	Rdev                  uint64
	Link                  string
}

func lstat(t *testing.T, p string) statT {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	out := statT{Mode: st.Mode, UID: st.Uid, GID: st.Gid, Nlink: uint32(st.Nlink), Size: st.Size, Mtime: st.Mtim, Rdev: st.Rdev}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		out.Link, _ = os.Readlink(p)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		out.Size, out.Nlink = 0, 0 // directory sizes and link counts differ by file system
	}
	return out
}

func TestPxarTree(t *testing.T) {
	src := t.TempDir()
	tree(t, src)
	s := newStore(t, nil)
	plain := backup(t, s, snap{g: ct, t: t0, pxarDir: src})
	split := backup(t, s, snap{g: ct, t: t0.Add(time.Hour), pxarDir: src, split: true})
	mnt, _ := mountStore(t, s, Options{})
	for _, ref := range []store.SnapshotRef{plain, split} {
		t.Run(ref.TimeString(), func(t *testing.T) {
			root := filepath.Join(mnt, "ct/200", ref.TimeString(), "root.pxar")
			if got := readDirNames(t, filepath.Dir(root)); !slices.Equal(got, []string{"index.json", "root.pxar"}) {
				t.Errorf("snapshot lists %q", got)
			}
			n := 0
			err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
				if err != nil {
					return err
				}
				rel, _ := filepath.Rel(src, p)
				m := filepath.Join(root, rel)
				n++
				got, want := lstat(t, m), lstat(t, p)
				if rel == "." {
					// The archive's root is the gate: the index file's
					// owner and mode (0644 -> 0750 with .chunks 0750).
					if got.Mode != unix.S_IFDIR|0o750 {
						t.Errorf("archive root mode %o, want %o", got.Mode, unix.S_IFDIR|0o750)
					}
					got.Mode, got.UID, got.GID = want.Mode, want.UID, want.GID
				}
				if got != want {
					t.Errorf("%s: stat %+v, want %+v", rel, got, want)
				}
				if fi.Mode().IsRegular() {
					a, _ := os.ReadFile(p)
					b, err := os.ReadFile(m)
					if err != nil || !bytes.Equal(a, b) {
						t.Errorf("%s: content differs (%d vs %d bytes), %v", rel, len(b), len(a), err)
					}
				}
				return nil
			})
			if err != nil || n < 300 {
				t.Fatalf("walked %d entries: %v", n, err)
			}
			got := readDirNames(t, root)
			slices.Sort(got)
			if want := []string{"empty", "etc", "fifo", "hard", "link", "null"}; !slices.Equal(got, want) {
				t.Errorf("root lists %q, want %q", got, want)
			}
			buf := make([]byte, 64)
			k, err := unix.Lgetxattr(filepath.Join(root, "etc/passwd"), "user.note", buf)
			if err != nil || string(buf[:k]) != "hello" {
				t.Errorf("xattr user.note = %q, %v", buf[:k], err)
			}
			var a, b unix.Stat_t
			unix.Lstat(filepath.Join(root, "hard"), &a)
			unix.Lstat(filepath.Join(root, "etc/passwd"), &b)
			if a.Ino != b.Ino || a.Nlink != 2 {
				t.Errorf("hardlinks: inodes %d, %d, nlink %d; want one inode, nlink 2", a.Ino, b.Ino, a.Nlink)
			}
			if err := os.Remove(filepath.Join(root, "etc/passwd")); !errors.Is(err, syscall.EROFS) {
				t.Errorf("rm inside an archive: %v, want EROFS", err)
			}
			if err := os.Remove(filepath.Join(root, "etc")); !errors.Is(err, syscall.EROFS) {
				t.Errorf("rmdir inside an archive: %v, want EROFS", err)
			}
		})
	}
}

// TestInodesStableAcrossRemount pins inode numbers: they depend on names
// and archive offsets only.
func TestInodesStableAcrossRemount(t *testing.T) {
	src := t.TempDir()
	tree(t, src)
	s := newStore(t, nil)
	ref := backup(t, s, snap{g: ct, t: t0, pxarDir: src, image: randomBytes(2, 1000)})
	paths := []string{"ct", "ct/200", "ct/200/latest", ref.TimeString() + "/drive-scsi0.img",
		ref.TimeString() + "/root.pxar", ref.TimeString() + "/root.pxar/etc/passwd", ref.TimeString() + "/root.pxar/hard"}
	inodes := func() []uint64 {
		mnt, _ := mountStore(t, s, Options{})
		var out []uint64
		for _, p := range paths {
			if strings.HasPrefix(p, "20") {
				p = "ct/200/" + p
			}
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(mnt, p), &st); err != nil {
				t.Fatal(err)
			}
			out = append(out, st.Ino)
		}
		return out
	}
	first, second := inodes(), inodes()
	if !slices.Equal(first, second) {
		t.Errorf("inodes changed across remount: %v, then %v", first, second)
	}
	if first[5] != first[6] {
		t.Errorf("hardlinked names have inodes %d and %d", first[5], first[6])
	}
}

// observer records removals and checks that the files still exist.
type observer struct {
	s    *store.Store
	mu   sync.Mutex
	seen []string
	err  error
}

func (o *observer) WillRemove(ctx context.Context, ref store.SnapshotRef) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, err := os.Stat(o.s.Path(ref.Dir() + "/" + store.ManifestName)); err != nil {
		o.err = err
	}
	o.seen = append(o.seen, ref.TimeString())
	return nil
}

func (o *observer) got() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.seen)
}

func TestRemove(t *testing.T) {
	src := t.TempDir()
	tree(t, src)
	for i := range 2000 { // rm -r must not walk these
		os.WriteFile(filepath.Join(src, "etc/sub", "n"+time.Duration(i).String()), nil, 0o644)
	}
	s := newStore(t, nil)
	var refs []store.SnapshotRef
	for i := range 5 {
		refs = append(refs, backup(t, s, snap{g: ct, t: t0.Add(time.Duration(i) * time.Hour), pxarDir: src,
			blobs: map[string][]byte{"pct.conf": []byte("c")}}))
	}
	backup(t, s, snap{g: vm, t: t0, image: randomBytes(3, 100)})
	backup(t, s, snap{g: vm, t: t0.Add(time.Hour), image: randomBytes(3, 100)})
	if err := s.SetProtected(refs[1], true); err != nil {
		t.Fatal(err)
	}
	lock, err := s.Locks().LockSnapshot(nil, ct.Type, ct.ID, refs[2].TimeString(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	obs := &observer{s: s}
	mnt, m := mountStore(t, s, Options{Observer: obs})
	snapDir := func(r store.SnapshotRef) string { return filepath.Join(mnt, "ct/200", r.TimeString()) }
	exists := func(r store.SnapshotRef) bool {
		_, err := os.Stat(s.Path(r.Dir()))
		return err == nil
	}
	intact := func(r store.SnapshotRef) bool {
		si, err := s.Snapshot(r)
		return err == nil && si.Finished && si.HasFile("root.pxar.didx") && si.HasFile("pct.conf.blob")
	}
	// Look inside every snapshot first, as a user would have.
	for _, r := range refs {
		readDirNames(t, filepath.Join(snapDir(r), "root.pxar/etc"))
	}

	rm := func(args ...string) (string, error) {
		out, err := exec.Command("rm", args...).CombinedOutput()
		return string(out), err
	}
	t.Run("rm -r", func(t *testing.T) {
		before := m.archiveOps.Load()
		out, err := rm("-r", snapDir(refs[0]))
		if err != nil {
			t.Fatalf("rm -r: %v\n%s", err, out)
		}
		if exists(refs[0]) {
			t.Error("snapshot directory still in the store")
		}
		if n := m.archiveOps.Load() - before; n != 0 {
			t.Errorf("rm -r looked into the archive %d times", n)
		}
		if _, err := os.Stat(snapDir(refs[0])); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("removed snapshot still visible: %v", err)
		}
	})
	t.Run("protected", func(t *testing.T) {
		out, err := rm("-r", snapDir(refs[1]))
		if err == nil || !strings.Contains(out, "Operation not permitted") || strings.Count(out, "\n") > 4 {
			t.Errorf("rm -r of a protected snapshot: %v\n%s", err, out)
		}
		if !intact(refs[1]) {
			t.Error("protected snapshot lost files")
		}
		if err := syscall.Rmdir(snapDir(refs[1])); err != syscall.EPERM {
			t.Errorf("rmdir: %v, want EPERM", err)
		}
	})
	t.Run("locked", func(t *testing.T) {
		out, err := rm("-r", snapDir(refs[2]))
		if err == nil || !strings.Contains(out, "busy") {
			t.Errorf("rm -r of a locked snapshot: %v\n%s", err, out)
		}
		if !intact(refs[2]) {
			t.Error("locked snapshot lost files")
		}
	})
	t.Run("inside", func(t *testing.T) {
		err := os.Remove(filepath.Join(snapDir(refs[3]), "root.pxar/etc/passwd"))
		if !errors.Is(err, syscall.EROFS) || !intact(refs[3]) {
			t.Errorf("rm inside an archive: %v", err)
		}
		if err := os.Remove(filepath.Join(snapDir(refs[3]), "pct.conf")); !errors.Is(err, syscall.EPERM) {
			t.Errorf("rm of one archive: %v, want EPERM", err)
		}
	})
	t.Run("rmdir", func(t *testing.T) {
		if err := syscall.Rmdir(snapDir(refs[3])); err != nil {
			t.Fatal(err)
		}
		if exists(refs[3]) {
			t.Error("snapshot still in the store")
		}
	})
	t.Run("rm -r group", func(t *testing.T) {
		out, err := rm("-r", filepath.Join(mnt, "vm/100"))
		if err != nil {
			t.Fatalf("rm -r: %v\n%s", err, out)
		}
		if _, err := os.Stat(s.Path(vm.Dir())); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("group directory: %v, want gone", err)
		}
	})
	if obs.err != nil {
		t.Errorf("observer called after files went: %v", obs.err)
	}
	want := []string{refs[0].TimeString(), refs[3].TimeString(), "2026-11-20T10:00:00Z", "2026-11-20T11:00:00Z"}
	if got := obs.got(); !slices.Equal(got, want) {
		t.Errorf("observer saw %q, want %q", got, want)
	}
}

// TestRelookupAfterForget drops the kernel's inodes (drop_caches) so that
// it forgets every node, then looks everything up again.
func TestRelookupAfterForget(t *testing.T) {
	src := t.TempDir()
	tree(t, src)
	s := newStore(t, nil)
	ref := backup(t, s, snap{g: ct, t: t0, pxarDir: src, image: randomBytes(6, 5000), blobs: map[string][]byte{"a.conf": []byte("a")}})
	mnt, _ := mountStore(t, s, Options{HierarchyTimeout: time.Millisecond, ArchiveTimeout: time.Millisecond})
	dir := filepath.Join(mnt, "ct/200", ref.TimeString())
	check := func() {
		t.Helper()
		for name, want := range map[string]string{"a.conf": "a", "root.pxar/etc/passwd": "root:x:0:0::/root:/bin/sh\n"} {
			if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != want {
				t.Errorf("%s = %q, %v", name, got, err)
			}
		}
		if b, err := os.ReadFile(filepath.Join(dir, "drive-scsi0.img")); err != nil || len(b) != 5000 {
			t.Errorf("image: %d bytes, %v", len(b), err)
		}
	}
	check()
	for range 3 {
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
			t.Skipf("cannot drop caches: %v", err)
		}
		check()
	}
}

// TestRemoveEntriesExpire: rm -r of a snapshot while the kernel's entries
// expire at once (as a 1 s timeout does under load, or a concurrent reader
// revalidating), so that every step of rm looks its names up again: the
// final rmdir of the snapshot, whose files are gone by then, must still
// find it and succeed, and so must unlinks of the files rm listed.
func TestRemoveEntriesExpire(t *testing.T) {
	src := t.TempDir()
	tree(t, src)
	s := newStore(t, nil)
	var refs []store.SnapshotRef
	for i := range 3 {
		refs = append(refs, backup(t, s, snap{g: ct, t: t0.Add(time.Duration(i) * time.Hour), pxarDir: src,
			image: randomBytes(4, 1000), blobs: map[string][]byte{"pct.conf": []byte("c")}}))
	}
	backup(t, s, snap{g: vm, t: t0, image: randomBytes(3, 100)})
	backup(t, s, snap{g: vm, t: t0.Add(time.Hour), image: randomBytes(3, 100)})
	mnt, _ := mountStore(t, s, Options{HierarchyTimeout: time.Nanosecond, ArchiveTimeout: time.Nanosecond})
	// The whole group vm/100, whose last snapshot takes the group and
	// the (virtual) type directory with it, before rm's rmdir of it.
	if out, err := exec.Command("rm", "-r", filepath.Join(mnt, "vm/100")).CombinedOutput(); err != nil {
		t.Fatalf("rm -r vm/100: %v\n%s", err, out)
	}
	if _, err := os.Stat(s.Path(vm.Dir())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("group vm/100 still in the store: %v", err)
	}
	for _, r := range refs {
		dir := filepath.Join(mnt, "ct/200", r.TimeString())
		readDirNames(t, filepath.Join(dir, "root.pxar/etc")) // a reader was here
		if out, err := exec.Command("rm", "-r", dir).CombinedOutput(); err != nil {
			t.Fatalf("rm -r %s: %v\n%s", r.TimeString(), err, out)
		}
		if _, err := os.Stat(s.Path(r.Dir())); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still in the store: %v", r.TimeString(), err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still visible after rm -r: %v", r.TimeString(), err)
		}
	}
}
