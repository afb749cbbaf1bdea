package fs

import (
	"context"
	"errors"
	"io"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/pbsfs/pbsfs/store"
	"github.com/pbsfs/pbsfs/store/pxar"
)

// pxarNode is an entry inside a pxar archive: a directory, file, symlink,
// device, FIFO or socket, with its stored metadata. Hardlinks are resolved
// to their target file, so all names of a file are one node.
type pxarNode struct {
	roNode
	st *archiveState
	e  *pxar.Entry // never a hardlink
}

var (
	_ = (fusefs.NodeLookuper)((*pxarNode)(nil))
	_ = (fusefs.NodeOpendirHandler)((*pxarNode)(nil))
	_ = (fusefs.NodeGetattrer)((*pxarNode)(nil))
	_ = (fusefs.NodeOpener)((*pxarNode)(nil))
	_ = (fusefs.NodeReader)((*pxarNode)(nil))
	_ = (fusefs.NodeReadlinker)((*pxarNode)(nil))
	_ = (fusefs.NodeGetxattrer)((*pxarNode)(nil))
	_ = (fusefs.NodeListxattrer)((*pxarNode)(nil))
	_ = (fusefs.NodeLseeker)((*pxarNode)(nil))
)

func (n *pxarNode) fill(ctx context.Context, out *fuse.Attr) syscall.Errno {
	n.st.fill(n.e, out)
	return 0
}

func (n *pxarNode) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(n.st.m.archTTL)
	return n.fill(ctx, &out.Attr)
}

func (n *pxarNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if !n.e.IsDir() {
		return nil, syscall.ENOTDIR
	}
	return n.st.lookup(ctx, n.EmbeddedInode(), n.e, name, out)
}

func (n *pxarNode) OpendirHandle(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if !n.e.IsDir() {
		return nil, 0, syscall.ENOTDIR
	}
	return n.st.openDir(n.EmbeddedInode(), n.e)
}

// fileHandle is an open regular file of an archive: its byte range
// [base, base+size) in the metadata or payload stream, read through its
// own reader of the store's read engine.
type fileHandle struct {
	r          *store.Reader
	base, size int64
	drop       *dropBehind
}

