package pxar

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// decodedEntry is an entry with its content, for comparisons.
type decodedEntry struct {
	e       Entry
	content []byte
}

// decodeList decodes an archive sequentially with contents.
func decodeList(meta, payload []byte) (list []decodedEntry, version int, prelude []byte, err error) {
	var pr io.ReaderAt
	if len(payload) > 0 {
		pr = bytes.NewReader(payload)
	}
	d := NewDecoder(bytes.NewReader(meta), int64(len(meta)), pr)
	for {
		e, err := d.Next()
		if err == io.EOF {
			return list, d.Version(), d.Prelude(), nil
		}
		if err != nil {
			return nil, 0, nil, err
		}
		c, err := io.ReadAll(d)
		if err != nil {
			return nil, 0, nil, err
		}
		list = append(list, decodedEntry{e: *e, content: c})
	}
}

// rewrite writes a decoded list again with a Writer.
func rewrite(list []decodedEntry, split bool, prelude []byte) (meta, payload []byte, err error) {
	var m, p bytes.Buffer
	w := NewWriter(&m, nil)
	if split {
		w = NewWriter(&m, &p)
		if prelude != nil {
			if err := w.SetPrelude(prelude); err != nil {
				return nil, nil, err
			}
		}
	}
	var stack []string
	offsets := map[int64]LinkOffset{}
	parent := func(p string) string {
		i := strings.LastIndexByte(p, '/')
		if i <= 0 {
			return "/"
		}
		return p[:i]
	}
	for i, de := range list {
		e := &de.e
		if i == 0 {
			if err := w.BeginDir("", &e.Metadata); err != nil {
				return nil, nil, err
			}
			stack = append(stack, "/")
			continue
		}
		for len(stack) > 0 && stack[len(stack)-1] != parent(e.Path) {
			if err := w.EndDir(); err != nil {
				return nil, nil, err
			}
			stack = stack[:len(stack)-1]
		}
		name := e.Name()
		switch e.Kind {
		case KindDir:
			if err := w.BeginDir(name, &e.Metadata); err != nil {
				return nil, nil, err
			}
			stack = append(stack, e.Path)
		case KindFile:
			off, err := w.AddFile(name, &e.Metadata, e.Size, bytes.NewReader(de.content))
			if err != nil {
				return nil, nil, err
			}
			offsets[e.FilenameOffset] = off
		case KindSymlink:
			err = w.AddSymlink(name, &e.Metadata, e.LinkTarget)
		case KindCharDev, KindBlockDev:
			err = w.AddDevice(name, &e.Metadata, e.DevMajor, e.DevMinor)
		case KindFifo, KindSocket:
			err = w.AddSpecial(name, &e.Metadata)
		case KindHardlink:
			off, ok := offsets[e.HardlinkOffset]
			if !ok {
				return nil, nil, ErrWriter
			}
			err = w.AddHardlink(name, e.LinkTarget, off)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	for range stack {
		if err := w.EndDir(); err != nil {
			return nil, nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, nil, err
	}
	return m.Bytes(), p.Bytes(), nil
}

// sameEntries compares two decoded lists, ignoring positions.
func sameEntries(a, b []decodedEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.e.Path != y.e.Path || x.e.Kind != y.e.Kind || x.e.Size != y.e.Size || x.e.LinkTarget != y.e.LinkTarget ||
			x.e.DevMajor != y.e.DevMajor || x.e.DevMinor != y.e.DevMinor || !bytes.Equal(x.content, y.content) {
			return false
		}
		mx, my := x.e.Metadata, y.e.Metadata
		if !reflect.DeepEqual(normalize(diskEntry{Xattrs: mx.Xattrs, ACL: mx.ACL}), normalize(diskEntry{Xattrs: my.Xattrs, ACL: my.ACL})) {
			return false
		}
		mx.Xattrs, my.Xattrs, mx.ACL, my.ACL = nil, nil, ACL{}, ACL{}
		if !reflect.DeepEqual(mx, my) && !(bytes.Equal(mx.FCaps, my.FCaps) && mx.FCaps != nil) {
			return false
		}
	}
	return true
}

// addSeeds adds the reference archives and generated ones.
func addSeeds(f *testing.F) {
	metas, _ := filepath.Glob("testdata/ref/*.pxar")
	mp, _ := filepath.Glob("testdata/ref/*.mpxar")
	pc, _ := filepath.Glob("testdata/pbs-client/*.mpxar")
	for _, m := range append(append(metas, mp...), pc...) {
		meta, err := os.ReadFile(m)
		if err != nil {
			f.Fatal(err)
		}
		payload, _ := os.ReadFile(strings.TrimSuffix(m, ".mpxar") + ".ppxar")
		f.Add(meta, payload)
	}
	v1, _ := allKindsArchive(f, false)
	f.Add(v1, []byte(nil))
	sm, sp := allKindsArchive(f, true)
	f.Add(sm, sp)
}

// FuzzDecoder runs the sequential decoder and a random-access walk over
// arbitrary input, and checks that whatever decodes can be written again
// and decodes to the same entries.
func FuzzDecoder(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, meta, payload []byte) {
		s, r := decodeAll(meta, payload, 2000)
		if !formatErr(s) || !formatErr(r) {
			t.Fatalf("unexpected error kind: %v / %v", s, r)
		}
		list, version, prelude, err := decodeList(meta, payload)
		if err != nil {
			return
		}
		if version == 2 && len(payload) == 0 {
			return // contents unknown
		}
		m2, p2, err := rewrite(list, version == 2, prelude)
		if err != nil {
			if !errors.Is(err, ErrWriter) {
				t.Fatalf("rewrite: %v", err)
			}
			return
		}
		list2, _, prelude2, err := decodeList(m2, p2)
		if err != nil {
			t.Fatalf("rewritten archive does not decode: %v", err)
		}
		if !sameEntries(list, list2) || !bytes.Equal(prelude, prelude2) {
			t.Fatalf("rewritten archive decodes differently")
		}
		if s, r := decodeAll(m2, p2, 1e6); s != nil || r != nil {
			t.Fatalf("rewritten archive: %v / %v", s, r)
		}
	})
}
