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
	faults    atomic.Int64 // buffers mapped fresh, or partly fresh (tests)
	moved     atomic.Int64 // bytes of free buffers moved into new ones (tests)
	reused    atomic.Int64 // buffers of passed chunks taken (tests)

	// reclaim, when set (by the chunk cache), gives up cached chunks
	// that sequential readers have passed and no one holds, for their
	// buffers (see chunkCache.reclaim): asked before fresh memory is
	// mapped. It must not be called with mu held.
	reclaim func(lo, hi, want int) []*memBuf
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
	// spareClass: a request may take a free buffer up to this much
	// larger, or up to half its size larger if that is more (a buffer
	// too large for its chunk counts its whole size against the cache
	// bound).
	spareClass = 2 << 20
)

func newChunkMem() *chunkMem {
	return &chunkMem{free: map[int][]*memBuf{}, maxFree: maxFreeMem}
}

// bufGrain is the small part of buffer sizes. A buffer is mapped at a
// huge-page boundary and its size is a whole number of huge pages, except
// that a size at most smallTail past a multiple of 2 MiB (a 4 MiB chunk
// and its AES-GCM tag) ends in a bufGrain tail of 4 KiB pages, faulted in
// only where used: so a 4 MiB chunk takes 4 MiB, an encrypted one 4.25
// MiB, and a chunk of a dynamic index (any size from 1 to 16 MiB) the
// next multiple of 2 MiB.
//
// Why whole huge pages: a fresh 4 KiB page costs ~60 µs here (see
// above), a fresh huge page about as much as 16 of them, so a tail of
// small pages made a fresh buffer for a 3.1 MiB chunk cost ~14 ms; and
// the chunks of a pxar archive, all of different sizes, rarely find a
// free buffer of their size (a cold read of a file in an archive mapped
// a fresh buffer for one chunk in two, and spent ~40 % more CPU than
// the same bytes as an image). Whole huge pages can also be moved from
// free buffers into a new one (chunkMem.assemble). The cost is memory:
// up to 2 MiB per cached chunk of a dynamic index, ~1 MiB on average,
// counted against the cache bound (entries count their buffer's size),
// so RSS stays within the bound.
const bufGrain = 256 << 10

// smallTail is the most a size may be past a multiple of 2 MiB and still
// end in a tail of small pages: one page, room for a tag.
const smallTail = 4 << 10

// sizeClass is the size of the buffer that holds n bytes.
func sizeClass(n int) int {
	whole := n / hugePage * hugePage
	switch rem := n - whole; {
	case whole == 0:
		return hugePage
	case rem == 0:
		return n
	case rem <= smallTail:
		return whole + bufGrain
	}
	return whole + hugePage
}

// get returns a buffer of at least n bytes; its content is undefined.
// In order: a free buffer of its size class (or a little larger), the
// buffer of a cached chunk that sequential readers have passed (see
// chunkCache.reclaim), and a fresh mapping, whose first huge pages are
// moved from free buffers and passed chunks' buffers where they have
// them (see assemble). Memory already faulted in is used again before
// fresh memory: a sequential stream cycles through the buffers of the
// chunks behind it instead of growing the cache with fresh memory (see
// chunkCache).
func (m *chunkMem) get(n int) *memBuf {
	if n < smallBuf {
		return &memBuf{mem: make([]byte, n), heap: true}
	}
	c := sizeClass(n)
	hi := c + max(spareClass, c/2)
	m.mu.Lock()
	for k := c; k <= hi; k += bufGrain {
		if l := m.free[k]; len(l) > 0 {
			b := l[len(l)-1]
			m.free[k] = l[:len(l)-1]
			m.freeBytes -= int64(k)
			m.mu.Unlock()
			return b
		}
	}
	// No free buffer fits. Take the free buffers made of whole huge
	// pages, to move their pages into the new buffer (see assemble).
	var parts []*memBuf
	whole := c / hugePage * hugePage
	if whole > 0 {
		for k, l := range m.free {
			if k%hugePage != 0 {
				continue
			}
			for len(l) > 0 && m.partBytes(parts) < whole {
				parts = append(parts, l[len(l)-1])
				l = l[:len(l)-1]
				m.freeBytes -= int64(k)
			}
			m.free[k] = l
		}
	}
	m.mu.Unlock()
	if short := whole - m.partBytes(parts); m.reclaim != nil && short > 0 {
		// The free buffers were not enough: the buffer of a passed
		// chunk that fits, else passed chunks' huge pages for the rest.
		lo := 0
		if len(parts) == 0 {
			lo = c
		}
		got := m.reclaim(lo, hi, short)
		m.reused.Add(int64(len(got)))
		if len(got) == 1 && len(parts) == 0 && len(got[0].mem) >= c && len(got[0].mem) <= hi {
			return got[0]
		}
		parts = append(parts, got...)
	}
	b := mapHuge(c)
	if b == nil {
		for _, p := range parts {
			m.put(p)
		}
		return &memBuf{mem: make([]byte, n), heap: true}
	}
	m.mapped.Add(int64(c))
	if len(parts) == 0 {
		m.faults.Add(1)
		return &memBuf{mem: b}
	}
	m.assemble(b, parts)
	return &memBuf{mem: b}
}

// partBytes sums the sizes of bufs.
func (m *chunkMem) partBytes(bufs []*memBuf) int {
	n := 0
	for _, b := range bufs {
		n += len(b.mem)
	}
	return n
}

// assemble moves the pages of the free buffers parts (whole huge pages
// each) into the fresh mapping b, from its start, with mremap: the
// kernel moves their page tables, so b's first bytes are memory already
// faulted in (huge pages stay huge), and only what the parts do not
// cover is fresh. What a part has beyond b's end is given back as a free
// buffer of its own. Chunks of dynamic indexes have all sizes, so a
// buffer of the size asked for is rarely free; their pages are.
func (m *chunkMem) assemble(b []byte, parts []*memBuf) {
	dst := unsafe.Pointer(unsafe.SliceData(b))
	whole := len(b) / hugePage * hugePage // a small-page tail stays fresh
	off := 0
	for i, p := range parts {
		use := min(len(p.mem), whole-off)
		if use <= 0 {
			m.put(p)
			continue
		}
		src := unsafe.Pointer(unsafe.SliceData(p.mem))
		if _, err := unix.MremapPtr(src, uintptr(use), unsafe.Add(dst, off), uintptr(use), unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED); err != nil {
			// Not moved: b keeps its fresh pages there; the parts
			// go back.
			for _, q := range parts[i:] {
				m.put(q)
			}
			m.faults.Add(1)
			return
		}
		// The part's pages are b's now: count them once.
		m.mapped.Add(-int64(use))
		m.moved.Add(int64(use))
		off += use
		if rest := p.mem[use:]; len(rest) > 0 {
			m.put(&memBuf{mem: rest})
		}
	}
	if off < len(b) {
		m.faults.Add(1) // partly fresh
	}
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
