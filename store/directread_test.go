package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// faultyDirect stands for a direct source: it reads from f and then
// answers as a file system refusing O_DIRECT might.
type faultyDirect struct {
	f    *os.File
	mode string
}

func (d faultyDirect) ReadAt(p []byte, off int64) (int, error) {
	switch d.mode {
	case "einval": // refused outright
		return 0, syscall.EINVAL
	case "partial": // refused after part of the chunk
		n, _ := d.f.ReadAt(p[:len(p)/2], off)
		return n, syscall.EINVAL
	case "at-end": // the whole chunk, then refused at the unaligned end
		n, _ := d.f.ReadAt(p, off)
		return n, syscall.EINVAL
	case "short": // less than the chunk, no error
		n, _ := d.f.ReadAt(p[:len(p)/3], off)
		return n, nil
	}
	return d.f.ReadAt(p, off)
}

// TestReadDirectFallback: a direct read the file system refuses (EINVAL,
// with or without part of the chunk read) is redone through the page
// cache and turns direct reads off for the rest of the image; EINVAL
// after the whole chunk was read (at an unaligned end) keeps the chunk;
// a direct read short of the chunk with no error fails it as an
// unexpected end of the source. Every chunk kept has the digest of the
// image's bytes.
func TestReadDirectFallback(t *testing.T) {
	ctx := context.Background()
	path, size := imageFixture(t, 0)
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode    string
		direct  int64 // chunks read directly
		off     bool  // direct reads turned off after the first chunk
		wantErr error
	}{
		{"einval", 0, true, nil},
		{"partial", 0, true, nil},
		{"at-end", 4, false, nil},
		{"short", 0, false, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			s := newTestStore(t)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b, err := s.StartBackup(ctx, GroupRef{Type: TypeVM, ID: "1"}, time.Unix(1_800_000_000, 0), BackupOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Abort()
			var mu sync.Mutex
			got := map[uint64]Digest{}
			u := b.uploaderOnly(ctx, func(c chunkRef) error {
				mu.Lock()
				defer mu.Unlock()
				got[c.end] = c.digest
				return nil
			})
			u.compute = make(chan struct{}, 1)
			u.direct = faultyDirect{f, tc.mode}
			chunks := (uint64(size) + FixedChunkSize - 1) / FixedChunkSize
			var firstErr error
			for i := range chunks {
				if err := u.readChunkAt(f, 0, i, uint64(size)); err != nil && firstErr == nil {
					firstErr = err
				}
			}
			if err := u.wait(); err != nil && firstErr == nil {
				firstErr = err
			}
			if tc.wantErr != nil {
				if !errors.Is(firstErr, tc.wantErr) {
					t.Fatalf("got %v, want %v", firstErr, tc.wantErr)
				}
				return
			}
			if firstErr != nil {
				t.Fatal(firstErr)
			}
			if n := b.directReads.Load(); n != tc.direct {
				t.Errorf("%d chunks read directly, want %d", n, tc.direct)
			}
			if off := u.noDirect.Load(); off != tc.off {
				t.Errorf("direct reads turned off: %v, want %v", off, tc.off)
			}
			if len(got) != int(chunks) {
				t.Fatalf("%d chunks recorded, want %d", len(got), chunks)
			}
			for off := 0; off < size; off += FixedChunkSize {
				end := min(off+FixedChunkSize, size)
				if got[uint64(end)] != DigestOf(img[off:end]) {
					t.Errorf("chunk ending at %d: digest of other bytes", end)
				}
			}
		})
	}
}

// TestAddImageDirectEncrypted: an encrypted backup of an image read with
// O_DIRECT reads back (with the key) as the image's bytes.
func TestAddImageDirectEncrypted(t *testing.T) {
	ctx := context.Background()
	path, size := imageFixture(t, 0)
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	direct := directReadable(t, filepath.Dir(path))
	s := newTestStore(t)
	k := vectorKey()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := s.StartBackup(ctx, GroupRef{Type: TypeVM, ID: "1"}, time.Unix(1_800_000_000, 0), BackupOptions{Key: k})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddImage(ctx, "disk.img", f, uint64(size)); err != nil {
		t.Fatal(err)
	}
	if err := b.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	if n := b.directReads.Load(); direct && n == 0 {
		t.Error("no chunk read with O_DIRECT")
	}
	got, err := readAll(t, reopen(t, s, k), b.Ref(), "disk.img.fidx")
	if err != nil || !bytes.Equal(got, img) {
		t.Errorf("image read back with the key: %d bytes (want %d), %v", len(got), len(img), err)
	}
}
