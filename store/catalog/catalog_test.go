package catalog

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVarints(t *testing.T) {
	u := []struct {
		v   uint64
		hex string
	}{
		{0, "00"}, {1, "01"}, {127, "7f"}, {128, "8001"}, {300, "ac02"},
		{1 << 32, "8080808010"}, {1700000000, "80e2cfaa06"}, {^uint64(0), "ffffffffffffffffff01"},
	}
	for _, tc := range u {
		t.Run(fmt.Sprint("u", tc.v), func(t *testing.T) {
			if got := hex.EncodeToString(appendU64(nil, tc.v)); got != tc.hex {
				t.Errorf("encode = %s, want %s", got, tc.hex)
			}
			b, _ := hex.DecodeString(tc.hex)
			v, n, err := readU64(b)
			if err != nil || v != tc.v || n != len(b) {
				t.Errorf("decode = %d, %d, %v", v, n, err)
			}
		})
	}
	s := []struct {
		v   int64
		hex string
	}{
		{0, "00"}, {-1, "8100"}, {-2, "8200"}, {-128, "808100"}, {-86400, "80a38500"},
		{1718000000, "80b39ab306"}, {-1718000000, "80b39ab38600"},
		{-1 << 63, "8080808080808080808100"}, {1<<63 - 1, "ffffffffffffffff7f"},
	}
	for _, tc := range s {
		t.Run(fmt.Sprint("i", tc.v), func(t *testing.T) {
			if got := hex.EncodeToString(appendI64(nil, tc.v)); got != tc.hex {
				t.Errorf("encode = %s, want %s", got, tc.hex)
			}
			b, _ := hex.DecodeString(tc.hex)
			v, n, err := readI64(b)
			if err != nil || v != tc.v || n != len(b) {
				t.Errorf("decode = %d, %d, %v", v, n, err)
			}
		})
	}
	for _, bad := range []string{"", "80", "ffffffffffffffffff02", "ffffffffffffffffffff01"} {
		b, _ := hex.DecodeString(bad)
		if _, _, err := readU64(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("readU64(%s) = %v, want ErrCorrupt", bad, err)
		}
		if _, _, err := readI64(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("readI64(%s) = %v, want ErrCorrupt", bad, err)
		}
	}
}

// dumpRecord is one entry of a *.pcat1.dump.json.
type dumpRecord struct {
	Path        string  `json:"path"`
	PathHex     string  `json:"path_hex"`
	Type        string  `json:"type"`
	BlockStart  *int64  `json:"block_start,omitempty"`
	ParentStart *int64  `json:"parent_block_start,omitempty"`
	Size        *uint64 `json:"size,omitempty"`
	Mtime       *int64  `json:"mtime,omitempty"`
}

type dump struct {
	RootBlockStart int64        `json:"root_block_start"`
	Entries        []dumpRecord `json:"entries"`
}

// dumpCatalog renders a catalog the way *.pcat1.dump.json does.
func dumpCatalog(r *Reader) (dump, error) {
	d := dump{RootBlockStart: r.RootBlock(), Entries: []dumpRecord{}}
	parents := map[string]int64{"": r.RootBlock()}
	err := r.Walk(r.Root(), func(p string, e Entry) error {
		rec := dumpRecord{Path: p, PathHex: hex.EncodeToString([]byte(p)), Type: string(e.Type)}
		switch e.Type {
		case TypeDir:
			b, parent := e.Block, parents[p[:strings.LastIndexByte(p, '/')]]
			rec.BlockStart, rec.ParentStart = &b, &parent
			parents[p] = b
		case TypeFile:
			s, m := e.Size, e.Mtime
			rec.Size, rec.Mtime = &s, &m
		}
		d.Entries = append(d.Entries, rec)
		return nil
	})
	return d, err
}

// TestReadDumps reads every catalog to its *.pcat1.dump.json: the
// committed ones, and those in the directories listed in
// PBSFS_PXAR_REFDATA (colon-separated), such as a larger reference corpus.
func TestReadDumps(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.pcat1")
	if env := os.Getenv("PBSFS_PXAR_REFDATA"); env != "" {
		for _, dir := range strings.Split(env, ":") {
			more, _ := filepath.Glob(filepath.Join(dir, "*.pcat1"))
			files = append(files, more...)
		}
	}
	if len(files) == 0 {
		t.Fatal("no catalogs")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			wantJSON, err := os.ReadFile(f + ".dump.json")
			if err != nil {
				t.Fatal(err)
			}
			var want dump
			if err := json.Unmarshal(wantJSON, &want); err != nil {
				t.Fatal(err)
			}
			r, err := NewReader(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			got, err := dumpCatalog(r)
			if err != nil {
				t.Fatal(err)
			}
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(want)
			if !bytes.Equal(g, w) {
				t.Errorf("dump\n got %s\nwant %s", g, w)
			}
			for _, rec := range want.Entries {
				p, _ := hex.DecodeString(rec.PathHex)
				e, err := r.Lookup(string(p))
				if err != nil || string(e.Type) != rec.Type {
					t.Errorf("lookup %q = %+v, %v", p, e, err)
				}
			}
			if _, err := r.Lookup("/nope"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("lookup /nope = %v", err)
			}
		})
	}
}

