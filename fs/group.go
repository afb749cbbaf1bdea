package fs

import (
	"context"
	"sync"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/pbsfs/pbsfs/store"
)

// groupNode is a backup group, MNT/…/<type>/<id>: its finished snapshots
// by backup time, oldest first, then the "latest" symlink. Snapshots still
// being written are hidden until their manifest lands; a snapshot whose
// manifest does not parse is hidden with a log line.
type groupNode struct {
	roNode
	m *mount
	g store.GroupRef
}

var (
	_ = (fusefs.NodeLookuper)((*groupNode)(nil))
	_ = (fusefs.NodeOpendirHandler)((*groupNode)(nil))
	_ = (fusefs.NodeGetattrer)((*groupNode)(nil))
	_ = (fusefs.NodeRmdirer)((*groupNode)(nil))
	_ = (fusefs.NodeUnlinker)((*groupNode)(nil))
)

// latestName is the symlink to a group's newest finished snapshot.
const latestName = "latest"

func (n *groupNode) fill(ctx context.Context, out *fuse.Attr) syscall.Errno {
	n.m.dirAttr(out, n.m.started)
	return 0
}

func (n *groupNode) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(n.m.hierTTL)
	return n.fill(ctx, &out.Attr)
}

// visible lists the snapshots the mount shows, oldest first. Manifests
// not seen before are checked by a few goroutines, so that the first
// listing of a group of 1000 snapshots stays quick.
func (n *groupNode) visible() ([]store.SnapshotInfo, error) {
	snaps, _, err := n.m.s.Snapshots(n.g)
	if err != nil {
		return nil, err
	}
	show := make([]bool, len(snaps))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(manifestWorkers, len(snaps)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				show[i] = n.m.showSnapshot(snaps[i])
			}
		}()
	}
	for i := range snaps {
		next <- i
	}
	close(next)
	wg.Wait()
	out := snaps[:0]
	for i, si := range snaps {
		if show[i] {
			out = append(out, si)
		}
	}
	return out, nil
}

// manifestWorkers is the number of goroutines checking manifests.
const manifestWorkers = 4

func (n *groupNode) snapChild(si store.SnapshotInfo) child {
	name := si.Ref.TimeString()
	return child{name: name, mode: syscall.S_IFDIR, ino: childIno(n.StableAttr().Ino, name),
		node: &snapshotNode{m: n.m, ref: si.Ref}}
}

func (n *groupNode) latestChild() child {
	return child{name: latestName, mode: syscall.S_IFLNK, ino: childIno(n.StableAttr().Ino, latestName),
		node: &latestLink{m: n.m, g: n.g}}
}

func (n *groupNode) list(ctx context.Context) ([]child, syscall.Errno) {
	snaps, err := n.visible()
	if err != nil {
		return nil, n.m.toErrno(err, "list snapshots", "group", n.g.String())
	}
	out := make([]child, 0, len(snaps)+1)
	for _, si := range snaps {
		if ctx.Err() != nil {
			return nil, syscall.EINTR
		}
		out = append(out, n.snapChild(si))
	}
	if len(snaps) > 0 {
		// Last, so that rm -r of a group has removed every snapshot
		// when it reaches the link (see doc.go).
		out = append(out, n.latestChild())
	}
	return out, 0
}

func (n *groupNode) OpendirHandle(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	return n.m.openList(ctx, n.EmbeddedInode(), n)
}

func (n *groupNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if name == latestName {
		if _, ok := n.m.latest(n.g); !ok {
			return nil, syscall.ENOENT
		}
		return n.m.addChild(ctx, n.EmbeddedInode(), n.latestChild(), out, n.m.hierTTL)
	}
	t, err := store.ParseBackupTime(name)
	if err != nil || store.FormatBackupTime(t) != name {
		return nil, syscall.ENOENT
	}
	si, err := n.m.s.Snapshot(store.SnapshotRef{Group: n.g, Time: t})
	if err != nil {
		return nil, n.m.toErrno(err, "lookup snapshot", "group", n.g.String(), "time", name)
	}
	if !n.m.showSnapshot(si) {
		return nil, syscall.ENOENT
	}
	return n.m.addChild(ctx, n.EmbeddedInode(), n.snapChild(si), out, n.m.hierTTL)
}

// Rmdir forgets snapshot name as PBS's forget does (see doc.go).
func (n *groupNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	t, err := store.ParseBackupTime(name)
	if err != nil {
		return syscall.ENOENT
	}
	if c := n.GetChild(name); c != nil {
		if sn, ok := c.Operations().(*snapshotNode); ok {
			return sn.forget(ctx, true)
		}
	}
	sn := &snapshotNode{m: n.m, ref: store.SnapshotRef{Group: n.g, Time: t}}
	return sn.forget(ctx, false)
}

// Unlink of "latest" succeeds once the group has no snapshot left (rm -r
// of the group got there); before that it is refused.
func (n *groupNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if name != latestName {
		if _, err := store.ParseBackupTime(name); err == nil {
			return syscall.EISDIR
		}
		return syscall.ENOENT
	}
	if _, ok := n.m.latest(n.g); ok {
		return syscall.EPERM
	}
	return 0
}

// latest returns the newest snapshot of g the mount shows.
func (m *mount) latest(g store.GroupRef) (store.SnapshotInfo, bool) {
	snaps, _, err := m.s.Snapshots(g)
	if err != nil {
		return store.SnapshotInfo{}, false
	}
	for i := len(snaps) - 1; i >= 0; i-- {
		if m.showSnapshot(snaps[i]) {
			return snaps[i], true
		}
	}
	return store.SnapshotInfo{}, false
}

// forgetRemoved marks the snapshot nodes of the group whose snapshots are
// gone as removed, after a group removal.
func (n *groupNode) forgetRemoved() {
	for _, c := range n.Children() {
		sn, ok := c.Operations().(*snapshotNode)
		if !ok {
			continue
		}
		if _, err := n.m.s.Snapshot(sn.ref); err != nil {
			sn.markRemoved()
		}
	}
}

// latestLink is a group's "latest" symlink, pointing at the newest
// finished snapshot by its directory name.
type latestLink struct {
	roNode
	m *mount
	g store.GroupRef
}

// latestSize is the length of every target: a snapshot directory name
// such as 2026-11-20T10:00:00Z.
const latestSize = uint64(len("2006-01-02T15:04:05Z"))

var (
	_ = (fusefs.NodeReadlinker)((*latestLink)(nil))
	_ = (fusefs.NodeGetattrer)((*latestLink)(nil))
)

func (n *latestLink) target() (string, syscall.Errno) {
	si, ok := n.m.latest(n.g)
	if !ok {
		return "", syscall.ENOENT
	}
	return si.Ref.TimeString(), 0
}

func (n *latestLink) fill(ctx context.Context, out *fuse.Attr) syscall.Errno {
	// The target changes as backups land; its length does not, so
	// listing a group does not look for the newest snapshot twice.
	out.Mode = syscall.S_IFLNK | 0o777
	out.Nlink = 1
	out.Size = latestSize
	n.m.ownAttr(out, n.m.started)
	return 0
}

func (n *latestLink) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(n.m.hierTTL)
	return n.fill(ctx, &out.Attr)
}

func (n *latestLink) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	t, errno := n.target()
	return []byte(t), errno
}
