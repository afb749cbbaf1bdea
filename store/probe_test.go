package store

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestCompressProbe: random chunks are stored without a compression
// attempt, compressible ones (text, zeros, a mix with random) compressed;
// both are valid blobs that decode to the data.
func TestCompressProbe(t *testing.T) {
	c := NewCodec()
	random := xorshiftBytes(3, FixedChunkSize)
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog\n"), FixedChunkSize/44+1)[:FixedChunkSize]
	mixed := append(append([]byte(nil), random[:FixedChunkSize/2]...), make([]byte, FixedChunkSize/2)...)
	island := append([]byte(nil), random...)
	copy(island[FixedChunkSize/2:], make([]byte, 512<<10)) // 512 KiB of zeros: wider than the sample spacing
	for _, tc := range []struct {
		name string
		data []byte
		want bool
	}{
		{"random", random, false},
		{"text", text, true},
		{"half-zeros", mixed, true},
		{"zero-island", island, true},
		{"small-random", random[:100<<10], true}, // below probeMin: simply tried
	} {
		if got := c.worthCompressing(tc.data); got != tc.want {
			t.Errorf("%s: worthCompressing = %v, want %v", tc.name, got, tc.want)
		}
	}

	// End to end: a backup of random then text data stores one
	// uncompressed and one compressed chunk.
	ctx := context.Background()
	s := newTestStore(t)
	b, err := s.StartBackup(ctx, GroupRef{Type: TypeVM, ID: "1"}, time.Unix(1_800_000_000, 0), BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data := append(append([]byte(nil), random...), text...)
	if err := b.AddImage(ctx, "disk.img", bytes.NewReader(data), uint64(len(data))); err != nil {
		t.Fatal(err)
	}
	if err := b.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	verifyAll(t, s, b.Ref())
	for i, want := range []BlobKind{BlobUncompressed, BlobCompressed} {
		chunk := data[i*FixedChunkSize : (i+1)*FixedChunkSize]
		blob, err := s.chunks.Get(ctx, DigestOf(chunk))
		if err != nil {
			t.Fatal(err)
		}
		if k, _ := BlobKindOf(blob); k != want {
			t.Errorf("chunk %d stored as %v, want %v", i, k, want)
		}
	}
}
