package store

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// poolMaxChunk is the largest chunk a bufPool buffer holds: the largest
// chunk a stream of the default average size cuts (four times the
// average), which is four fixed-size image chunks.
const poolMaxChunk = 4 * DefaultAvgChunkSize

// poolBufCap is the capacity of a bufPool buffer: poolMaxChunk with its
// headroom, or its encoded bound (blobBound), rounded up to a page.
const poolBufCap = (poolMaxChunk + poolMaxChunk>>10 + 256 + chunkHeadroom + directAlign - 1) &^ (directAlign - 1)

// poolLead is the small page a bufPool buffer starts with, before its
// first 2 MiB boundary: a chunk's data starts chunkHeadroom bytes into
// the buffer, so a fixed-size chunk with its headroom fits in that page
// and two huge pages, while the buffer (and an uncompressed blob built
// in place) starts on a page boundary, as O_DIRECT writes need. An image
// chunk read with O_DIRECT (readDirect) starts directAlign bytes in, on
// the first huge page's boundary: directAlign plus a fixed-size chunk is
// exactly poolKeep.
const poolLead = directAlign

// poolKeep is how many bytes of an idle buffer stay mapped: a buffer that
// held more gives the rest back to the kernel when it is put back
// (MADV_DONTNEED), so the pool keeps at most poolKeep of memory per
// buffer however large the chunks it held were. It covers a fixed-size
// chunk with its headroom (and a stream chunk of up to as much).
const poolKeep = poolLead + 2*hugePage

// bufPool is the store's pool of chunk buffers for backups that write
// into a local chunk directory: image chunks (read by the workers or by
// one reader), stream chunks (StreamWriter) and their encoded blobs.
//
// Each buffer is a mapping of its own outside the Go heap, of
// poolBufCap bytes reserved up front: a stream's chunk grows in it by
// reslicing, never by copying into a larger buffer (pxar chunks reach
// 16 MiB; growing them by doubling copied every byte about once more),
// and only what is touched costs memory. Past its first small page the
// buffer lies on 2 MiB boundaries and is advised as transparent huge
// pages (MADV_HUGEPAGE), so a chunk lies in a few huge pages instead of
// a thousand small ones, which the page faults of fresh memory, the
// CPU's TLB and the O_DIRECT writes of blobs (pages pinned, I/O
// segments) all pay for: reading, hashing and writing 256 MiB of chunk
// files took 0.32 s of CPU from such buffers against 0.61 s from heap
// buffers on the 2-CPU test machine. Without THP they are small pages.
// Being outside the heap, they neither count towards the Go memory
// limit nor are emptied by a collection, as a sync.Pool is.
//
// A buffer lent out must be put back only once nothing uses it any
// more: a chunk store that reads a blob after Insert returned (a remote
// backend's HTTP transport may) must not get these buffers; backups
// without a ChunkBatch use heap buffers (Store.getChunkBuf). Idle
// buffers are unmapped when the last session using the pool ends
// (release) and by Store.Close.
type bufPool struct {
	mu    sync.Mutex
	free  [][]byte         // idle buffers keeping their first poolKeep bytes (at most poolWarm)
	cold  [][]byte         // idle buffers holding no memory
	maps  map[*byte][]byte // a buffer's first byte → its whole mapping
	users int
	// mapped counts the buffers mapped so far (tests).
	mapped int
}

// acquire registers a session using the pool.
func (p *bufPool) acquire() {
	p.mu.Lock()
	p.users++
	p.mu.Unlock()
}

// release ends a session's use of the pool; when it was the last, idle
// buffers are unmapped.
func (p *bufPool) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.users--; p.users <= 0 {
		p.users = 0
		p.unmapIdle()
	}
}

// unmapIdle unmaps every idle buffer (p.mu held).
func (p *bufPool) unmapIdle() {
	for _, b := range append(p.free, p.cold...) {
		p.unmap(b)
	}
	p.free, p.cold = nil, nil
}

func (p *bufPool) unmap(b []byte) {
	first := unsafe.SliceData(b[:1])
	if m, ok := p.maps[first]; ok {
		unix.Munmap(m)
		delete(p.maps, first)
	}
}

// get returns a buffer of n ≤ poolBufCap bytes with capacity poolBufCap,
// or nil if n is larger or no buffer could be mapped. Its content is
// undefined.
func (p *bufPool) get(n int) []byte {
	if n > poolBufCap {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if k := len(p.free); k > 0 {
		b := p.free[k-1]
		p.free = p.free[:k-1]
		return b[:n]
	}
	if k := len(p.cold); k > 0 {
		b := p.cold[k-1]
		p.cold = p.cold[:k-1]
		return b[:n]
	}
	m, err := unix.Mmap(-1, 0, poolBufCap+hugePage, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil
	}
	// The buffer starts poolLead bytes before the mapping's first 2 MiB
	// boundary past poolLead.
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(m)))
	off := int((addr+poolLead+hugePage-1)&^(hugePage-1)-addr) - poolLead
	b := m[off : off+poolBufCap : off+poolBufCap]
	huge := (poolBufCap - poolLead) &^ (hugePage - 1)
	unix.Madvise(b[poolLead:poolLead+huge], unix.MADV_HUGEPAGE) // advice: without THP, small pages
	if p.maps == nil {
		p.maps = make(map[*byte][]byte)
	}
	p.maps[unsafe.SliceData(b)] = m
	p.mapped++
	return b[:n]
}

// owns reports whether b is (a reslice from the start of) a buffer get
// handed out.
func (p *bufPool) owns(b []byte) bool {
	if cap(b) != poolBufCap {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.maps[unsafe.SliceData(b[:1])]
	return ok
}

// heldBytes is what a buffer of the pool holding n bytes counts in a
// memory budget: the pages its first n bytes lie in, and at least what
// an idle buffer keeps.
func (p *bufPool) heldBytes(n int) int64 {
	return int64(max(poolKeep, poolLead+(n-poolLead+hugePage-1)&^(hugePage-1)))
}

// poolWarm is how many idle buffers keep their first poolKeep bytes in
// memory; the others give all their pages back. Idle buffers are in no
// backup's memory budget, so this bounds what they hold: without it a
// backup of /usr/share (44,749 files) kept 18 buffers mapped, 78 MB of
// huge pages, most of them idle, and peaked at 131-143 MB of RSS
// against 100 MB with heap buffers.
const poolWarm = 4

// put returns a buffer get handed out, of which at most the first len(b)
// bytes were written; memory past poolKeep is given back to the kernel,
// all of it when poolWarm idle buffers keep theirs already. With no
// session using the pool, the buffer is unmapped.
func (p *bufPool) put(b []byte) {
	p.mu.Lock()
	warm := len(p.free) < poolWarm
	p.mu.Unlock()
	keep := 0
	if warm {
		keep = poolKeep
	}
	if len(b) > keep {
		unix.Madvise(b[keep:cap(b)], unix.MADV_DONTNEED)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.users == 0:
		p.unmap(b)
	case warm:
		p.free = append(p.free, b[:0])
	default:
		p.cold = append(p.cold, b[:0])
	}
}

// close unmaps the idle buffers.
func (p *bufPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unmapIdle()
}
