package store

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSpillTier: chunks put are read back by range; the ring drops the
// chunks it wraps over, but never one being read (the write is skipped
// instead); a read past a chunk's end is refused.
func TestSpillTier(t *testing.T) {
	st := newSpillTier(t.TempDir(), 10<<10)
	if st == nil {
		t.Skip("no O_TMPFILE here")
	}
	defer st.close()
	chunk := func(i int) (Digest, []byte) {
		b := bytes.Repeat([]byte{byte(i)}, 4<<10)
		return DigestOf(b), b
	}
	d1, b1 := chunk(1)
	d2, b2 := chunk(2)
	d3, b3 := chunk(3)
	if !st.put(d1, b1) || !st.put(d2, b2) || !st.put(d1, b1) {
		t.Fatal("put refused with room")
	}
	got := make([]byte, 100)
	if !st.read(d2, got, 4000-100) || !bytes.Equal(got, b2[:100]) {
		t.Error("read of chunk 2")
	}
	if st.read(d2, got, 4<<10-50) {
		t.Error("read past the chunk's end served")
	}
	// Chunk 3 does not fit behind chunk 2: the ring wraps over chunk 1.
	if !st.put(d3, b3) || st.has(d1) || !st.has(d2) {
		t.Fatalf("after the wrap: 1 %v, 2 %v", st.has(d1), st.has(d2))
	}
	if !st.read(d3, got, 0) || !bytes.Equal(got, b3[:100]) || !st.read(d2, got, 0) || !bytes.Equal(got, b2[:100]) {
		t.Error("chunks 2 and 3 after the wrap")
	}
	// Chunk 2 held by a reader: a write over it is skipped.
	st.mu.Lock()
	st.items[d2].Value.(*spillEntry).refs++
	st.mu.Unlock()
	if st.put(d1, b1) {
		t.Error("a write over a chunk being read was made")
	}
	if !st.has(d2) || !st.has(d3) {
		t.Error("chunks lost by a skipped write")
	}
}

// TestSpillServesRandomReads: random small reads of compressed chunks
// the cache cannot hold decode each chunk once; afterwards they are
// served from the spill file. Sequential reads do not spill.
func TestSpillServesRandomReads(t *testing.T) {
	s, a, img, loads := engineStore(t, Options{CacheBytes: 5 * mib, SpillBytes: 64 * mib, SpillDir: t.TempDir()})
	if s.spill == nil {
		t.Skip("no O_TMPFILE here")
	}
	ctx := context.Background()
	text := []int64{4 * mib, 16 * mib} // the two compressed chunks
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		r := a.NewReader() // a fresh reader: each read is random
		off := text[i%2] + rnd.Int64N(4*mib-4096)
		got, err := readCopy(r, ctx, make([]byte, 4096), off)
		if err != nil || !bytes.Equal(got, img[off:off+4096]) {
			t.Fatalf("read at %d: %v", off, err)
		}
		if i == 1 {
			// Both decoded once; now evict them from the cache.
			for _, o := range []int64{0, 12 * mib} {
				readCopy(a.NewReader(), ctx, make([]byte, 4096), o)
				readCopy(a.NewReader(), ctx, make([]byte, 4096), o)
			}
			loads.Store(0)
		}
	}
	if n := loads.Load(); n != 0 {
		t.Errorf("%d chunk loads for reads of spilled chunks, want 0", n)
	}
	if s.spill.reads == 0 {
		t.Error("nothing read from the spill file")
	}
	writes := s.spill.writes
	var out bytes.Buffer
	if _, err := a.WriteTo(&out); err != nil || !bytes.Equal(out.Bytes(), img) {
		t.Fatal(err)
	}
	if s.spill.writes != writes {
		t.Errorf("a sequential read spilled %d chunks", s.spill.writes-writes)
	}
}

// TestRandomReadsDoNotReadAhead: random reads that happen to land near
// the last one do not start read-ahead; a reader going on from there
// does.
func TestRandomReadsDoNotReadAhead(t *testing.T) {
	s, a, img, _ := engineStore(t, Options{})
	ctx := context.Background()
	r := a.NewReader()
	for _, off := range []int64{9 * mib, 20 * mib, 20*mib + 100<<10, 3 * mib, 15 * mib} {
		if got, err := readCopy(r, ctx, make([]byte, 4096), off); err != nil || !bytes.Equal(got, img[off:off+4096]) {
			t.Fatal(err)
		}
	}
	if n := s.prefetchJobs.Load(); n != 0 {
		t.Errorf("%d read-ahead jobs for random reads", n)
	}
	for off := int64(15*mib + 4096); off < 16*mib; off += 4096 {
		readCopy(r, ctx, make([]byte, 4096), off)
	}
	if s.prefetchJobs.Load() == 0 {
		t.Error("no read-ahead for a sequential reader")
	}
}

// TestSpillFreeSpaceBound: the spill file takes at most a quarter of the
// space free in its file system when the mount starts.
func TestSpillFreeSpaceBound(t *testing.T) {
	dir := t.TempDir()
	var sf unix.Statfs_t
	if err := unix.Statfs(dir, &sf); err != nil {
		t.Fatal(err)
	}
	free := int64(sf.Bavail) * sf.Bsize
	st := newSpillTier(dir, 1<<62)
	if st == nil {
		t.Skip("no O_TMPFILE here")
	}
	defer st.close()
	if st.max > free/spillFreeShare+(64<<20) || st.max < free/spillFreeShare-(64<<20) {
		t.Errorf("spill bound %d with %d free, want about a quarter", st.max, free)
	}
}
