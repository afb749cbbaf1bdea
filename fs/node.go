package fs

import (
	"context"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// roNode refuses every write operation with EROFS. Every node embeds it:
// go-fuse lets Unlink and Rmdir succeed silently on nodes that do not
// implement them, so each node must say no. Nodes where removal means
// something (snapshots, groups) override Unlink and Rmdir.
type roNode struct{ fusefs.Inode }

var (
	_ = (fusefs.NodeSetattrer)((*roNode)(nil))
	_ = (fusefs.NodeMkdirer)((*roNode)(nil))
	_ = (fusefs.NodeMknoder)((*roNode)(nil))
	_ = (fusefs.NodeCreater)((*roNode)(nil))
	_ = (fusefs.NodeSymlinker)((*roNode)(nil))
	_ = (fusefs.NodeLinker)((*roNode)(nil))
	_ = (fusefs.NodeRenamer)((*roNode)(nil))
	_ = (fusefs.NodeUnlinker)((*roNode)(nil))
	_ = (fusefs.NodeRmdirer)((*roNode)(nil))
	_ = (fusefs.NodeWriter)((*roNode)(nil))
	_ = (fusefs.NodeSetxattrer)((*roNode)(nil))
	_ = (fusefs.NodeRemovexattrer)((*roNode)(nil))
)

func (*roNode) Setattr(context.Context, fusefs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}
func (*roNode) Mkdir(context.Context, string, uint32, *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (*roNode) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (*roNode) Create(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}
func (*roNode) Symlink(context.Context, string, string, *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (*roNode) Link(context.Context, fusefs.InodeEmbedder, string, *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (*roNode) Rename(context.Context, string, fusefs.InodeEmbedder, string, uint32) syscall.Errno {
	return syscall.EROFS
}
func (*roNode) Unlink(context.Context, string) syscall.Errno { return syscall.EROFS }
func (*roNode) Rmdir(context.Context, string) syscall.Errno  { return syscall.EROFS }
func (*roNode) Write(context.Context, fusefs.FileHandle, []byte, int64) (uint32, syscall.Errno) {
	return 0, syscall.EROFS
}
func (*roNode) Setxattr(context.Context, string, []byte, uint32) syscall.Errno { return syscall.EROFS }
func (*roNode) Removexattr(context.Context, string) syscall.Errno              { return syscall.EROFS }

var _ = (fusefs.NodeStatfser)((*roNode)(nil))

// Statfs reports the sizes of the file system holding the datastore
// (what df shows for the mount) and PBS's 255-byte name limit.
func (n *roNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	root, ok := n.Root().Operations().(*nsNode)
	if !ok {
		return syscall.ENOSYS
	}
	return root.m.statfs(out)
}

// writeFlags reports whether open flags ask for writing.
func writeFlags(flags uint32) bool {
	return flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&(syscall.O_TRUNC|syscall.O_APPEND|syscall.O_CREAT) != 0
}

// attrNode is a node that can describe itself.
type attrNode interface {
	fusefs.InodeEmbedder
	fill(ctx context.Context, out *fuse.Attr) syscall.Errno
}

// child is one entry of a directory listing, with the node that a
// lookup of it returns.
type child struct {
	name string
	mode uint32 // file type bits (S_IFDIR, S_IFREG, S_IFLNK)
	ino  uint64
	node attrNode
}

// hierDir is a directory of the datastore hierarchy: its listing is
// computed by list and its entries are cached for the hierarchy timeout.
type hierDir interface {
	list(ctx context.Context) ([]child, syscall.Errno)
}

// addChild returns the inode of c below parent, filling out. When the
// kernel already knows the inode number, go-fuse returns the existing
// inode (and its state) instead of c.node.
func (m *mount) addChild(ctx context.Context, parent *fusefs.Inode, c child, out *fuse.EntryOut, ttl time.Duration) (*fusefs.Inode, syscall.Errno) {
	if errno := c.node.fill(ctx, &out.Attr); errno != 0 {
		return nil, errno
	}
	out.Attr.Ino = c.ino
	out.SetEntryTimeout(ttl)
	out.SetAttrTimeout(ttl)
	return parent.NewInode(ctx, c.node, fusefs.StableAttr{Mode: c.mode, Ino: c.ino}), 0
}

// dirAttr fills out for a directory of the hierarchy with the owner and
// mode p it takes from disk (gate.go).
func (m *mount) dirAttr(out *fuse.Attr, p perm, mtime time.Time) {
	out.Mode = syscall.S_IFDIR | p.mode
	out.Nlink = 2
	m.ownAttr(out, p, mtime)
}

// fileAttr fills out for a file of the hierarchy (archives of a
// snapshot) with the owner and mode p it takes from disk: the files
// cannot be written, but where the index or blob file on disk is
// writable, rm -r in a terminal does not ask about each.
func (m *mount) fileAttr(out *fuse.Attr, p perm, size uint64, mtime time.Time) {
	out.Mode = syscall.S_IFREG | p.mode
	out.Nlink = 1
	out.Size = size
	out.Blocks = (size + 511) / 512
	m.ownAttr(out, p, mtime)
}

func (m *mount) ownAttr(out *fuse.Attr, p perm, mtime time.Time) {
	out.Owner = fuse.Owner{Uid: p.uid, Gid: p.gid}
	out.Blksize = 4096
	out.SetTimes(&mtime, &mtime, &mtime)
}

// listHandle is an open directory of the hierarchy: the listing taken at
// opendir, served in order. It answers READDIRPLUS lookups from the
// listing so that listing a group of 1000 snapshots reads nothing twice.
type listHandle struct {
	m      *mount
	parent *fusefs.Inode
	ents   []child
	next   int
	ttl    time.Duration
}

var (
	_ = (fusefs.FileReaddirenter)((*listHandle)(nil))
	_ = (fusefs.FileSeekdirer)((*listHandle)(nil))
	_ = (fusefs.FileLookuper)((*listHandle)(nil))
)

func (m *mount) openList(ctx context.Context, parent *fusefs.Inode, d hierDir) (fusefs.FileHandle, uint32, syscall.Errno) {
	ents, errno := d.list(ctx)
	if errno != 0 {
		return nil, 0, errno
	}
	return &listHandle{m: m, parent: parent, ents: ents, ttl: m.hierTTL}, 0, 0
}

func (h *listHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if h.next >= len(h.ents) {
		return nil, 0
	}
	c := h.ents[h.next]
	h.next++
	return &fuse.DirEntry{Name: c.name, Mode: c.mode, Ino: c.ino, Off: uint64(h.next)}, 0
}

func (h *listHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off > uint64(len(h.ents)) {
		return syscall.EINVAL
	}
	h.next = int(off)
	return 0
}

func (h *listHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	for i := h.next - 1; i >= 0 && i < len(h.ents); i-- {
		if h.ents[i].name == name {
			return h.m.addChild(ctx, h.parent, h.ents[i], out, h.ttl)
		}
	}
	if l, ok := h.parent.Operations().(fusefs.NodeLookuper); ok {
		return l.Lookup(ctx, name, out)
	}
	return nil, syscall.ENOENT
}

// findChild looks name up in a listing.
func (m *mount) findChild(ctx context.Context, parent *fusefs.Inode, d hierDir, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ents, errno := d.list(ctx)
	if errno != 0 {
		return nil, errno
	}
	for _, c := range ents {
		if c.name == name {
			return m.addChild(ctx, parent, c, out, m.hierTTL)
		}
	}
	return nil, syscall.ENOENT
}

// callerPID returns the process id of the FUSE request's caller, 0 when
// unknown.
func callerPID(ctx context.Context) uint32 {
	if c, ok := ctx.(*fuse.Context); ok {
		return c.Caller.Pid
	}
	return 0
}

// callerUID returns the user id of the FUSE request's caller.
func callerUID(ctx context.Context) uint32 {
	if c, ok := ctx.(*fuse.Context); ok {
		return c.Caller.Uid
	}
	return 0
}
