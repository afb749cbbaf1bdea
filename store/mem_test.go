package store

import (
	"bytes"
	"context"
	"testing"
)

// TestHeldChunkSurvivesEviction: bytes a reader holds stay as they were
// while their chunk is evicted and other chunks are loaded (their memory
// is used again only after the release).
func TestHeldChunkSurvivesEviction(t *testing.T) {
	s, a, img, _ := engineStore(t, Options{CacheBytes: 5 * mib}) // one 4 MiB chunk
	ctx := context.Background()
	held, err := a.NewReader().Read(ctx, make([]byte, 1000), 123)
	if err != nil {
		t.Fatal(err)
	}
	if s.CacheStats().Bytes == 0 {
		t.Fatal("the read was not served from the cache")
	}
	for _, off := range []int64{13 * mib, 17 * mib, 5 * mib, 13*mib + 1} { // chunks 3, 4, 1, 3
		got, err := readCopy(a.NewReader(), ctx, make([]byte, 1000), off)
		if err != nil || !bytes.Equal(got, img[off:off+1000]) {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	if !bytes.Equal(held.Bytes(), img[123:1123]) {
		t.Fatal("bytes held by a reader changed when their chunk was evicted")
	}
	mapped := s.mem.mapped.Load()
	held.Release()
	// Its buffer is free now: the next loads use it, mapping nothing new.
	faults := s.mem.faults.Load()
	for _, off := range []int64{0, 13 * mib, 0} {
		if got, err := readCopy(a.NewReader(), ctx, make([]byte, 1000), off); err != nil || !bytes.Equal(got, img[off:off+1000]) {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	if n := s.mem.faults.Load() - faults; n != 0 {
		t.Errorf("%d buffers mapped after the release, want 0 (mapped before: %d bytes)", n, mapped)
	}
}

// TestScanReusesMemory: a sequential reader going through more chunks
// than the cache holds uses the same few buffers again instead of fresh
// memory for every chunk.
func TestScanReusesMemory(t *testing.T) {
	s, a, img, loads := engineStore(t, Options{CacheBytes: 9 * mib})
	ctx := context.Background()
	for range 3 {
		var out bytes.Buffer
		if _, err := a.WriteTo(&out); err != nil || !bytes.Equal(out.Bytes(), img) {
			t.Fatalf("WriteTo: %v", err)
		}
	}
	r := a.NewReader()
	for off := int64(0); off < int64(len(img)); off += 128 << 10 {
		n := min(128<<10, int64(len(img))-off)
		if got, err := readCopy(r, ctx, make([]byte, n), off); err != nil || !bytes.Equal(got, img[off:off+n]) {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	t.Logf("%d chunk loads, %d buffers mapped", loads.Load(), s.mem.faults.Load())
	// 5 data chunks a pass (one is a hole), 4 passes.
	if n := loads.Load(); n < 12 {
		t.Fatalf("%d chunk loads: the cache held more than its bound", n)
	}
	// The cache holds two chunks; read-ahead has one chunk per core
	// loading; a compressed chunk needs a scratch buffer beside its own.
	if n, bound := s.mem.faults.Load(), int64(8); n > bound {
		t.Errorf("%d buffers mapped for %d chunk loads, want at most %d", n, loads.Load(), bound)
	}
	if st := s.CacheStats(); st.Bytes > 9*mib {
		t.Errorf("cache holds %d bytes, bound %d", st.Bytes, 9*mib)
	}
}

// TestPrewarmMemory: after PrewarmMemory the first chunk loads of a
// fresh store map no new memory.
func TestPrewarmMemory(t *testing.T) {
	s, a, img, _ := engineStore(t, Options{})
	s.PrewarmMemory()
	faults := s.mem.faults.Load()
	for _, off := range []int64{0, 5 * mib, int64(len(img)) - 10} { // random, text, the short tail
		if got, err := readCopy(a.NewReader(), context.Background(), make([]byte, 10), off); err != nil || !bytes.Equal(got, img[off:off+10]) {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	if n := s.mem.faults.Load() - faults; n != 0 {
		t.Errorf("%d buffers mapped after PrewarmMemory, want 0", n)
	}
}

// TestRandomReadsKeepRereadableOut: random reads of a verified
// uncompressed chunk (served by pread afterwards) leave it in the scan
// segment, evicted first; a compressed chunk read at random is promoted
// to the protected segment as before.
func TestRandomReadsKeepRereadableOut(t *testing.T) {
	s, a, img, _ := engineStore(t, Options{})
	ctx := context.Background()
	for range 3 {
		for _, off := range []int64{100, 5*mib + 100} { // chunk 0: random, chunk 1: text
			r := a.NewReader()
			if got, err := readCopy(r, ctx, make([]byte, 4096), off); err != nil || !bytes.Equal(got, img[off:off+4096]) {
				t.Fatalf("read at %d: %v", off, err)
			}
		}
	}
	seg := func(i int) int {
		d, _, _ := a.Index().Chunk(i)
		s.cache.mu.Lock()
		defer s.cache.mu.Unlock()
		e, ok := s.cache.items[cacheKey{d: d}]
		if !ok {
			return -1
		}
		return e.Value.(*cacheEntry).seg
	}
	if got := seg(0); got != segScan {
		t.Errorf("random chunk read at random in segment %d, want the scan segment %d", got, segScan)
	}
	if got := seg(1); got != segProtected {
		t.Errorf("text chunk read at random in segment %d, want protected %d", got, segProtected)
	}
}

// TestAssembleFromFreePages: a buffer of a size no free buffer has is
// made of the pages of free buffers (moved, not copied, not fresh):
// what they held shows at its start, nothing new is faulted in, a part
// left over stays free with its bytes, and the mapped count stays exact.
func TestAssembleFromFreePages(t *testing.T) {
	m := newChunkMem()
	m.maxFree = 64 << 20
	fill := func(b *memBuf, v byte) {
		for i := range b.mem {
			b.mem[i] = v
		}
	}
	a, b := m.get(2<<20), m.get(6<<20)
	fill(a, 1)
	fill(b, 2)
	m.put(a)
	m.put(b)
	faults, mapped := m.faults.Load(), m.mapped.Load()
	if mapped != 8<<20 {
		t.Fatalf("mapped %d, want 8 MiB", mapped)
	}
	c := m.get(7<<20 + 12345) // 8 MiB: neither free buffer alone
	if len(c.mem) != 8<<20 || m.faults.Load() != faults || m.moved.Load() != 8<<20 {
		t.Fatalf("buffer of %d bytes, %d fresh, %d bytes moved; want 8 MiB from the free pages", len(c.mem), m.faults.Load()-faults, m.moved.Load())
	}
	var ones, twos int
	for _, v := range c.mem {
		switch v {
		case 1:
			ones++
		case 2:
			twos++
		}
	}
	if ones != 2<<20 || twos != 6<<20 {
		t.Errorf("assembled buffer holds %d bytes of the 2 MiB part and %d of the 6 MiB one", ones, twos)
	}
	if m.mapped.Load() != mapped || m.freeBytes != 0 {
		t.Errorf("mapped %d (want %d), free %d", m.mapped.Load(), mapped, m.freeBytes)
	}
	fill(c, 3)
	m.put(c)
	// A larger buffer: the 8 MiB of pages moved, the rest fresh.
	d := m.get(10 << 20)
	if len(d.mem) != 10<<20 || m.moved.Load() != 16<<20 || d.mem[0] != 3 || d.mem[8<<20-1] != 3 {
		t.Errorf("10 MiB buffer: %d bytes, %d moved", len(d.mem), m.moved.Load())
	}
	d.mem[10<<20-1] = 4 // the fresh part is usable
	m.put(d)
	m.release()
	if n := m.mapped.Load(); n != 0 {
		t.Errorf("%d bytes mapped after release", n)
	}
}
