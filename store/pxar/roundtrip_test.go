package pxar

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/pbsfs/pbsfs/store/catalog"
	"golang.org/x/sys/unix"
)

// oddNames are file names the round trip must keep byte for byte.
var oddNames = []string{"with space", "back\\slash", "new\nline", "\xff\xfe-not-utf8", "é-accent", "UPPER", strings.Repeat("L", 255)}

// genTree builds a tree with every entry kind in dir and returns what it
// could not create (xattrs, ACLs or devices when not permitted).
func genTree(t *testing.T, dir string) (skipped []string) {
	t.Helper()
	root := os.Geteuid() == 0
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write := func(name string, data []byte, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, name)
		must(os.WriteFile(p, data, 0o600))
		must(os.Chmod(p, mode))
	}
	must(os.MkdirAll(filepath.Join(dir, "sub/deeper/deepest"), 0o755))
	must(os.Mkdir(filepath.Join(dir, "empty-dir"), 0o750))
	must(os.Mkdir(filepath.Join(dir, "odd"), 0o755))
	write("empty", nil, 0o644)
	write("small.txt", []byte("hello, world\n"), 0o640)
	big := make([]byte, 3<<20+123)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	write("sub/large.bin", big, 0o600)
	write("sub/deeper/deepest/leaf", []byte("leaf"), 0o444)
	write("setuid", []byte("#!/bin/sh\n"), 0o4755|os.ModeSetuid)
	must(os.Chmod(filepath.Join(dir, "setuid"), 0o755|os.ModeSetuid|os.ModeSetgid))
	for i, n := range oddNames {
		write("odd/"+n, []byte(fmt.Sprint("odd ", i)), 0o644)
	}
	// Symlinks: relative, absolute, dangling, to a directory.
	must(os.Symlink("small.txt", filepath.Join(dir, "link-rel")))
	must(os.Symlink("/etc/passwd", filepath.Join(dir, "link-abs")))
	must(os.Symlink("does/not/exist", filepath.Join(dir, "link-dangling")))
	must(os.Symlink("sub", filepath.Join(dir, "link-dir")))
	// Hardlinks: same directory, across directories, three names.
	write("hl-a", []byte("shared content"), 0o644)
	must(os.Link(filepath.Join(dir, "hl-a"), filepath.Join(dir, "hl-b")))
	must(os.Link(filepath.Join(dir, "hl-a"), filepath.Join(dir, "sub/hl-c")))
	// FIFO and socket.
	must(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o640))
	must(unix.Mknod(filepath.Join(dir, "socket"), unix.S_IFSOCK|0o755, 0))
	if root {
		must(unix.Mknod(filepath.Join(dir, "chardev"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		must(unix.Mknod(filepath.Join(dir, "blockdev"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 300))))
		must(os.Lchown(filepath.Join(dir, "small.txt"), 1234, 5678))
		must(os.Lchown(filepath.Join(dir, "link-rel"), 1234, 5678))
		must(os.Chown(filepath.Join(dir, "sub"), 42, 43))
	} else {
		skipped = append(skipped, "devices", "owners")
	}
	// Xattrs and ACLs.
	xa := func(name, attr string, value []byte) {
		if err := unix.Lsetxattr(filepath.Join(dir, name), attr, value, 0); err != nil {
			skipped = append(skipped, attr+" on "+name+": "+err.Error())
		}
	}
	xa("small.txt", "user.comment", []byte("a value"))
	xa("small.txt", "user.empty", nil)
	xa("small.txt", "user.binary", []byte{0, 1, 2, 0})
	xa("sub", "user.dir", []byte("dir xattr"))
	if root {
		xa("small.txt", "trusted.t", []byte("trusted"))
		// VFS capability v2: CAP_NET_BIND_SERVICE permitted + effective.
		caps := binary.LittleEndian.AppendUint32(nil, 0x02000001)
		caps = binary.LittleEndian.AppendUint32(caps, 1<<10)
		caps = append(caps, make([]byte, 12)...)
		xa("empty", "security.capability", caps)
	}
	gobj := uint64(5)
	acl := ACL{Users: []ACLEntry{{ID: 1000, Perms: 6}, {ID: 1001, Perms: 4}}, Groups: []ACLEntry{{ID: 2000, Perms: 4}}, GroupObj: &gobj}
	xa("hl-a", aclXattrAccess, accessACLXattr(0o100644, &acl))
	dacl := ACL{Default: &ACLDefault{UserObj: 7, GroupObj: 5, Other: 0, Mask: 7}, DefaultUsers: []ACLEntry{{ID: 1000, Perms: 7}}}
	xa("sub/deeper", aclXattrDefault, defaultACLXattr(&dacl))
	// chattr nodump ('d') on a file.
	if fd, err := unix.Open(filepath.Join(dir, "sub/deeper/deepest/leaf"), unix.O_RDONLY, 0); err == nil {
		if err := unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, 0x40); err != nil {
			skipped = append(skipped, "chattr: "+err.Error())
		}
		unix.Close(fd)
	}
	// Times: negative with nanoseconds, the epoch, and ordinary ones; dirs last.
	times := map[string]unix.Timespec{
		"small.txt": {Sec: -2, Nsec: 500000000}, "empty": {Sec: 0}, "link-rel": {Sec: 1234567890, Nsec: 1},
		"fifo": {Sec: -86400}, "sub/large.bin": {Sec: 1700000000, Nsec: 999999999},
		"sub/deeper/deepest": {Sec: 1600000000, Nsec: 42}, "sub": {Sec: 1500000000}, "": {Sec: 1400000000, Nsec: 7},
	}
	for _, p := range []string{"small.txt", "empty", "link-rel", "fifo", "sub/large.bin", "sub/deeper/deepest", "sub", ""} {
		ts := times[p]
		must(unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dir, p), []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
	}
	return skipped
}

