package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// inflatingBlob returns a compressed blob whose zstd stream (no content
// size recorded, as PBS's streaming encoder writes) inflates to n zero
// bytes.
func inflatingBlob(t *testing.T, n int64) []byte {
	t.Helper()
	var payload bytes.Buffer
	enc, err := zstd.NewWriter(&payload, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, 1<<20)
	for written := int64(0); written < n; written += int64(len(zeros)) {
		if _, err := enc.Write(zeros); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	b := append([]byte(nil), magicCompressed[:]...)
	b = binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(payload.Bytes()))
	return append(b, payload.Bytes()...)
}

// TestManifestDecompressionBound: a small manifest that inflates to 1 GiB
// is refused with ErrTooLarge after allocating a few times the manifest
// limit in all (a 4 GiB one cost 430 MB before).
func TestManifestDecompressionBound(t *testing.T) {
	bomb := inflatingBlob(t, 1<<30)
	t.Logf("blob of %d bytes inflating to 1 GiB", len(bomb))
	s := newTestStore(t)
	ref := backupOne(t, s, GroupRef{Type: TypeVM, ID: "100"}, time.Unix(1_800_000_000, 0))
	if err := os.WriteFile(s.Path(ref.Dir()+"/"+ManifestName), bomb, 0o644); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := s.LoadManifest(ref)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("LoadManifest = %v, want ErrTooLarge", err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("refused after allocating %.1f MiB (limit %d MiB)", float64(alloc)/(1<<20), MaxManifestSize>>20)
	if alloc > 4*MaxManifestSize {
		t.Errorf("allocated %d bytes in all to refuse it, want at most %d", alloc, 4*MaxManifestSize)
	}
	// At the limit it decodes, one byte over it does not.
	c := NewCodec()
	exact := inflatingBlob(t, MaxManifestSize)
	if got, err := c.DecodeLimit(exact, MaxManifestSize); err != nil || len(got) != MaxManifestSize {
		t.Errorf("content at the limit: %d bytes, %v", len(got), err)
	}
	if _, err := c.DecodeLimit(exact, MaxManifestSize-1); !errors.Is(err, ErrTooLarge) {
		t.Errorf("content one byte over the limit: %v, want ErrTooLarge", err)
	}
	plain, _ := c.Encode(bytes.Repeat([]byte("x"), 100), false)
	if _, err := c.DecodeLimit(plain, 99); !errors.Is(err, ErrTooLarge) {
		t.Errorf("uncompressed content over the limit: %v", err)
	}
	if got, err := c.DecodeLimit(plain, 100); err != nil || len(got) != 100 {
		t.Errorf("uncompressed content at the limit: %d, %v", len(got), err)
	}
}
