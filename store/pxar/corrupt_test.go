package pxar

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// allKindsArchive writes a small archive with every entry kind from an
// in-memory tree, plain or split.
func allKindsArchive(t testing.TB, split bool) (meta, payload []byte) {
	gobj := uint64(6)
	proj := uint64(77)
	tree := memSource{
		"": {info: SourceInfo{Kind: KindDir, Metadata: Metadata{Mode: 0o40755, Mtime: Timestamp{Secs: 1700000000, Nanos: 5}}}},
		"dir": {info: SourceInfo{Kind: KindDir, Metadata: Metadata{Mode: 0o40700, UID: 1, GID: 2,
			ACL: ACL{Default: &ACLDefault{UserObj: 7, GroupObj: ACLNoMask, Other: 0, Mask: ACLNoMask}, DefaultGroups: []ACLEntry{{ID: 9, Perms: 5}}}}}},
		"dir/file": {info: SourceInfo{Kind: KindFile, Size: 5, Nlink: 2, Ino: 1, Metadata: Metadata{Mode: 0o100644, Mtime: Timestamp{Secs: -2, Nanos: 500000000},
			Xattrs: []Xattr{{Name: "user.a", Value: []byte("1")}, {Name: "trusted.b", Value: nil}},
			ACL:    ACL{Users: []ACLEntry{{ID: 1000, Perms: 7}}, Groups: []ACLEntry{{ID: 50, Perms: 4}}, GroupObj: &gobj},
			FCaps:  []byte{1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, QuotaProjID: &proj, Flags: 0x100000}},
			content: []byte("hello")},
		"dir/link":  {info: SourceInfo{Kind: KindFile, Size: 5, Nlink: 2, Ino: 1, Metadata: Metadata{Mode: 0o100644}}, content: []byte("hello")},
		"empty-dir": {info: SourceInfo{Kind: KindDir, Metadata: Metadata{Mode: 0o40755}}},
		"sym":       {info: SourceInfo{Kind: KindSymlink, LinkTarget: "dir/file", Metadata: Metadata{Mode: 0o120777}}},
		"chr":       {info: SourceInfo{Kind: KindCharDev, DevMajor: 1, DevMinor: 3, Metadata: Metadata{Mode: 0o20666}}},
		"blk":       {info: SourceInfo{Kind: KindBlockDev, DevMajor: 4096, DevMinor: 300, Metadata: Metadata{Mode: 0o60660}}},
		"fifo":      {info: SourceInfo{Kind: KindFifo, Metadata: Metadata{Mode: 0o10644}}},
		"sock":      {info: SourceInfo{Kind: KindSocket, Metadata: Metadata{Mode: 0o140755}}},
		"z-empty":   {info: SourceInfo{Kind: KindFile, Metadata: Metadata{Mode: 0o100600}}},
	}
	var m, p bytes.Buffer
	w := NewWriter(&m, nil)
	if split {
		w = NewWriter(&m, &p)
	}
	if err := Create(context.Background(), tree, w, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if split {
		return m.Bytes(), p.Bytes()
	}
	return m.Bytes(), nil
}

// decodeAll runs the sequential decoder and a full random-access walk and
// returns the first error. The walk visits at most limit entries.
func decodeAll(meta, payload []byte, limit int) (seqErr, raErr error) {
	var pr io.ReaderAt
	if len(payload) > 0 {
		pr = bytes.NewReader(payload)
	}
	d := NewDecoder(bytes.NewReader(meta), int64(len(meta)), pr)
	for {
		_, err := d.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			seqErr = err
			break
		}
		if _, err := io.Copy(io.Discard, d); err != nil && !errors.Is(err, ErrNoPayload) {
			seqErr = err
			break
		}
	}
	a, err := Open(bytes.NewReader(meta), int64(len(meta)), pr)
	if err != nil {
		return seqErr, err
	}
	visited := 0
	var walk func(dir *Entry) error
	walk = func(dir *Entry) error {
		r, err := a.OpenDir(dir)
		if err != nil {
			return err
		}
		for visited < limit {
			c, err := r.Next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			visited++
			if got, err := a.LookupChild(dir, c.Name()); err != nil {
				return err
			} else if got.Kind != c.Kind {
				// A hash collision or duplicate name may find another entry: fine.
				_ = got
			}
			switch c.Kind {
			case KindDir:
				if err := walk(c); err != nil {
					return err
				}
			case KindFile, KindHardlink:
				r, err := a.Content(c)
				if err == nil {
					_, err = io.Copy(io.Discard, r)
				}
				if err != nil && !errors.Is(err, ErrNoPayload) {
					return err
				}
			}
		}
		return nil
	}
	return seqErr, walk(a.Root())
}

// formatErr reports whether err is one of the errors corrupt input may give.
func formatErr(err error) bool {
	return err == nil || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTooLarge) ||
		errors.Is(err, ErrNotDir) || errors.Is(err, fs.ErrNotExist)
}

