package fs

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"sort"
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
	n.m.dirAttr(out, n.m.hierPerm(n.g.Dir(), true), n.m.started)
	return 0
}

func (n *groupNode) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(n.m.hierTTL)
	return n.fill(ctx, &out.Attr)
}

// visible lists the snapshots the mount shows, oldest first: those whose
// manifest parses (a backup in progress has none yet). Only the group
// directory is listed and each manifest looked at, through the mount's
// cache; manifests not seen before are checked by a few goroutines, so
// that the first listing of a group of 1000 snapshots stays quick.
func (n *groupNode) visible() ([]store.SnapshotRef, error) {
	refs, err := n.m.snapshotRefs(n.g)
	if err != nil {
		return nil, err
	}
	show := make([]bool, len(refs))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(manifestWorkers, len(refs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				_, err := n.m.manifest(refs[i])
				show[i] = err == nil
			}
		}()
	}
	for i := range refs {
		next <- i
	}
	close(next)
	wg.Wait()
	out := refs[:0]
	for i, ref := range refs {
		if show[i] {
			out = append(out, ref)
		}
	}
	return out, nil
}

// snapshotRefs lists the snapshot directories of group g by name, oldest
// first, without looking into them.
func (m *mount) snapshotRefs(g store.GroupRef) ([]store.SnapshotRef, error) {
	ents, err := os.ReadDir(m.s.Path(g.Dir()))
	if errors.Is(err, iofs.ErrNotExist) {
		return nil, fmt.Errorf("group %s: %w", g, store.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	var refs []store.SnapshotRef
	for _, e := range ents {
		t, err := store.ParseBackupTime(e.Name())
		if err != nil || !e.IsDir() || store.FormatBackupTime(t) != e.Name() {
			continue
		}
		refs = append(refs, store.SnapshotRef{Group: g, Time: t})
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].Time.Before(refs[j].Time) })
	return refs, nil
}

// manifestWorkers is the number of goroutines checking manifests.
const manifestWorkers = 4

func (n *groupNode) snapChild(ref store.SnapshotRef) child {
	name := ref.TimeString()
	return child{name: name, mode: syscall.S_IFDIR, ino: childIno(n.StableAttr().Ino, name),
		node: &snapshotNode{m: n.m, ref: ref}}
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
	for _, ref := range snaps {
		out = append(out, n.snapChild(ref))
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
			// rm -r of the group listed the link and unlinks it after
			// the snapshots (see groupGhost).
			if n.GetChild(name) != nil && n.m.groupGhost(n.g) {
				return n.m.addChild(ctx, n.EmbeddedInode(), n.latestChild(), out, 0)
			}
			return nil, syscall.ENOENT
		}
		return n.m.addChild(ctx, n.EmbeddedInode(), n.latestChild(), out, n.m.hierTTL)
	}
	t, err := store.ParseBackupTime(name)
	if err != nil || store.FormatBackupTime(t) != name {
		return nil, syscall.ENOENT
	}
	ref := store.SnapshotRef{Group: n.g, Time: t}
	if _, err := n.m.manifest(ref); err != nil {
		// A snapshot forgotten through the mount a moment ago stays
		// reachable by name (never listed, never cached) while the
		// kernel still has its node: rm -r is still walking it, and
		// its last step, the rmdir of the snapshot, looks the name up
		// again whenever the entry expired meanwhile (a busy machine, a
		// reader revalidating). Without this the rmdir fails ENOENT
		// although the snapshot was removed (issue 15, item 7).
		if c := n.GetChild(name); c != nil {
			if sn, ok := c.Operations().(*snapshotNode); ok && sn.recentlyRemoved() {
				return n.m.addChild(ctx, n.EmbeddedInode(), n.snapChild(ref), out, 0)
			}
		}
		return nil, syscall.ENOENT // in progress, gone, or hidden for a bad manifest
	}
	return n.m.addChild(ctx, n.EmbeddedInode(), n.snapChild(ref), out, n.m.hierTTL)
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
func (m *mount) latest(g store.GroupRef) (store.SnapshotRef, bool) {
	refs, err := m.snapshotRefs(g)
	if err != nil {
		return store.SnapshotRef{}, false
	}
	for i := len(refs) - 1; i >= 0; i-- {
		if _, err := m.manifest(refs[i]); err == nil {
			return refs[i], true
		}
	}
	return store.SnapshotRef{}, false
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
	ref, ok := n.m.latest(n.g)
	if !ok {
		return "", syscall.ENOENT
	}
	return ref.TimeString(), 0
}

func (n *latestLink) fill(ctx context.Context, out *fuse.Attr) syscall.Errno {
	// The target changes as backups land; its length does not, so
	// listing a group does not look for the newest snapshot twice.
	out.Mode = syscall.S_IFLNK | 0o777
	out.Nlink = 1
	out.Size = latestSize
	n.m.ownAttr(out, n.m.hierPerm(n.g.Dir(), true), n.m.started)
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
