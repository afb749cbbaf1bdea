package store

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// gatedChunks is a remote backend whose fetches wait at a gate: each
// fetch until open is closed announces its digest on arrived and waits
// for that, except for the digest let through at once.
type gatedChunks struct {
	*FileChunkStore
	through Digest
	arrived chan Digest
	open    chan struct{}
	calls   atomic.Int64
}

func (g *gatedChunks) FetchInto(ctx context.Context, d Digest, bufs func(int64) ([][]byte, error)) error {
	g.calls.Add(1)
	if d != g.through {
		select {
		case <-g.open:
		default:
			g.arrived <- d
			select {
			case <-g.open:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return fetchFromGet(ctx, g.FileChunkStore, d, bufs)
}

// TestReadAheadBytes: a store opened with Options.ReadAheadBytes of 16
// chunks (what an S3 datastore asks for) has a sequential reader's next
// 16 chunks fetched at once, not the default 6, and a whole sequential
// read through it fetches every chunk once: the decoded-chunk cache has
// room for the longer read-ahead and does not drop a chunk before its
// reader got to it.
func TestReadAheadBytes(t *testing.T) {
	const chunks, ahead = 20, 16
	var img []byte
	for i := range chunks {
		img = append(img, xorshiftBytes(uint64(i+1), FixedChunkSize)...)
	}
	root := filepath.Join(t.TempDir(), "ds")
	s0, err := Create(root, Options{RuntimeDir: t.TempDir(), LazyChunkDirs: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ref := backupImage(t, s0, img)
	s0.Close()
	// The chunks move to the "remote" directory; the local one is empty.
	local := filepath.Join(root, ".chunks")
	remote := filepath.Join(t.TempDir(), "remote")
	if err := os.Rename(local, remote); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(local, 0o755); err != nil {
		t.Fatal(err)
	}
	g := &gatedChunks{FileChunkStore: NewFileChunkStore(remote), arrived: make(chan Digest, 2*chunks), open: make(chan struct{})}
	s, err := Open(root, Options{RuntimeDir: t.TempDir(), ReadAheadSlots: 2 * ahead, ReadAheadBytes: ahead * FixedChunkSize,
		Backend: func(*FileChunkStore) (ChunkStore, error) { return g, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	idx, err := s.OpenIndex(ref, "drive-scsi0.img.fidx")
	if err != nil {
		t.Fatal(err)
	}
	if idx.Len() != chunks {
		t.Fatalf("%d chunks, want %d", idx.Len(), chunks)
	}
	g.through, _, _ = idx.Chunk(0)
	a := s.NewArchive(ctx, idx)
	r := a.NewReader()

	// Three near reads in chunk 0 (fetched at once) make the reader
	// sequential; its read-ahead then asks for the next chunks, which
	// wait at the gate.
	buf := make([]byte, 4096)
	for off := int64(0); off < 3*4096; off += 4096 {
		if _, err := r.ReadAt(buf, off); err != nil || !bytes.Equal(buf, img[off:off+4096]) {
			t.Fatalf("read at %d: %v, right bytes: %v", off, err, bytes.Equal(buf, img[off:off+4096]))
		}
	}
	fetching := map[Digest]bool{}
	deadline := time.After(30 * time.Second)
	for len(fetching) < ahead {
		select {
		case d := <-g.arrived:
			fetching[d] = true
		case <-deadline:
			t.Fatalf("%d chunks fetched at once after a sequential start, want %d", len(fetching), ahead)
		}
	}
	for i := 1; i <= ahead; i++ {
		if d, _, _ := idx.Chunk(i); !fetching[d] {
			t.Errorf("chunk %d not among those fetched ahead", i)
		}
	}
	close(g.open)

	// The rest of the archive in 256 KiB requests, as the kernel sends
	// them: every chunk fetched once.
	got := append([]byte(nil), img[:3*4096]...)
	part := make([]byte, 256<<10)
	for off := int64(len(got)); off < int64(len(img)); {
		n, err := r.ReadAt(part, off)
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		got = append(got, part[:n]...)
		off += int64(n)
	}
	if !bytes.Equal(got, img) {
		t.Fatal("the archive read back differs")
	}
	if n := g.calls.Load(); n != chunks {
		t.Errorf("%d fetches for %d chunks read in order: chunks read ahead were dropped and fetched again", n, chunks)
	}
}