// TestCorruptMutations flips every byte and truncates at every length of
// small archives: decoding must fail cleanly, never panic or hang.
func TestCorruptMutations(t *testing.T) {
	v1, _ := allKindsArchive(t, false)
	sm, sp := allKindsArchive(t, true)
	basic, _ := os.ReadFile("testdata/ref/basic.pxar")
	inputs := []struct {
		name          string
		meta, payload []byte
	}{{"basic", basic, nil}, {"allkinds-v1", v1, nil}, {"allkinds-split", sm, sp}}
	for _, in := range inputs {
		t.Run(in.name, func(t *testing.T) {
			if s, r := decodeAll(in.meta, in.payload, 1e6); s != nil || r != nil {
				t.Fatalf("intact archive: %v / %v", s, r)
			}
			check := func(what string, meta, payload []byte) {
				s, r := decodeAll(meta, payload, 10000)
				if !formatErr(s) || !formatErr(r) {
					t.Fatalf("%s: unexpected errors %v / %v", what, s, r)
				}
			}
			for n := 0; n < len(in.meta); n++ {
				check("truncate meta", in.meta[:n], in.payload)
			}
			for n := 0; n < len(in.payload); n++ {
				check("truncate payload", in.meta, in.payload[:n])
			}
			for i := range in.meta {
				for _, x := range []byte{0x01, 0x80, 0xff} {
					b := bytes.Clone(in.meta)
					b[i] ^= x
					check("flip meta", b, in.payload)
				}
			}
		})
	}
}

