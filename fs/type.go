package fs

import (
	"context"
	"errors"
	"os"
	"path"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/pbsfs/pbsfs/store"
)

// typeNode is MNT/…/<type>: one directory per backup group of that type.
type typeNode struct {
	roNode
	m   *mount
	ns  store.Namespace
	typ string
}

var (
	_ = (fusefs.NodeLookuper)((*typeNode)(nil))
	_ = (fusefs.NodeOpendirHandler)((*typeNode)(nil))
	_ = (fusefs.NodeGetattrer)((*typeNode)(nil))
	_ = (fusefs.NodeRmdirer)((*typeNode)(nil))
)

func (n *typeNode) fill(ctx context.Context, out *fuse.Attr) syscall.Errno {
	n.m.dirAttr(out, n.m.hierPerm(path.Join(n.ns.Dir(), n.typ), true), n.m.started)
	return 0
}

func (n *typeNode) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(n.m.hierTTL)
	return n.fill(ctx, &out.Attr)
}

func (n *typeNode) group(id string) store.GroupRef {
	return store.GroupRef{NS: n.ns, Type: n.typ, ID: id}
}

func (n *typeNode) list(ctx context.Context) ([]child, syscall.Errno) {
	groups, _, err := n.m.s.Groups(n.ns)
	if err != nil {
		return nil, n.m.toErrno(err, "list groups", "namespace", string(n.ns))
	}
	var out []child
	for _, g := range groups {
		if g.Type != n.typ {
			continue
		}
		out = append(out, child{name: g.ID, mode: syscall.S_IFDIR, ino: childIno(n.StableAttr().Ino, g.ID),
			node: &groupNode{m: n.m, g: g}})
	}
	return out, 0
}

func (n *typeNode) OpendirHandle(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	return n.m.openList(ctx, n.EmbeddedInode(), n)
}

func (n *typeNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	g := n.group(name)
	if g.Validate() != nil {
		return nil, syscall.ENOENT
	}
	c := child{name: name, mode: syscall.S_IFDIR, ino: childIno(n.StableAttr().Ino, name), node: &groupNode{m: n.m, g: g}}
	if fi, err := os.Stat(n.m.s.Path(g.Dir())); err != nil || !fi.IsDir() {
		// A group that a removal through the mount took away a moment
		// ago stays reachable by name while the kernel has its node, so
		// that the rm -r removing it can finish (see groupGhost).
		if n.GetChild(name) != nil && n.m.groupGhost(g) {
			return n.m.addChild(ctx, n.EmbeddedInode(), c, out, 0)
		}
		return nil, syscall.ENOENT
	}
	return n.m.addChild(ctx, n.EmbeddedInode(), c, out, n.m.hierTTL)
}

// Rmdir removes a whole group as PBS does (every unprotected snapshot,
// then the group). A group already gone (rm -r removed its last
// snapshot, which took the group with it) is a success.
func (n *typeNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	g := n.group(name)
	if g.Validate() != nil {
		return syscall.ENOENT
	}
	if n.m.readOnly {
		return syscall.EROFS
	}
	if refs, err := n.m.snapshotRefs(g); err == nil {
		dirs := make([]string, len(refs))
		for i, r := range refs {
			dirs[i] = r.Dir()
		}
		if errno := n.m.mayRemove(ctx, g.Dir(), dirs...); errno != 0 {
			n.m.log.Warn("group removal refused: no permission on disk", "group", g.String(), "uid", callerUID(ctx))
			return errno
		}
		if n.m.allowOther {
			n.m.keepPerms(append(dirs, g.Dir())...)
		}
	}
	known := n.GetChild(name)
	err := n.m.s.RemoveGroup(ctx, g, n.m.removeHook)
	if errors.Is(err, store.ErrNotFound) && known != nil {
		err = nil
	}
	if known != nil {
		if gn, ok := known.Operations().(*groupNode); ok {
			gn.forgetRemoved()
		}
	}
	if err != nil {
		return n.m.toErrno(err, "remove group", "group", g.String())
	}
	n.m.removedFrom(g)
	n.m.log.Info("removed group", "group", n.ns.Dir()+"/"+g.String())
	return 0
}
