package fs

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/pbsfs/pbsfs/store"
)

// manifestName is the manifest as the mount shows it.
const manifestName = "index.json"

// refusalTTL is how long a refused removal keeps the refusing process out
// of the snapshot's archive directories (see doc.go).
const refusalTTL = 30 * time.Second

// snapshotNode is one snapshot, MNT/…/<type>/<id>/<time>. It lists
// index.json first, then client.log and the other blobs, then images and
// other streams, then pxar archives as directories: the order is what
// makes rm -r cheap (see doc.go).
type snapshotNode struct {
	roNode
	m   *mount
	ref store.SnapshotRef

	mu        sync.Mutex
	ents      []child   // templates of the archives, computed once: they never change
	removed   bool      // forgotten through this mount
	removedAt time.Time // when
	ghosts    map[string]bool
	refused   map[uint32]refusal // by caller pid
}

// refusal records a removal refused to a process.
type refusal struct {
	errno syscall.Errno
	at    time.Time
}

var (
	_ = (fusefs.NodeLookuper)((*snapshotNode)(nil))
	_ = (fusefs.NodeOpendirHandler)((*snapshotNode)(nil))
	_ = (fusefs.NodeGetattrer)((*snapshotNode)(nil))
	_ = (fusefs.NodeRmdirer)((*snapshotNode)(nil))
	_ = (fusefs.NodeUnlinker)((*snapshotNode)(nil))
	_ = (fusefs.NodeOnForgetter)((*snapshotNode)(nil))
)

func (n *snapshotNode) fill(ctx context.Context, out *fuse.Attr) syscall.Errno {
	n.m.dirAttr(out, n.m.hierPerm(n.ref.Dir(), true), n.ref.Time)
	return 0
}

func (n *snapshotNode) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(n.m.hierTTL)
	return n.fill(ctx, &out.Attr)
}

// ghostTTL is how long a snapshot forgotten through the mount can still be
// looked up by name, so that the rm -r that removed it can finish.
const ghostTTL = 2 * time.Minute

// recentlyRemoved reports whether the snapshot was forgotten through the
// mount less than ghostTTL ago.
func (n *snapshotNode) recentlyRemoved() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.removed && time.Since(n.removedAt) < ghostTTL
}

// isRemoved reports whether the snapshot was forgotten through the mount.
func (n *snapshotNode) isRemoved() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.removed
}

func (n *snapshotNode) list(ctx context.Context) ([]child, syscall.Errno) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ents == nil && !n.removed {
		ents, err := n.entries()
		if err != nil {
			return nil, n.m.toErrno(err, "list snapshot", snapAttr(n.ref))
		}
		n.ents = ents
	}
	// Fresh nodes each time: go-fuse needs a new embedder per inode,
	// and the templates share what is expensive (decoded blobs, open
	// archives).
	out := make([]child, 0, len(n.ents))
	for _, c := range n.ents {
		if n.removed && !n.ghosts[c.name] {
			continue
		}
		c.node = c.node.(cloner).clone()
		out = append(out, c)
	}
	return out, 0
}

// cloner is a node made from a template in a snapshot listing.
type cloner interface{ clone() attrNode }

// OnForget releases the collector pins of the snapshot's open archives
// when the kernel drops the snapshot (and so everything below it).
func (n *snapshotNode) OnForget() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.ents {
		if d, ok := c.node.(*archiveDir); ok && d.opened != nil {
			d.opened.release()
		}
	}
}

