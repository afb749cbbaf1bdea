package store

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
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
	if !st.put(d1, b1, false) || !st.put(d2, b2, false) || !st.put(d1, b1, false) {
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
	if !st.put(d3, b3, false) || st.has(d1) || !st.has(d2) {
		t.Fatalf("after the wrap: 1 %v, 2 %v", st.has(d1), st.has(d2))
	}
	if !st.read(d3, got, 0) || !bytes.Equal(got, b3[:100]) || !st.read(d2, got, 0) || !bytes.Equal(got, b2[:100]) {
		t.Error("chunks 2 and 3 after the wrap")
	}
	// Chunk 2 held by a reader: a write over it is skipped.
	st.mu.Lock()
	st.items[d2].Value.(*spillEntry).refs++
	st.mu.Unlock()
	if st.put(d1, b1, false) {
		t.Error("a write over a chunk being read was made")
	}
	if !st.has(d2) || !st.has(d3) {
		t.Error("chunks lost by a skipped write")
	}
}

// TestSpillServesRandomReads: random small reads of compressed chunks
// the cache cannot hold decode each chunk once; afterwards they are
// served from the spill file, and so is a sequential read of them.
func TestSpillServesRandomReads(t *testing.T) {
	var mu sync.Mutex
	loaded := map[Digest]int{}
	s, a, img, loads := engineStore(t, Options{CacheBytes: 5 * mib, SpillBytes: 64 * mib, SpillDir: t.TempDir(),
		OnChunkLoad: func(d Digest) { mu.Lock(); loaded[d]++; mu.Unlock() }})
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
	mu.Lock()
	clear(loaded)
	mu.Unlock()
	r := a.NewReader()
	for _, off := range text {
		for o := off; o < off+4*mib; o += mib {
			if got, err := readCopy(r, ctx, make([]byte, mib), o); err != nil || !bytes.Equal(got, img[o:o+mib]) {
				t.Fatalf("sequential read at %d: %v", o, err)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, off := range text {
		i, _, _ := a.idx.Locate(uint64(off))
		if d, _, _ := a.idx.Chunk(i); loaded[d] != 0 {
			t.Errorf("chunk at %d loaded %d times by sequential reads of it spilled, want 0", off, loaded[d])
		}
	}
}

// TestSpillSequentialRereads: a sequential scan spills the compressed
// chunks it decodes (in the background), and a second scan, after the
// cache let them go, reads them back from the spill file: no chunk is
// loaded (decoded) twice. Uncompressed chunks are reread from their
// verified files and never spilled.
func TestSpillSequentialRereads(t *testing.T) {
	s, a, img, loads := engineStore(t, Options{CacheBytes: 64 * mib, SpillBytes: 64 * mib, SpillDir: t.TempDir()})
	if s.spill == nil {
		t.Skip("no O_TMPFILE here")
	}
	ctx := context.Background()
	// scan reads the image from the cache cleared, in 1 MiB requests,
	// and waits for its spill writes.
	scan := func() {
		t.Helper()
		s.cache.clear()
		r := a.NewReader()
		for off := int64(0); off < a.Size(); off += mib {
			n := min(mib, a.Size()-off)
			if got, err := readCopy(r, ctx, make([]byte, n), off); err != nil || !bytes.Equal(got, img[off:off+n]) {
				t.Fatalf("read at %d: %v", off, err)
			}
		}
		s.spilling.wait()
	}
	scan()
	first := loads.Load()
	// The image's six chunks: three random (uncompressed), two text
	// (compressed) and a hole, which is never loaded.
	if first != 5 {
		t.Fatalf("first scan loaded %d chunks, want 5", first)
	}
	if s.spill.writes != 2 {
		t.Errorf("first scan spilled %d chunks, want the 2 compressed ones", s.spill.writes)
	}
	// With writes pending at the bound a scan spills nothing more (a
	// slow disk does not hold more chunks' memory): into a spill file of
	// its own, the first kept for the second scan.
	spill := s.spill
	s.spill = newSpillTier(t.TempDir(), 64*mib)
	for range maxSpilling {
		s.spilling.tryAdd(maxSpilling)
	}
	s.cache.clear()
	r := a.NewReader()
	for off := int64(0); off < a.Size(); off += mib {
		readCopy(r, ctx, make([]byte, min(mib, a.Size()-off)), off)
	}
	for range maxSpilling {
		s.spilling.done()
	}
	s.spilling.wait() // for any write the scan started
	if s.spill.writes != 0 {
		t.Errorf("%d chunks spilled with %d writes pending", s.spill.writes, maxSpilling)
	}
	s.spill.close()
	s.spill = spill
	first = loads.Load()
	scan()
	if n := loads.Load() - first; n != 0 {
		t.Errorf("second scan loaded %d chunks, want 0", n)
	}
	if s.spill.loads != 2 {
		t.Errorf("second scan loaded %d chunks from the spill file into the cache, want 2", s.spill.loads)
	}
}

// TestSpillHoles: blocks of zeros are punched out of the spill file, not
// written, and read back as zeros, also where the ring held another
// chunk's data before; a chunk ending in zeros reads whole at the end of
// the file; a chunk of a length not a multiple of the page size reads
// back whole; all of it read by range and loaded whole, through the
// page cache and with O_DIRECT.
func TestSpillHoles(t *testing.T) {
	for _, direct := range []bool{false, true} {
		st := newSpillTier(t.TempDir(), 4*mib+8<<10)
		if st == nil {
			t.Skip("no O_TMPFILE here")
		}
		defer st.close()
		if direct && st.direct == nil {
			t.Log("no O_DIRECT here")
		}
		// Memory at a page boundary, as chunks have (chunkMem).
		mem := newChunkMem()
		buf := func(n int) []byte { return mem.get(max(n, smallBuf)).mem[:n] }
		full := buf(4 * mib)
		for i := range full {
			full[i] = 0xa5
		}
		sparse := buf(4 * mib)
		clear(sparse)
		copy(sparse[mib:], bytes.Repeat([]byte{7}, 100<<10)) // a data island
		sparse[3*mib+5] = 1                                  // a lone byte in a zero block
		blocks := func() int64 {
			var s unix.Stat_t
			if err := unix.Fstat(int(st.f.Fd()), &s); err != nil {
				t.Fatal(err)
			}
			return s.Blocks * 512
		}
		if !st.put(DigestOf(full), full, direct) {
			t.Fatal("put of a full chunk refused")
		}
		if b := blocks(); b < 4*mib {
			t.Skipf("the file system holds 4 MiB in %d bytes", b)
		}
		tail := buf(3*mib + 1000) // zeros to the end
		clear(tail)
		tail[0] = 9
		odd := buf(spillBlock + 3000) // a page and a bit past a block
		for i := range odd {
			odd[i] = byte(i)
		}
		for _, c := range [][]byte{sparse, tail, odd} {
			d := DigestOf(c)
			if !st.put(d, c, direct) { // wraps over the full chunk
				t.Fatal("put refused")
			}
			got := make([]byte, len(c))
			if !st.read(d, got, 0) || !bytes.Equal(got, c) {
				t.Fatalf("direct %v: chunk of %d bytes read back wrong", direct, len(c))
			}
			// Loaded whole (O_DIRECT where it can), as a sequential
			// reader's read-ahead does; not for another length.
			if whole, b, ok := st.load(d, uint64(len(c)), mem); !ok || !bytes.Equal(whole, c) {
				t.Fatalf("direct %v: chunk of %d bytes loaded wrong (%v)", direct, len(c), ok)
			} else {
				mem.put(b)
			}
			if _, _, ok := st.load(d, uint64(len(c)+1), mem); ok {
				t.Error("loaded for another length")
			}
		}
		// The data blocks of the first two chunks: two blocks of the
		// island, one of the lone byte, one of the tail's first byte,
		// each 64 KiB; the third chunk is data.
		if b := blocks(); b > 4*spillBlock+int64(len(odd))+64<<10 {
			t.Errorf("direct %v: spill file holds %d bytes for %d bytes of data blocks", direct, b, 4*spillBlock+len(odd))
		}
	}
}

// TestSpillGrowsInSteps: the file grows spillGrow at a time, not by a
// truncate per chunk, never past its bound; chunks read back whole,
// the zeros at the end of the last one too.
func TestSpillGrowsInSteps(t *testing.T) {
	const max = spillGrow + 8<<20
	st := newSpillTier(t.TempDir(), max)
	if st == nil {
		t.Skip("no O_TMPFILE here")
	}
	defer st.close()
	if st.max < max {
		t.Skip("not enough free space here")
	}
	r := rand.New(rand.NewPCG(1, 2))
	var ds []Digest
	var bs [][]byte
	for i := range 18 { // 72 MiB: past the first step, within the bound
		b := make([]byte, 4<<20)
		for j := range b[:len(b)-spillBlock] {
			b[j] = byte(r.Uint32())
		}
		b[0] = byte(i) // distinct even if the generator repeated
		d := DigestOf(b)
		if !st.put(d, b, true) {
			t.Fatalf("put %d refused", i)
		}
		ds, bs = append(ds, d), append(bs, b)
	}
	if st.grows != 2 {
		t.Errorf("%d truncates grew the file for 18 chunks; want 2", st.grows)
	}
	if st.size != max {
		t.Errorf("file size %d, want its bound %d", st.size, max)
	}
	got := make([]byte, 4<<20)
	for i, d := range ds {
		if !st.read(d, got, 0) || !bytes.Equal(got, bs[i]) {
			t.Fatalf("chunk %d read back wrong", i)
		}
	}
}
