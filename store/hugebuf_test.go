package store

import (
	"context"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resident returns how many of b's pages are in memory (mincore).
func resident(t *testing.T, b []byte) int {
	t.Helper()
	vec := make([]byte, (len(b)+directAlign-1)/directAlign)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// TestBufPool: buffers are laid out for O_DIRECT and huge pages, reused,
// trimmed to poolKeep when put back, and unmapped when the last session
// ends.
func TestBufPool(t *testing.T) {
	var p bufPool
	p.acquire()
	b := p.get(chunkHeadroom + FixedChunkSize)
	if b == nil || cap(b) != poolBufCap || len(b) != chunkHeadroom+FixedChunkSize {
		t.Fatalf("get: len %d cap %d", len(b), cap(b))
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if start%directAlign != 0 || (start+poolLead)%hugePage != 0 {
		t.Errorf("buffer at %#x: want a page boundary %d bytes before a 2 MiB one", start, poolLead)
	}
	if !p.owns(b) || !p.owns(b[:0]) || p.owns(b[directAlign:]) || p.owns(make([]byte, 10, poolBufCap)) {
		t.Error("owns: wrong answer")
	}
	if p.get(poolBufCap+1) != nil {
		t.Error("get of more than poolBufCap bytes")
	}
	// A stream chunk grows in place to the largest size.
	b = b[:poolBufCap]
	for i := range b {
		b[i] = byte(i)
	}
	p.put(b)
	if n := resident(t, b[poolKeep:cap(b)]); n != 0 {
		t.Errorf("%d pages past poolKeep still resident after put", n)
	}
	if n := resident(t, b[:poolKeep]); n != poolKeep/directAlign {
		t.Errorf("%d of %d kept pages resident", n, poolKeep/directAlign)
	}
	c := p.get(100)
	if unsafe.SliceData(c) != unsafe.SliceData(b) || p.mapped != 1 {
		t.Errorf("put buffer not reused (%d mapped)", p.mapped)
	}
	if c = c[:poolKeep+1]; c[poolKeep-1] != byte((poolKeep-1)%256) || c[poolKeep] != 0 {
		t.Error("kept bytes changed or trimmed bytes not dropped")
	}
	d := p.get(100)
	if unsafe.SliceData(d) == unsafe.SliceData(c) || p.mapped != 2 {
		t.Error("a buffer lent twice")
	}
	p.put(c)
	p.release() // the last session: idle buffers go
	if len(p.maps) != 1 || len(p.free) != 0 {
		t.Errorf("after release: %d mapped, %d idle; want only the one lent out", len(p.maps), len(p.free))
	}
	p.put(d) // put back with no session: unmapped
	if len(p.maps) != 0 || len(p.free) != 0 {
		t.Errorf("after the last put: %d mapped, %d idle", len(p.maps), len(p.free))
	}
}

// TestStreamChunkGrowsInPlace: a stream's chunk grows in its pooled
// buffer up to the chunker's largest chunk without being copied to
// another buffer, and the session's buffers go back to the pool.
func TestStreamChunkGrowsInPlace(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	b, err := s.StartBackup(ctx, GroupRef{Type: TypeHost, ID: "h"}, time.Unix(1_800_000_000, 0), BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sw, err := b.CreateStream(ctx, "data.pxar", DefaultAvgChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	first := unsafe.SliceData(sw.buf)
	// Zeros never match the chunker's boundary pattern: one chunk of the
	// largest size, written in pieces.
	piece := make([]byte, 1<<20)
	for range poolMaxChunk / len(piece) {
		if _, err := sw.Write(piece); err != nil {
			t.Fatal(err)
		}
		if len(sw.buf) > chunkHeadroom && unsafe.SliceData(sw.buf) != first {
			t.Fatalf("chunk moved to another buffer at %d bytes", len(sw.buf)-chunkHeadroom)
		}
	}
	if _, err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	if n := sw.w.n; n != 1 {
		t.Errorf("%d chunks, want 1", n)
	}
	if len(s.pool.maps) != 0 {
		t.Errorf("%d pool buffers mapped after the backup", len(s.pool.maps))
	}
}

// TestBufPoolWarm: at most poolWarm idle buffers keep memory; the others
// give all their pages back, and get lends the warm ones first.
func TestBufPoolWarm(t *testing.T) {
	var p bufPool
	p.acquire()
	defer p.release()
	var bufs [][]byte
	for range poolWarm + 2 {
		b := p.get(poolKeep + directAlign)
		for i := range b {
			b[i] = 1
		}
		bufs = append(bufs, b)
	}
	for _, b := range bufs {
		p.put(b)
	}
	for i, b := range bufs {
		want := 0
		if i < poolWarm {
			want = poolKeep / directAlign
		}
		if n := resident(t, b[:cap(b)]); n != want {
			t.Errorf("idle buffer %d: %d pages resident, want %d", i, n, want)
		}
	}
	if len(p.free) != poolWarm || len(p.cold) != 2 {
		t.Fatalf("%d warm and %d cold idle buffers, want %d and 2", len(p.free), len(p.cold), poolWarm)
	}
	for i := range poolWarm {
		b := p.get(10)
		if resident(t, b[:poolKeep]) != poolKeep/directAlign {
			t.Errorf("get %d lent a cold buffer while warm ones were idle", i)
		}
		defer p.put(b)
	}
	if b := p.get(10); resident(t, b[:cap(b)]) != 0 || p.mapped != poolWarm+2 {
		t.Errorf("after the warm ones: %d pages resident, %d mapped; want a cold buffer", resident(t, b[:cap(b)]), p.mapped)
	} else {
		p.put(b)
	}
}