// entries builds the listing from the manifest and the files present.
func (n *snapshotNode) entries() ([]child, error) {
	si, err := n.m.s.Snapshot(n.ref)
	if err != nil {
		return nil, err
	}
	man, err := n.m.manifest(n.ref)
	if err != nil {
		return nil, err
	}
	ino := n.StableAttr().Ino
	mk := func(name string, mode uint32, node attrNode) child {
		return child{name: name, mode: mode, ino: childIno(ino, name), node: node}
	}
	out := []child{mk(manifestName, syscall.S_IFREG, &blobFile{m: n.m, snap: n, cache: &blobCache{}})}
	if si.HasFile(store.ClientLogName) {
		out = append(out, mk(strings.TrimSuffix(store.ClientLogName, ".blob"), syscall.S_IFREG,
			&blobFile{m: n.m, snap: n, file: store.ClientLogName, cache: &blobCache{}}))
	}
	var images, dirs []child
	files := append([]store.FileInfo(nil), man.Files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Filename < files[j].Filename })
	for _, f := range files {
		name := f.Filename
		// An archive is locked when it cannot be read: encrypted without
		// the key the manifest names, or the signed manifest does not
		// verify with that key. Locked archives list, and opening them
		// gives the reason (EACCES for a missing key).
		dec, lockErr := n.m.s.Decoder(man, name)
		if lockErr != nil {
			lockErr = fmt.Errorf("%s/%s: %w", n.ref, name, lockErr)
		}
		enc := lockErr != nil
		if !si.HasFile(name) {
			n.m.log.Warn("archive listed in the manifest is missing; hidden", snapAttr(n.ref), "file", name)
			continue
		}
		switch {
		case name == store.CatalogName || name == store.ManifestName || name == store.ClientLogName:
			// The catalog is internal; the others are listed above.
		case store.KindOf(name) == store.KindBlob:
			if enc && errors.Is(lockErr, store.ErrEncrypted) {
				// Only an encrypted blob needs the key (by its magic).
				if e, err := n.m.s.BlobEncrypted(n.ref, name); err == nil && !e {
					enc, lockErr = false, nil
				}
			}
			out = append(out, mk(strings.TrimSuffix(name, ".blob"), syscall.S_IFREG,
				&blobFile{m: n.m, snap: n, file: name, encrypted: enc, lockErr: lockErr, encSize: f.Size, cache: &blobCache{}}))
		case strings.HasSuffix(name, ".ppxar.didx"):
			// The payload half of a split archive; its .mpxar lists it.
		case strings.HasSuffix(name, ".pxar.didx"), strings.HasSuffix(name, ".mpxar.didx"):
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, ".didx"), ".pxar"), ".mpxar")
			meta, payload, err := store.PxarFiles(si, base)
			if err != nil {
				n.m.log.Warn("pxar archive incomplete; hidden", snapAttr(n.ref), "file", name, "err", err)
				continue
			}
			d := &archiveDir{m: n.m, snap: n, meta: meta, payload: payload, encrypted: enc, lockErr: lockErr, dec: dec, ino: childIno(ino, base+".pxar"), opened: &archiveOpen{}}
			if !enc {
				if d.metaIdx, err = n.m.s.OpenIndex(n.ref, meta); err == nil && payload != "" {
					d.payloadIdx, err = n.m.s.OpenIndex(n.ref, payload)
				}
				if err != nil {
					n.m.log.Warn("bad index; archive hidden", snapAttr(n.ref), "file", name, "err", err)
					continue
				}
			}
			dirs = append(dirs, mk(base+".pxar", syscall.S_IFDIR, d))
		case store.KindOf(name) == store.KindFixed, store.KindOf(name) == store.KindDynamic:
			img := &imageFile{m: n.m, snap: n, file: name, encrypted: enc, lockErr: lockErr, dec: dec, size: f.Size, arch: &sharedArchive{}}
			if !enc {
				idx, err := n.m.s.OpenIndex(n.ref, name)
				if err != nil {
					n.m.log.Warn("bad index; archive hidden", snapAttr(n.ref), "file", name, "err", err)
					continue
				}
				img.idx, img.size = idx, idx.Size()
			}
			ext := path.Ext(name)
			images = append(images, mk(strings.TrimSuffix(name, ext), syscall.S_IFREG, img))
		}
	}
	out = append(out, images...)
	return append(out, dirs...), nil
}

func (n *snapshotNode) OpendirHandle(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	return n.m.openList(ctx, n.EmbeddedInode(), n)
}

func (n *snapshotNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return n.m.findChild(ctx, n.EmbeddedInode(), n, name, out)
}

// Unlink of index.json forgets the whole snapshot: without its manifest a
// snapshot is not one. Other names are refused while the snapshot exists,
// and succeed without doing anything once it was forgotten.
func (n *snapshotNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if errno, ok := n.removedName(ctx, name); ok {
		return errno
	}
	if name == manifestName {
		return n.forget(ctx, false)
	}
	return syscall.EPERM
}

// Rmdir of an archive directory succeeds once the snapshot was forgotten.
func (n *snapshotNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	if errno, ok := n.removedName(ctx, name); ok {
		return errno
	}
	return syscall.EPERM
}

// removedName answers removals of name once the snapshot is gone or was
// refused to the caller; ok is false when the caller should go on.
func (n *snapshotNode) removedName(ctx context.Context, name string) (syscall.Errno, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.removed {
		if n.ghosts[name] {
			delete(n.ghosts, name)
			return 0, true
		}
		return syscall.ENOENT, true
	}
	if r, ok := n.refused[callerPID(ctx)]; ok && time.Since(r.at) < refusalTTL {
		return r.errno, true
	}
	return 0, false
}

// refusedTo returns the errno of a recent refused removal by the caller.
func (n *snapshotNode) refusedTo(ctx context.Context) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r, ok := n.refused[callerPID(ctx)]; ok && time.Since(r.at) < refusalTTL {
		return r.errno
	}
	return 0
}

