package pxar

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"sync"
	"testing"
)

// flatArchive writes a root directory with the given file names.
func flatArchive(t *testing.T, names []string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf, nil)
	if err := w.BeginDir("", &Metadata{Mode: 0o40755}); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if _, err := w.AddFile(n, &Metadata{Mode: 0o100644}, uint64(len(n)), bytes.NewReader([]byte(n))); err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(w.EndDir(), w.Close()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestHashCollisions gives every goodbye item the same hash: a lookup must
// still find its name wherever it sits in the tree, by comparing names.
func TestHashCollisions(t *testing.T) {
	names := []string{"n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9"}
	orig := flatArchive(t, names)
	n := len(names)
	gbPos := len(orig) - (headerSize + goodbyeItemSize*(n+1))
	for _, target := range names {
		t.Run(target, func(t *testing.T) {
			b := bytes.Clone(orig)
			for i := 0; i < n; i++ {
				binary.LittleEndian.PutUint64(b[gbPos+headerSize+i*goodbyeItemSize:], hashName(target))
			}
			a, err := Open(bytes.NewReader(b), int64(len(b)), nil)
			if err != nil {
				t.Fatal(err)
			}
			e, err := a.Lookup(target)
			if err != nil || e.Name() != target {
				t.Fatalf("lookup %q: %v, %v", target, e, err)
			}
			other := "n0"
			if target == "n0" {
				other = "n1"
			}
			if _, err := a.Lookup(other); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("lookup %q with a wrong hash: %v, want ErrNotExist", other, err)
			}
		})
	}
}

// TestDirReaderBatches lists a directory larger than one goodbye batch.
func TestDirReaderBatches(t *testing.T) {
	var names []string
	for i := 0; i < 3*goodbyeBatch+7; i++ {
		names = append(names, fmt.Sprintf("entry-%05d", i))
	}
	b := flatArchive(t, names)
	a, err := Open(bytes.NewReader(b), int64(len(b)), nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := a.OpenDir(a.Root())
	if err != nil {
		t.Fatal(err)
	}
	if r.Len() != len(names) {
		t.Errorf("Len = %d, want %d", r.Len(), len(names))
	}
	var got []string
	for {
		e, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e.Name())
	}
	sort.Strings(got)
	if fmt.Sprint(got) != fmt.Sprint(names) {
		t.Errorf("listing differs: %d names", len(got))
	}
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("Next after the end: %v", err)
	}
}

// TestArchiveConcurrent uses one Archive from several goroutines (run with
// -race to check the claim that an Archive is safe for concurrent use).
func TestArchiveConcurrent(t *testing.T) {
	meta, payload := allKindsArchive(t, true)
	a, err := Open(bytes.NewReader(meta), int64(len(meta)), bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	paths := []string{"dir/file", "dir/link", "sym", "chr", "blk", "fifo", "sock", "z-empty", "empty-dir", "dir"}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				for _, p := range paths {
					e, err := a.Lookup(p)
					if err == nil {
						e, err = a.Resolve(e)
					}
					if err == nil && e.Kind == KindFile {
						var r *io.SectionReader
						if r, err = a.Content(e); err == nil {
							var c []byte
							if c, err = io.ReadAll(r); err == nil && e.Size == 5 && string(c) != "hello" {
								err = fmt.Errorf("%s: content %q", p, c)
							}
						}
					}
					if err == nil && e.Kind == KindDir {
						_, err = a.dirEntries(e)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
