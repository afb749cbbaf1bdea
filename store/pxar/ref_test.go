package pxar

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"unicode/utf8"
)

// refDirs lists the directories holding reference archives: the committed
// copy, plus any listed in PBSFS_PXAR_REFDATA (colon-separated), such as a
// larger corpus made the same way (spec §14).
func refDirs() []string {
	dirs := []string{"testdata/ref"}
	if env := os.Getenv("PBSFS_PXAR_REFDATA"); env != "" {
		dirs = append(dirs, strings.Split(env, ":")...)
	}
	return dirs
}

// refArchive is one reference archive and its JSON expectations.
type refArchive struct {
	name          string // e.g. "basic.v1"
	meta, payload string // files; payload empty for v1
	decoded       string
	lookup        string
	manifest      string
}

func findRefArchives(t *testing.T) []refArchive {
	t.Helper()
	var out []refArchive
	for _, dir := range refDirs() {
		matches, err := filepath.Glob(filepath.Join(dir, "*.decoded.json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range matches {
			base := strings.TrimSuffix(m, ".decoded.json") // dir/tree.v1 or dir/tree.split
			tree, variant := base[:strings.LastIndexByte(base, '.')], base[strings.LastIndexByte(base, '.')+1:]
			ra := refArchive{name: filepath.Base(base), decoded: m, lookup: base + ".lookup.json", manifest: tree + ".manifest.json"}
			switch variant {
			case "v1":
				ra.meta = tree + ".pxar"
			case "split":
				ra.meta, ra.payload = tree+".mpxar", tree+".ppxar"
			default:
				t.Fatalf("%s: unknown variant %q", m, variant)
			}
			out = append(out, ra)
		}
	}
	if len(out) == 0 {
		t.Fatal("no reference archives found")
	}
	return out
}

// readJSON decodes a JSON file with numbers kept exact.
func readJSON(t *testing.T, name string) any {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

// openRef opens a reference archive's streams.
func openRef(t *testing.T, ra refArchive) (meta *bytes.Reader, payload *bytes.Reader) {
	t.Helper()
	m, err := os.ReadFile(ra.meta)
	if err != nil {
		t.Fatal(err)
	}
	meta = bytes.NewReader(m)
	if ra.payload != "" {
		p, err := os.ReadFile(ra.payload)
		if err != nil {
			t.Fatal(err)
		}
		payload = bytes.NewReader(p)
	}
	return meta, payload
}

// readerAt returns r as an io.ReaderAt, or a nil interface for a nil r.
func readerAt(r *bytes.Reader) io.ReaderAt {
	if r == nil {
		return nil
	}
	return r
}

// jsonKind is the reference JSON's name for k.
func jsonKind(k Kind) string {
	switch k {
	case KindCharDev, KindBlockDev:
		return "device"
	}
	return k.String()
}

// num renders an integer the way json.Number holds it.
func num[T int64 | uint64 | uint32 | int](v T) string { return fmt.Sprint(v) }

// known returns the fields of e the reference JSON is known to use, plus a
// bag of every other scalar e carries, for fields whose names this test does
// not know (the larger corpus may use more).
func known(e *Entry) (map[string]string, map[string]bool) {
	f := map[string]string{
		"path":        e.Path,
		"path_hex":    hex.EncodeToString([]byte(e.Path)),
		"kind":        jsonKind(e.Kind),
		"mode":        num(e.Mode),
		"flags":       num(e.Flags),
		"uid":         num(e.UID),
		"gid":         num(e.GID),
		"mtime_secs":  num(e.Mtime.Secs),
		"mtime_nanos": num(e.Mtime.Nanos),
	}
	if e.Kind == KindFile {
		f["size"] = num(e.Size)
		f["content_offset"] = num(e.ContentOffset)
		if e.PayloadOffset >= 0 {
			f["payload_offset"] = num(e.PayloadOffset)
		} else {
			f["payload_offset"] = "null"
		}
	}
	bag := map[string]bool{"null": true, "true": true, "false": true}
	add := func(vs ...any) {
		for _, v := range vs {
			bag[fmt.Sprint(v)] = true
		}
	}
	addBytes := func(bs ...string) {
		for _, b := range bs {
			add(b, hex.EncodeToString([]byte(b)), "/"+b, hex.EncodeToString([]byte("/"+b)), len(b),
				lossy(b), strings.ToValidUTF8(b, "\uFFFD"), "/"+lossy(b))
		}
	}
	addBytes(e.Name(), e.LinkTarget)
	add(e.Size, e.DevMajor, e.DevMinor, e.Rdev(), e.FilenameOffset, e.Offset, e.End,
		e.HardlinkOffset, e.FilenameOffset-e.HardlinkOffset, e.ContentOffset, e.PayloadOffset,
		fmt.Sprintf("%o", e.Mode), e.Mode&0o7777, e.Mode&modeIFMT, len(e.Xattrs))
	for _, x := range e.Xattrs {
		addBytes(x.Name, string(x.Value))
	}
	for _, l := range [][]ACLEntry{e.ACL.Users, e.ACL.Groups, e.ACL.DefaultUsers, e.ACL.DefaultGroups} {
		for _, a := range l {
			add(a.ID, a.Perms)
		}
	}
	if e.ACL.GroupObj != nil {
		add(*e.ACL.GroupObj)
	}
	if d := e.ACL.Default; d != nil {
		add(d.UserObj, d.GroupObj, d.Other, d.Mask, int64(d.UserObj), int64(d.GroupObj), int64(d.Other), int64(d.Mask))
	}
	if e.FCaps != nil {
		addBytes(string(e.FCaps))
	}
	if e.QuotaProjID != nil {
		add(*e.QuotaProjID)
	}
	return f, bag
}

// scalars flattens the leaves of a JSON value.
func scalars(v any, out []string) []string {
	switch v := v.(type) {
	case map[string]any:
		for _, x := range v {
			out = scalars(x, out)
		}
	case []any:
		for _, x := range v {
			out = scalars(x, out)
		}
	case nil:
		out = append(out, "null")
	default:
		out = append(out, fmt.Sprint(v))
	}
	return out
}

// compareFields checks want (one JSON object) against the known fields f
// and, for unknown keys, that every leaf value is something e carries.
// skip names keys checked elsewhere.
// alt lists further acceptable values of known fields (a hardlink may be
// reported as itself or as its target).
func compareFields(t *testing.T, where string, want map[string]any, f map[string]string, alt map[string][]string, bag map[string]bool, skip ...string) {
	t.Helper()
	compareFieldsLenient(t, where, want, f, alt, bag, false, skip...)
}

// compareFieldsLenient is compareFields; with lenient set, an unknown key
// whose value the entry does not carry is only logged (the manifest
// describes the source tree, which has more than the archive keeps).
func compareFieldsLenient(t *testing.T, where string, want map[string]any, f map[string]string, alt map[string][]string, bag map[string]bool, lenient bool, skip ...string) {
	t.Helper()
	for k, wv := range want {
		if contains(skip, k) {
			continue
		}
		if got, ok := f[k]; ok {
			ws := fmt.Sprint(orNull(wv))
			if (k == "path" || k == "lookup") && lossy(got) == lossy(ws) {
				continue
			}
			if ws != got && !contains(alt[k], ws) {
				t.Errorf("%s: %s = %s, want %s", where, k, got, ws)
			}
			continue
		}
		for _, s := range scalars(wv, nil) {
			if !bag[s] {
				if lenient {
					t.Logf("%s: field %s: value %s not in the archive entry", where, k, s)
					continue
				}
				t.Errorf("%s: field %s: value %s not found in the decoded entry", where, k, s)
			}
		}
	}
}

// lossy is how a JSON writer may have shown a raw name that is not UTF-8:
// invalid bytes replaced by U+FFFD, runs of replacements collapsed (JSON
// writers differ in per-byte or per-sequence replacement).
func lossy(s string) string {
	var b strings.Builder
	last := false
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if r == utf8.RuneError {
			if last {
				continue
			}
			last = true
		} else {
			last = false
		}
		b.WriteRune(r)
	}
	return b.String()
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func orNull(v any) any {
	if v == nil {
		return "null"
	}
	return v
}

// TestReferenceDecode checks that every reference archive decodes
// sequentially to its *.decoded.json.
func TestReferenceDecode(t *testing.T) {
	for _, ra := range findRefArchives(t) {
		t.Run(ra.name, func(t *testing.T) {
			meta, payload := openRef(t, ra)
			want := readJSON(t, ra.decoded).([]any)
			d := NewDecoder(meta, meta.Size(), readerAt(payload))
			var got []map[string]any
			i := 0
			for {
				e, err := d.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("Next after %d entries: %v", i, err)
				}
				if i == 0 {
					// The reference decoder reports the version and prelude as entries.
					if d.Version() == 2 {
						got = append(got, map[string]any{"kind": "version", "version": "2"})
					}
					if d.Prelude() != nil {
						got = append(got, map[string]any{"kind": "prelude", "prelude_hex": hex.EncodeToString(d.Prelude())})
					}
				}
				i++
				f, bag := known(e)
				content, err := io.ReadAll(d)
				if err != nil {
					t.Fatalf("%s: read: %v", e.Path, err)
				}
				f["extracted_len"] = num(len(content))
				m := map[string]any{"entry": e, "fields": f, "bag": bag}
				got = append(got, m)
			}
			if len(got) != len(want) {
				t.Fatalf("decoded %d records, want %d", len(got), len(want))
			}
			for i, w := range want {
				w := w.(map[string]any)
				g := got[i]
				where := fmt.Sprintf("record %d (%v)", i, w["path"])
				switch w["kind"] {
				case "version", "prelude":
					for _, k := range []string{"kind", "version", "prelude_hex"} {
						if w[k] != nil && fmt.Sprint(w[k]) != fmt.Sprint(g[k]) {
							t.Errorf("%s: %s = %v, want %v", where, k, g[k], w[k])
						}
					}
					continue
				}
				if g["fields"] == nil {
					t.Fatalf("%s: got a %v record", where, g["kind"])
				}
				compareFields(t, where, w, g["fields"].(map[string]string), nil, g["bag"].(map[string]bool), "extracted")
			}
		})
	}
}

// TestReferenceLookup answers every *.lookup.json query through the
// random-access Archive.
func TestReferenceLookup(t *testing.T) {
	for _, ra := range findRefArchives(t) {
		t.Run(ra.name, func(t *testing.T) {
			meta, payload := openRef(t, ra)
			a, err := Open(meta, meta.Size(), readerAt(payload))
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range readJSON(t, ra.lookup).([]any) {
				q := q.(map[string]any)
				p, err := hex.DecodeString(q["lookup_hex"].(string))
				if err != nil {
					t.Fatal(err)
				}
				where := fmt.Sprintf("lookup %q", p)
				e, err := a.Lookup(string(p))
				if q["found"] == false {
					// A path through a non-directory gives ErrNotDir.
					if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, ErrNotDir) {
						t.Errorf("%s: got %v, want fs.ErrNotExist or ErrNotDir", where, err)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", where, err)
					continue
				}
				f, bag := known(e)
				f["lookup"] = string(p)
				f["lookup_hex"] = q["lookup_hex"].(string)
				f["found"] = "true"
				if e.FilenameOffset < 0 {
					f["filename_header_offset"] = "null"
				} else {
					f["filename_header_offset"] = num(e.FilenameOffset)
				}
				f["entry_start"] = num(e.Offset)
				f["entry_end"] = num(e.End)
				alt := map[string][]string{}
				if e.Kind == KindHardlink {
					// The resolved target's values may be reported too.
					tg, err := a.Resolve(e)
					if err != nil {
						t.Errorf("%s: resolve: %v", where, err)
						continue
					}
					tf, tbag := known(tg)
					for k := range tbag {
						bag[k] = true
					}
					for k, v := range tf {
						bag[v] = true
						alt[k] = append(alt[k], v)
					}
					alt["filename_header_offset"] = []string{num(tg.FilenameOffset)}
					alt["entry_start"] = []string{num(tg.Offset)}
					alt["entry_end"] = []string{num(tg.End)}
				}
				if order, ok := q["readdir_goodbye_order"]; ok {
					names := readdirOrder(t, a, e)
					var want []string
					for _, n := range order.([]any) {
						want = append(want, n.(string))
					}
					for i := range names {
						if i < len(want) && lossy(names[i]) == lossy(want[i]) {
							names[i] = want[i]
						}
					}
					if fmt.Sprintf("%q", names) != fmt.Sprintf("%q", want) {
						t.Errorf("%s: readdir order %q, want %q", where, names, want)
					}
				}
				if _, ok := q["cat"]; ok {
					r, err := a.Content(e)
					if err != nil {
						t.Errorf("%s: content: %v", where, err)
					} else if b, err := io.ReadAll(r); err != nil || uint64(len(b)) != e.Size {
						t.Errorf("%s: content: %d bytes, %v; want %d", where, len(b), err, e.Size)
					}
				}
				compareFields(t, where, q, f, alt, bag, "cat", "readdir_goodbye_order", "readdir_goodbye_order_hex")
			}
		})
	}
}

// readdirOrder lists dir through the goodbye table.
func readdirOrder(t *testing.T, a *Archive, dir *Entry) []string {
	t.Helper()
	r, err := a.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for {
		c, err := r.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, c.Name())
	}
}

