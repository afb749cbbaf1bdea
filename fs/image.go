package fs

import (
	"context"
	"fmt"
	"sync"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/pbsfs/pbsfs/store"
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
}

var (
	_ = (fusefs.NodeOpener)((*imageFile)(nil))
	_ = (fusefs.NodeReader)((*imageFile)(nil))
	_ = (fusefs.NodeGetattrer)((*imageFile)(nil))
	_ = (fusefs.NodeReleaser)((*imageFile)(nil))
)

// clone returns a fresh node for the same image.
func (n *imageFile) clone() attrNode {
	return &imageFile{m: n.m, snap: n.snap, file: n.file, idx: n.idx, encrypted: n.encrypted, lockErr: n.lockErr, dec: n.dec, size: n.size}
}

func (n *imageFile) fill(ctx context.Context, out *fuse.Attr) syscall.Errno {
	n.m.fileAttr(out, n.m.archivePerm(n.snap.ref.Dir(), false, n.file), n.size, n.snap.ref.Time)
	return 0
}

func (n *imageFile) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(n.m.archTTL)
	return n.fill(ctx, &out.Attr)
}

// imageHandle is an open image: the archive reader and the collector pin
// that keeps its chunks while it is open.
type imageHandle struct {
	a     *store.Archive
	idx   store.Index
	unpin func()

	mu         sync.Mutex
	next       int64 // where the last read ended
	prefetched int   // the chunk loaded ahead last
}

// seqWindow is how far a read may start from where the previous one ended
// and still count as sequential: the kernel's readahead sends requests in
// parallel, so they arrive a little out of order.
const seqWindow = 2 << 20

// readAheadChunks is how many chunks past the current one a sequential
// reader has loaded in the background: two keep both cores of a small
// machine decoding while the reader consumes the current chunk.
const readAheadChunks = 2

// readAhead loads the chunks after the one holding off into the store's
// cache in the background when reads are sequential, so that decoding
// them overlaps with the reader consuming the current one.
func (h *imageHandle) readAhead(ctx context.Context, off int64, n int) {
	h.mu.Lock()
	seq := off >= h.next-seqWindow && off <= h.next+seqWindow
	h.next = off + int64(n)
	i, _, err := h.idx.Locate(uint64(off))
	if !seq || err != nil {
		h.mu.Unlock()
		return
	}
	var starts []int64
	for j := max(i+1, h.prefetched+1); j <= i+readAheadChunks && j < h.idx.Len(); j++ {
		_, start, _ := h.idx.Chunk(j)
		starts = append(starts, int64(start))
		h.prefetched = j
	}
	h.mu.Unlock()
	for _, start := range starts {
		go func() {
			h.a.ChunkAt(ctx, uint64(start)) // errors show on the real read
		}()
	}
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
	h := &imageHandle{a: n.m.s.NewArchiveWith(n.m.ctx, n.idx, n.dec), idx: n.idx, unpin: func() {}}
	if n.m.pin != nil {
		h.unpin = n.m.pin(n.idx)
	}
	return h, fuse.FOPEN_KEEP_CACHE, 0
}

// Read maps the request onto the chunks: a request inside one chunk is a
// slice of the cached chunk, one across chunks is copied together by the
// archive reader.
func (n *imageFile) Read(ctx context.Context, f fusefs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := f.(*imageHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	size := h.a.Size()
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	if rem := size - off; int64(len(dest)) > rem {
		dest = dest[:rem]
	}
	h.readAhead(n.m.ctx, off, len(dest))
	// Within one chunk, serve the cached chunk itself: no copy. A bad
	// chunk falls through to ReadAtContext, whose error is reported.
	if data, in, err := h.a.ChunkAt(ctx, uint64(off)); err == nil && in+uint64(len(dest)) <= uint64(len(data)) {
		return fuse.ReadResultData(data[in : in+uint64(len(dest))]), 0
	}
	k, err := h.a.ReadAtContext(ctx, dest, off)
	if err != nil && k < len(dest) {
		return nil, n.m.toErrno(err, "read image", snapAttr(n.snap.ref), "file", n.file, "offset", off)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

func (n *imageFile) Release(ctx context.Context, f fusefs.FileHandle) syscall.Errno {
	if h, ok := f.(*imageHandle); ok {
		h.unpin()
	}
	return 0
}