// TestWriterBytes checks the writer against basic.pcat1 (written by PBS)
// and the computed 53-byte example of spec §10.5.
func TestWriterBytes(t *testing.T) {
	ref, err := os.ReadFile("testdata/basic.pcat1")
	if err != nil {
		t.Fatal(err)
	}
	example, _ := hex.DecodeString("91fd60f9c46758d5" + "04016c0178" + "0c02660161020064037375620" + "5" +
		"1201640e726f6f742e707861722e646964780d" + "1a00000000000000")
	tests := []struct {
		name  string
		build func(w *Writer) error
		want  []byte
	}{
		{"basic", func(w *Writer) error {
			return errors.Join(w.StartDirectory("root.pxar.didx"), w.AddFile("a", 2, 0), w.EndDirectory())
		}, ref},
		{"example", func(w *Writer) error {
			return errors.Join(w.StartDirectory("root.pxar.didx"), w.AddFile("a", 2, 0),
				w.StartDirectory("sub"), w.AddSymlink("x"), w.EndDirectory(), w.EndDirectory())
		}, example},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			w, err := NewWriter(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.build(w); err != nil {
				t.Fatal(err)
			}
			if err := w.Finish(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), tc.want) {
				t.Errorf("got  %x\nwant %x", buf.Bytes(), tc.want)
			}
		})
	}
}

// TestRoundTrip writes every entry type and reads it back.
func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf)
	names := []string{"a b", "new\nline", "\xff\xfe", strings.Repeat("x", maxNameLen)}
	err := errors.Join(w.StartDirectory("root.pxar.didx"),
		w.AddFile(names[0], 1<<40, -86400), w.AddSymlink(names[1]), w.AddHardlink(names[2]),
		w.StartDirectory(names[3]), w.AddBlockDevice("b"), w.AddCharDevice("c"), w.AddFifo("p"), w.AddSocket("s"),
		w.EndDirectory(), w.EndDirectory(), w.Finish())
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	e, err := r.Lookup("/root.pxar.didx/" + names[0])
	if err != nil || e.Size != 1<<40 || e.Mtime != -86400 || e.Type != TypeFile {
		t.Errorf("file = %+v, %v", e, err)
	}
	dir, err := r.Lookup("/root.pxar.didx/" + names[3])
	if err != nil {
		t.Fatal(err)
	}
	list, err := r.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var types []byte
	for _, e := range list {
		types = append(types, e.Type)
	}
	if string(types) != "bcps" {
		t.Errorf("types %q", types)
	}
	if _, err := w.AddFile("late", 0, 0), w.Finish(); err == nil {
		t.Error("write after Finish succeeded")
	}
}

// TestCorrupt checks that damaged catalogs give ErrCorrupt.
func TestCorrupt(t *testing.T) {
	ref, _ := os.ReadFile("testdata/basic.pcat1")
	mutate := func(fn func(b []byte) []byte) []byte { return fn(bytes.Clone(ref)) }
	tests := []struct {
		name string
		data []byte
	}{
		{"short", ref[:10]},
		{"magic", mutate(func(b []byte) []byte { b[0] ^= 1; return b })},
		{"root past end", mutate(func(b []byte) []byte { b[len(b)-8] = 0xff; return b })},
		{"table length", mutate(func(b []byte) []byte { b[15] = 0x7f; return b })},
		{"delta forward", mutate(func(b []byte) []byte { b[33] = 0x20; return b })},
		{"delta zero", mutate(func(b []byte) []byte { b[33] = 0; return b })},
		{"bad type", mutate(func(b []byte) []byte { b[10] = 'x'; return b })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReader(bytes.NewReader(tc.data), int64(len(tc.data)))
			if err == nil {
				err = r.Walk(r.Root(), func(string, Entry) error { return nil })
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("got %v, want ErrCorrupt", err)
			}
		})
	}
}

func FuzzCatalog(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.pcat1")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		// Whatever reads must write back to a catalog that reads the same.
		var buf bytes.Buffer
		w, _ := NewWriter(&buf)
		var copyDir func(dir Entry, depth int) error
		seen := map[int64]bool{}
		copyDir = func(dir Entry, depth int) error {
			if seen[dir.Block] || depth > 64 {
				return ErrCorrupt
			}
			seen[dir.Block] = true
			list, err := r.ReadDir(dir)
			if err != nil {
				return err
			}
			for _, e := range list {
				var err error
				switch e.Type {
				case TypeDir:
					if err = w.StartDirectory(e.Name); err == nil {
						if err = copyDir(e, depth+1); err == nil {
							err = w.EndDirectory()
						}
					}
				case TypeFile:
					err = w.AddFile(e.Name, e.Size, e.Mtime)
				default:
					err = w.add(dirEntry{typ: e.Type, name: e.Name})
				}
				if err != nil {
					return err
				}
			}
			return nil
		}
		if err := copyDir(r.Root(), 0); err != nil {
			return
		}
		if err := w.Finish(); err != nil {
			t.Fatal(err)
		}
		r2, err := NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			t.Fatal(err)
		}
		d1, err1 := dumpNames(r)
		d2, err2 := dumpNames(r2)
		if err1 != nil || err2 != nil || d1 != d2 {
			t.Fatalf("rewrite differs: %v %v\n%s\n%s", err1, err2, d1, d2)
		}
	})
}

func dumpNames(r *Reader) (string, error) {
	var s strings.Builder
	err := r.Walk(r.Root(), func(p string, e Entry) error {
		fmt.Fprintf(&s, "%q %c %d %d\n", p, e.Type, e.Size, e.Mtime)
		return nil
	})
	return s.String(), err
}
