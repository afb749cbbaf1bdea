package integration

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// POSIX ACL xattr encoding (linux/posix_acl_xattr.h).
const (
	aclVersion  = 2
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
	aclNoID     = 0xffffffff
)

type aclEntry struct {
	tag  uint16
	perm uint16
	id   uint32
}

func encodeACL(ents ...aclEntry) []byte {
	sort.SliceStable(ents, func(i, j int) bool {
		if ents[i].tag != ents[j].tag {
			return ents[i].tag < ents[j].tag
		}
		return ents[i].id < ents[j].id
	})
	b := binary.LittleEndian.AppendUint32(nil, aclVersion)
	for _, e := range ents {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}

// fcap is security.capability (VFS_CAP_REVISION_2, effective) granting
// CAP_NET_BIND_SERVICE.
func fcap() []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0x02000001)
	for _, v := range []uint32{1 << 10, 0, 0, 0} {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

// treeInfo says what genTree made, for the checks that need it.
type treeInfo struct {
	files     int
	hardlinks [][]string // names of one file
	specials  []string   // fifos, sockets, devices: diff skips them
}

// genTree writes a tree of every entry kind below dir: nested
// directories, nfiles regular files (a few large), empty files, odd
// modes (setuid, setgid, sticky), owners, relative, absolute and dangling
// symlinks, hardlink groups, FIFOs, sockets, devices, user and trusted
// xattrs, access and default ACLs, file capabilities and nanosecond
// mtimes.
func genTree(t testing.TB, dir string, nfiles int) treeInfo {
	t.Helper()
	r := rand.New(rand.NewPCG(42, 42))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var info treeInfo
	var dirs []string
	for i := range 40 {
		d := filepath.Join(dir, fmt.Sprintf("d%02d", i%8), fmt.Sprintf("sub%02d", i))
		if i%5 == 0 {
			d = filepath.Join(d, "deep", "deeper")
		}
		must(os.MkdirAll(d, 0o755))
		dirs = append(dirs, d)
	}
	dirs = append(dirs, dir)
	for i := range nfiles {
		d := dirs[i%len(dirs)]
		p := filepath.Join(d, fmt.Sprintf("file-%05d.dat", i))
		var size int
		switch {
		case i%1000 == 7:
			size = 3<<20 + r.IntN(5<<20) // spans chunks
		case i%10 == 0:
			size = 0
		default:
			size = r.IntN(3000)
		}
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(r.Uint32())
			if j%3 == 0 {
				data[j] = 'a'
			}
		}
		modes := []os.FileMode{0o644, 0o600, 0o755, 0o444, 0o640}
		must(os.WriteFile(p, data, 0o600))
		must(os.Chmod(p, modes[i%len(modes)]))
		if i%17 == 0 {
			must(os.Lchown(p, 1000+i%7, 100+i%3))
		}
		if i%53 == 0 {
			must(unix.Lsetxattr(p, "user.pbsfs.i", []byte(fmt.Sprint(i)), 0))
			must(unix.Lsetxattr(p, "user.pbsfs.empty", nil, 0))
		}
		if i%97 == 0 {
			must(unix.Lsetxattr(p, "trusted.pbsfs", []byte("t"), 0))
		}
		if i%101 == 0 {
			must(unix.Lsetxattr(p, "system.posix_acl_access", encodeACL(
				aclEntry{aclUserObj, 6, aclNoID}, aclEntry{aclUser, 4, 1000},
				aclEntry{aclGroupObj, 4, aclNoID}, aclEntry{aclGroup, 6, 100},
				aclEntry{aclMask, 6, aclNoID}, aclEntry{aclOther, 0, aclNoID}), 0))
		}
		info.files++
	}
	special := filepath.Join(dir, "special")
	must(os.MkdirAll(special, 0o755))
	p := filepath.Join(special, "setuid")
	must(os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755))
	must(os.Chmod(p, 0o4755|os.ModeSetuid))
	must(unix.Chmod(p, 0o4755))
	must(unix.Lsetxattr(filepath.Join(special, "setuid"), "security.capability", fcap(), 0))
	sticky := filepath.Join(special, "sticky")
	must(os.Mkdir(sticky, 0o755))
	must(unix.Chmod(sticky, 0o1777))
	sgid := filepath.Join(special, "setgid")
	must(os.Mkdir(sgid, 0o755))
	must(unix.Chmod(sgid, 0o2775))
	must(unix.Lsetxattr(sgid, "system.posix_acl_default", encodeACL(
		aclEntry{aclUserObj, 7, aclNoID}, aclEntry{aclUser, 5, 1001},
		aclEntry{aclGroupObj, 5, aclNoID}, aclEntry{aclMask, 5, aclNoID}, aclEntry{aclOther, 5, aclNoID}), 0))
	must(unix.Lsetxattr(sgid, "user.dir", []byte("on a directory"), 0))
	must(os.Symlink("../d00/sub00/file-00000.dat", filepath.Join(special, "rel-link")))
	must(os.Symlink("/etc/hostname", filepath.Join(special, "abs-link")))
	must(os.Symlink("does/not/exist", filepath.Join(special, "dangling")))
	must(os.Symlink("../d01", filepath.Join(special, "dir-link")))
	for i := range 3 {
		first := filepath.Join(special, fmt.Sprintf("hl-%d-a", i))
		must(os.WriteFile(first, []byte(fmt.Sprintf("hardlinked %d\n", i)), 0o644))
		group := []string{first}
		for j := 1; j <= i+1; j++ {
			other := filepath.Join(dirs[j], fmt.Sprintf("hl-%d-%d", i, j))
			must(os.Link(first, other))
			group = append(group, other)
		}
		info.hardlinks = append(info.hardlinks, group)
	}
	for _, name := range []string{"fifo-a", "fifo-b"} {
		must(unix.Mkfifo(filepath.Join(special, name), 0o640))
		info.specials = append(info.specials, name)
	}
	must(unix.Mknod(filepath.Join(special, "dev-null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(filepath.Join(special, "dev-loop9"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 9))))
	info.specials = append(info.specials, "dev-null", "dev-loop9")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(special, "sock-a"), Net: "unix"})
	must(err)
	l.SetUnlinkOnClose(false)
	l.Close()
	info.specials = append(info.specials, "sock-a")

	// Nanosecond mtimes, directories last (deepest first) so that
	// creating children does not change them again.
	var all []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && p != dir {
			all = append(all, p)
		}
		return nil
	})
	slices.SortFunc(all, func(a, b string) int { return len(b) - len(a) })
	base := time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC)
	for i, p := range all {
		ts := unix.NsecToTimespec(base.Add(time.Duration(i)*time.Hour + time.Duration(r.IntN(1e9))).UnixNano())
		must(unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
	}
	return info
}
