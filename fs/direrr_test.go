package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pbsfs/pbsfs/internal/testutil"
	"github.com/pbsfs/pbsfs/store"
)

// TestUnreadableDirCostsOneRead: in an archive directory whose goodbye
// table lies in a missing chunk, looking up many names and listing it (ls,
// find, stat of each) makes one failed read of that chunk, not one per
// name: the directory's error is kept for dirErrTTL, then read again. The
// failed reads are counted by the log lines naming the chunk (one per
// failed request). That directory alone gives EIO: its own entry stays
// readable.
func TestUnreadableDirCostsOneRead(t *testing.T) {
	var log testutil.SyncBuffer
	s := newStore(t, &log)
	src := t.TempDir()
	// d's goodbye table follows a large file, in a chunk of its own; the
	// root and d's entry lie in the first chunk, the root's table in the
	// last, behind another large file.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "d"), 0o755))
	must(os.WriteFile(filepath.Join(src, "d", "big"), randomBytes(21, 12<<20), 0o644))
	for i := range 20 {
		must(os.WriteFile(filepath.Join(src, "d", fmt.Sprintf("x%02d", i)), []byte("x"), 0o644))
	}
	must(os.WriteFile(filepath.Join(src, "z"), randomBytes(22, 12<<20), 0o644))
	ref := backup(t, s, snap{g: vm, t: t0, pxarDir: src})

	// The layout, found through another Store (whose chunk cache the
	// mount does not share).
	probe, err := store.Open(s.Root(), store.Options{RuntimeDir: s.RuntimeDir()})
	must(err)
	defer probe.Close()
	si, err := probe.Snapshot(ref)
	must(err)
	a, err := probe.OpenPxar(context.Background(), si, "root.pxar.didx")
	must(err)
	d, err := a.Lookup("/d")
	must(err)
	z, err := a.Lookup("/z")
	must(err)
	idx, err := s.OpenIndex(ref, "root.pxar.didx")
	must(err)
	chunkOf := func(off int64) int {
		i, _, err := idx.Locate(uint64(off))
		must(err)
		return i
	}
	// d's table ends where z's FILENAME starts.
	gb := chunkOf(z.FilenameOffset - 1)
	if gb == chunkOf(d.Offset) || gb == chunkOf(0) || gb == idx.Len()-1 {
		t.Fatalf("layout: d's table in chunk %d, d in %d, of %d", gb, chunkOf(d.Offset), idx.Len())
	}
	dg, _, _ := idx.Chunk(gb)
	must(os.Remove(s.Chunks().Path(dg)))

	mnt, m := mountStore(t, s, Options{})
	root := filepath.Join(mnt, "vm/100", ref.TimeString(), "root.pxar")
	if fi, err := os.Stat(filepath.Join(root, "d")); err != nil || !fi.IsDir() {
		t.Fatalf("stat d: %v", err)
	}
	// Each failed read of the lost chunk that answers a request is
	// logged, naming it: the first lookup reads, the others, and the
	// listing, give the kept error.
	failed := func() int { return strings.Count(log.String(), dg.String()) }
	before := failed()
	lookup := func(name string) {
		t.Helper()
		if _, err := os.Lstat(filepath.Join(root, "d", name)); !errors.Is(err, syscall.EIO) {
			t.Errorf("lookup %s in d: %v, want EIO", name, err)
		}
	}
	const names = 50
	for i := range names {
		lookup(fmt.Sprintf("n%d", i))
	}
	if _, err := os.ReadDir(filepath.Join(root, "d")); !errors.Is(err, syscall.EIO) {
		t.Errorf("ls d: %v, want EIO", err)
	}
	if n := failed() - before; n != 1 {
		t.Errorf("%d failed reads of the lost chunk for %d lookups and a listing, want 1", n, names)
	}
	if fi, err := os.Stat(filepath.Join(root, "d")); err != nil || !fi.IsDir() {
		t.Errorf("stat d after: %v", err)
	}
	// After dirErrTTL the directory is read again.
	m.mu.Lock()
	for k, e := range m.dirErrs.m {
		e.at = e.at.Add(-dirErrTTL)
		m.dirErrs.m[k] = e
	}
	m.mu.Unlock()
	before = failed()
	lookup("again")
	if n := failed() - before; n != 1 {
		t.Errorf("lookup after the TTL: %d failed reads, want 1", n)
	}
}
