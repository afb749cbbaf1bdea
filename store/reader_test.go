package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const mib = 1 << 20

// engineImage is an image of 4 MiB chunks: random (stored uncompressed),
// text (compressed), all zeros (a hole), random, text, and a short random
// tail.
func engineImage() []byte {
	var text []byte
	for i := 0; len(text) < 4*mib; i++ {
		text = fmt.Appendf(text, "line %d of a compressible text file\n", i)
	}
	text = text[:4*mib]
	img := slicesConcat(xorshiftBytes(1, 4*mib), text, make([]byte, 4*mib),
		xorshiftBytes(2, 4*mib), bytes.ToUpper(text), xorshiftBytes(3, mib+4321))
	return img
}

func slicesConcat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// engineStore makes a store with opts holding engineImage, and returns it
// with the image's archive and the number of chunk loads so far.
func engineStore(t *testing.T, opts Options) (*Store, *Archive, []byte, *atomic.Int64) {
	t.Helper()
	loads := &atomic.Int64{}
	opts.RuntimeDir, opts.LazyChunkDirs = t.TempDir(), true
	also := opts.OnChunkLoad
	opts.OnChunkLoad = func(d Digest) {
		loads.Add(1)
		if also != nil {
			also(d)
		}
	}
	s, err := Create(filepath.Join(t.TempDir(), "ds"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	img := engineImage()
	ctx := context.Background()
	a, err := s.OpenArchive(ctx, backupImage(t, s, img), "drive-scsi0.img.fidx")
	if err != nil {
		t.Fatal(err)
	}
	loads.Store(0)
	return s, a, img, loads
}

// TestReaderConcurrent runs readers of their own and users of the shared
// ReadAt at once, sequential and random, across chunk boundaries; run it
// with -race.
func TestReaderConcurrent(t *testing.T) {
	// A cache smaller than the image, and a spill file that wraps.
	_, a, img, _ := engineStore(t, Options{CacheBytes: 9 * mib, SpillBytes: 9 * mib, SpillDir: t.TempDir()})
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := a.NewReader()
			rnd := rand.New(rand.NewPCG(uint64(g), 1))
			seq := g%2 == 0
			off := int64(0)
			for range 200 {
				n := 1 + rnd.IntN(300<<10)
				if !seq {
					off = rnd.Int64N(int64(len(img)))
				}
				buf := make([]byte, n)
				var got []byte
				var err error
				release := func() {}
				if g == 5 {
					k, e := a.ReadAt(buf, off)
					got, err = buf[:k], e
					if errors.Is(err, io.EOF) {
						err = nil
					}
				} else {
					var d Data
					d, err = r.Read(ctx, buf, off)
					got = d.Bytes()
					// Compared while held, then released: the chunk's
					// memory may serve another chunk after that.
					release = d.Release
				}
				if err != nil {
					errs <- fmt.Errorf("reader %d at %d: %w", g, off, err)
					return
				}
				want := img[min(off, int64(len(img))):min(off+int64(n), int64(len(img)))]
				if !bytes.Equal(got, want) {
					errs <- fmt.Errorf("reader %d: %d bytes at %d differ", g, n, off)
					return
				}
				release()
				off += int64(len(got))
				if off >= int64(len(img)) {
					off = 0
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestReaderChunkBoundaries reads around every chunk boundary.
func TestReaderChunkBoundaries(t *testing.T) {
	_, a, img, _ := engineStore(t, Options{})
	ctx := context.Background()
	for i := range a.Index().Len() {
		_, start, _ := a.Index().Chunk(i)
		for _, d := range []int64{-4097, -1, 0, 1} {
			for _, n := range []int{1, 2, 4096, 4097, 4*mib + 2, 9 * mib} {
				off := int64(start) + d
				if off < 0 {
					continue
				}
				got, err := readCopy(a.NewReader(), ctx, make([]byte, n), off)
				if err != nil {
					t.Fatalf("%d bytes at %d: %v", n, off, err)
				}
				want := img[off:min(off+int64(n), int64(len(img)))]
				if !bytes.Equal(got, want) {
					t.Fatalf("%d bytes at %d: got %d bytes, differ", n, off, len(got))
				}
				// In parts: one per chunk touched, together the same.
				parts, err := a.NewReader().ReadParts(ctx, make([]byte, n), off)
				if err != nil {
					t.Fatalf("%d bytes at %d in parts: %v", n, off, err)
				}
				if got := bytes.Join(parts.Slices(), nil); !bytes.Equal(got, want) || parts.Len() != len(want) {
					t.Fatalf("%d bytes at %d in %d parts: got %d bytes, differ", n, off, len(parts), len(got))
				}
				first, _, _ := a.Index().Locate(uint64(off))
				last, _, _ := a.Index().Locate(uint64(off) + uint64(len(want)) - 1)
				if len(parts) != last-first+1 {
					t.Errorf("%d bytes at %d: %d parts for chunks %d to %d", n, off, len(parts), first, last)
				}
				parts.Release()
			}
		}
	}
	if got, err := readCopy(a.NewReader(), ctx, make([]byte, 10), int64(len(img))); err != nil || len(got) != 0 {
		t.Errorf("read at the end: %d bytes, %v", len(got), err)
	}
}

// TestReaderCorruptChunkInReadAhead damages the fourth chunk: a
// sequential reader reads up to it (read-ahead meets the damage first),
// gets an error for its range only, and reads on past it; the chunk is
// still reported bad when read again, everything else stays readable.
func TestReaderCorruptChunkInReadAhead(t *testing.T) {
	s, a, img, _ := engineStore(t, Options{})
	d, start, end := a.Index().Chunk(3)
	p := s.Chunks().Path(d)
	blob, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	blob[len(blob)/2] ^= 0xff
	fixCRC(blob) // the CRC passes; the digest does not
	if err := os.WriteFile(p, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := a.NewReader()
	const step = 128 << 10
	bad := 0
	for off := int64(0); off < int64(len(img)); off += step {
		got, err := readCopy(r, ctx, make([]byte, step), off)
		inBad := off+step > int64(start) && off < int64(end)
		switch {
		case inBad && err == nil:
			t.Fatalf("read at %d inside the corrupt chunk succeeded", off)
		case inBad:
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("read at %d: %v, want ErrCorrupt", off, err)
			}
			bad++
		case err != nil:
			t.Fatalf("read at %d outside the corrupt chunk: %v", off, err)
		case !bytes.Equal(got, img[off:min(off+step, int64(len(img)))]):
			t.Fatalf("read at %d: bytes differ", off)
		}
	}
	if bad != int((end-start)/step) {
		t.Errorf("%d reads failed, want %d", bad, (end-start)/step)
	}
	if _, err := readCopy(a.NewReader(), ctx, make([]byte, 10), int64(start)+5); !errors.Is(err, ErrCorrupt) {
		t.Errorf("corrupt chunk read again: %v", err)
	}
	if got, err := readCopy(a.NewReader(), ctx, make([]byte, 10), 5); err != nil || !bytes.Equal(got, img[5:15]) {
		t.Errorf("first chunk after the damage: %v", err)
	}
}

// TestHoles: an all-zero chunk is a hole by its digest: read without
// loading (even with its file gone), skipped by SeekData and not counted
// by DataBytes.
func TestHoles(t *testing.T) {
	s, a, img, loads := engineStore(t, Options{})
	d, start, end := a.Index().Chunk(2)
	if !a.IsHole(2) || a.IsHole(0) || a.IsHole(1) || a.IsHole(5) {
		t.Fatalf("holes: %v %v %v %v, want only chunk 2", a.IsHole(0), a.IsHole(1), a.IsHole(2), a.IsHole(5))
	}
	if err := os.Remove(s.Chunks().Path(d)); err != nil {
		t.Fatal(err)
	}
	got, err := readCopy(a.NewReader(), context.Background(), make([]byte, 3*mib), int64(start)+100)
	if err != nil || !bytes.Equal(got, img[int64(start)+100:int64(start)+100+3*mib]) || loads.Load() != 0 {
		t.Errorf("hole read: %v, %d loads", err, loads.Load())
	}
	size := int64(len(img))
	if got, want := a.DataBytes(0, size), size-int64(end-start); got != want {
		t.Errorf("DataBytes = %d, want %d", got, want)
	}
	if got := a.SeekData(0, size, int64(start)+7, false); got != int64(end) {
		t.Errorf("SEEK_DATA from inside the hole = %d, want %d", got, end)
	}
	if got := a.SeekData(0, size, 5, true); got != int64(start) {
		t.Errorf("SEEK_HOLE from 5 = %d, want %d", got, start)
	}
	if got := a.SeekData(0, size, int64(end), true); got != size {
		t.Errorf("SEEK_HOLE after the hole = %d, want the end %d", got, size)
	}
	// A file lying inside the hole only: no data, one hole.
	if got := a.SeekData(int64(start)+10, int64(start)+20, int64(start)+12, false); got != -1 {
		t.Errorf("SEEK_DATA in an all-hole range = %d, want -1", got)
	}
}

// TestRangeReads: small random reads of a chunk stored uncompressed are
// served by pread once the chunk was verified whole; a compressed chunk
// is decoded each time it is not cached.
func TestRangeReads(t *testing.T) {
	_, a, img, loads := engineStore(t, Options{CacheBytes: 1}) // caches nothing
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		off := rnd.Int64N(4*mib - 4096) // chunk 0: random data
		got, err := readCopy(a.NewReader(), ctx, make([]byte, 4096), off)
		if err != nil || !bytes.Equal(got, img[off:off+4096]) {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	if n := loads.Load(); n != 1 {
		t.Errorf("50 random reads of an uncompressed chunk loaded it %d times, want 1", n)
	}
	loads.Store(0)
	for range 3 {
		off := 4*mib + rnd.Int64N(4*mib-4096) // chunk 1: text
		got, err := readCopy(a.NewReader(), ctx, make([]byte, 4096), off)
		if err != nil || !bytes.Equal(got, img[off:off+4096]) {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	if n := loads.Load(); n != 3 {
		t.Errorf("3 uncached reads of a compressed chunk: %d loads, want 3", n)
	}
}

// TestCacheScanResistance: a working set read twice outside a scan
// survives a scan through many more chunks than the cache holds.
func TestCacheScanResistance(t *testing.T) {
	c := newChunkCache(100, newChunkMem())
	dig := func(i int) cacheKey { return cacheKey{d: Digest{byte(i), byte(i >> 8)}} }
	load := func(i int) func() ([]byte, *memBuf, bool, error) {
		return func() ([]byte, *memBuf, bool, error) { return make([]byte, 10), nil, false, nil }
	}
	for round := range 2 {
		for i := range 5 { // 50 bytes of working set
			c.get(dig(i), false, load(i))
		}
		_ = round
	}
	for i := 100; i < 1100; i++ {
		for range 3 { // a scan touches each chunk several times
			c.get(dig(i), true, load(i))
		}
	}
	for i := range 5 {
		if _, ok := c.peek(dig(i), false); !ok {
			t.Errorf("working-set chunk %d flushed by a scan", i)
		}
	}
	if st := c.Stats(); st.Bytes > 100 {
		t.Errorf("cache holds %d bytes, bound 100", st.Bytes)
	}
	// Without the scan marks the same accesses would flush it: the test
	// measures the policy, not the capacity.
	c2 := newChunkCache(100, newChunkMem())
	for range 2 {
		for i := range 5 {
			c2.get(dig(i), false, load(i))
		}
	}
	for i := 100; i < 1100; i++ {
		for range 3 {
			c2.get(dig(i), false, load(i))
		}
	}
	if _, ok := c2.peek(dig(0), false); ok {
		t.Errorf("a non-scan access pattern kept the old working set: the test cannot fail")
	}
}

// TestCacheKeepsTheChunkJustAdded: when a random-access working set
// fills the cache, a chunk a scan (or a reader of a plain archive's
// directory, entry by entry) loads stays cached for its next request
// instead of being the first evicted: evicting it decoded the same
// chunk once per directory entry (grep -r over a plain archive after a
// tar of another archive: 100 s instead of 4).
func TestCacheKeepsTheChunkJustAdded(t *testing.T) {
	c := newChunkCache(100, newChunkMem())
	dig := func(i int) cacheKey { return cacheKey{d: Digest{byte(i), 7}} }
	loads := 0
	load := func() ([]byte, *memBuf, bool, error) { loads++; return make([]byte, 10), nil, false, nil }
	get := func(i int, scan bool) {
		t.Helper()
		e, err := c.get(dig(i), scan, load)
		if err != nil {
			t.Fatal(err)
		}
		c.release(e)
	}
	for range 2 { // a working set read twice fills the cache
		for i := range 10 {
			get(i, false)
		}
	}
	for _, scan := range []bool{true, false} {
		i := 100
		if !scan {
			i = 101
		}
		before := loads
		for range 5 {
			get(i, scan)
		}
		if n := loads - before; n != 1 {
			t.Errorf("scan=%v: 5 requests of one chunk in a full cache loaded it %d times, want 1", scan, n)
		}
	}
	if st := c.Stats(); st.Bytes > 100 {
		t.Errorf("cache holds %d bytes, bound 100", st.Bytes)
	}
	// A scan takes at most its reserve (half of this cache) from the
	// working set.
	for i := 200; i < 300; i++ {
		get(i, true)
	}
	kept := 0
	for _, i := range []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 101} {
		if c.has(dig(i)) {
			kept++
		}
	}
	if kept < 5 {
		t.Errorf("a long scan left %d of the 11 chunks read outside it, want at least 5 (half the cache)", kept)
	}
}

// TestWriteToReadAhead: WriteTo streams the archive with read-ahead and
// gives the same bytes.
func TestWriteToReadAhead(t *testing.T) {
	_, a, img, _ := engineStore(t, Options{})
	var buf bytes.Buffer
	if n, err := a.WriteTo(&buf); err != nil || n != int64(len(img)) || !bytes.Equal(buf.Bytes(), img) {
		t.Fatalf("WriteTo: %d, %v", n, err)
	}
}

// readCopy is Reader.Read returning a copy of the bytes, released.
func readCopy(r *Reader, ctx context.Context, dest []byte, off int64) ([]byte, error) {
	d, err := r.Read(ctx, dest, off)
	b := bytes.Clone(d.Bytes())
	d.Release()
	return b, err
}

// TestReadAheadOncePerChunk: a sequential reader in kernel-sized requests
// queues one read-ahead job per chunk, not one per request (each job
// holds a decode slot, and duplicates waiting on a chunk being loaded
// held both cores' slots idle); after a jump, read-ahead starts again
// from the new place.
func TestReadAheadOncePerChunk(t *testing.T) {
	s, a, img, _ := engineStore(t, Options{})
	ctx := context.Background()
	r := a.NewReader()
	buf := make([]byte, 128<<10)
	read := func(from, to int) {
		for off := from; off < to; off += len(buf) {
			got, err := readCopy(r, ctx, buf, int64(off))
			if err != nil || !bytes.Equal(got, img[off:min(off+len(buf), len(img))]) {
				t.Fatalf("at %d: %d bytes, %v", off, len(got), err)
			}
		}
	}
	read(0, len(img))
	chunks := int64(a.Index().Len())
	if n := s.prefetchJobs.Load(); n == 0 || n > chunks {
		t.Errorf("%d read-ahead jobs for a sequential read of %d chunks", n, chunks)
	}
	// Back to the start: a jump, then sequential again.
	before := s.prefetchJobs.Load()
	read(0, 2*mib)
	if s.prefetchJobs.Load() == before {
		t.Error("no read-ahead after a jump back")
	}
}

// TestScanSegmentFirstInFirstOut: in the scan segment a chunk the reader
// has passed is evicted before the chunks read ahead of it, though the
// reader touched it last: an unread read-ahead chunk evicted would be
// decoded twice.
func TestScanSegmentFirstInFirstOut(t *testing.T) {
	c := newChunkCache(50, newChunkMem())
	dig := func(i int) cacheKey { return cacheKey{d: Digest{byte(i)}} }
	load := func() ([]byte, *memBuf, bool, error) { return make([]byte, 10), nil, false, nil }
	get := func(i int) {
		e, err := c.get(dig(i), true, load)
		if err != nil {
			t.Fatal(err)
		}
		c.release(e)
	}
	for i := 1; i <= 4; i++ { // read ahead: chunks 1-4
		get(i)
	}
	get(1) // the reader reads chunk 1, several times
	get(1)
	get(5) // read-ahead goes on: the cache is full
	get(6) // one chunk must go
	if c.has(dig(1)) {
		t.Error("the chunk the reader passed is still cached")
	}
	for i := 2; i <= 6; i++ {
		if !c.has(dig(i)) {
			t.Errorf("read-ahead chunk %d evicted before the reader got to it", i)
		}
	}
}

// TestSequentialSurvivesStraggler: a sequential reader stays sequential
// through one request far out of order (the kernel's read-ahead requests
// arrive so on a loaded machine), and turns random after two far ones
// in a row; random reads need two near ones in a row to turn it
// sequential.
func TestSequentialSurvivesStraggler(t *testing.T) {
	r := &Reader{next: -1}
	steps := []struct {
		off  int64
		want bool
	}{
		{0, false}, {128 << 10, false}, {256 << 10, true}, {384 << 10, true},
		{40 << 20, true}, // a straggler
		{512 << 10, true}, {640 << 10, true},
		{90 << 20, true}, {90<<20 + 128<<10, false}, // a jump: random again
		{90<<20 + 256<<10, false}, {90<<20 + 384<<10, true}, // sequential after two near
		{10 << 20, true}, {200 << 20, false}, {201 << 20, false}, // random
	}
	for i, s := range steps {
		if got := r.note(s.off, 128<<10); got != s.want {
			t.Errorf("request %d at %d: sequential %v, want %v", i, s.off, got, s.want)
		}
	}
}

// TestSequentialRereadOfVerifiedChunks: once a chunk stored uncompressed
// was verified, sequential reads of it (any size, across chunk
// boundaries) are preads of its verified file, not decodes, and give
// the same bytes; compressed chunks are still decoded.
func TestSequentialRereadOfVerifiedChunks(t *testing.T) {
	var mu sync.Mutex
	loaded := map[Digest]int{}
	s, a, img, _ := engineStore(t, Options{CacheBytes: 1, OnChunkLoad: func(d Digest) {
		mu.Lock()
		loaded[d]++
		mu.Unlock()
	}}) // caches nothing
	ctx := context.Background()
	for pass := range 2 {
		mu.Lock()
		clear(loaded)
		mu.Unlock()
		r := a.NewReader()
		for _, size := range []int{700 << 10, 1 << 20, 128 << 10} {
			buf := make([]byte, size)
			for off := 0; off < len(img); off += size {
				got, err := readCopy(r, ctx, buf, int64(off))
				if err != nil || !bytes.Equal(got, img[off:min(off+size, len(img))]) {
					t.Fatalf("pass %d, %d-byte reads, at %d: %d bytes, %v", pass, size, off, len(got), err)
				}
			}
		}
		if pass == 0 {
			continue
		}
		mu.Lock()
		for i := range a.Index().Len() {
			d, _, _ := a.Index().Chunk(i)
			compressed := i == 1 || i == 4
			switch n := loaded[d]; {
			case compressed && n == 0:
				t.Errorf("compressed chunk %d not decoded (nothing is cached)", i)
			case !compressed && n > 0:
				t.Errorf("chunk %d (uncompressed, verified, or a hole) loaded %d times on a second pass", i, n)
			}
		}
		mu.Unlock()
	}
	if s.files.verified.lru.Len() != 3 {
		t.Errorf("%d verified files open, want 3", s.files.verified.lru.Len())
	}
}

// TestOutOfOrderReadAheadStaysSequential: with a kernel read-ahead of 4
// MiB the requests are 1 MiB each, sent four at a time and served on as
// many goroutines, so they arrive out of order, some far behind (the
// order below was traced); the reader stays sequential throughout.
func TestOutOfOrderReadAheadStaysSequential(t *testing.T) {
	r := &Reader{next: -1}
	const k = 1 << 20
	offs := []int64{0, k / 2, 3 * k / 2, 5 * k / 2, 9 * k / 2, 13 * k / 2, 7 * k / 2, 15 * k / 2, 23 * k / 2,
		17 * k / 2, 21 * k / 2, 19 * k / 2, 11 * k / 2, 33 * k / 2, 31 * k / 2, 35 * k / 2, 37 * k / 2,
		39 * k / 2, 41 * k / 2, 43 * k / 2, 45 * k / 2, 25 * k / 2, 26 * k / 2, 28 * k / 2}
	for i, off := range offs {
		if got := r.note(off, k); i >= 2 && !got {
			t.Errorf("request %d at %d KiB: not sequential", i, off>>10)
		}
	}
	// Small random reads still need to be within seqWindow to count.
	r = &Reader{next: -1}
	for i, off := range []int64{100 * k, 96 * k, 104 * k, 97 * k} {
		if r.note(off, 4096) {
			t.Errorf("random 4 KiB read %d at %d MiB counted as sequential", i, off/k)
		}
	}
}

// backupImage backs up img as drive-scsi0.img of a snapshot of vm/1 in
// s and returns the snapshot.
func backupImage(t *testing.T, s *Store, img []byte) SnapshotRef {
	t.Helper()
	ctx := context.Background()
	b, err := s.StartBackup(ctx, GroupRef{Type: TypeVM, ID: "1"}, time.Unix(1700000000, 0), BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddImage(ctx, "drive-scsi0.img", bytes.NewReader(img), uint64(len(img))); err != nil {
		t.Fatal(err)
	}
	if err := b.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	return b.Ref()
}

// TestPlainChunkCRC: the read engine proves an unencrypted chunk by its
// SHA-256 and does not make a CRC pass of its own. A chunk whose header
// CRC alone is damaged therefore reads as its proven content, while
// verify reports the CRC as PBS does; a chunk whose stored bytes are
// damaged (here compressed ones) is ErrCorrupt named as a CRC error; the
// other chunks read fine.
func TestPlainChunkCRC(t *testing.T) {
	s := newTestStore(t)
	image := xorshiftBytes(5, 12<<20)
	copy(image[4<<20:8<<20], bytes.Repeat([]byte("compressible text\n"), 4<<20/18+1))
	ref := backupImage(t, s, image)
	idx, err := s.OpenIndex(ref, "drive-scsi0.img.fidx")
	if err != nil {
		t.Fatal(err)
	}
	d0, _, _ := idx.Chunk(0)
	d1, _, _ := idx.Chunk(1)
	damage := func(d Digest, off int) {
		p := s.chunks.Path(d)
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if off < 0 {
			off = len(raw) / 2
		}
		raw[off] ^= 1
		if err := os.WriteFile(p, raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	damage(d0, 8)  // the CRC field
	damage(d1, -1) // the middle of the compressed payload

	a, err := reopen(t, s).OpenArchive(context.Background(), ref, "drive-scsi0.img.fidx")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if n, err := a.ReadAt(buf, 100); err != nil || !bytes.Equal(buf[:n], image[100:100+4096]) {
		t.Errorf("chunk with only its CRC field damaged: %d bytes, %v", n, err)
	}
	if _, err := a.ReadAt(buf, 4<<20); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "crc") || !strings.Contains(err.Error(), d1.String()) {
		t.Errorf("chunk with a damaged payload: %v", err)
	}
	if n, err := a.ReadAt(buf, 8<<20); err != nil || !bytes.Equal(buf[:n], image[8<<20:8<<20+4096]) {
		t.Errorf("good chunk: %d bytes, %v", n, err)
	}
	r, err := reopen(t, s).NewVerifier(VerifyOptions{}).Verify(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	var crc0, bad1 bool
	for _, p := range r.Problems {
		crc0 = crc0 || strings.Contains(p.Error(), d0.String()) && strings.Contains(p.Error(), "crc")
		bad1 = bad1 || strings.Contains(p.Error(), d1.String())
	}
	if !crc0 || !bad1 {
		t.Errorf("verify problems %v: want the CRC of %s and chunk %s named", r.Problems, d0, d1)
	}
}