// TestReferenceManifest compares every reference archive with the tree
// manifest taken from the source directory.
func TestReferenceManifest(t *testing.T) {
	for _, ra := range findRefArchives(t) {
		t.Run(ra.name, func(t *testing.T) {
			if _, err := os.Stat(ra.manifest); err != nil {
				t.Skip("no manifest")
			}
			meta, payload := openRef(t, ra)
			a, err := Open(meta, meta.Size(), readerAt(payload))
			if err != nil {
				t.Fatal(err)
			}
			man := readJSON(t, ra.manifest).(map[string]any)
			var paths []string
			d := NewDecoder(meta, meta.Size(), readerAt(payload))
			for {
				e, err := d.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				paths = append(paths, e.Path)
			}
			entries := man["entries"].([]any)
			if len(entries) != len(paths) {
				t.Errorf("archive has %d entries, manifest %d", len(paths), len(entries))
			}
			for i, w := range entries {
				w := w.(map[string]any)
				p, _ := hex.DecodeString(w["path_hex"].(string))
				where := fmt.Sprintf("manifest %q", p)
				if i < len(paths) && paths[i] != string(p) {
					t.Errorf("%s: archive order has %q at %d", where, paths[i], i)
				}
				e, err := a.Lookup(string(p))
				if err != nil {
					t.Errorf("%s: %v", where, err)
					continue
				}
				link := e
				if e, err = a.Resolve(e); err != nil {
					t.Errorf("%s: %v", where, err)
					continue
				}
				f, bag := known(e)
				_, lbag := known(link)
				for k := range lbag {
					bag[k] = true
				}
				f["path"], f["path_hex"] = string(p), w["path_hex"].(string)
				f["type"] = jsonKind(e.Kind)
				if link.Kind == KindHardlink && w["type"] == "hardlink" {
					f["type"] = "hardlink"
				}
				f["mode_octal"] = strconv.FormatUint(e.Mode, 8)
				if e.Kind == KindDir {
					r, err := a.OpenDir(e)
					if err != nil {
						t.Fatal(err)
					}
					f["child_count"] = num(r.Len())
				}
				if e.Kind == KindFile {
					r, err := a.Content(e)
					if err != nil {
						t.Errorf("%s: %v", where, err)
						continue
					}
					h := sha256.New()
					if _, err := io.Copy(h, r); err != nil {
						t.Fatal(err)
					}
					f["sha256"] = hex.EncodeToString(h.Sum(nil))
				}
				typeAlt := map[Kind][]string{
					KindDir:      {"dir"},
					KindFile:     {"regular", "reg", "hardlink"},
					KindSymlink:  {"link", "lnk"},
					KindCharDev:  {"chardev", "char", "chr", "character", "char_device", "character_device"},
					KindBlockDev: {"blockdev", "block", "blk", "block_device"},
					KindFifo:     {"pipe", "named_pipe"},
					KindSocket:   {"sock"},
				}
				compareFieldsLenient(t, where, w, f, map[string][]string{"type": typeAlt[e.Kind]}, bag, true, "content_offset", "payload_offset")
			}
		})
	}
}