// diskEntry is what a test compares of one path on disk or in an archive.
type diskEntry struct {
	Kind    Kind
	Mode    uint64
	UID     uint32
	GID     uint32
	Mtime   Timestamp
	Flags   uint64
	Size    uint64
	SHA     string
	Target  string
	Major   uint64
	Minor   uint64
	Xattrs  []Xattr
	ACL     ACL
	FCaps   []byte
	LinkGrp string // for hardlinked files: the first path of the inode
}

// readDisk walks a tree on disk with DirSource and reads file contents.
func readDisk(t *testing.T, root string) map[string]diskEntry {
	t.Helper()
	src := &DirSource{Root: root}
	defer src.Close()
	out := map[string]diskEntry{}
	firstPath := map[[2]uint64]string{}
	var walk func(p string)
	walk = func(p string) {
		info, err := src.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		d := diskEntry{Kind: info.Kind, Mode: info.Mode, UID: info.UID, GID: info.GID, Mtime: info.Mtime,
			Flags: info.Flags, Size: info.Size, Target: info.LinkTarget, Major: info.DevMajor, Minor: info.DevMinor,
			Xattrs: info.Xattrs, ACL: info.ACL, FCaps: info.FCaps}
		if info.Kind == KindDir && p == "" {
			d.Mtime = Timestamp{} // the extraction target's own times are not compared
		}
		switch info.Kind {
		case KindFile:
			b, err := os.ReadFile(src.full(p))
			if err != nil {
				t.Fatal(err)
			}
			d.SHA = fmt.Sprintf("%x", sha256.Sum256(b))
			if info.Nlink > 1 {
				k := [2]uint64{info.Dev, info.Ino}
				if _, ok := firstPath[k]; !ok {
					firstPath[k] = p
				}
				d.LinkGrp = firstPath[k]
			}
		case KindDir:
			names, err := src.ReadDirNames(p)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(names)
			for _, n := range names {
				walk(join(p, n))
			}
		}
		out["/"+p] = d
	}
	walk("")
	return out
}

