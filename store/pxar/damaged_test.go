package pxar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"golang.org/x/sys/unix"
)

// errHole stands for a chunk the store cannot give (missing or corrupt).
var errHole = errors.New("test: chunk missing")

// holeReader is an archive stream with unreadable byte ranges, as a
// store archive is when one of its chunks is missing.
type holeReader struct {
	b     []byte
	holes [][2]int64 // [start, end)
}

func (r *holeReader) ReadAt(p []byte, off int64) (int, error) {
	end := off + int64(len(p))
	for _, h := range r.holes {
		if off < h[1] && end > h[0] {
			// Like a chunked reader: the bytes before the hole are served.
			n := 0
			if h[0] > off {
				n = copy(p, r.b[off:h[0]])
			}
			return n, fmt.Errorf("read at %d: %w", max(off, h[0]), errHole)
		}
	}
	if off >= int64(len(r.b)) {
		return 0, io.EOF
	}
	n := copy(p, r.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (r *holeReader) damaged(lo, hi int64) bool {
	for _, h := range r.holes {
		if lo < h[1] && hi > h[0] {
			return true
		}
	}
	return false
}

// damagedArchive writes a directory of n files of size bytes each (file
// i filled with byte i), plus a sub-directory with a file and a hardlink
// to f00, plain or split.
func damagedArchive(t *testing.T, n, size int, split bool) (meta, payload []byte) {
	t.Helper()
	var mb, pb bytes.Buffer
	var w *Writer
	if split {
		w = NewWriter(&mb, &pb)
	} else {
		w = NewWriter(&mb, nil)
	}
	md := func(mode uint64) *Metadata { return &Metadata{Mode: mode, Mtime: Timestamp{Secs: 1700000000}} }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.BeginDir("", md(0o40755)))
	var first LinkOffset
	for i := 0; i < n; i++ {
		off, err := w.AddFile(fmt.Sprintf("f%02d", i), md(0o100644), uint64(size), bytes.NewReader(bytes.Repeat([]byte{byte(i)}, size)))
		must(err)
		if i == 0 {
			first = off
		}
	}
	must(w.BeginDir("sub", md(0o40750)))
	must(w.AddHardlink("link-f00", "f00", first))
	_, err := w.AddFile("z", md(0o100600), 5, bytes.NewReader([]byte("zzzzz")))
	must(err)
	must(w.EndDir())
	must(w.EndDir())
	must(w.Close())
	return mb.Bytes(), pb.Bytes()
}

// intactEntries lists every non-directory of the undamaged archive with
// whether a hole touches its metadata items or its contents. An entry's
// items end where the next FILENAME (or a goodbye table) starts.
func intactEntries(t *testing.T, meta, payload []byte, mh, ph *holeReader) map[string]bool {
	t.Helper()
	var p io.ReaderAt
	if payload != nil {
		p = bytes.NewReader(payload)
	}
	a, err := Open(bytes.NewReader(meta), int64(len(meta)), p)
	if err != nil {
		t.Fatal(err)
	}
	var ents []*Entry
	var bounds []int64 // FILENAME and GOODBYE positions
	var walk func(d *Entry)
	walk = func(d *Entry) {
		r, err := a.OpenDir(d)
		if err != nil {
			t.Fatal(err)
		}
		bounds = append(bounds, r.t.gbPos)
		for {
			c, err := r.Next()
			if err == io.EOF {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			bounds = append(bounds, c.FilenameOffset)
			if c.IsDir() {
				walk(c)
				continue
			}
			ents = append(ents, c)
		}
	}
	walk(a.Root())
	slices.Sort(bounds)
	itemsEnd := func(fpos int64) int64 {
		i, _ := slices.BinarySearch(bounds, fpos+1)
		return bounds[i]
	}
	out := map[string]bool{}
	for _, c := range ents {
		bad := mh.damaged(c.FilenameOffset, itemsEnd(c.FilenameOffset))
		if f, err := a.Resolve(c); err == nil && f.Kind == KindFile {
			bad = bad || mh.damaged(f.FilenameOffset, itemsEnd(f.FilenameOffset))
			if payload != nil {
				bad = bad || ph.damaged(f.PayloadOffset, f.PayloadOffset+headerSize+int64(f.Size))
			}
		}
		out[c.Path[1:]] = !bad
	}
	return out
}

// TestExtractDamaged: with one "chunk" of the archive unreadable, Extract
// restores every intact file with its exact contents, reports each
// damaged one, and leaves no damaged file in the target.
func TestExtractDamaged(t *testing.T) {
	const n, size = 40, 16 << 10
	for _, split := range []bool{false, true} {
		for _, where := range []string{"contents", "metadata"} {
			if !split && where == "metadata" {
				continue // in a plain archive both are one stream: "contents" covers it
			}
			t.Run(fmt.Sprintf("split=%v/%s", split, where), func(t *testing.T) {
				meta, payload := damagedArchive(t, n, size, split)
				mh := &holeReader{b: meta}
				ph := &holeReader{b: payload}
				// A 40 KiB hole from the middle of f10's contents: it
				// takes the ENTRY and FILENAME of the next files too.
				if split && where == "contents" {
					ph.holes = [][2]int64{{10*(size+headerSize) + size/2, 10*(size+headerSize) + size/2 + 40<<10}}
				} else if split {
					// The metadata stream is small: take f10..f12's items.
					full, _ := Open(bytes.NewReader(meta), int64(len(meta)), nil)
					f10, _ := full.Lookup("f10")
					f12, _ := full.Lookup("f12")
					mh.holes = [][2]int64{{f10.FilenameOffset + 20, f12.FilenameOffset + 30}}
				} else {
					mh.holes = [][2]int64{{20*(size+200) + size/2, 20*(size+200) + size/2 + 40<<10}}
				}
				want := intactEntries(t, meta, payload, mh, ph)
				var bad int
				for _, ok := range want {
					if !ok {
						bad++
					}
				}
				if bad == 0 || bad > 6 {
					t.Fatalf("test setup: %d damaged entries of %d", bad, len(want))
				}
				var p io.ReaderAt
				if split {
					p = ph
				}
				a, err := Open(mh, int64(len(meta)), p)
				if err != nil {
					t.Fatal(err)
				}
				dst := t.TempDir()
				var reported []string
				err = Extract(context.Background(), a, "", dst, ExtractOptions{OnDamaged: func(path string, err error) error {
					if !errors.Is(err, errHole) {
						t.Errorf("damage %s: %v does not wrap the read error", path, err)
					}
					var de *DamagedError
					if !errors.As(err, &de) || de.Path != path {
						t.Errorf("damage %s: %v is not a DamagedError for the path", path, err)
					}
					reported = append(reported, path)
					return nil
				}})
				if err != nil {
					t.Fatalf("extract: %v", err)
				}
				restored := 0
				for path, ok := range want {
					got, err := os.ReadFile(filepath.Join(dst, path))
					if !ok {
						if err == nil {
							t.Errorf("damaged %s restored (%d bytes)", path, len(got))
						}
						continue
					}
					restored++
					if err != nil {
						t.Errorf("intact %s: %v", path, err)
						continue
					}
					var wantData []byte
					switch path {
					case "sub/z":
						wantData = []byte("zzzzz")
					case "sub/link-f00":
						wantData = bytes.Repeat([]byte{0}, size)
					default:
						var i int
						fmt.Sscanf(path, "f%02d", &i)
						wantData = bytes.Repeat([]byte{byte(i)}, size)
					}
					if !bytes.Equal(got, wantData) {
						t.Errorf("intact %s: wrong contents", path)
					}
				}
				// Every damaged entry is named, or its directory is when
				// its name sat in the hole.
				for path, ok := range want {
					if !ok && !slices.Contains(reported, path) && !slices.Contains(reported, ".") {
						t.Errorf("damaged %s not reported (reported %q)", path, reported)
					}
				}
				for _, path := range reported {
					if path != "." && want[path] {
						t.Errorf("intact %s reported damaged", path)
					}
				}
				t.Logf("restored %d of %d entries; reported %q", restored, len(want), reported)
				// With a catalog, every damaged entry is named.
				full, err := Open(bytes.NewReader(meta), int64(len(meta)), nil)
				if err != nil {
					t.Fatal(err)
				}
				names := func(dir string) ([]string, error) {
					d, err := full.Lookup(dir)
					if err != nil {
						return nil, err
					}
					list, err := full.dirEntries(d)
					var out []string
					for _, x := range list {
						out = append(out, x.Name())
					}
					return out, err
				}
				reported = nil
				err = Extract(context.Background(), a, "", t.TempDir(), ExtractOptions{Names: names, OnDamaged: func(path string, err error) error {
					reported = append(reported, path)
					return nil
				}})
				if err != nil {
					t.Fatal(err)
				}
				var wantBad []string
				for path, ok := range want {
					if !ok {
						wantBad = append(wantBad, path)
					}
				}
				slices.Sort(wantBad)
				slices.Sort(reported)
				if !slices.Equal(reported, wantBad) {
					t.Errorf("with a catalog, reported %q, want %q", reported, wantBad)
				}
				// With Overwrite over stale files, a damaged file leaves no
				// older version under its name.
				stale := t.TempDir()
				os.MkdirAll(filepath.Join(stale, "sub"), 0o755)
				for path := range want {
					os.WriteFile(filepath.Join(stale, path), []byte("stale"), 0o644)
				}
				err = Extract(context.Background(), a, "", stale, ExtractOptions{Overwrite: true, Names: names, OnDamaged: func(string, error) error { return nil }})
				if err != nil {
					t.Fatal(err)
				}
				for path, ok := range want {
					got, err := os.ReadFile(filepath.Join(stale, path))
					if !ok && err == nil {
						t.Errorf("overwrite: damaged %s left as %q", path, got[:min(len(got), 8)])
					}
					if ok && (err != nil || string(got) == "stale") {
						t.Errorf("overwrite: intact %s not restored: %v", path, err)
					}
				}
				// Without OnDamaged the first damage ends Extract.
				err = Extract(context.Background(), a, "", t.TempDir(), ExtractOptions{})
				var de *DamagedError
				if !errors.As(err, &de) || !errors.Is(err, errHole) {
					t.Errorf("extract without OnDamaged: %v", err)
				}
			})
		}
	}
}

// TestDirReaderDamaged: listing goes on past unreadable children and
// past an unreadable stretch of the goodbye table; exact-name lookups of
// intact children still work.
func TestDirReaderDamaged(t *testing.T) {
	const n = 3000
	var mb bytes.Buffer
	w := NewWriter(&mb, nil)
	md := &Metadata{Mode: 0o40755}
	if err := w.BeginDir("", md); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := w.AddFile(fmt.Sprintf("f%05d", i), &Metadata{Mode: 0o100644}, 1, bytes.NewReader([]byte{'x'})); err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(w.EndDir(), w.Close()); err != nil {
		t.Fatal(err)
	}
	meta := mb.Bytes()
	full, err := Open(bytes.NewReader(meta), int64(len(meta)), nil)
	if err != nil {
		t.Fatal(err)
	}
	root := full.Root()
	tab, err := full.table(full.window(), root)
	if err != nil {
		t.Fatal(err)
	}
	f100, _ := full.Lookup("f00100")
	f103, _ := full.Lookup("f00103")
	// Two holes: entries f00100..f00103 (their FILENAMEs, the first one's
	// only partly), and goodbye items 1000..1099.
	itemPos := func(i int64) int64 { return tab.gbPos + headerSize + i*goodbyeItemSize }
	h := &holeReader{b: meta, holes: [][2]int64{
		{f100.FilenameOffset + 4, f103.End - 1},
		{itemPos(1000), itemPos(1100)},
	}}
	a, err := Open(h, int64(len(meta)), nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := a.OpenDir(a.Root())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var unnamed, lostItems int64
	for {
		c, err := r.Next()
		if err == io.EOF {
			break
		}
		var ce *ChildError
		if errors.As(err, &ce) {
			if !errors.Is(err, errHole) {
				t.Errorf("child error %v does not wrap the read error", err)
			}
			if ce.Name != "" {
				t.Errorf("named damage %q: the name sat in the hole", ce.Name)
			}
			if ce.Items > 0 && ce.FilenameOffset < 0 && ce.Items > 1 {
				lostItems += ce.Items
			} else {
				unnamed++
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, c.Name())
	}
	if lostItems != 100 {
		t.Errorf("unreadable goodbye items reported: %d, want 100", lostItems)
	}
	// 4 entries in the first hole, and 100 lost with the goodbye items
	// (some of which may be among the 4).
	if got := len(names); got < n-104 || got > n-100 {
		t.Errorf("listed %d of %d children", got, n)
	}
	sort.Strings(names)
	for _, bad := range []string{"f00100", "f00101", "f00102", "f00103"} {
		if _, ok := slices.BinarySearch(names, bad); ok {
			t.Errorf("damaged %s listed", bad)
		}
		if _, err := a.Lookup(bad); !errors.Is(err, errHole) {
			t.Errorf("lookup of damaged %s: %v", bad, err)
		}
	}
	// Exact-name lookups of every intact child work, also those whose
	// goodbye items were lost from the listing (their search path may
	// cross the hole: then the error is the hole's).
	found := 0
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("f%05d", i)
		if e, err := a.Lookup(name); err == nil && e.Name() == name {
			found++
		} else if !errors.Is(err, errHole) {
			t.Errorf("lookup %s: %v", name, err)
		}
	}
	if found < len(names) {
		t.Errorf("%d lookups worked, %d children listed", found, len(names))
	}
	t.Logf("listed %d of %d; %d unnamed damaged; %d goodbye items lost; %d exact lookups", len(names), n, unnamed, lostItems, found)
}

// TestExtractSetIDWithoutOwners: without restored owners a set-id file
// loses its set-uid and set-gid bits (as tar does); with them (as root)
// it keeps them. The skip options leave devices, FIFOs and sockets out.
func TestExtractSetIDWithoutOwners(t *testing.T) {
	var mb bytes.Buffer
	w := NewWriter(&mb, nil)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.BeginDir("", &Metadata{Mode: 0o40755}))
	_, err := w.AddFile("suid", &Metadata{Mode: 0o104755, UID: 1000, GID: 1000}, 2, bytes.NewReader([]byte("#!")))
	must(err)
	_, err = w.AddFile("sgid", &Metadata{Mode: 0o102711, UID: 1000, GID: 50}, 0, bytes.NewReader(nil))
	must(err)
	must(w.BeginDir("shared", &Metadata{Mode: 0o43775, UID: 1000, GID: 50}))
	must(w.EndDir())
	must(w.EndDir())
	must(w.Close())
	a, err := Open(bytes.NewReader(mb.Bytes()), int64(mb.Len()), nil)
	must(err)
	mode := func(dir, name string) (uint32, uint32) {
		t.Helper()
		var st unix.Stat_t
		must(unix.Lstat(filepath.Join(dir, name), &st))
		return st.Mode & 0o7777, st.Uid
	}
	dst := t.TempDir()
	must(Extract(context.Background(), a, "", dst, ExtractOptions{NoOwners: true}))
	for name, want := range map[string]uint32{"suid": 0o755, "sgid": 0o711, "shared": 0o1775} {
		if got, uid := mode(dst, name); got != want || uid != uint32(os.Geteuid()) {
			t.Errorf("--no-owners %s: mode %o uid %d, want %o uid %d", name, got, uid, want, os.Geteuid())
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("restoring owners needs root")
	}
	dst = t.TempDir()
	must(Extract(context.Background(), a, "", dst, ExtractOptions{}))
	for name, want := range map[string]uint32{"suid": 0o4755, "sgid": 0o2711, "shared": 0o3775} {
		if got, uid := mode(dst, name); got != want || uid != 1000 {
			t.Errorf("with owners %s: mode %o uid %d, want %o uid 1000", name, got, uid, want)
		}
	}
}

// TestExtractSkipSpecials: NoDevices, NoFifos and NoSockets each leave
// out their kind and nothing else.
func TestExtractSkipSpecials(t *testing.T) {
	var mb bytes.Buffer
	w := NewWriter(&mb, nil)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.BeginDir("", &Metadata{Mode: 0o40755}))
	must(w.AddDevice("blk", &Metadata{Mode: 0o60660}, 7, 300))
	must(w.AddDevice("chr", &Metadata{Mode: 0o20666}, 1, 3))
	_, err := w.AddFile("file", &Metadata{Mode: 0o100644}, 1, bytes.NewReader([]byte("x")))
	must(err)
	must(w.AddSpecial("fifo", &Metadata{Mode: 0o10644}))
	must(w.AddSpecial("sock", &Metadata{Mode: 0o140755}))
	must(w.EndDir())
	must(w.Close())
	a, err := Open(bytes.NewReader(mb.Bytes()), int64(mb.Len()), nil)
	must(err)
	all := []string{"blk", "chr", "fifo", "file", "sock"}
	root := os.Geteuid() == 0
	for _, tc := range []struct {
		name string
		opts ExtractOptions
		gone []string
	}{
		{"none", ExtractOptions{}, nil},
		{"devices", ExtractOptions{NoDevices: true}, []string{"blk", "chr"}},
		{"fifos", ExtractOptions{NoFifos: true}, []string{"fifo"}},
		{"sockets", ExtractOptions{NoSockets: true}, []string{"sock"}},
		{"all", ExtractOptions{NoDevices: true, NoFifos: true, NoSockets: true}, []string{"blk", "chr", "fifo", "sock"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := t.TempDir()
			opts := tc.opts
			opts.OnError = func(string, error) error { return nil } // mknod of devices as non-root
			must(Extract(context.Background(), a, "", dst, opts))
			for _, name := range all {
				_, err := os.Lstat(filepath.Join(dst, name))
				wantGone := slices.Contains(tc.gone, name) || (!root && (name == "blk" || name == "chr"))
				if wantGone != (err != nil) {
					t.Errorf("%s: lstat %v, want gone=%v", name, err, wantGone)
				}
			}
		})
	}
}

// FuzzExtractDamaged extracts arbitrary archives with an unreadable range
// of the metadata stream, going on past every damaged entry: it must end,
// never panic, and report each entry it leaves out.
func FuzzExtractDamaged(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, meta, payload []byte) {
		if len(meta) > 1<<20 || len(payload) > 1<<20 {
			return
		}
		// The hole: from a position and length taken from the input.
		var lo, n int64
		if len(meta) > 8 {
			lo = int64(meta[len(meta)/2]) * int64(len(meta)) / 256
			n = int64(meta[len(meta)/3]) * 16
		}
		mh := &holeReader{b: meta, holes: [][2]int64{{lo, lo + n}}}
		var p io.ReaderAt
		if len(payload) > 0 {
			p = bytes.NewReader(payload)
		}
		a, err := Open(mh, int64(len(meta)), p)
		if err != nil {
			return
		}
		// Listing and lookups go on past damage.
		if r, err := a.OpenDir(a.Root()); err == nil {
			for i := 0; i < 10000; i++ {
				c, err := r.Next()
				if err == io.EOF {
					break
				}
				var ce *ChildError
				if errors.As(err, &ce) {
					continue
				}
				if err != nil {
					break
				}
				a.LookupChild(a.Root(), c.Name())
			}
		}
		entries := 0
		err = Extract(context.Background(), a, "", t.TempDir(), ExtractOptions{
			NoOwners:  true,
			OnError:   func(string, error) error { return nil },
			OnDamaged: func(string, error) error { entries++; return nil },
		})
		if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrUnsafePath) && !errors.Is(err, os.ErrExist) {
			t.Logf("extract: %v", err)
		}
	})
}
