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

	"golang.org/x/sys/unix"
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
// workers read their chunks themselves: with O_DIRECT when the offset is
// aligned, through the page cache when not) is stored exactly as the
// same bytes read sequentially, verifies, and leaves the file's offset
// after the image. Each file is backed up right after it was written,
// its pages still dirty in the page cache: a direct read must see them
// (the kernel writes them back first), not what the disk held before.
func TestAddImagePositioned(t *testing.T) {
	ctx := context.Background()
	for _, start := range []int{directAlign, 100} {
		path, size := imageFixture(t, start)
		// Chunks read with O_DIRECT: all of them at the aligned offset
		// where the file system serves such reads, none elsewhere.
		direct := int64(0)
		if start%directAlign == 0 && directReadable(t, filepath.Dir(path)) {
			direct = int64(size+FixedChunkSize-1) / FixedChunkSize
		}
		s := newTestStore(t)
		csums := map[string]string{}
		for i, mode := range []string{"positioned", "sequential"} {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Seek(int64(start), io.SeekStart); err != nil {
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
			if err := b.Finish(ctx); err != nil {
				t.Fatal(err)
			}
			if off, _ := f.Seek(0, io.SeekCurrent); off != int64(start+size) {
				t.Errorf("at %d, %s: file offset %d after the image, want %d", start, mode, off, start+size)
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
				t.Errorf("at %d, %s: read %d bytes, want %d", start, mode, n, size)
			}
			want := direct
			if mode == "sequential" {
				want = 0
			}
			if n := b.directReads.Load(); n != want {
				t.Errorf("at %d, %s: %d chunks read with O_DIRECT, want %d", start, mode, n, want)
			}
		}
		if csums["positioned"] == "" || csums["positioned"] != csums["sequential"] {
			t.Errorf("at %d: index checksums differ: %v", start, csums)
		}
	}
}

// directReadable reports whether the file system of dir serves O_DIRECT
// reads (tmpfs before Linux 6.6 does not): where it does, an aligned
// image must be read so.
func directReadable(t *testing.T, dir string) bool {
	t.Helper()
	p := filepath.Join(dir, "direct-probe")
	if err := os.WriteFile(p, make([]byte, directAlign), 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(p)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Logf("%s: no O_DIRECT (%v)", dir, err)
		return false
	}
	defer unix.Close(fd)
	buf, err := unix.Mmap(-1, 0, directAlign, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	if n, err := unix.Pread(fd, buf, 0); n != directAlign {
		t.Logf("%s: O_DIRECT read: %d, %v", dir, n, err)
		return false
	}
	return true
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
