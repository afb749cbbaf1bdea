package fs

import (
	"context"
	"fmt"
	"sync"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/pbsfs/pbsfs/store"
	"golang.org/x/sys/unix"
)

// imageFile is a fixed-index archive (a disk image such as
// drive-scsi0.img), or a dynamic-index stream that is not pxar, read with
// random access through the store's chunk cache.
type imageFile struct {
	roNode
	m         *mount
	snap      *snapshotNode
	file      string      // index file name
	idx       store.Index // parsed when the snapshot was listed; nil if encrypted
	encrypted bool        // locked: no key, or a bad signature (lockErr says)
	lockErr   error
	dec       *store.ChunkDecoder
	size      uint64
	arch      *sharedArchive // shared by the clones of one listing
}

// sharedArchive is an archive opened once for all nodes of one file.
type sharedArchive struct {
	once sync.Once
	a    *store.Archive
}

var (
	_ = (fusefs.NodeOpener)((*imageFile)(nil))
	_ = (fusefs.NodeReader)((*imageFile)(nil))
	_ = (fusefs.NodeGetattrer)((*imageFile)(nil))
	_ = (fusefs.NodeReleaser)((*imageFile)(nil))
	_ = (fusefs.NodeLseeker)((*imageFile)(nil))
)

// clone returns a fresh node for the same image.
func (n *imageFile) clone() attrNode {
	return &imageFile{m: n.m, snap: n.snap, file: n.file, idx: n.idx, encrypted: n.encrypted, lockErr: n.lockErr, dec: n.dec, size: n.size, arch: n.arch}
}

func (n *imageFile) fill(ctx context.Context, out *fuse.Attr) syscall.Errno {
	n.m.fileAttr(out, n.m.keyGate(n.dec, n.m.archivePerm(n.snap.ref.Dir(), false, n.file)), n.size, n.snap.ref.Time)
	if !n.encrypted && n.idx != nil {
		out.Blocks = uint64(n.archive().DataBytes(0, int64(n.size))+511) / 512
	}
	return 0
}

func (n *imageFile) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(n.m.archTTL)
	return n.fill(ctx, &out.Attr)
}

// imageHandle is an open image: its reader (sequential detection and
// read-ahead are per open file) and the collector pin that keeps its
// chunks while it is open.
type imageHandle struct {
	r     *store.Reader
	unpin func()
	drop  *dropBehind
}

// lockedErr is the error of a locked archive: its reason, or that it is
// encrypted.
func lockedErr(err error, ref store.SnapshotRef, file string) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%s/%s: %w", ref, file, store.ErrEncrypted)
}

// Open prepares the archive reader (the index was parsed at listing) and
// pins the index for the collector. Images never change, so the kernel
// keeps their pages (FOPEN_KEEP_CACHE).
func (n *imageFile) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if writeFlags(flags) {
		return nil, 0, syscall.EROFS
	}
	if n.encrypted {
		return nil, 0, n.m.toErrno(lockedErr(n.lockErr, n.snap.ref, n.file), "open image", snapAttr(n.snap.ref), "file", n.file)
	}
	if n.snap.isRemoved() {
		return nil, 0, syscall.ENOENT
	}
	h := &imageHandle{r: n.archive().NewReader(), unpin: func() {}, drop: newDropBehind(n.m.dropBehind, n.EmbeddedInode())}
	if n.m.pin != nil {
		h.unpin = n.m.pin(n.idx)
	}
	return h, fuse.FOPEN_KEEP_CACHE, 0
}

// Read serves the request through the store's read engine: a request
// inside one chunk is a slice of the cached chunk (or of a hole's zeros),
// one across chunks is copied together.
func (n *imageFile) Read(ctx context.Context, f fusefs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := f.(*imageHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	if off < 0 {
		return nil, syscall.EINVAL
	}
	b, err := h.r.ReadParts(ctx, dest, off)
	if err != nil {
		return nil, n.m.toErrno(err, "read image", snapAttr(n.snap.ref), "file", n.file, "offset", off)
	}
	h.drop.read(off, int64(b.Len()))
	return &readResult{b}, 0
}

// readResult is a FUSE reply of bytes from the read engine: go-fuse
// writes them to the kernel straight from the decoded chunks (one part
// per chunk the request touched, with writev), then calls Done, which
// releases them (they must not be released earlier: a chunk's memory is
// reused once released and evicted).
type readResult struct{ p store.Parts }

func (r *readResult) Size() int { return r.p.Len() }

// Bytes returns the bytes in one slice: the part itself, or the parts
// copied into buf.
func (r *readResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	if len(r.p) == 1 {
		return r.p[0].Bytes(), fuse.OK
	}
	buf = buf[:0]
	for _, s := range r.p.Slices() {
		buf = append(buf, s...)
	}
	return buf, fuse.OK
}

// Slices makes go-fuse write the reply with writev from the bytes
// themselves, always after Bytes or Slices and before Done.
func (r *readResult) Slices() ([][]byte, fuse.Status) { return r.p.Slices(), fuse.OK }

func (r *readResult) Done() { r.p.Release() }

// Lseek answers SEEK_DATA and SEEK_HOLE from the chunks that are all
// zeros by their digest.
func (n *imageFile) Lseek(ctx context.Context, f fusefs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	if n.encrypted {
		return 0, syscall.EACCES
	}
	return seekData(n.archive(), 0, int64(n.size), int64(off), whence)
}

// archive returns the image's archive, shared by its open files (hole
// flags are computed once).
func (n *imageFile) archive() *store.Archive {
	n.arch.once.Do(func() { n.arch.a = n.m.s.NewArchiveWith(n.m.ctx, n.idx, n.dec) })
	return n.arch.a
}

// seekData answers lseek SEEK_DATA/SEEK_HOLE for a file that is the
// range [start, start+size) of archive a, at file offset off.
func seekData(a *store.Archive, start, size, off int64, whence uint32) (uint64, syscall.Errno) {
	if off < 0 || off >= size {
		return 0, syscall.ENXIO
	}
	switch whence {
	case unix.SEEK_DATA:
		p := a.SeekData(start, start+size, start+off, false)
		if p < 0 {
			return 0, syscall.ENXIO
		}
		return uint64(p - start), 0
	case unix.SEEK_HOLE:
		return uint64(a.SeekData(start, start+size, start+off, true) - start), 0
	}
	return 0, syscall.EINVAL
}

func (n *imageFile) Release(ctx context.Context, f fusefs.FileHandle) syscall.Errno {
	if h, ok := f.(*imageHandle); ok {
		h.unpin()
	}
	return 0
}