// forget removes the snapshot from the store as PBS's forget does. An
// already forgotten snapshot is a success when known is set (the kernel
// still had its directory).
func (n *snapshotNode) forget(ctx context.Context, known bool) (errno syscall.Errno) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.removed {
		return 0
	}
	if n.m.readOnly {
		n.refuseLocked(ctx, syscall.EROFS)
		return syscall.EROFS
	}
	if errno := n.m.mayRemove(ctx, n.ref.Dir()); errno != 0 {
		n.m.log.Warn("snapshot removal refused: no permission on disk", snapAttr(n.ref), "uid", callerUID(ctx))
		n.refuseLocked(ctx, errno)
		if n.m.metrics != nil {
			n.m.metrics.Removal(errno)
		}
		return errno
	}
	if n.m.allowOther {
		g := n.ref.Group.Dir()
		n.m.keepPerms(n.ref.Dir())
		n.m.keep([]string{g, path.Dir(g)}, false) // the group goes with its last snapshot
	}
	err := n.m.s.RemoveSnapshot(ctx, n.ref, n.m.removeHook)
	n.m.dropManifest(n.ref)
	if errors.Is(err, store.ErrNotFound) && known {
		err = nil
	}
	if n.m.metrics != nil {
		defer func() { n.m.metrics.Removal(errno) }()
	}
	if err != nil {
		errno = n.m.toErrno(err, "remove snapshot", snapAttr(n.ref))
		if errno == syscall.EPERM || errno == syscall.EBUSY {
			n.m.log.Warn("snapshot not removed", snapAttr(n.ref), "err", err)
			n.refuseLocked(ctx, errno)
		}
		return errno
	}
	n.markRemovedLocked()
	n.m.removedFrom(n.ref.Group)
	return 0
}

// refuseLocked records a removal refused to the caller: for refusalTTL
// its other removals in the snapshot get errno at once, and the archive
// directories refuse to open, so rm -r does not walk them.
func (n *snapshotNode) refuseLocked(ctx context.Context, errno syscall.Errno) {
	if n.refused == nil {
		n.refused = make(map[uint32]refusal)
	}
	n.refused[callerPID(ctx)] = refusal{errno, time.Now()}
}

// removedFrom records that a removal through the mount just took something
// out of group g (perhaps g itself, with its last snapshot).
func (m *mount) removedFrom(g store.GroupRef) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.removedGroups.put(g, struct{}{}, time.Now())
}

// groupGhost reports whether a removal through the mount touched group g
// less than ghostTTL ago. rm -r of a group, or of its last snapshot, ends
// with the rmdir of a path whose directory the removal already took away
// (PBS 2025+ removes a group with its last snapshot); when the kernel's
// entry expired meanwhile it looks the group up again, and that lookup must
// not fail (issue 15, item 7).
func (m *mount) groupGhost(g store.GroupRef) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.removedGroups.get(g, time.Now())
	return ok
}

// typeGhost is groupGhost for a type directory of namespace ns, which the
// mount shows only while it has a group: the removal of the type's last
// group takes it away too.
func (m *mount) typeGhost(ns store.Namespace, typ string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.removedGroups.any(time.Now(), func(g store.GroupRef) bool {
		return g.NS == ns && g.Type == typ
	})
}

func (n *snapshotNode) markRemoved() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.markRemovedLocked()
}

func (n *snapshotNode) markRemovedLocked() {
	if n.removed {
		return
	}
	n.removed = true
	n.removedAt = time.Now()
	n.ghosts = make(map[string]bool)
	for _, c := range n.ents {
		if c.name != manifestName {
			n.ghosts[c.name] = true
		}
	}
}

// removeHook is the store.RemoveHook of every removal through the mount:
// it tells the observer, then logs.
func (m *mount) removeHook(ctx context.Context, ref store.SnapshotRef) error {
	if m.obs != nil {
		if err := m.obs.WillRemove(ctx, ref); err != nil {
			return fmt.Errorf("removal observer: %w", err)
		}
	}
	m.log.Info("removing snapshot", snapAttr(ref))
	return nil
}

// manifestEntry caches a parsed manifest, or why it does not parse, for
// one version of the manifest file.
type manifestEntry struct {
	mtime time.Time
	size  int64
	man   *store.Manifest
	err   error
}

// manifest returns the parsed manifest of ref, reading it only when the
// file changed since the last call.
func (m *mount) manifest(ref store.SnapshotRef) (*store.Manifest, error) {
	key := ref.Dir()
	fi, err := os.Stat(m.s.Path(path.Join(key, store.ManifestName)))
	if errors.Is(err, iofs.ErrNotExist) {
		return nil, fmt.Errorf("snapshot %s: no manifest: %w", ref, store.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	e, ok := m.manifests[key]
	m.mu.Unlock()
	if ok && e.mtime.Equal(fi.ModTime()) && e.size == fi.Size() {
		return e.man, e.err
	}
	man, err := m.s.LoadManifest(ref)
	if err != nil {
		m.log.Error("bad manifest; snapshot hidden", snapAttr(ref), "err", err)
		err = fmt.Errorf("snapshot %s: %w", ref, err)
	}
	m.mu.Lock()
	m.manifests[key] = manifestEntry{mtime: fi.ModTime(), size: fi.Size(), man: man, err: err}
	m.mu.Unlock()
	return man, err
}

func (m *mount) dropManifest(ref store.SnapshotRef) {
	m.mu.Lock()
	delete(m.manifests, ref.Dir())
	m.mu.Unlock()
}
