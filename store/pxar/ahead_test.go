package pxar

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/store/exclude"
)

func TestPreorderLess(t *testing.T) {
	order := []string{"", "a", "a/b", "a/b/c", "a/c", "a-b", "a.b", "ab", "b", "b/a"}
	for i, a := range order {
		for j, b := range order {
			if got := preorderLess(a, b); got != (i < j) {
				t.Errorf("preorderLess(%q, %q) = %v, want %v", a, b, got, i < j)
			}
		}
	}
}

// aheadTree writes a tree of nested directories with files of several
// sizes, an empty file, a symlink, hardlinks and a .pxarexclude file.
func aheadTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	write := func(name string, size int) {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(len(name)*7 + i*13)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		mt := time.Unix(1700000000, 0)
		os.Chtimes(p, mt, mt)
	}
	for d := range 4 {
		for f := range 15 {
			write(fmt.Sprintf("d%d/f%02d", d, f), 300+137*f)
		}
		write(fmt.Sprintf("d%d/sub/x", d), 5000)
	}
	write("d1/sub/deeper/y", 777)
	write("empty", 0)
	write("skipped/big", 9000)
	write("d2/skip.log", 100)
	if err := os.WriteFile(filepath.Join(root, ".pxarexclude"), []byte("/skipped\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("d0/f00", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(root, "d0/f01"), filepath.Join(root, "d3/hard")); err != nil {
		t.Fatal(err)
	}
	return root
}

