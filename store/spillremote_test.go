package store

import (
	"bytes"
	"context"
	"testing"
)

// remoteEngineStore returns engineStore's image in a store whose chunks
// all come from a backend (a bucket stands for it: a chunk directory
// moved aside, read with FetchInto, which counts the fetches), with a
// spill file.
func remoteEngineStore(t *testing.T) (*Store, *Archive, []byte, *fetchingChunks) {
	t.Helper()
	a0, img, root, backend := engineStoreAway(t)
	s, err := Open(root, Options{RuntimeDir: t.TempDir(), CacheBytes: 64 * mib, SpillBytes: 64 * mib, SpillDir: t.TempDir(),
		Backend: func(*FileChunkStore) (ChunkStore, error) { return backend, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s.spill == nil {
		t.Skip("no O_TMPFILE here")
	}
	return s, s.NewArchive(context.Background(), a0.Index()), img, backend
}

// TestSpillRemoteScanAdmission: a sequential scan of chunks fetched from
// a bucket spills none of them the first time; a scan that fetches them
// again (the cache let them go) spills them, and the next scan reads
// them from the spill file without a fetch. A random read of a chunk
// fetched from the bucket spills it at once, as before.
func TestSpillRemoteScanAdmission(t *testing.T) {
	s, a, img, backend := remoteEngineStore(t)
	ctx := context.Background()
	// The image's data chunks (one is a hole, never fetched).
	data := 0
	for i := range a.Index().Len() {
		if !a.IsHole(i) {
			data++
		}
	}
	if data < 4 {
		t.Fatalf("only %d chunks with data: the test cannot fail", data)
	}
	// scan reads the image from the cache cleared, in 1 MiB requests,
	// waits for its spill writes, and returns the fetches and spill
	// writes it caused.
	scan := func() (fetched, written int64) {
		t.Helper()
		s.cache.clear()
		f0, w0 := backend.calls.Load(), s.spill.writes
		r := a.NewReader()
		for off := int64(0); off < a.Size(); off += mib {
			n := min(mib, a.Size()-off)
			if got, err := readCopy(r, ctx, make([]byte, n), off); err != nil || !bytes.Equal(got, img[off:off+n]) {
				t.Fatalf("read at %d: %v", off, err)
			}
		}
		s.spilling.wait()
		return backend.calls.Load() - f0, s.spill.writes - w0
	}
	// The scan's first request comes before its reader counts as
	// sequential: its chunk is loaded as a random read's, spilled at
	// once (the next scan reads it back from the spill file too).
	first := int64(0)
	if !a.IsHole(0) {
		first = 1
	}
	rest := int64(data) - first
	if f, w := scan(); f != int64(data) || w != first {
		t.Errorf("first scan: %d fetches, %d chunks spilled; want %d fetches and %d spilled (the first chunk's)", f, w, data, first)
	}
	if f, w := scan(); f != rest || w != rest {
		t.Errorf("second scan: %d fetches, %d chunks spilled; want %d of each", f, w, rest)
	}
	loads := s.spill.loads
	if f, w := scan(); f != 0 || w != 0 || s.spill.loads-loads != int64(data) {
		t.Errorf("third scan: %d fetches, %d chunks spilled, %d loaded from the spill file; want 0, 0, %d",
			f, w, s.spill.loads-loads, data)
	}

	// A random reader's chunk is spilled at once.
	s2, a2, img2, _ := remoteEngineStore(t)
	r := a2.NewReader()
	last := a2.Index().Len() - 1
	for a2.IsHole(last) {
		last--
	}
	_, start, _ := a2.Index().Chunk(last)
	if got, err := readCopy(r, ctx, make([]byte, 4096), int64(start)+100); err != nil || !bytes.Equal(got, img2[start+100:start+100+4096]) {
		t.Fatalf("random read: %v", err)
	}
	if s2.spill.writes != 1 {
		t.Errorf("a random read spilled %d chunks, want 1", s2.spill.writes)
	}
}