// readArchive decodes an archive sequentially into the same form.
func readArchive(t *testing.T, meta, payload []byte) map[string]diskEntry {
	t.Helper()
	var pr io.ReaderAt
	if payload != nil {
		pr = bytes.NewReader(payload)
	}
	d := NewDecoder(bytes.NewReader(meta), int64(len(meta)), pr)
	out := map[string]diskEntry{}
	byOffset := map[int64]string{}
	for {
		e, err := d.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := strings.TrimPrefix(e.Path, "/")
		de := diskEntry{Kind: e.Kind, Mode: e.Mode, UID: e.UID, GID: e.GID, Mtime: e.Mtime, Flags: e.Flags,
			Size: e.Size, Target: e.LinkTarget, Major: e.DevMajor, Minor: e.DevMinor, Xattrs: e.Xattrs, ACL: e.ACL, FCaps: e.FCaps}
		if e.Path == "/" {
			de.Mtime = Timestamp{}
		}
		switch e.Kind {
		case KindFile:
			h := sha256.New()
			if _, err := io.Copy(h, d); err != nil {
				t.Fatal(err)
			}
			de.SHA = fmt.Sprintf("%x", h.Sum(nil))
			byOffset[e.FilenameOffset] = p
		case KindHardlink:
			target := out["/"+byOffset[e.HardlinkOffset]]
			if target.Kind != KindFile || e.LinkTarget != byOffset[e.HardlinkOffset] {
				t.Fatalf("hardlink %q: target %q at %d is %v", e.Path, e.LinkTarget, e.HardlinkOffset, target.Kind)
			}
			if target.LinkGrp == "" {
				target.LinkGrp = e.LinkTarget
				out["/"+e.LinkTarget] = target
			}
			de = target
		}
		out[e.Path] = de
	}
	return out
}

func compareTrees(t *testing.T, what string, got, want map[string]diskEntry) {
	t.Helper()
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("%s: %q missing", what, p)
			continue
		}
		if !reflect.DeepEqual(normalize(g), normalize(w)) {
			t.Errorf("%s: %q\n got %+v\nwant %+v", what, p, g, w)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: extra %q", what, p)
		}
	}
}

// normalize makes empty and nil slices compare equal.
func normalize(d diskEntry) diskEntry {
	if len(d.Xattrs) == 0 {
		d.Xattrs = nil
	}
	for i := range d.Xattrs {
		if len(d.Xattrs[i].Value) == 0 {
			d.Xattrs[i].Value = nil
		}
	}
	a := &d.ACL
	for _, l := range []*[]ACLEntry{&a.Users, &a.Groups, &a.DefaultUsers, &a.DefaultGroups} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	return d
}

// encodeDir archives dir plainly or split, with a catalog.
func encodeDir(t testing.TB, dir string, split bool) (meta, payload, cat []byte) {
	var m, p, c bytes.Buffer
	w := NewWriter(&m, nil)
	if split {
		w = NewWriter(&m, &p)
	}
	cw, err := catalog.NewWriter(&c)
	if err != nil {
		t.Fatal(err)
	}
	if err := cw.StartDirectory("root.pxar.didx"); err != nil {
		t.Fatal(err)
	}
	if err := CreateFromDir(context.Background(), dir, w, CreateOptions{Catalog: cw}); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(cw.EndDirectory(), cw.Finish()); err != nil {
		t.Fatal(err)
	}
	if split {
		return m.Bytes(), p.Bytes(), c.Bytes()
	}
	return m.Bytes(), nil, c.Bytes()
}