// TestWalkerSameArchive: a backup of a live tree whose listing and stats
// come from the walker writes the archive the encoder alone writes, in
// data and in metadata mode (against a previous archive with large
// chunks, so that the padding rule reads unchanged files again), with
// exclusions from a .pxarexclude file and from the caller; every file the
// encoder reads was read ahead by the walker, and nothing else.
func TestWalkerSameArchive(t *testing.T) {
	root := aheadTree(t)
	excl, err := exclude.Parse("*.log")
	if err != nil {
		t.Fatal(err)
	}
	opts := func(events *walkerEvents) CreateOptions {
		o := CreateOptions{Exclude: exclude.List{excl}}
		if events != nil {
			o.aheadHook = events.add
		}
		return o
	}
	meta1, payload1, _ := createSplit(t, plainSource{&DirSource{Root: root}}, nil, opts(nil))
	for _, name := range []string{"d0/f03", "d1/f07", "d1/f08", "d3/f14"} {
		p := filepath.Join(root, name)
		if err := os.WriteFile(p, []byte("changed "+name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "d2/new"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, metadata := range []bool{false, true} {
		t.Run(fmt.Sprintf("metadata=%v", metadata), func(t *testing.T) {
			var prev func(*bytes.Buffer) *Previous
			if metadata {
				prev = func(out *bytes.Buffer) *Previous {
					mc := memChunks{}
					return mergeChunks(mc, mc.previous(t, meta1, payload1, out, nil), 5)
				}
			}
			ev := &walkerEvents{}
			src := &DirSource{Root: root}
			defer src.Close()
			meta, payload, st := createSplit(t, src, prev, opts(ev))
			want, wantPayload, wantSt := createSplit(t, plainSource{&DirSource{Root: root}}, prev, opts(nil))
			if !bytes.Equal(meta, want) || !bytes.Equal(payload, wantPayload) {
				t.Error("the archive differs from the one written without the walker")
			}
			if st != wantSt {
				t.Errorf("stats %+v, without the walker %+v", st, wantSt)
			}
			dirs, fetched, read := ev.sets()
			if len(dirs) == 0 {
				t.Fatal("the walker did not run")
			}
			if slices.Contains(dirs, "skipped") {
				t.Error("the walker listed an excluded directory")
			}
			if int64(len(read)) != st.FilesRead {
				t.Errorf("%d reads seen, stats say %d", len(read), st.FilesRead)
			}
			// An empty file has nothing to read ahead.
			read = slices.DeleteFunc(read, func(p string) bool { return p == "empty" })
			if !slices.Equal(fetched, read) {
				t.Errorf("read ahead %q,\nread %q", fetched, read)
			}
			if metadata && (st.FilesReused == 0 || st.FilesReencoded == 0) {
				t.Errorf("stats %+v: want files reused and files read again by the padding rule", st)
			}
		})
	}
}

// mergeChunks joins every n consecutive chunks of p (held in mc) into
// one.
func mergeChunks(mc memChunks, p *Previous, n int) *Previous {
	var out []PayloadChunk
	for i := 0; i < len(p.Chunks); i += n {
		part := p.Chunks[i:min(i+n, len(p.Chunks))]
		var b []byte
		for _, c := range part {
			b = append(b, mc[c.Digest]...)
		}
		d := sha256.Sum256(b)
		mc[d] = b
		out = append(out, PayloadChunk{Start: part[0].Start, End: part[len(part)-1].End, Digest: d})
	}
	p.Chunks = out
	return p
}

type walkerEvents struct {
	mu     sync.Mutex
	events [][2]string
}

func (e *walkerEvents) add(kind, path string) {
	e.mu.Lock()
	e.events = append(e.events, [2]string{kind, path})
	e.mu.Unlock()
}

// sets returns the directories listed, the files read ahead and the
// files read, each sorted.
func (e *walkerEvents) sets() (dirs, fetched, read []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.events {
		switch ev[0] {
		case "dir":
			dirs = append(dirs, ev[1])
		case "fetch":
			fetched = append(fetched, ev[1])
		case "read":
			read = append(read, ev[1])
		}
	}
	sort.Strings(dirs)
	sort.Strings(fetched)
	sort.Strings(read)
	return
}

// TestWalkerTreeChanged changes files after the walker stat'ed their
// directory and before the encoder reads them (the walker's hook holds
// the directory back until the changes are made): a file that grew is
// archived with its stat size and reported, one that shrank is padded
// and reported, one that vanished is reported and left out, and one
// replaced by another file (a rename over it) is archived with the
// metadata and contents of the new file, in data and in metadata mode.
func TestWalkerTreeChanged(t *testing.T) {
	for _, metadata := range []bool{false, true} {
		t.Run(fmt.Sprintf("metadata=%v", metadata), func(t *testing.T) {
			files := map[string]string{"a": strings.Repeat("a", 3000), "gone": "x", "grow": strings.Repeat("g", 4000),
				"shrink": strings.Repeat("s", 5000), "swap": strings.Repeat("o", 6000), "z": "zz"}
			root, prev := treeToChange(t, files, metadata)
			replaced := strings.Repeat("N", 1234)
			change := func(kind, path string) {
				if kind != "dir" || path != "" {
					return
				}
				f, _ := os.OpenFile(filepath.Join(root, "grow"), os.O_APPEND|os.O_WRONLY, 0)
				f.Write(bytes.Repeat([]byte("more"), 5000))
				f.Close()
				os.Truncate(filepath.Join(root, "shrink"), 10)
				os.Remove(filepath.Join(root, "gone"))
				tmp := filepath.Join(root, ".swap.tmp")
				if err := os.WriteFile(tmp, []byte(replaced), 0o600); err != nil {
					t.Error(err)
				}
				if err := os.Rename(tmp, filepath.Join(root, "swap")); err != nil {
					t.Error(err)
				}
			}
			var warned, skipped []string
			src := &DirSource{Root: root}
			defer src.Close()
			meta, payload, _ := createSplit(t, src, prev, CreateOptions{
				aheadHook: change,
				Warn:      func(p string, err error) { warned = append(warned, p) },
				OnError:   func(p string, err error) error { skipped = append(skipped, p); return nil },
			})
			got := contents(t, meta, payload)
			checkChangedWhileRead(t, got, files)
			if got["swap"] != replaced {
				t.Errorf("replaced file archived as %.20q (%d bytes), want the new file's %d bytes", got["swap"], len(got["swap"]), len(replaced))
			}
			a, err := Open(bytes.NewReader(meta), int64(len(meta)), bytes.NewReader(payload))
			if err != nil {
				t.Fatal(err)
			}
			if e, err := a.Lookup("/swap"); err != nil || e.Mode&0o777 != 0o600 {
				t.Errorf("replaced file: %v, mode %o; want the new file's 0600", err, e.Mode&0o777)
			}
			if got["a"] != files["a"] || got["z"] != files["z"] {
				t.Error("unchanged files archived wrong")
			}
			sort.Strings(skipped)
			if !slices.Equal(warned, []string{"grow"}) || !slices.Equal(skipped, []string{"gone", "shrink"}) {
				t.Errorf("warned %q, skipped %q; want grow, and gone and shrink", warned, skipped)
			}
		})
	}
}