// Open finds the file's bytes; archives never change, so the kernel keeps
// their pages (FOPEN_KEEP_CACHE).
func (n *pxarNode) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if writeFlags(flags) {
		return nil, 0, syscall.EROFS
	}
	if n.e.Kind != pxar.KindFile {
		return nil, 0, syscall.EINVAL
	}
	sr, err := n.st.a.Content(n.e) // checks a split archive's payload header
	if err != nil {
		return nil, 0, n.st.errno(err, "open", n.e)
	}
	ra, base, size := sr.Outer()
	a, ok := ra.(*store.Archive)
	if !ok {
		return nil, 0, syscall.EIO
	}
	return &fileHandle{r: a.NewReader(), base: base, size: size, drop: newDropBehind(n.st.m.dropBehind, n.EmbeddedInode())}, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *pxarNode) Read(ctx context.Context, f fusefs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := f.(*fileHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= h.size {
		return fuse.ReadResultData(nil), 0
	}
	if rem := h.size - off; int64(len(dest)) > rem {
		dest = dest[:rem]
	}
	b, err := h.r.ReadParts(ctx, dest, h.base+off)
	if err != nil {
		return nil, n.st.errno(err, "read", n.e)
	}
	h.drop.read(off, int64(b.Len()))
	return &readResult{b}, 0
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the chunks of the file's
// range that are all zeros by their digest.
func (n *pxarNode) Lseek(ctx context.Context, f fusefs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	a, base, size, ok := n.st.content(n.e)
	if !ok {
		return 0, syscall.EINVAL
	}
	return seekData(a, base, size, int64(off), whence)
}

func (n *pxarNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if n.e.Kind != pxar.KindSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(n.e.LinkTarget), 0
}

func (n *pxarNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return getxattr(n.e, attr, dest)
}

func (n *pxarNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return listxattr(n.e, dest)
}

// errno maps an error about entry e.
func (st *archiveState) errno(err error, op string, e *pxar.Entry) syscall.Errno {
	return st.m.toErrno(err, op, snapAttr(st.ref), "file", st.file, "path", e.Path)
}

// fill fills out from the entry's stored metadata.
func (st *archiveState) fill(e *pxar.Entry, out *fuse.Attr) {
	out.Ino = entryIno(st.ino, e.Offset)
	out.Mode = uint32(e.Mode)
	out.Owner = fuse.Owner{Uid: e.UID, Gid: e.GID}
	out.Nlink = 1
	switch e.Kind {
	case pxar.KindFile:
		out.Size = e.Size
		out.Nlink = st.nlink(e)
	case pxar.KindSymlink:
		out.Size = uint64(len(e.LinkTarget))
	case pxar.KindCharDev, pxar.KindBlockDev:
		out.Rdev = uint32(e.Rdev())
	}
	out.Blocks = (out.Size + 511) / 512
	if a, base, size, ok := st.content(e); ok {
		// Holes (all-zero chunks) take no blocks.
		out.Blocks = uint64(a.DataBytes(base, size)+511) / 512
	}
	out.Blksize = 4096
	mt := e.Mtime.Time()
	out.SetTimes(&mt, &mt, &mt)
}

// content returns where regular file e's bytes lie: the archive of the
// stream holding them and the range in it.
func (st *archiveState) content(e *pxar.Entry) (*store.Archive, int64, int64, bool) {
	if e.Kind != pxar.KindFile {
		return nil, 0, 0, false
	}
	ra, base, size, err := st.a.ContentRange(e)
	if err != nil {
		return nil, 0, 0, false
	}
	a, ok := ra.(*store.Archive)
	return a, base, size, ok
}

// child returns the child entry for c (a hardlink resolved to its file).
func (st *archiveState) child(c *pxar.Entry) (child, error) {
	r, err := st.a.Resolve(c)
	if err != nil {
		return child{}, err
	}
	return child{name: c.Name(), mode: uint32(r.Mode) & syscall.S_IFMT, ino: entryIno(st.ino, r.Offset),
		node: &pxarNode{st: st, e: r}}, nil
}

// lookup finds name in directory dir through its goodbye table.
func (st *archiveState) lookup(ctx context.Context, parent *fusefs.Inode, dir *pxar.Entry, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	st.m.archiveOps.Add(1)
	if errno := st.m.dirFailed(st.ino, dir); errno != 0 {
		return nil, errno
	}
	e, err := st.a.LookupChild(dir, name)
	if err != nil {
		errno := st.errno(err, "lookup", dir)
		st.m.noteDirErr(st.ino, dir, err, errno)
		return nil, errno
	}
	c, err := st.child(e)
	if err != nil {
		return nil, st.errno(err, "lookup", e)
	}
	return st.m.addChild(ctx, parent, c, out, st.m.archTTL)
}

// nlink counts the names of regular file e. pxar stores no link counts:
// the first call finds the archive's hardlinks once, from the catalog
// for plain archives and from the metadata stream for split ones
// (store.HardlinkCounts), never reading file data when the snapshot has
// its catalog.
func (st *archiveState) nlink(e *pxar.Entry) uint32 {
	st.linksOnce.Do(func() {
		links, src, err := st.m.s.HardlinkCounts(st.m.ctx, st.ref, st.file, st.a, st.metaA)
		if err != nil {
			st.m.log.Error("counting hardlinks", snapAttr(st.ref), "file", st.file, "source", string(src), "err", err)
		} else if src == store.LinksFromScan {
			st.m.log.Info("hardlinks counted by scanning the whole archive (no catalog)", snapAttr(st.ref), "file", st.file)
		}
		st.links = links
	})
	return 1 + st.links[e.FilenameOffset]
}

// dirHandle streams a directory of an archive in goodbye-table order,
// never holding more than the table's current batch.
type dirHandle struct {
	st     *archiveState
	parent *fusefs.Inode
	dir    *pxar.Entry
	r      *pxar.DirReader
	off    uint64
	last   child // the entry Readdirent returned last, for READDIRPLUS
	lost   error // a child whose name could not be read was skipped
	// For naming lost children from the catalog (lostnames.go): the
	// names listed, how many children were lost unnamed, and the
	// catalog's names still to list (once looked up, named is set).
	named     map[string]bool
	lostCount int64
	extra     []string
	extraDone bool
	given     int64
}

var (
	_ = (fusefs.FileReaddirenter)((*dirHandle)(nil))
	_ = (fusefs.FileSeekdirer)((*dirHandle)(nil))
	_ = (fusefs.FileLookuper)((*dirHandle)(nil))
)

func (st *archiveState) openDir(parent *fusefs.Inode, dir *pxar.Entry) (fusefs.FileHandle, uint32, syscall.Errno) {
	st.m.archiveOps.Add(1)
	if errno := st.m.dirFailed(st.ino, dir); errno != 0 {
		return nil, 0, errno
	}
	r, err := st.a.OpenDir(dir)
	if err != nil {
		errno := st.errno(err, "opendir", dir)
		st.m.noteDirErr(st.ino, dir, err, errno)
		return nil, 0, errno
	}
	return &dirHandle{st: st, parent: parent, dir: dir, r: r}, fuse.FOPEN_KEEP_CACHE, 0
}

// Readdirent returns the next child. A damaged child does not end the
// listing (the goodbye table locates every child): one whose name could
// be read is listed without a type, and looking it up gives EIO; one
// whose name is lost is skipped, then named from the catalog after the
// intact children when the snapshot has one (lostnames.go). If some lost
// children stay unnamed, the listing ends with EIO, so that ls shows the
// rest and still reports the damage.
func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if h.named == nil {
		h.named = make(map[string]bool)
	}
	for {
		e, err := h.r.Next()
		if errors.Is(err, io.EOF) {
			if h.lost == nil {
				return nil, 0
			}
			if !h.extraDone {
				h.extraDone = true
				h.extra = h.st.lostNames(h.dir, h.named)
			}
			if len(h.extra) > 0 {
				name := h.extra[0]
				h.extra = h.extra[1:]
				h.given++
				h.off++
				h.last = child{}
				return &fuse.DirEntry{Name: name, Ino: childIno(entryIno(h.st.ino, h.dir.Offset), name), Off: h.off}, 0
			}
			if h.given < h.lostCount {
				return nil, h.st.errno(h.lost, "readdir", h.dir)
			}
			return nil, 0
		}
		var ce *pxar.ChildError
		if errors.As(err, &ce) {
			if ce.Name == "" {
				h.lost = err
				h.lostCount += max(ce.Items, 1)
				h.st.errno(err, "readdir", h.dir) // logs it
				continue
			}
			h.named[ce.Name] = true
			h.off++
			h.last = child{}
			return &fuse.DirEntry{Name: ce.Name, Ino: entryIno(h.st.ino, ce.FilenameOffset), Off: h.off}, 0
		}
		if err != nil {
			return nil, h.st.errno(err, "readdir", h.dir)
		}
		c, err := h.st.child(e)
		if err != nil {
			// A hardlink whose target is unreadable: listed, EIO on use.
			h.st.errno(err, "readdir", e)
			h.named[e.Name()] = true
			h.off++
			h.last = child{}
			return &fuse.DirEntry{Name: e.Name(), Ino: entryIno(h.st.ino, e.Offset), Off: h.off}, 0
		}
		h.named[c.name] = true
		h.off++
		h.last = c
		return &fuse.DirEntry{Name: c.name, Mode: c.mode, Ino: c.ino, Off: h.off}, 0
	}
}

// Seekdir restarts the listing and skips to off.
func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	r, err := h.st.a.OpenDir(h.dir)
	if err != nil {
		return h.st.errno(err, "seekdir", h.dir)
	}
	h.r, h.off, h.last, h.lost = r, 0, child{}, nil
	h.named, h.lostCount, h.extra, h.extraDone, h.given = nil, 0, nil, false, 0
	for h.off < off {
		e, errno := h.Readdirent(ctx)
		if errno != 0 {
			return errno
		}
		if e == nil {
			break // past the end: the next read lists nothing
		}
	}
	return 0
}

func (h *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if h.last.node != nil && h.last.name == name {
		return h.st.m.addChild(ctx, h.parent, h.last, out, h.st.m.archTTL)
	}
	return h.st.lookup(ctx, h.parent, h.dir, name, out)
}

// getxattr serves one extended attribute of e.
func getxattr(e *pxar.Entry, attr string, dest []byte) (uint32, syscall.Errno) {
	for _, x := range e.AllXattrs() {
		if x.Name != attr {
			continue
		}
		if len(dest) == 0 {
			return uint32(len(x.Value)), 0
		}
		if len(dest) < len(x.Value) {
			return uint32(len(x.Value)), syscall.ERANGE
		}
		return uint32(copy(dest, x.Value)), 0
	}
	return 0, syscall.ENODATA
}

// listxattr serves the names of e's extended attributes.
func listxattr(e *pxar.Entry, dest []byte) (uint32, syscall.Errno) {
	var b []byte
	for _, x := range e.AllXattrs() {
		b = append(append(b, x.Name...), 0)
	}
	if len(dest) == 0 {
		return uint32(len(b)), 0
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}
