package store

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"unsafe"
)

// TestPassedChunkBufferReused: the buffer of a chunk a sequential reader
// has passed serves the next chunk loaded instead of fresh memory, but
// never while a reader holds that chunk's bytes, and never once an
// access came after the pass. The interleavings are forced step by step
// (one goroutine; the cache's lock orders the real ones the same way).
func TestPassedChunkBufferReused(t *testing.T) {
	m := newChunkMem()
	m.maxFree = 0 // no free pool: memory is used again only through reclaim
	c := newChunkCache(1<<30, m)
	defer c.clear()
	key := func(i int) cacheKey { return cacheKey{d: Digest{byte(i), 0x5c}} }
	bufs := map[int]*memBuf{}
	get := func(i int) *cacheEntry {
		t.Helper()
		e, err := c.get(key(i), true, func() ([]byte, *memBuf, bool, error) {
			b := m.get(4 << 20)
			for j := range b.mem {
				b.mem[j] = byte(i)
			}
			bufs[i] = b
			return b.mem, b, false, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	intact := func(e *cacheEntry, i int) bool {
		return bytes.Count(e.Data(), []byte{byte(i)}) == len(e.Data())
	}
	same := func(a, b *memBuf) bool { return unsafe.SliceData(a.mem) == unsafe.SliceData(b.mem) }

	held := get(1) // a reply still writing chunk 1's bytes
	c.pass(key(1)) // while its reader moves on
	e2 := get(2)
	c.release(e2)
	c.pass(key(2))
	fresh := m.faults.Load()
	c.release(get(3))
	if !same(bufs[3], bufs[2]) || m.faults.Load() != fresh {
		t.Fatalf("chunk 3 did not take the buffer of passed chunk 2 (%d fresh mappings)", m.faults.Load()-fresh)
	}
	if c.has(key(2)) || !c.has(key(1)) {
		t.Errorf("after the reuse: chunk 2 cached %v (want false), held chunk 1 cached %v (want true)", c.has(key(2)), c.has(key(1)))
	}
	if !intact(held, 1) || same(bufs[3], bufs[1]) {
		t.Fatal("the bytes of a held chunk were reused")
	}
	// Released, chunk 1's buffer serves the next chunk.
	c.release(held)
	c.release(get(4))
	if !same(bufs[4], bufs[1]) || m.faults.Load() != fresh {
		t.Errorf("chunk 4 did not take the buffer of chunk 1 once released (%d fresh mappings)", m.faults.Load()-fresh)
	}
	// A chunk read again after the pass stays: chunk 3 is passed, then
	// read (a second reader behind the first); chunk 5 takes fresh memory.
	c.pass(key(3))
	if e, ok := c.peek(key(3), true); ok {
		c.release(e)
	} else {
		t.Fatal("chunk 3 not cached")
	}
	c.release(get(5))
	if !c.has(key(3)) || m.faults.Load() != fresh+1 {
		t.Errorf("chunk 3, read after its pass: cached %v (want true); %d fresh mappings (want 1)", c.has(key(3)), m.faults.Load()-fresh)
	}
	// Only the scan segment: a chunk a random reader promoted is kept.
	e6, err := c.get(key(6), false, func() ([]byte, *memBuf, bool, error) { b := m.get(4 << 20); return b.mem, b, false, nil })
	if err != nil {
		t.Fatal(err)
	}
	c.release(e6)
	c.pass(key(6))
	c.release(get(7))
	if !c.has(key(6)) {
		t.Error("a chunk outside the scan segment was taken for its buffer")
	}
	if st := c.Stats(); st.Bytes != 5*4<<20 {
		t.Errorf("cache holds %d bytes, want chunks 3-7 (20 MiB)", st.Bytes)
	}
}

// TestPassedBuffersOfDynamicChunks: chunks of many sizes (a pxar
// archive's) are made of the huge pages of passed chunks when none has
// their size, and nothing of a held chunk is moved.
func TestPassedBuffersOfDynamicChunks(t *testing.T) {
	m := newChunkMem()
	m.maxFree = 0
	c := newChunkCache(1<<30, m)
	defer c.clear()
	key := func(i int) cacheKey { return cacheKey{d: Digest{byte(i), 0xd1}} }
	get := func(i, n int) *cacheEntry {
		t.Helper()
		e, err := c.get(key(i), true, func() ([]byte, *memBuf, bool, error) {
			b := m.get(n)
			for j := range n {
				b.mem[j] = byte(i)
			}
			return b.mem[:n], b, false, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	held := get(1, 3<<20) // 4 MiB buffer
	c.pass(key(1))
	c.release(get(2, 2<<20))   // 2 MiB
	c.release(get(3, 1<<20+5)) // 2 MiB
	c.pass(key(2))
	c.pass(key(3))
	fresh, moved := m.faults.Load(), m.moved.Load()
	e := get(4, 7<<20) // an 8 MiB buffer: chunks 2 and 3's pages, and 4 MiB fresh
	if got := m.moved.Load() - moved; got != 4<<20 || m.faults.Load() != fresh+1 {
		t.Errorf("8 MiB buffer: %d bytes moved from passed chunks (want 4 MiB), %d fresh or partly fresh", got, m.faults.Load()-fresh)
	}
	if bytes.Count(held.Data(), []byte{1}) != 3<<20 || !c.has(key(1)) {
		t.Fatal("the held chunk was moved or evicted")
	}
	if bytes.Count(e.Data(), []byte{4}) != 7<<20 {
		t.Fatal("assembled buffer lost its bytes")
	}
	c.release(e)
	c.release(held)
}

// TestPassedChunksConcurrent: sequential readers (WriteTo and kernel-sized
// requests) and random readers of an archive larger than passMargin read
// the right bytes at once while passed chunks give their buffers to the
// next ones; run with -race. One WriteTo alone maps far fewer buffers
// than the archive has chunks, though the cache could hold them all.
func TestPassedChunksConcurrent(t *testing.T) {
	var img []byte
	for i := 0; len(img) < 48*mib; i++ {
		img = fmt.Appendf(img, "%d: line %d of a compressible text, passed and read again\n", i%7919, i)
	}
	img = img[:48*mib]
	opts := Options{RuntimeDir: t.TempDir(), LazyChunkDirs: true}
	s, err := Create(filepath.Join(t.TempDir(), "ds"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	a, err := s.OpenArchive(ctx, backupImage(t, s, img), "drive-scsi0.img.fidx")
	if err != nil {
		t.Fatal(err)
	}
	// The archive's shared reader (directory listings of a pxar archive
	// go through it, and come back) marks nothing: every chunk stays.
	buf := make([]byte, 128<<10)
	for off := 0; off < len(img); off += len(buf) {
		if _, err := a.ReadAt(buf, int64(off)); err != nil || !bytes.Equal(buf, img[off:off+len(buf)]) {
			t.Fatalf("ReadAt %d: %v", off, err)
		}
	}
	if n := s.mem.reused.Load(); n != 0 || s.CacheStats().Bytes < int64(len(img)) {
		t.Fatalf("the shared reader's scan gave %d chunks' buffers away; cache holds %d bytes of %d", n, s.CacheStats().Bytes, len(img))
	}
	s.cache.clear()
	s.mem.release()
	s.mem.faults.Store(0)
	var out bytes.Buffer
	if _, err := a.WriteTo(&out); err != nil || !bytes.Equal(out.Bytes(), img) {
		t.Fatalf("WriteTo: %v", err)
	}
	// 12 chunks, each with a scratch buffer for its compressed bytes;
	// read-ahead keeps 6 (24 MiB) ahead and one decoding per core.
	t.Logf("WriteTo alone: %d buffers mapped fresh, %d taken from passed chunks", s.mem.faults.Load(), s.mem.reused.Load())
	if n, reused := s.mem.faults.Load(), s.mem.reused.Load(); n > 10 || reused == 0 {
		t.Errorf("a WriteTo of 12 chunks mapped %d fresh buffers and reused %d passed ones; want at most 10 and some", n, reused)
	}
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2 {
				switch g % 3 {
				case 0:
					var out bytes.Buffer
					if _, err := a.WriteTo(&out); err != nil || !bytes.Equal(out.Bytes(), img) {
						t.Errorf("WriteTo: %v", err)
						return
					}
				case 1:
					r := a.NewReader()
					buf := make([]byte, 128<<10)
					for off := 0; off < len(img); off += len(buf) {
						d, err := r.Read(ctx, buf, int64(off))
						if err != nil || !bytes.Equal(d.Bytes(), img[off:off+len(buf)]) {
							d.Release()
							t.Errorf("sequential read at %d: %v", off, err)
							return
						}
						d.Release()
					}
				case 2:
					r := a.NewReader()
					for i := range 200 {
						off := (i * 7919 * 4099) % (len(img) - 4096)
						d, err := r.Read(ctx, make([]byte, 4096), int64(off))
						if err != nil || !bytes.Equal(d.Bytes(), img[off:off+4096]) {
							d.Release()
							t.Errorf("random read at %d: %v", off, err)
							return
						}
						d.Release()
					}
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d buffers mapped fresh, %d taken from passed chunks", s.mem.faults.Load(), s.mem.reused.Load())
}
