package store

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestIngestBlobCRC backs up chunks that alternate between incompressible
// and compressible data, so that the uploader's guess of whether a chunk
// is stored uncompressed (and its CRC is computed as it is hashed, see
// pieceSum) is right for some chunks and wrong for others, from a file
// (workers read), from a reader (one goroutine reads) and as a stream;
// every stored blob must decode with a correct CRC and have the kind its
// data calls for.
func TestIngestBlobCRC(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	text := bytes.Repeat([]byte("a compressible line of text\n"), FixedChunkSize/28+1)[:FixedChunkSize]
	var image []byte
	kinds := "RTRRTTRT"
	for i, k := range kinds {
		if k == 'T' {
			image = append(image, text...)
		} else {
			image = append(image, xorshiftBytes(uint64(i+1), FixedChunkSize)...)
		}
	}
	image = append(image, xorshiftBytes(99, 12345)...) // a short last chunk
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, image, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// One worker: chunks are stored in order, so the guess follows the
	// kinds above (wrong at every change of kind).
	b, err := s.StartBackup(ctx, GroupRef{Type: TypeVM, ID: "1"}, time.Unix(1_800_000_000, 0), BackupOptions{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddImage(ctx, "file.img", f, uint64(len(image))); err != nil {
		t.Fatal(err)
	}
	// A second, distinct image through the reader path.
	image2 := append(slicesConcat(image[FixedChunkSize:], image[:FixedChunkSize]), 1)
	if err := b.AddImage(ctx, "reader.img", bytes.NewReader(image2), uint64(len(image2))); err != nil {
		t.Fatal(err)
	}
	stream := slicesConcat(xorshiftBytes(77, 3<<20), text[:2<<20], xorshiftBytes(78, 3<<20), text[:3<<20])
	if err := b.AddStream(ctx, "data.pxar", bytes.NewReader(stream), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := b.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	counts := map[BlobKind]int{}
	for _, name := range []string{"file.img.fidx", "reader.img.fidx", "data.pxar.didx"} {
		idx, err := s.OpenIndex(b.Ref(), name)
		if err != nil {
			t.Fatal(err)
		}
		for i := range idx.Len() {
			d, _, _ := idx.Chunk(i)
			blob, err := s.chunks.Get(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			data, err := s.codec.Decode(blob) // checks the CRC
			if err != nil {
				t.Fatalf("%s chunk %d: %v", name, i, err)
			}
			kind, _ := BlobKindOf(blob)
			counts[kind]++
			want, _ := s.codec.Encode(data, s.codec.worthCompressing(data))
			if wantKind, _ := BlobKindOf(want); kind != wantKind {
				t.Errorf("%s chunk %d: stored as %v, want %v", name, i, kind, wantKind)
			}
		}
	}
	if counts[BlobCompressed] == 0 || counts[BlobUncompressed] == 0 {
		t.Errorf("blob kinds %v: want both", counts)
	}
	verifyAll(t, s, b.Ref())
}
