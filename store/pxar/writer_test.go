package pxar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/pbsfs/pbsfs/store/catalog"
)

// memNode is one entry of an in-memory tree.
type memNode struct {
	info    SourceInfo
	content []byte
}

// memSource is a Source over a map of paths ("" is the root).
type memSource map[string]*memNode

func (m memSource) Lstat(p string) (*SourceInfo, error) {
	n, ok := m[p]
	if !ok {
		return nil, fs.ErrNotExist
	}
	info := n.info
	return &info, nil
}

func (m memSource) ReadDirNames(p string) ([]string, error) {
	var names []string
	for k := range m {
		if k == "" {
			continue
		}
		dir, name := "", k
		if i := strings.LastIndexByte(k, '/'); i >= 0 {
			dir, name = k[:i], k[i+1:]
		}
		if dir == p {
			names = append(names, name)
		}
	}
	// Unsorted on purpose: Create must sort.
	slices.Reverse(names)
	return names, nil
}

func (m memSource) Open(p string) (io.ReadCloser, error) {
	n, ok := m[p]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return io.NopCloser(bytes.NewReader(n.content)), nil
}

// catalog.Writer is what the encoder feeds.
var _ CatalogWriter = (*catalog.Writer)(nil)

// basicTree is the tree of spec §12 (basic.manifest.json).
func basicTree() memSource {
	return memSource{
		"":  {info: SourceInfo{Kind: KindDir, Metadata: Metadata{Mode: 0o40755}}},
		"a": {info: SourceInfo{Kind: KindFile, Size: 2, Metadata: Metadata{Mode: 0o100644}}, content: []byte("hi")},
	}
}

// TestEncodeBasic checks byte identity with the archives and catalog the
// real pxar encoder and PBS catalog writer made of the basic tree.
func TestEncodeBasic(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile("testdata/ref/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	prelude := read("basic-prelude.prelude.bin")
	tests := []struct {
		name                  string
		split                 bool
		prelude               []byte
		wantMeta, wantPayload []byte
		wantCatalog           []byte
	}{
		{name: "v1", wantMeta: read("basic.pxar"), wantCatalog: read("basic.pcat1")},
		{name: "split", split: true, wantMeta: read("basic.mpxar"), wantPayload: read("basic.ppxar")},
		{name: "split-prelude", split: true, prelude: prelude, wantMeta: read("basic-prelude.mpxar"), wantPayload: read("basic-prelude.ppxar")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var meta, payload, cat bytes.Buffer
			var w *Writer
			if tc.split {
				w = NewWriter(&meta, &payload)
			} else {
				w = NewWriter(&meta, nil)
			}
			cw, err := catalog.NewWriter(&cat)
			if err != nil {
				t.Fatal(err)
			}
			if err := cw.StartDirectory("root.pxar.didx"); err != nil {
				t.Fatal(err)
			}
			if err := Create(context.Background(), basicTree(), w, CreateOptions{Catalog: cw, Prelude: tc.prelude}); err != nil {
				t.Fatal(err)
			}
			if err := errors.Join(cw.EndDirectory(), cw.Finish()); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(meta.Bytes(), tc.wantMeta) {
				t.Errorf("metadata stream\n got %x\nwant %x", meta.Bytes(), tc.wantMeta)
			}
			if !bytes.Equal(payload.Bytes(), tc.wantPayload) {
				t.Errorf("payload stream\n got %x\nwant %x", payload.Bytes(), tc.wantPayload)
			}
			if tc.wantCatalog != nil && !bytes.Equal(cat.Bytes(), tc.wantCatalog) {
				t.Errorf("catalog\n got %x\nwant %x", cat.Bytes(), tc.wantCatalog)
			}
		})
	}
}

// TestEncodeEmpty checks byte identity for the empty tree.
func TestEncodeEmpty(t *testing.T) {
	tree := memSource{"": {info: SourceInfo{Kind: KindDir, Metadata: Metadata{Mode: 0o40755, Mtime: Timestamp{Secs: 1600000000}}}}}
	for _, split := range []bool{false, true} {
		t.Run(fmt.Sprint("split=", split), func(t *testing.T) {
			var meta, payload bytes.Buffer
			w, wantMeta, wantPayload := NewWriter(&meta, nil), "empty.pxar", ""
			if split {
				w, wantMeta, wantPayload = NewWriter(&meta, &payload), "empty.mpxar", "empty.ppxar"
			}
			if err := Create(context.Background(), tree, w, CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile("testdata/ref/" + wantMeta); !bytes.Equal(meta.Bytes(), b) {
				t.Errorf("metadata\n got %x\nwant %x", meta.Bytes(), b)
			}
			if wantPayload != "" {
				if b, _ := os.ReadFile("testdata/ref/" + wantPayload); !bytes.Equal(payload.Bytes(), b) {
					t.Errorf("payload\n got %x\nwant %x", payload.Bytes(), b)
				}
			}
		})
	}
}

// TestBSTOrder checks the goodbye table permutation against spec §6.4.
func TestBSTOrder(t *testing.T) {
	tests := map[int][]int{
		1: {0}, 2: {1, 0}, 3: {1, 0, 2}, 4: {2, 1, 3, 0}, 5: {3, 1, 4, 0, 2}, 6: {3, 1, 5, 0, 2, 4},
		7: {3, 1, 5, 0, 2, 4, 6}, 8: {4, 2, 6, 1, 3, 5, 7, 0}, 9: {5, 3, 7, 1, 4, 6, 8, 0, 2},
		10: {6, 3, 8, 1, 5, 7, 9, 0, 2, 4},
		16: {8, 4, 12, 2, 6, 10, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0},
		17: {9, 5, 13, 3, 7, 11, 15, 1, 4, 6, 8, 10, 12, 14, 16, 0, 2},
	}
	for n, want := range tests {
		if got := bstOrder(n); !slices.Equal(got, want) {
			t.Errorf("N=%d: %v, want %v", n, got, want)
		}
	}
}

// TestWriterMisuse checks that out-of-order calls fail with ErrWriter.
func TestWriterMisuse(t *testing.T) {
	dir := &Metadata{Mode: 0o40755}
	file := &Metadata{Mode: 0o100644}
	tests := []struct {
		name string
		fn   func(w *Writer) error
	}{
		{"child before root", func(w *Writer) error { _, err := w.AddFile("a", file, 0, nil); return err }},
		{"close open", func(w *Writer) error { w.BeginDir("", dir); return w.Close() }},
		{"bad name", func(w *Writer) error { w.BeginDir("", dir); return w.AddSpecial("a/b", &Metadata{Mode: 0o10644}) }},
		{"dot name", func(w *Writer) error { w.BeginDir("", dir); return w.BeginDir("..", dir) }},
		{"mode mismatch", func(w *Writer) error { w.BeginDir("", dir); return w.BeginDir("d", file) }},
		{"hardlink forward", func(w *Writer) error {
			w.BeginDir("", dir)
			return w.AddHardlink("h", "x", 1000)
		}},
		{"after end", func(w *Writer) error {
			w.BeginDir("", dir)
			w.EndDir()
			return w.BeginDir("x", dir)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := tc.fn(NewWriter(&buf, nil)); !errors.Is(err, ErrWriter) {
				t.Errorf("got %v, want ErrWriter", err)
			}
		})
	}
}
