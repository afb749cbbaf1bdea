package fs

import (
	"context"
	"fmt"
	"io"
	"sync"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/pbsfs/pbsfs/store"
	"github.com/pbsfs/pbsfs/store/pxar"
)

// archiveDir is a pxar archive of a snapshot (NAME.pxar.didx, or the
// NAME.mpxar.didx + NAME.ppxar.didx pair) shown as the directory of its
// root. The archive is opened on first use and stays open, pinned for
// the collector, until the kernel forgets the node.
type archiveDir struct {
	roNode
	m                   *mount
	snap                *snapshotNode
	meta, payload       string      // index file names; payload "" for plain archives
	metaIdx, payloadIdx store.Index // parsed at listing; nil if encrypted
	encrypted           bool        // locked: no key, or a bad signature (lockErr says)
	lockErr             error
	dec                 *store.ChunkDecoder
	ino                 uint64 // known before the node is in the tree
	opened              *archiveOpen
}

// archiveOpen is an archive opened once for all the nodes made from one
// snapshot listing; the snapshot node releases its pins when the kernel
// forgets the snapshot.
type archiveOpen struct {
	once sync.Once
	st   *archiveState
	err  error
}

// clone returns a fresh node for the same archive.
func (n *archiveDir) clone() attrNode {
	if n.opened == nil {
		n.opened = &archiveOpen{}
	}
	return &archiveDir{m: n.m, snap: n.snap, meta: n.meta, payload: n.payload,
		metaIdx: n.metaIdx, payloadIdx: n.payloadIdx, encrypted: n.encrypted, lockErr: n.lockErr, dec: n.dec, ino: n.ino, opened: n.opened}
}

// release drops the collector pins of an opened archive.
func (o *archiveOpen) release() {
	if o.st != nil {
		for _, u := range o.st.unpin {
			u()
		}
		o.st.unpin = nil
	}
}

var (
	_ = (fusefs.NodeLookuper)((*archiveDir)(nil))
	_ = (fusefs.NodeOpendirHandler)((*archiveDir)(nil))
	_ = (fusefs.NodeGetattrer)((*archiveDir)(nil))
	_ = (fusefs.NodeGetxattrer)((*archiveDir)(nil))
	_ = (fusefs.NodeListxattrer)((*archiveDir)(nil))
)

// archiveState is what the nodes of one open pxar archive share.
type archiveState struct {
	m     *mount
	a     *pxar.Archive
	metaA *store.Archive
	ino   uint64 // the archive directory's inode number
	ref   store.SnapshotRef
	file  string
	unpin []func()

	linksOnce sync.Once
	links     map[int64]uint32 // hardlinks to the file at a FILENAME offset
}

// open opens the archive, once.
func (n *archiveDir) open() (*archiveState, error) {
	o := n.opened
	o.once.Do(func() {
		if n.encrypted {
			o.err = lockedErr(n.lockErr, n.snap.ref, n.meta)
			return
		}
		metaA := n.m.s.NewArchiveWith(n.m.ctx, n.metaIdx, n.dec)
		if size := metaA.Size(); size > 0 {
			// Opening reads the root entry at the start and the root's
			// goodbye table at the end: decode the last chunk on another
			// core meanwhile (errors show on the real read).
			go metaA.Warm(n.m.ctx, uint64(size-1))
		}
		var payload io.ReaderAt
		if n.payloadIdx != nil {
			// Both halves of a split archive share the manifest's crypt mode.
			payload = n.m.s.NewArchiveWith(n.m.ctx, n.payloadIdx, n.dec)
		}
		a, err := pxar.Open(metaA, metaA.Size(), payload)
		if err != nil {
			o.err = fmt.Errorf("%s/%s: %w", n.snap.ref, n.meta, err)
			return
		}
		st := &archiveState{m: n.m, a: a, metaA: metaA, ino: n.ino, ref: n.snap.ref, file: n.meta}
		if n.m.pin != nil {
			st.unpin = append(st.unpin, n.m.pin(n.metaIdx))
			if n.payloadIdx != nil {
				st.unpin = append(st.unpin, n.m.pin(n.payloadIdx))
			}
		}
		o.st = st
	})
	return o.st, o.err
}

// state returns the open archive, or the errno to give: ENOENT once the
// snapshot was forgotten, or the errno of a removal just refused to the
// caller (so rm -r of a protected snapshot does not walk the tree).
func (n *archiveDir) state(ctx context.Context, op string) (*archiveState, syscall.Errno) {
	if n.snap.isRemoved() {
		return nil, syscall.ENOENT
	}
	st, err := n.open()
	if err != nil {
		return nil, n.m.toErrno(err, op, snapAttr(n.snap.ref), "file", n.meta)
	}
	return st, 0
}

// perm is the owner and mode the archive takes from its index files.
func (n *archiveDir) perm() perm {
	if n.payload != "" {
		return n.m.keyGate(n.dec, n.m.archivePerm(n.snap.ref.Dir(), true, n.meta, n.payload))
	}
	return n.m.keyGate(n.dec, n.m.archivePerm(n.snap.ref.Dir(), true, n.meta))
}

func (n *archiveDir) fill(ctx context.Context, out *fuse.Attr) syscall.Errno {
	p := n.perm()
	if n.snap.isRemoved() || n.encrypted {
		n.m.dirAttr(out, p, n.snap.ref.Time)
		return 0
	}
	st, err := n.open()
	if err != nil {
		// Listed so the user sees it; using it gives the error.
		n.m.dirAttr(out, p, n.snap.ref.Time)
		return 0
	}
	// The archive's root with its archived times, behind the gate of
	// the index files on disk (gate.go).
	st.fill(st.a.Root(), out)
	out.Ino = n.ino
	out.Mode = syscall.S_IFDIR | p.mode
	out.Owner = fuse.Owner{Uid: p.uid, Gid: p.gid}
	return 0
}

func (n *archiveDir) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(n.m.archTTL)
	return n.fill(ctx, &out.Attr)
}

func (n *archiveDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	st, errno := n.state(ctx, "lookup")
	if errno != 0 {
		return nil, errno
	}
	return st.lookup(ctx, n.EmbeddedInode(), st.a.Root(), name, out)
}

// OpendirHandle lists the archive root. A removed snapshot lists as
// empty; a removal refused to the caller a moment ago gives the caller
// the same error, so rm -r stops at the archive's door.
func (n *archiveDir) OpendirHandle(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if errno := n.snap.refusedTo(ctx); errno != 0 {
		return nil, 0, errno
	}
	if n.snap.isRemoved() {
		return &listHandle{m: n.m, parent: n.EmbeddedInode()}, 0, 0
	}
	st, errno := n.state(ctx, "opendir")
	if errno != 0 {
		return nil, 0, errno
	}
	h, _, errno := st.openDir(n.EmbeddedInode(), st.a.Root())
	// No FOPEN_CACHE_DIR here: once the snapshot is removed, the root
	// must list as empty at once (see doc.go).
	return h, 0, errno
}

func (n *archiveDir) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	st, errno := n.state(ctx, "getxattr")
	if errno != 0 {
		return 0, errno
	}
	return getxattr(st.a.Root(), attr, dest)
}

func (n *archiveDir) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if n.snap.isRemoved() || n.encrypted {
		return 0, 0
	}
	st, errno := n.state(ctx, "listxattr")
	if errno != 0 {
		return 0, errno
	}
	return listxattr(st.a.Root(), dest)
}