// TestCorruptCases makes specific damage to basic.pxar (spec §12.1 offsets).
func TestCorruptCases(t *testing.T) {
	basic, err := os.ReadFile("testdata/ref/basic.pxar")
	if err != nil {
		t.Fatal(err)
	}
	put := func(b []byte, off int, v uint64) { binary.LittleEndian.PutUint64(b[off:], v) }
	tests := []struct {
		name    string
		mutate  func(b []byte) []byte
		wantErr error
	}{
		{"header below 16", func(b []byte) []byte { put(b, 0x08, 15); return b }, ErrCorrupt},
		{"huge full size", func(b []byte) []byte { put(b, 0x8a, 1<<62); return b }, ErrCorrupt},
		{"filename without NUL", func(b []byte) []byte { b[0x49] = 'x'; return b }, ErrCorrupt},
		{"filename dotdot", func(b []byte) []byte { b[0x48], b[0x49] = '.', 0; put(b, 0x40, 17); return b }, ErrCorrupt},
		{"tail marker", func(b []byte) []byte { b[0xbc] ^= 1; return b }, ErrCorrupt},
		{"tail offset", func(b []byte) []byte { put(b, 0xc4, 0x90); return b }, ErrCorrupt},
		{"tail size", func(b []byte) []byte { put(b, 0xcc, 0x41); return b }, ErrCorrupt},
		{"item points at root", func(b []byte) []byte { put(b, 0xac, 0x94); return b }, ErrCorrupt},
		{"item past table", func(b []byte) []byte { put(b, 0xac, 0x1000); return b }, ErrCorrupt},
		{"item offset zero", func(b []byte) []byte { put(b, 0xac, 0); return b }, ErrCorrupt},
		{"unknown item", func(b []byte) []byte { put(b, 0x82, 0x1234); return b }, ErrCorrupt},
		{"entry size", func(b []byte) []byte { put(b, 0x52, 57); return b }, ErrCorrupt},
		{"nanoseconds", func(b []byte) []byte { put(b, 0x7a, 1e9); return b }, ErrCorrupt},
		{"trailing bytes", func(b []byte) []byte { return append(b, 0) }, ErrCorrupt},
		{"intact", func(b []byte) []byte { return b }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mutate(bytes.Clone(basic))
			s, r := decodeAll(b, nil, 1000)
			err := errors.Join(s, r)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("got %v", err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// TestHardlinkCorrupt checks hardlink offsets that do not point back to a file.
func TestHardlinkCorrupt(t *testing.T) {
	meta, _ := allKindsArchive(t, false)
	d := NewDecoder(bytes.NewReader(meta), int64(len(meta)), nil)
	var link *Entry
	for {
		e, err := d.Next()
		if err != nil {
			break
		}
		if e.Kind == KindHardlink {
			link = e
		}
	}
	if link == nil {
		t.Fatal("no hardlink")
	}
	offPos := int(link.Offset) + headerSize
	for _, tc := range []struct {
		name string
		off  uint64
	}{{"zero", 0}, {"forward", uint64(1) << 63}, {"to root", uint64(link.FilenameOffset)}, {"to dir", uint64(link.FilenameOffset) - 1}} {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(meta)
			binary.LittleEndian.PutUint64(b[offPos:], tc.off)
			s, r := decodeAll(b, nil, 1000)
			if err := errors.Join(s, r); !errors.Is(err, ErrCorrupt) {
				t.Errorf("got %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestExtractUnsafe checks that hostile archives cannot write outside the
// target.
func TestExtractUnsafe(t *testing.T) {
	dirMD := &Metadata{Mode: 0o40755}
	fileMD := &Metadata{Mode: 0o100644}
	type build func(t *testing.T, w *Writer, outside string)
	tests := []struct {
		name    string
		build   build
		pre     func(t *testing.T, target, outside string)
		opts    ExtractOptions
		wantErr error
	}{
		{name: "hardlink target dotdot", wantErr: ErrUnsafePath, build: func(t *testing.T, w *Writer, _ string) {
			off, _ := w.AddFile("f", fileMD, 1, bytes.NewReader([]byte("x")))
			w.AddHardlink("h", "../../f", off)
		}},
		{name: "hardlink target absolute", wantErr: ErrUnsafePath, build: func(t *testing.T, w *Writer, _ string) {
			off, _ := w.AddFile("f", fileMD, 1, bytes.NewReader([]byte("x")))
			w.AddHardlink("h", "/etc/passwd", off)
		}},
		{name: "symlink then dir of the same name", build: func(t *testing.T, w *Writer, outside string) {
			w.AddSymlink("evil", &Metadata{Mode: 0o120777}, outside)
			w.BeginDir("evil", dirMD)
			w.AddFile("pwned", fileMD, 1, bytes.NewReader([]byte("x")))
			w.EndDir()
		}},
		{name: "existing symlink in target", pre: func(t *testing.T, target, outside string) {
			if err := os.Symlink(outside, filepath.Join(target, "evil")); err != nil {
				t.Fatal(err)
			}
		}, build: func(t *testing.T, w *Writer, outside string) {
			w.BeginDir("evil", dirMD)
			w.AddFile("pwned", fileMD, 1, bytes.NewReader([]byte("x")))
			w.EndDir()
		}},
		{name: "existing symlink replaced by file", opts: ExtractOptions{Overwrite: true}, pre: func(t *testing.T, target, outside string) {
			if err := os.Symlink(filepath.Join(outside, "pwned"), filepath.Join(target, "evil")); err != nil {
				t.Fatal(err)
			}
		}, build: func(t *testing.T, w *Writer, outside string) {
			w.AddFile("evil", fileMD, 1, bytes.NewReader([]byte("x")))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			outside := t.TempDir()
			target := t.TempDir()
			var buf bytes.Buffer
			w := NewWriter(&buf, nil)
			if err := w.BeginDir("", dirMD); err != nil {
				t.Fatal(err)
			}
			tc.build(t, w, outside)
			if err := errors.Join(w.EndDir(), w.Close()); err != nil {
				t.Fatal(err)
			}
			if tc.pre != nil {
				tc.pre(t, target, outside)
			}
			a, err := Open(bytes.NewReader(buf.Bytes()), int64(buf.Len()), nil)
			if err != nil {
				t.Fatal(err)
			}
			err = Extract(context.Background(), a, "", target, tc.opts)
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("got %v, want %v", err, tc.wantErr)
			}
			t.Logf("extract: %v", err)
			if list, _ := os.ReadDir(outside); len(list) != 0 {
				t.Errorf("wrote outside the target: %v", list)
			}
		})
	}
}