// TestReferenceFS runs fstest.TestFS over every reference archive.
func TestReferenceFS(t *testing.T) {
	for _, ra := range findRefArchives(t) {
		t.Run(ra.name, func(t *testing.T) {
			meta, payload := openRef(t, ra)
			a, err := Open(meta, meta.Size(), readerAt(payload))
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			d := NewDecoder(meta, meta.Size(), readerAt(payload))
			for {
				e, err := d.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if e.Path != "/" && fs.ValidPath(e.Path[1:]) && !strings.Contains(e.Path, `\`) {
					want = append(want, e.Path[1:])
				}
			}
			if err := fstest.TestFS(portableFS{a}, want...); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestPBSClientArchives decodes the split metadata streams written by the
// real PBS client, whose payload streams are not available.
func TestPBSClientArchives(t *testing.T) {
	for _, name := range []string{"backup-client-pxar-data.mpxar", "backup-client-pxar-expected.mpxar"} {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata/pbs-client", name))
			if err != nil {
				t.Fatal(err)
			}
			d := NewDecoder(bytes.NewReader(b), int64(len(b)), nil)
			var seq []string
			kinds := map[Kind]int{}
			for {
				e, err := d.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("after %d entries: %v", len(seq), err)
				}
				seq = append(seq, e.Path)
				kinds[e.Kind]++
			}
			if d.Version() != 2 {
				t.Errorf("version %d, want 2", d.Version())
			}
			t.Logf("%d entries, kinds %v, prelude %q", len(seq), kinds, d.Prelude())
			if len(seq) != 111 || kinds[KindDir] != 11 || kinds[KindFile] != 100 {
				t.Errorf("%d entries, kinds %v; want 111: 11 directories, 100 files", len(seq), kinds)
			}
			// Random access finds every entry the sequential pass saw.
			a, err := Open(bytes.NewReader(b), int64(len(b)), nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range seq {
				e, err := a.Lookup(p)
				if err != nil {
					t.Errorf("lookup %q: %v", p, err)
					continue
				}
				if e.Path != p {
					t.Errorf("lookup %q: path %q", p, e.Path)
				}
				if e.Kind == KindFile {
					if _, err := a.Content(e); !errors.Is(err, ErrNoPayload) {
						t.Errorf("%q: content without payload: %v, want ErrNoPayload", p, err)
					}
				}
			}
		})
	}
}

// portableFS is an Archive's fs.FS view without the names fstest.TestFS
// rejects as not portable (those holding a backslash).
type portableFS struct{ a *Archive }

func portable(list []fs.DirEntry) []fs.DirEntry {
	var out []fs.DirEntry
	for _, e := range list {
		if !strings.Contains(e.Name(), `\`) {
			out = append(out, e)
		}
	}
	return out
}

func (p portableFS) Open(name string) (fs.File, error) {
	f, err := p.a.Open(name)
	if d, ok := f.(*dirFile); ok {
		return &portableDir{dirFile: d}, nil
	}
	return f, err
}

func (p portableFS) ReadDir(name string) ([]fs.DirEntry, error) {
	list, err := p.a.ReadDir(name)
	return portable(list), err
}

func (p portableFS) Stat(name string) (fs.FileInfo, error)  { return p.a.Stat(name) }
func (p portableFS) Lstat(name string) (fs.FileInfo, error) { return p.a.Lstat(name) }
func (p portableFS) ReadLink(name string) (string, error)   { return p.a.ReadLink(name) }

type portableDir struct {
	*dirFile
	list []fs.DirEntry
	read bool
}

func (d *portableDir) ReadDir(n int) ([]fs.DirEntry, error) {
	if !d.read {
		list, err := d.dirFile.ReadDir(-1)
		if err != nil {
			return nil, err
		}
		d.list, d.read = portable(list), true
	}
	if n <= 0 {
		list := d.list
		d.list = nil
		return list, nil
	}
	if len(d.list) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(d.list))
	list := d.list[:n]
	d.list = d.list[n:]
	return list, nil
}
