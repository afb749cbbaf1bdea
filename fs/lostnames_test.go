package fs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/store"
)

// TestLostNamesFromCatalog: in a plain archive with a chunk missing, the
// children whose names went with it are listed by the names the
// snapshot's catalog has, so ls lists every name and succeeds; each
// damaged name gives EIO, each intact one reads its bytes. Without the
// catalog the listing ends with EIO after the intact names, as before.
func TestLostNamesFromCatalog(t *testing.T) {
	s := newStore(t, nil)
	src := t.TempDir()
	const n = 24
	var all []string
	for i := range n {
		name := fmt.Sprintf("f%02d", i)
		all = append(all, name)
		if err := os.WriteFile(filepath.Join(src, name), randomBytes(uint64(100+i), 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	withCat := backup(t, s, snap{g: vm, t: t0, pxarDir: src})
	noCat := backup(t, s, snap{g: vm, t: t0.Add(time.Hour), pxarDir: src})
	if _, err := os.Stat(s.Path(withCat.Dir() + "/" + store.CatalogName)); err != nil {
		t.Fatalf("no catalog written: %v", err)
	}
	if err := os.Remove(s.Path(noCat.Dir() + "/" + store.CatalogName)); err != nil {
		t.Fatal(err)
	}
	// Both snapshots share their chunks: lose one in the middle.
	idx, err := s.OpenIndex(withCat, "root.pxar.didx")
	if err != nil {
		t.Fatal(err)
	}
	d, _, _ := idx.Chunk(idx.Len() / 2)
	if err := os.Remove(s.Chunks().Path(d)); err != nil {
		t.Fatal(err)
	}

	mnt, _ := mountStore(t, s, Options{})
	root := filepath.Join(mnt, "vm/100", withCat.TimeString(), "root.pxar")
	// Names only (ls -1): os.ReadDir would lstat the entries the
	// listing gives no type, which is EIO for the damaged ones.
	names, err := readNames(root)
	if err != nil || !slices.Equal(names, all) {
		t.Errorf("ls with the catalog: %v, %q; want every name %q", err, names, all)
	}
	damaged := 0
	for _, name := range all {
		got, err := os.ReadFile(filepath.Join(root, name))
		switch {
		case errors.Is(err, syscall.EIO):
			damaged++
		case err != nil:
			t.Errorf("%s: %v, want its bytes or EIO", name, err)
		default:
			if want, _ := os.ReadFile(filepath.Join(src, name)); !bytes.Equal(got, want) {
				t.Errorf("%s: wrong bytes", name)
			}
		}
	}
	if damaged == 0 || damaged > 8 {
		t.Errorf("%d damaged files, want 1 to 8", damaged)
	}

	bare := filepath.Join(mnt, "vm/100", noCat.TimeString(), "root.pxar")
	bareNames, err := readNames(bare)
	if !errors.Is(err, syscall.EIO) || len(bareNames) == 0 || len(bareNames) >= n {
		t.Errorf("ls without the catalog: %d names, %v; want the intact ones and EIO", len(bareNames), err)
	}
	t.Logf("%d of %d files damaged; without the catalog ls gives %d names", damaged, n, len(bareNames))
}

// readNames lists dir's names in order without looking at the entries.
func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	slices.Sort(names)
	return names, err
}
