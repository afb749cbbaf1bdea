package fs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/pbsfs/pbsfs/store"
	"golang.org/x/sys/unix"
)

// TestFirstStatReadsItsDirectoryOnly fails if the first stat of a file in
// a fresh mount of a plain archive reads a chunk outside the file's
// directory, the archive root and the snapshot's catalog: link counts
// must not cost a scan of the archive (which holds the file data).
func TestFirstStatReadsItsDirectoryOnly(t *testing.T) {
	src := t.TempDir()
	for _, d := range []string{"big", "small", "other"} {
		if err := os.Mkdir(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		if err := os.WriteFile(filepath.Join(src, "big", fmt.Sprint("f", i)), randomBytes(uint64(i), 6<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		if err := os.WriteFile(filepath.Join(src, "small", fmt.Sprint("f", i)), []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(src, "small/f3"), filepath.Join(src, "other/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "other/z"), randomBytes(99, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	loaded := map[store.Digest]bool{}
	opts := store.Options{RuntimeDir: t.TempDir(), LazyChunkDirs: true, OnChunkLoad: func(d store.Digest) {
		mu.Lock()
		loaded[d] = true
		mu.Unlock()
	}}
	s, err := store.Create(filepath.Join(t.TempDir(), "store"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ref := backup(t, s, snap{g: ct, t: t0, pxarDir: src})

	// The chunks the stat may read: the catalog's, and the metadata
	// index's around the root entry, the root's goodbye table, the
	// directory "small" and the directory of the one hardlink, which is
	// looked up to find its target (4 KiB of window read-ahead either
	// side). Found through a second Store, so that the mount's cache
	// starts empty.
	s2, err := store.Open(s.Root(), store.Options{RuntimeDir: opts.RuntimeDir})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	si, err := s2.Snapshot(ref)
	if err != nil {
		t.Fatal(err)
	}
	a, err := s2.OpenPxar(context.Background(), si, "root.pxar")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := a.Lookup("/small")
	if err != nil {
		t.Fatal(err)
	}
	linkDir, err := a.Lookup("/other")
	if err != nil {
		t.Fatal(err)
	}
	idx, err := s.OpenIndex(ref, "root.pxar.didx")
	if err != nil {
		t.Fatal(err)
	}
	size := int64(idx.Size())
	allowed := map[store.Digest]bool{}
	allow := func(x store.Index, from, to int64) {
		for i := range x.Len() {
			d, start, end := x.Chunk(i)
			if int64(end) > from-4096 && int64(start) < to+4096 {
				allowed[d] = true
			}
		}
	}
	allow(idx, 0, 4096)
	allow(idx, size-4*24-16, size) // root table: 3 children and the tail
	allow(idx, dir.FilenameOffset, dir.End)
	allow(idx, linkDir.FilenameOffset, linkDir.FilenameOffset+4096) // its entry
	allow(idx, linkDir.End-3*24-16, linkDir.End)                    // its goodbye table
	// The file "other/z" of 3 MiB lies between; its chunks must not be read.
	cidx, err := s.OpenIndex(ref, store.CatalogName)
	if err != nil {
		t.Fatal(err)
	}
	allow(cidx, 0, int64(cidx.Size()))
	if idx.Len() < 8 {
		t.Fatalf("archive of %d chunks: too few for the test to mean anything", idx.Len())
	}

	mnt, _ := mountStore(t, s, Options{})
	mu.Lock()
	loaded = map[store.Digest]bool{} // the backup itself loaded nothing; be sure
	mu.Unlock()
	var st unix.Stat_t
	p := filepath.Join(mnt, "ct/200", ref.TimeString(), "root.pxar/small/f3")
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	if st.Nlink != 2 {
		t.Errorf("small/f3 nlink %d, want 2 (hardlinked from other/link)", st.Nlink)
	}
	mu.Lock()
	var outside int
	for d := range loaded {
		if !allowed[d] {
			outside++
		}
	}
	n := len(loaded)
	mu.Unlock()
	if outside > 0 {
		t.Errorf("first stat loaded %d chunks, %d of them outside its directory, the root and the catalog (archive: %d chunks)", n, outside, idx.Len())
	}
	var st2 unix.Stat_t
	if err := unix.Lstat(filepath.Join(mnt, "ct/200", ref.TimeString(), "root.pxar/other/link"), &st2); err != nil {
		t.Fatal(err)
	}
	if st2.Ino != st.Ino || st2.Nlink != 2 {
		t.Errorf("other/link: inode %d nlink %d, want inode %d nlink 2", st2.Ino, st2.Nlink, st.Ino)
	}
}
