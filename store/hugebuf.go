package store

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugeBufCap is the capacity of a hugeBufs buffer: a fixed-size chunk
// with its headroom, or the bound of its encoded form.
const hugeBufCap = FixedChunkSize + 2*directAlign

// hugeBufs hands out the chunk buffers of one image upload (as chunkMem
// does for reads, more simply: all of one size): mapped
// outside the Go heap, starting on a 2 MiB boundary, their first 4 MiB
// advised as transparent huge pages (MADV_HUGEPAGE; the rest, a few
// bytes past the chunk, stays in small pages). A chunk then lies in two
// huge pages instead of 1024 small ones, which the CPU's TLB, the page
// faults of a fresh buffer and the O_DIRECT write of its blob (pages
// pinned, I/O segments and their completions) all pay for: reading,
// hashing and writing 256 MiB of chunk files took 0.32 s of CPU from
// such buffers against 0.61 s from heap buffers on the 2-CPU test
// machine. Without THP they are plain pages, as fast as the heap's.
//
// The buffers are mapped as they are first needed (the memory budget
// bounds how many are in flight) and unmapped by release, which must
// only be called when no buffer is used any more: nothing may keep a
// slice of one past that (a chunk store that writes asynchronously must
// not get them; see readImageAt).
type hugeBufs struct {
	mu   sync.Mutex
	free [][]byte
	maps [][]byte
}

// get returns a buffer of n ≤ hugeBufCap bytes, or nil if none could be
// mapped.
func (h *hugeBufs) get(n int) []byte {
	if n > hugeBufCap {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if k := len(h.free); k > 0 {
		b := h.free[k-1]
		h.free = h.free[:k-1]
		return b[:n]
	}
	m, err := unix.Mmap(-1, 0, hugeBufCap+hugePage, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil
	}
	h.maps = append(h.maps, m)
	off := (hugePage - int(uintptr(unsafe.Pointer(unsafe.SliceData(m))))%hugePage) % hugePage
	unix.Madvise(m[off:off+FixedChunkSize], unix.MADV_HUGEPAGE) // advice: without THP, small pages
	return m[off : off+n : off+hugeBufCap]
}

// owns reports whether b is a buffer get handed out.
func (h *hugeBufs) owns(b []byte) bool {
	if cap(b) != hugeBufCap {
		return false
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.maps {
		if start := uintptr(unsafe.Pointer(unsafe.SliceData(m))); p >= start && p < start+uintptr(len(m)) {
			return true
		}
	}
	return false
}

// put returns a buffer get handed out.
func (h *hugeBufs) put(b []byte) {
	h.mu.Lock()
	h.free = append(h.free, b[:0])
	h.mu.Unlock()
}

// release unmaps every buffer.
func (h *hugeBufs) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.maps {
		unix.Munmap(m)
	}
	h.maps, h.free = nil, nil
}
