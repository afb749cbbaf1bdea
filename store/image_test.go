package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sequentialOnly hides every method of a reader but Read, so AddImage
// takes its sequential path (a pipe's).
type sequentialOnly struct{ r io.Reader }

func (s sequentialOnly) Read(p []byte) (int, error) { return s.r.Read(p) }

// imageFixture writes a file of prefix junk bytes and then an image of
// random, zero and text chunks ending in a partial one; it returns the
// path and the image's size.
func imageFixture(t *testing.T, prefix int) (string, int) {
	t.Helper()
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog\n"), FixedChunkSize/44+1)[:FixedChunkSize]
	var img []byte
	img = append(img, xorshiftBytes(3, FixedChunkSize)...)
	img = append(img, make([]byte, FixedChunkSize)...)
	img = append(img, text...)
	img = append(img, xorshiftBytes(4, FixedChunkSize/2+123)...)
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, append(bytes.Repeat([]byte{0xAB}, prefix), img...), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, len(img)
}

// TestAddImagePositioned: an image read from a file at an offset (the
// workers read their chunks themselves) is stored exactly as the same
// bytes read sequentially, verifies, and leaves the file's offset after
// the image.
func TestAddImagePositioned(t *testing.T) {
	ctx := context.Background()
	path, size := imageFixture(t, 100)
	s := newTestStore(t)
	csums := map[string]string{}
	for i, mode := range []string{"positioned", "sequential"} {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Seek(100, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		var r io.Reader = f
		if mode == "sequential" {
			r = sequentialOnly{f}
		}
		b, err := s.StartBackup(ctx, GroupRef{Type: TypeVM, ID: mode}, time.Unix(1_800_000_000+int64(i), 0), BackupOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.AddImage(ctx, "disk.img", r, uint64(size)); err != nil {
			t.Fatal(err)
		}
		if err := b.Finish(); err != nil {
			t.Fatal(err)
		}
		if off, _ := f.Seek(0, io.SeekCurrent); off != int64(100+size) {
			t.Errorf("%s: file offset %d after the image, want %d", mode, off, 100+size)
		}
		verifyAll(t, s, b.Ref())
		m, err := s.LoadManifest(b.Ref())
		if err != nil {
			t.Fatal(err)
		}
		for _, fi := range m.Files {
			if fi.Filename == "disk.img.fidx" {
				csums[mode] = fi.Csum
			}
		}
		if n := b.Stats.BytesRead.Load(); n != int64(size) {
			t.Errorf("%s: read %d bytes, want %d", mode, n, size)
		}
	}
	if csums["positioned"] == "" || csums["positioned"] != csums["sequential"] {
		t.Errorf("index checksums differ: %v", csums)
	}
}

// TestAddImageSourceSize: a source shorter or longer than the size given
// fails the archive, on both paths.
func TestAddImageSourceSize(t *testing.T) {
	ctx := context.Background()
	path, size := imageFixture(t, 0)
	for _, mode := range []string{"positioned", "sequential"} {
		for _, tc := range []struct {
			name string
			size int
			want string
		}{{"shorter", size + 1, "unexpected EOF"}, {"longer", size - 1, "longer"}} {
			s := newTestStore(t)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			var r io.Reader = f
			if mode == "sequential" {
				r = sequentialOnly{f}
			}
			b, err := s.StartBackup(ctx, GroupRef{Type: TypeVM, ID: "1"}, time.Unix(1_800_000_000, 0), BackupOptions{})
			if err != nil {
				t.Fatal(err)
			}
			err = b.AddImage(ctx, "disk.img", r, uint64(tc.size))
			f.Close()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s source, %s: got %v, want an error with %q", tc.name, mode, err, tc.want)
			}
			if tc.name == "shorter" && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%s source, %s: %v is not io.ErrUnexpectedEOF", tc.name, mode, err)
			}
			b.Abort()
		}
	}
}
