package store

import (
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// chunkMem is the memory of decoded chunks and of chunk files being
// read: buffers mapped outside the Go heap, backed by huge pages where
// the kernel allows (MADV_HUGEPAGE), and used again once free instead of
// being returned to the kernel.
//
// Why: a read engine that allocates a fresh 4 MiB buffer per chunk makes
// the kernel fault in, zero and map a thousand 4 KiB pages per chunk. On
// virtual machines with shadow paging each of those faults costs tens of
// microseconds (measured here: 4 s to fault in 256 MiB of 4 KiB pages,
// 0.1 s with 2 MiB pages), which capped a cold cat of the mount at about
// 60 MB/s whatever the disk and CPU could do. Recycled buffers fault
// nothing; new ones fault 2 MiB at a time.
//
// A buffer's lifetime is explicit: the chunk cache owns the buffers of
// its entries and gives them back (put) only when no reader holds a
// reference (see chunkCache); loaders give back their scratch buffers
// when done. Buffers under smallBuf bytes come from the Go heap and are
// simply dropped.
type chunkMem struct {
	mu        sync.Mutex
	free      map[int][]*memBuf // by size
	freeBytes int64
	maxFree   int64
	mapped    atomic.Int64 // bytes mapped now
	faults    atomic.Int64 // buffers mapped fresh (tests)
}

// memBuf is one buffer. heap buffers are Go memory.
type memBuf struct {
	mem  []byte
	heap bool
}

const (
	hugePage = 2 << 20
	// smallBuf: smaller buffers are not worth a mapping of their own.
	smallBuf = 512 << 10
	// maxFreeMem bounds the free buffers kept for reuse.
	maxFreeMem = 32 << 20
	// spareClass: a request may take a free buffer up to this much larger.
	spareClass = 2 << 20
)

func newChunkMem() *chunkMem {
	return &chunkMem{free: map[int][]*memBuf{}, maxFree: maxFreeMem}
}

// bufGrain is the granularity of buffer sizes: a buffer is mapped at a
// huge-page boundary, its whole huge pages are huge, and the rest (less
// than 2 MiB) is in 4 KiB pages, faulted in only when first used. So a
// 4 MiB chunk takes 4 MiB, and a 4 MiB chunk with a few bytes more (an
// AES-GCM tag) 4.25 MiB, not 6.
const bufGrain = 256 << 10

// sizeClass is the size of the buffer that holds n bytes.
func sizeClass(n int) int { return max(1, (n+bufGrain-1)/bufGrain) * bufGrain }

// get returns a buffer of at least n bytes; its content is undefined.
func (m *chunkMem) get(n int) *memBuf {
	if n < smallBuf {
		return &memBuf{mem: make([]byte, n), heap: true}
	}
	c := sizeClass(n)
	m.mu.Lock()
	for k := c; k <= c+spareClass; k += bufGrain {
		if l := m.free[k]; len(l) > 0 {
			b := l[len(l)-1]
			m.free[k] = l[:len(l)-1]
			m.freeBytes -= int64(k)
			m.mu.Unlock()
			return b
		}
	}
	m.mu.Unlock()
	if b := mapHuge(c); b != nil {
		m.mapped.Add(int64(c))
		m.faults.Add(1)
		return &memBuf{mem: b}
	}
	return &memBuf{mem: make([]byte, n), heap: true}
}

// put gives b back: kept for reuse up to maxFree bytes, else unmapped.
// Nothing may use b afterwards.
func (m *chunkMem) put(b *memBuf) {
	if b == nil || b.heap {
		return
	}
	k := len(b.mem)
	m.mu.Lock()
	if m.freeBytes+int64(k) <= m.maxFree {
		m.free[k] = append(m.free[k], b)
		m.freeBytes += int64(k)
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	m.unmap(b)
}

func (m *chunkMem) unmap(b *memBuf) {
	unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(b.mem)), uintptr(len(b.mem)))
	m.mapped.Add(-int64(len(b.mem)))
	b.mem = nil
}

// release unmaps every free buffer.
func (m *chunkMem) release() {
	m.mu.Lock()
	free := m.free
	m.free, m.freeBytes = map[int][]*memBuf{}, 0
	m.mu.Unlock()
	for _, l := range free {
		for _, b := range l {
			m.unmap(b)
		}
	}
}

// mapHuge maps n bytes aligned to a huge page
// and asks for huge pages; nil if the kernel refuses the mapping.
func mapHuge(n int) []byte {
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(n+hugePage), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil
	}
	start := uintptr(p)
	aligned := (start + hugePage - 1) &^ (hugePage - 1)
	if head := aligned - start; head > 0 {
		unix.MunmapPtr(p, head)
	}
	if tail := start + uintptr(n+hugePage) - (aligned + uintptr(n)); tail > 0 {
		unix.MunmapPtr(unsafe.Add(p, aligned-start+uintptr(n)), tail)
	}
	b := unsafe.Slice((*byte)(unsafe.Add(p, aligned-start)), n)
	unix.Madvise(b, unix.MADV_HUGEPAGE) // advice: without it, 4 KiB pages
	return b
}

// prewarm maps buffers of the given sizes, faults them in and keeps them
// free for use.
func (m *chunkMem) prewarm(sizes ...int) {
	for _, n := range sizes {
		c := sizeClass(n)
		b := mapHuge(c)
		if b == nil {
			return
		}
		for i := 0; i < len(b); i += 4096 {
			b[i] = 0
		}
		m.mapped.Add(int64(c))
		m.faults.Add(1)
		m.put(&memBuf{mem: b})
	}
}

// PrewarmMemory faults in a few chunk buffers ahead of use (22 MiB, kept
// for reuse), so that the first reads of a fresh mount (an archive's
// first and last chunk, to list its root) do not wait for the kernel to
// provide fresh memory. A mount calls it once, in the background.
func (s *Store) PrewarmMemory() { s.mem.prewarm(4<<20, 4<<20, 4<<20, 6<<20, 2<<20, 2<<20) }
