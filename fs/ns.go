package fs

import (
	"context"
	"path"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/pbsfs/pbsfs/store"
)

// nsNode is a namespace directory: the mount's root for the root
// namespace, MNT/ns/<name>/… below it. It lists one directory per backup
// type that has groups (vm, ct, host) and "ns" when child namespaces exist.
type nsNode struct {
	roNode
	m  *mount
	ns store.Namespace
}

var (
	_ = (fusefs.NodeLookuper)((*nsNode)(nil))
	_ = (fusefs.NodeOpendirHandler)((*nsNode)(nil))
	_ = (fusefs.NodeGetattrer)((*nsNode)(nil))
	_ = (fusefs.NodeRmdirer)((*nsNode)(nil))
)

// nsListName is the directory holding child namespaces, as on disk.
const nsListName = "ns"

func (n *nsNode) ino() uint64 { return n.StableAttr().Ino }

func (n *nsNode) fill(ctx context.Context, out *fuse.Attr) syscall.Errno {
	n.m.dirAttr(out, n.m.hierPerm(n.ns.Dir(), true), n.m.started)
	return 0
}

func (n *nsNode) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(n.m.hierTTL)
	return n.fill(ctx, &out.Attr)
}

func (n *nsNode) list(ctx context.Context) ([]child, syscall.Errno) {
	groups, _, err := n.m.s.Groups(n.ns)
	if err != nil {
		return nil, n.m.toErrno(err, "list namespace", "namespace", string(n.ns))
	}
	var out []child
	for _, g := range groups {
		if len(out) > 0 && out[len(out)-1].name == g.Type {
			continue
		}
		out = append(out, child{name: g.Type, mode: syscall.S_IFDIR, ino: childIno(n.ino(), g.Type),
			node: &typeNode{m: n.m, ns: n.ns, typ: g.Type}})
	}
	if n.ns.Depth() < store.MaxNamespaceDepth {
		nss, _, err := n.m.s.Namespaces(ctx, n.ns, 1)
		if err != nil {
			return nil, n.m.toErrno(err, "list namespaces", "namespace", string(n.ns))
		}
		if len(nss) > 1 {
			out = append(out, child{name: nsListName, mode: syscall.S_IFDIR, ino: childIno(n.ino(), nsListName),
				node: &nsListNode{m: n.m, parent: n.ns}})
		}
	}
	return out, 0
}

func (n *nsNode) OpendirHandle(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	return n.m.openList(ctx, n.EmbeddedInode(), n)
}

func (n *nsNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	in, errno := n.m.findChild(ctx, n.EmbeddedInode(), n, name, out)
	if errno == syscall.ENOENT {
		// A type directory whose last group a removal through the mount
		// took away a moment ago stays reachable while the kernel has its
		// node, for the rm -r still under way (see groupGhost).
		if c := n.GetChild(name); c != nil {
			if tn, ok := c.Operations().(*typeNode); ok && n.m.typeGhost(n.ns, tn.typ) {
				tc := child{name: name, mode: syscall.S_IFDIR, ino: childIno(n.ino(), name),
					node: &typeNode{m: n.m, ns: n.ns, typ: tn.typ}}
				return n.m.addChild(ctx, n.EmbeddedInode(), tc, out, 0)
			}
		}
	}
	return in, errno
}

// Rmdir of a type directory succeeds once it has no groups left (rm -r
// removed them); the directory is virtual. Namespaces are not removed
// through the mount.
func (n *nsNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	if name == nsListName {
		return syscall.EPERM
	}
	if store.ValidBackupType(name) != nil {
		return syscall.ENOENT
	}
	groups, _, err := n.m.s.Groups(n.ns)
	if err != nil {
		return n.m.toErrno(err, "rmdir", "namespace", string(n.ns))
	}
	for _, g := range groups {
		if g.Type == name {
			return syscall.ENOTEMPTY
		}
	}
	if n.GetChild(name) != nil {
		return 0
	}
	return syscall.ENOENT
}

// nsListNode is the "ns" directory of a namespace: one nsNode per child
// namespace.
type nsListNode struct {
	roNode
	m      *mount
	parent store.Namespace
}

var (
	_ = (fusefs.NodeLookuper)((*nsListNode)(nil))
	_ = (fusefs.NodeOpendirHandler)((*nsListNode)(nil))
	_ = (fusefs.NodeGetattrer)((*nsListNode)(nil))
)

func (n *nsListNode) fill(ctx context.Context, out *fuse.Attr) syscall.Errno {
	n.m.dirAttr(out, n.m.hierPerm(path.Join(n.parent.Dir(), nsListName), true), n.m.started)
	return 0
}

func (n *nsListNode) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(n.m.hierTTL)
	return n.fill(ctx, &out.Attr)
}

func (n *nsListNode) list(ctx context.Context) ([]child, syscall.Errno) {
	nss, _, err := n.m.s.Namespaces(ctx, n.parent, 1)
	if err != nil {
		return nil, n.m.toErrno(err, "list namespaces", "namespace", string(n.parent))
	}
	var out []child
	for _, ns := range nss {
		if ns == n.parent {
			continue
		}
		c := ns.Components()
		name := c[len(c)-1]
		out = append(out, child{name: name, mode: syscall.S_IFDIR, ino: childIno(n.StableAttr().Ino, name),
			node: &nsNode{m: n.m, ns: ns}})
	}
	return out, 0
}

func (n *nsListNode) OpendirHandle(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	return n.m.openList(ctx, n.EmbeddedInode(), n)
}

func (n *nsListNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return n.m.findChild(ctx, n.EmbeddedInode(), n, name, out)
}

// Rmdir refuses: namespaces are not removed through the mount.
func (n *nsListNode) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }
