package store

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// fetchingChunks is a chunk directory standing in for a remote backend:
// it reads chunks into the read engine's buffers (ChunkFetcher) and
// counts the calls.
type fetchingChunks struct {
	*FileChunkStore
	calls atomic.Int64
}

func (f *fetchingChunks) FetchInto(ctx context.Context, d Digest, bufs func(int64) ([][]byte, error)) error {
	f.calls.Add(1)
	return fetchFromGet(ctx, f.FileChunkStore, d, bufs)
}

// fetchFromGet is FetchInto for test backends that only have Get: the
// blob read whole, then copied into the buffers bufs gives.
func fetchFromGet(ctx context.Context, s *FileChunkStore, d Digest, bufs func(int64) ([][]byte, error)) error {
	blob, err := s.Get(ctx, d)
	if err != nil {
		return err
	}
	bs, err := bufs(int64(len(blob)))
	if err != nil {
		return err
	}
	for _, b := range bs {
		blob = blob[copy(b, blob):]
	}
	return nil
}

// engineStoreAway makes an engineStore, closes it and moves its chunk
// directory away, leaving an empty one: it returns the store's archive
// (for its index and size), the image, the store's root and a backend
// serving the moved chunks, for a store opened again on root with it as
// Options.Backend (chunks that come from elsewhere, as from a bucket).
func engineStoreAway(t *testing.T) (*Archive, []byte, string, *fetchingChunks) {
	t.Helper()
	_, a0, img, _ := engineStore(t, Options{})
	root := a0.s.Root()
	ref := a0.s.chunks.Dir()
	if err := a0.s.Close(); err != nil {
		t.Fatal(err)
	}
	remote := filepath.Join(t.TempDir(), "remote")
	if err := os.Rename(ref, remote); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(ref, 0o755); err != nil {
		t.Fatal(err)
	}
	return a0, img, root, &fetchingChunks{FileChunkStore: NewFileChunkStore(remote)}
}

// TestRemoteChunksInEngineMemory: chunks the read engine loads from a
// backend (Options.Backend: here a second chunk directory, with and
// without ChunkFetcher) decode to the archive's bytes and land in the
// engine's own buffers (chunkMem, used again chunk after chunk), not in
// fresh Go memory per chunk.
func TestRemoteChunksInEngineMemory(t *testing.T) {
	for _, fetcher := range []bool{false, true} {
		t.Run(map[bool]string{false: "Get", true: "FetchInto"}[fetcher], func(t *testing.T) {
			a0, img, root, backend := engineStoreAway(t)
			s, err := Open(root, Options{RuntimeDir: t.TempDir(), Backend: func(*FileChunkStore) (ChunkStore, error) {
				if fetcher {
					return backend, nil
				}
				return backend.FileChunkStore, nil
			}})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			a := s.NewArchive(context.Background(), a0.Index())
			var buf bytes.Buffer
			if _, err := a.WriteTo(&buf); err != nil || !bytes.Equal(buf.Bytes(), img) {
				t.Fatalf("archive read from the backend: %v, same bytes: %v", err, bytes.Equal(buf.Bytes(), img))
			}
			if got := backend.calls.Load(); fetcher != (got > 0) {
				t.Errorf("FetchInto called %d times (backend implements it: %v)", got, fetcher)
			}
			data := 0
			for i := range a.Index().Len() {
				if a.IsHole(i) {
					continue
				}
				// Cached, or loaded again (WriteTo's chunks give their
				// buffers to the next ones once passed).
				d, err := a.chunk(context.Background(), i, false)
				if err != nil {
					t.Fatal(err)
				}
				if e := d.e; e == nil || e.buf == nil || e.buf.heap {
					t.Errorf("chunk %d (%d bytes) was decoded into Go memory, not the engine's buffers", i, len(d.Bytes()))
				}
				d.Release()
				data++
			}
			if data < 4 {
				t.Fatalf("only %d chunks with data: the test cannot fail", data)
			}
		})
	}
}