// TestRoundTrip encodes a generated tree with every entry kind, decodes it
// sequentially and through random access, checks it against the disk, and
// extracts it again.
func TestRoundTrip(t *testing.T) {
	src := t.TempDir()
	skipped := genTree(t, src)
	if len(skipped) > 0 {
		t.Logf("not covered here: %q", skipped)
	}
	want := readDisk(t, src)
	// The generator's values, checked independently of DirSource.
	if e := want["/small.txt"]; len(e.Xattrs) < 3 || e.Mtime != (Timestamp{Secs: -2, Nanos: 500000000}) {
		t.Errorf("small.txt: xattrs %q mtime %v", e.Xattrs, e.Mtime)
	}
	if e := want["/hl-a"]; len(e.ACL.Users) != 2 || e.ACL.GroupObj == nil || *e.ACL.GroupObj != 5 {
		t.Errorf("hl-a ACL %+v", e.ACL)
	}
	if e := want["/sub/deeper"]; e.ACL.Default == nil || len(e.ACL.DefaultUsers) != 1 {
		t.Errorf("sub/deeper default ACL %+v", e.ACL)
	}
	if e := want["/sub/deeper/deepest/leaf"]; e.Flags != 0x100000 {
		t.Logf("leaf flags %#x (chattr unsupported here?)", e.Flags)
	}
	for _, split := range []bool{false, true} {
		t.Run(fmt.Sprint("split=", split), func(t *testing.T) {
			meta, payload, cat := encodeDir(t, src, split)
			got := readArchive(t, meta, payload)
			compareTrees(t, "decode", got, want)

			var pr io.ReaderAt
			if split {
				pr = bytes.NewReader(payload)
			}
			a, err := Open(bytes.NewReader(meta), int64(len(meta)), pr)
			if err != nil {
				t.Fatal(err)
			}
			// Every path is found by lookup with the same metadata.
			for p, w := range want {
				e, err := a.Lookup(p)
				if err != nil {
					t.Errorf("lookup %q: %v", p, err)
					continue
				}
				if e, err = a.Resolve(e); err != nil {
					t.Errorf("resolve %q: %v", p, err)
					continue
				}
				if e.Kind != w.Kind || e.Mode != w.Mode || !reflect.DeepEqual(normalize(diskEntry{Xattrs: e.Xattrs}).Xattrs, normalize(w).Xattrs) {
					t.Errorf("lookup %q: %v %o, want %v %o", p, e.Kind, e.Mode, w.Kind, w.Mode)
				}
				if e.Kind == KindFile {
					r, err := a.Content(e)
					if err != nil {
						t.Fatal(err)
					}
					h := sha256.New()
					io.Copy(h, r)
					if hex.EncodeToString(h.Sum(nil)) != w.SHA {
						t.Errorf("lookup %q: content differs", p)
					}
				}
			}
			// The catalog lists the same tree.
			cr, err := catalog.NewReader(bytes.NewReader(cat), int64(len(cat)))
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			err = cr.Walk(cr.Root(), func(p string, e catalog.Entry) error {
				n++
				rel := strings.TrimPrefix(p, "/root.pxar.didx")
				if rel == "" {
					return nil
				}
				if _, ok := want[rel]; !ok {
					t.Errorf("catalog has %q", rel)
				}
				return nil
			})
			if err != nil || n != len(want) {
				t.Errorf("catalog: %d entries, %v; want %d", n, err, len(want))
			}
			// fs.FS view (paths that are valid fs.FS names).
			var names []string
			for p := range want {
				if p != "/" && fs.ValidPath(p[1:]) && !strings.Contains(p, `\`) {
					names = append(names, p[1:])
				}
			}
			if err := fstest.TestFS(portableFS{a}, names...); err != nil {
				t.Error(err)
			}
			// Extraction restores the same tree.
			dst := filepath.Join(t.TempDir(), "restore")
			if err := Extract(context.Background(), a, "", dst, ExtractOptions{}); err != nil {
				t.Fatal(err)
			}
			compareTrees(t, "extract", readDisk(t, dst), want)
		})
	}
}

// TestExtractSubpath extracts one directory and one file.
func TestExtractSubpath(t *testing.T) {
	src := t.TempDir()
	genTree(t, src)
	meta, _, _ := encodeDir(t, src, false)
	a, err := Open(bytes.NewReader(meta), int64(len(meta)), nil)
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := Extract(context.Background(), a, "sub", dst, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "deeper/deepest/leaf")); err != nil || string(b) != "leaf" {
		t.Errorf("leaf: %q, %v", b, err)
	}
	// sub/hl-c is a hardlink to hl-a, outside the sub-tree: restored as a copy.
	if b, err := os.ReadFile(filepath.Join(dst, "hl-c")); err != nil || string(b) != "shared content" {
		t.Errorf("hl-c: %q, %v", b, err)
	}
	dst2 := t.TempDir()
	if err := Extract(context.Background(), a, "/odd/with space", dst2, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst2, "with space")); err != nil || string(b) != "odd 0" {
		t.Errorf("with space: %q, %v", b, err)
	}
	// Extracting again over existing files fails without Overwrite, works with it.
	if err := Extract(context.Background(), a, "sub", dst, ExtractOptions{}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second extract: %v, want ErrExist", err)
	}
	if err := Extract(context.Background(), a, "sub", dst, ExtractOptions{Overwrite: true}); err != nil {
		t.Errorf("overwrite: %v", err)
	}
}

// swapSource swaps a directory for a symlink to another place right
// before the directory is listed, forcing the race a backup of a live
// tree can meet.
type swapSource struct {
	*DirSource
	dir, outside string
}

func (s *swapSource) ReadDirNames(p string) ([]string, error) {
	if p == s.dir {
		full := filepath.Join(s.Root, p)
		if err := os.Rename(full, full+".old"); err != nil {
			return nil, err
		}
		if err := os.Symlink(s.outside, full); err != nil {
			return nil, err
		}
	}
	return s.DirSource.ReadDirNames(p)
}

// TestDirSourceSwapRace checks that a directory replaced by a symlink
// between its stat and its listing does not lead the backup outside the
// tree: the directory is reported and skipped.
func TestDirSourceSwapRace(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "sub/inner"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := &swapSource{DirSource: &DirSource{Root: root}, dir: "sub/inner", outside: outside}
	defer src.Close()
	var reported []string
	var meta bytes.Buffer
	err := Create(context.Background(), src, NewWriter(&meta, nil), CreateOptions{OnError: func(p string, err error) error {
		reported = append(reported, p)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(reported, []string{"sub/inner"}) {
		t.Errorf("reported %q, want [sub/inner]", reported)
	}
	if bytes.Contains(meta.Bytes(), []byte("secret")) {
		t.Error("the archive holds a file from outside the tree")
	}
}

// TestCreateOnError checks that an unreadable file is reported and
// skipped, and that the backup goes on.
func TestCreateOnError(t *testing.T) {
	tree := basicTree()
	tree["b"] = &memNode{info: SourceInfo{Kind: KindFile, Size: 1, Metadata: Metadata{Mode: 0o100644}}}
	tree["c"] = &memNode{info: SourceInfo{Kind: KindFile, Size: 1, Metadata: Metadata{Mode: 0o100644}}, content: []byte("c")}
	src := &failOpen{memSource: tree, fail: "b"}
	var reported []string
	var meta bytes.Buffer
	err := Create(context.Background(), src, NewWriter(&meta, nil), CreateOptions{OnError: func(p string, err error) error {
		reported = append(reported, p)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	got := readArchive(t, meta.Bytes(), nil)
	if _, ok := got["/b"]; ok || len(got) != 3 || !slices.Equal(reported, []string{"b"}) {
		t.Errorf("archive %v, reported %q", got, reported)
	}
	// Without OnError the first failure aborts.
	if err := Create(context.Background(), src, NewWriter(io.Discard, nil), CreateOptions{}); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("got %v, want ErrPermission", err)
	}
}

type failOpen struct {
	memSource
	fail string
}

func (f *failOpen) Open(p string) (io.ReadCloser, error) {
	if p == f.fail {
		return nil, fs.ErrPermission
	}
	return f.memSource.Open(p)
}

// TestOneFileSystem archives /dev, where /dev/shm is a mount point: with
// OneFileSystem the mount point is kept, empty.
func TestOneFileSystem(t *testing.T) {
	var dev, shm unix.Stat_t
	if unix.Stat("/dev", &dev) != nil || unix.Stat("/dev/shm", &shm) != nil || dev.Dev == shm.Dev {
		t.Skip("no mount point at /dev/shm")
	}
	f, err := os.CreateTemp("/dev/shm", "pxar-test-")
	if err != nil {
		t.Skip(err)
	}
	f.Close()
	t.Cleanup(func() { os.Remove(f.Name()) })
	for _, one := range []bool{true, false} {
		var meta bytes.Buffer
		src := &DirSource{Root: "/dev", OneFileSystem: one, SkipXattrs: true, SkipFlags: true}
		err := Create(context.Background(), src, NewWriter(&meta, nil), CreateOptions{OnError: func(string, error) error { return nil }})
		src.Close()
		if err != nil {
			t.Fatal(err)
		}
		a, err := Open(bytes.NewReader(meta.Bytes()), int64(meta.Len()), nil)
		if err != nil {
			t.Fatal(err)
		}
		e, err := a.Lookup("shm")
		if err != nil {
			t.Fatal(err)
		}
		r, err := a.OpenDir(e)
		if err != nil {
			t.Fatal(err)
		}
		if one && r.Len() != 0 || !one && r.Len() == 0 {
			t.Errorf("OneFileSystem=%v: shm has %d entries", one, r.Len())
		}
	}
}
