package pxar

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// openLog is a Source that records which files were opened (read).
type openLog struct {
	Source
	opened []string
}

func (o *openLog) Open(p string) (io.ReadCloser, error) {
	o.opened = append(o.opened, p)
	return o.Source.Open(p)
}

// memChunks holds the chunks of split archives written in memory: each
// payload stream is cut at every PAYLOAD header and at the markers, so
// that files lie in chunks of their own.
type memChunks map[[32]byte][]byte

// previous cuts the payload of an archive written before into chunks,
// remembers them, and returns the Previous for a backup whose payload
// goes to out. Chunks named in missing are unavailable.
func (mc memChunks) previous(t *testing.T, meta, payload []byte, out *bytes.Buffer, missing map[[32]byte]bool) *Previous {
	t.Helper()
	a, err := Open(bytes.NewReader(meta), int64(len(meta)), nil)
	if err != nil {
		t.Fatal(err)
	}
	cuts := []uint64{0, headerSize, uint64(len(payload)) - headerSize, uint64(len(payload))}
	d := NewDecoder(bytes.NewReader(meta), int64(len(meta)), nil)
	for {
		e, err := d.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == KindFile {
			cuts = append(cuts, uint64(e.PayloadOffset))
		}
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	var chunks []PayloadChunk
	for i := 1; i < len(cuts); i++ {
		b := payload[cuts[i-1]:cuts[i]]
		d := sha256.Sum256(b)
		mc[d] = b
		chunks = append(chunks, PayloadChunk{Start: cuts[i-1], End: cuts[i], Digest: d})
	}
	check := func(cs []PayloadChunk) error {
		for _, c := range cs {
			if missing[c.Digest] || mc[c.Digest] == nil {
				return ErrChunkUnavailable
			}
		}
		return nil
	}
	return &Previous{Archive: a, Chunks: chunks, Check: check, Inject: func(cs []PayloadChunk) error {
		if err := check(cs); err != nil {
			return err
		}
		for _, c := range cs {
			out.Write(mc[c.Digest])
		}
		return nil
	}}
}

// oneChunk makes the files of p's payload one chunk (between the start
// marker's and the tail's), so that a change to one of them makes the
// padding rule encode the unchanged ones afresh.
func (mc memChunks) oneChunk(p *Previous) {
	all := p.Chunks[1 : len(p.Chunks)-1]
	var b []byte
	for _, c := range all {
		b = append(b, mc[c.Digest]...)
	}
	d := sha256.Sum256(b)
	mc[d] = b
	p.Chunks = []PayloadChunk{p.Chunks[0], {Start: all[0].Start, End: all[len(all)-1].End, Digest: d}, p.Chunks[len(p.Chunks)-1]}
}

// createSplit archives src as a split archive, against prev if not nil.
func createSplit(t *testing.T, src Source, prev func(out *bytes.Buffer) *Previous, opts CreateOptions) (meta, payload []byte, st ReuseStats) {
	t.Helper()
	var m, p bytes.Buffer
	if prev != nil {
		opts.Previous = prev(&p)
	}
	opts.Stats = &st
	w := NewWriter(&m, &p)
	if err := Create(context.Background(), src, w, opts); err != nil {
		t.Fatal(err)
	}
	return m.Bytes(), p.Bytes(), st
}

// contents decodes a split archive sequentially (which also checks that
// payload offsets never go back) and returns each file's bytes.
func contents(t *testing.T, meta, payload []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	d := NewDecoder(bytes.NewReader(meta), int64(len(meta)), bytes.NewReader(payload))
	for {
		e, err := d.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == KindFile {
			b, err := io.ReadAll(d)
			if err != nil {
				t.Fatal(err)
			}
			out[strings.TrimPrefix(e.Path, "/")] = string(b)
		}
	}
}

func reuseTree() memSource {
	tree := memSource{"": {info: SourceInfo{Kind: KindDir, Metadata: Metadata{Mode: 0o40755}}}}
	tree["sub"] = &memNode{info: SourceInfo{Kind: KindDir, Metadata: Metadata{Mode: 0o40755}}}
	for i, name := range []string{"a", "b", "c", "d", "sub/e", "sub/f", "z"} {
		content := bytes.Repeat([]byte(fmt.Sprintf("%s-%d;", name, i)), 200+i*37)
		tree[name] = &memNode{content: content, info: SourceInfo{Kind: KindFile, Size: uint64(len(content)), Ino: uint64(i + 1), Nlink: 1,
			Metadata: Metadata{Mode: 0o100644, UID: 1000, GID: 1000, Mtime: Timestamp{Secs: 1700000000, Nanos: 5},
				Xattrs: []Xattr{{Name: "user.a", Value: []byte("1")}}}}}
	}
	tree["sub/link"] = &memNode{info: SourceInfo{Kind: KindSymlink, LinkTarget: "e", Metadata: Metadata{Mode: 0o120777}}}
	return tree
}

func (m memSource) clone() memSource {
	c := memSource{}
	for k, n := range m {
		cp := *n
		cp.content = slices.Clone(n.content)
		cp.info.Xattrs = slices.Clone(n.info.Xattrs)
		c[k] = &cp
	}
	return c
}

// TestReuseMetadataFields changes one field of one file's metadata at a
// time (and its contents, so that a wrong reuse shows): only that file
// is read, every other one keeps its payload, and the new archive holds
// the new contents. Unchanged, no file is read.
func TestReuseMetadataFields(t *testing.T) {
	base := reuseTree()
	meta1, payload1, st1 := createSplit(t, base, nil, CreateOptions{})
	if st1.FilesRead != 7 {
		t.Fatalf("first backup read %d files, want 7", st1.FilesRead)
	}
	u := uint64(7)
	cases := []struct {
		name   string
		change func(*SourceInfo)
	}{
		{"unchanged", nil},
		{"mode", func(i *SourceInfo) { i.Mode = 0o100600 }},
		{"flags", func(i *SourceInfo) { i.Flags = 0x20000 }},
		{"uid", func(i *SourceInfo) { i.UID = 1001 }},
		{"gid", func(i *SourceInfo) { i.GID = 1001 }},
		{"mtime-secs", func(i *SourceInfo) { i.Mtime.Secs++ }},
		{"mtime-nanos", func(i *SourceInfo) { i.Mtime.Nanos++ }},
		{"xattr-value", func(i *SourceInfo) { i.Xattrs[0].Value = []byte("2") }},
		{"xattr-added", func(i *SourceInfo) { i.Xattrs = append(i.Xattrs, Xattr{Name: "user.b"}) }},
		{"xattr-removed", func(i *SourceInfo) { i.Xattrs = nil }},
		{"acl-user", func(i *SourceInfo) { i.ACL.Users = []ACLEntry{{ID: 5, Perms: 4}} }},
		{"acl-group", func(i *SourceInfo) { i.ACL.Groups = []ACLEntry{{ID: 5, Perms: 4}} }},
		{"acl-group-obj", func(i *SourceInfo) { i.ACL.GroupObj = &u }},
		{"fcaps", func(i *SourceInfo) { i.FCaps = []byte{1, 2, 3} }},
		{"quota-projid", func(i *SourceInfo) { i.QuotaProjID = &u }},
		{"size", func(i *SourceInfo) {}}, // the content below changes the size
		{"not-a-file-before", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tree := base.clone()
			want := "c"
			switch tc.name {
			case "unchanged":
				want = ""
			case "not-a-file-before":
				// "sub/link" becomes a file: nothing to reuse for it.
				want = "sub/link"
				tree["sub/link"] = &memNode{content: []byte("now a file"), info: SourceInfo{Kind: KindFile, Size: 10, Nlink: 1, Metadata: Metadata{Mode: 0o100644}}}
			default:
				n := tree["c"]
				tc.change(&n.info)
				if tc.name == "size" {
					n.content = append(n.content, 'x')
				} else {
					n.content[0] ^= 1 // same size, other bytes: must be read
				}
				n.info.Size = uint64(len(n.content))
			}
			src := &openLog{Source: tree}
			mc := memChunks{}
			meta, payload, st := createSplit(t, src, func(out *bytes.Buffer) *Previous { return mc.previous(t, meta1, payload1, out, nil) }, CreateOptions{})
			var wantOpened []string
			if want != "" {
				wantOpened = []string{want}
			}
			if !slices.Equal(src.opened, wantOpened) {
				t.Errorf("read %q, want %q", src.opened, wantOpened)
			}
			wantReused := int64(6)
			if want == "" || want == "sub/link" {
				wantReused = 7
			}
			if st.FilesReused != wantReused || st.FilesRead != int64(len(wantOpened)) {
				t.Errorf("stats %+v, want %d reused", st, wantReused)
			}
			got := contents(t, meta, payload)
			for p, n := range tree {
				if n.info.Kind == KindFile && got[p] != string(n.content) {
					t.Errorf("%s: archived %d bytes %.20q, want %d bytes %.20q", p, len(got[p]), got[p], len(n.content), n.content)
				}
			}
			if wantFiles := 7 + boolInt(want == "sub/link"); len(got) != wantFiles {
				t.Errorf("archive has %d files, want %d", len(got), wantFiles)
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestMetadataEqualFields checks MetadataEqual field by field.
func TestMetadataEqualFields(t *testing.T) {
	u, v := uint64(1), uint64(2)
	base := Metadata{Mode: 0o100644, Flags: 1, UID: 2, GID: 3, Mtime: Timestamp{Secs: 4, Nanos: 5},
		Xattrs: []Xattr{{Name: "user.x", Value: []byte("v")}, {Name: "user.y"}}, FCaps: []byte{1},
		QuotaProjID: &u, ACL: ACL{Users: []ACLEntry{{ID: 1, Perms: 7}}, Groups: []ACLEntry{{ID: 2, Perms: 5}}, GroupObj: &u,
			Default: &ACLDefault{UserObj: 7, GroupObj: 5, Other: 0, Mask: 7}, DefaultUsers: []ACLEntry{{ID: 3, Perms: 4}}, DefaultGroups: []ACLEntry{{ID: 4, Perms: 4}}}}
	clone := func() Metadata {
		m := base
		m.Xattrs = slices.Clone(base.Xattrs)
		m.FCaps = slices.Clone(base.FCaps)
		d := *base.ACL.Default
		m.ACL.Default = &d
		q, g := *base.QuotaProjID, *base.ACL.GroupObj
		m.QuotaProjID, m.ACL.GroupObj = &q, &g
		m.ACL.Users, m.ACL.Groups = slices.Clone(base.ACL.Users), slices.Clone(base.ACL.Groups)
		return m
	}
	if c := clone(); !MetadataEqual(&base, &c) {
		t.Fatal("a copy differs")
	}
	for name, f := range map[string]func(*Metadata){
		"mode": func(m *Metadata) { m.Mode = 0o100755 }, "flags": func(m *Metadata) { m.Flags = 0 },
		"uid": func(m *Metadata) { m.UID = 0 }, "gid": func(m *Metadata) { m.GID = 0 },
		"mtime.secs": func(m *Metadata) { m.Mtime.Secs = 0 }, "mtime.nanos": func(m *Metadata) { m.Mtime.Nanos = 0 },
		"xattr order":       func(m *Metadata) { m.Xattrs[0], m.Xattrs[1] = m.Xattrs[1], m.Xattrs[0] },
		"xattr value":       func(m *Metadata) { m.Xattrs[0].Value = []byte("w") },
		"fcaps":             func(m *Metadata) { m.FCaps = []byte{2} },
		"fcaps absent":      func(m *Metadata) { m.FCaps = nil },
		"quota":             func(m *Metadata) { m.QuotaProjID = &v },
		"quota absent":      func(m *Metadata) { m.QuotaProjID = nil },
		"acl user":          func(m *Metadata) { m.ACL.Users[0].Perms = 6 },
		"acl group":         func(m *Metadata) { m.ACL.Groups = nil },
		"acl group_obj":     func(m *Metadata) { m.ACL.GroupObj = &v },
		"acl default":       func(m *Metadata) { m.ACL.Default.Mask = 5 },
		"acl default user":  func(m *Metadata) { m.ACL.DefaultUsers = nil },
		"acl default group": func(m *Metadata) { m.ACL.DefaultGroups = []ACLEntry{{ID: 9, Perms: 4}} },
	} {
		c := clone()
		f(&c)
		if MetadataEqual(&base, &c) || MetadataEqual(&c, &base) {
			t.Errorf("%s: change not seen", name)
		}
	}
}

// TestReusePadding: the files of a tree lie in one chunk of the previous
// payload, and one of them changed. With the PBS client's 10 % rule the
// unchanged ones around it are read again (their chunk would be mostly
// padding); with MaxPadding 1 only the changed file is read, the chunk
// is reused twice (before and after it), and the archive still decodes
// sequentially with the right contents.
func TestReusePadding(t *testing.T) {
	base := reuseTree()
	meta1, payload1, _ := createSplit(t, base, nil, CreateOptions{})
	tree := base.clone()
	tree["c"].content[0] ^= 1
	tree["c"].info.Mtime.Secs++
	for _, tc := range []struct {
		max        float64
		read, used int64
	}{{0, 7, 0}, {1, 1, 6}} {
		t.Run(fmt.Sprint(tc.max), func(t *testing.T) {
			src := &openLog{Source: tree}
			mc := memChunks{}
			meta, payload, st := createSplit(t, src, func(out *bytes.Buffer) *Previous {
				p := mc.previous(t, meta1, payload1, out, nil)
				// One chunk for all files: [16, tail).
				mc.oneChunk(p)
				p.MaxPadding = tc.max
				return p
			}, CreateOptions{})
			if st.FilesRead != tc.read || st.FilesReused != tc.used {
				t.Errorf("read %d (%q), reused %d; want %d and %d", st.FilesRead, src.opened, st.FilesReused, tc.read, tc.used)
			}
			got := contents(t, meta, payload)
			for p, n := range tree {
				if n.info.Kind == KindFile && got[p] != string(n.content) {
					t.Errorf("%s archived wrong", p)
				}
			}
		})
	}
}

// TestReuseUnavailableChunk: a previous chunk that is gone makes its
// files be read, and the archive stays complete.
func TestReuseUnavailableChunk(t *testing.T) {
	tree := reuseTree()
	meta1, payload1, _ := createSplit(t, tree, nil, CreateOptions{})
	mc := memChunks{}
	var missing map[[32]byte]bool
	src := &openLog{Source: tree}
	meta, payload, st := createSplit(t, src, func(out *bytes.Buffer) *Previous {
		p := mc.previous(t, meta1, payload1, out, nil)
		// The chunk holding "d" (the fourth file) is missing.
		missing = map[[32]byte]bool{p.Chunks[4].Digest: true}
		return mc.previous(t, meta1, payload1, out, missing)
	}, CreateOptions{})
	if st.FilesRead == 0 || st.ChunksUnusable == 0 {
		t.Errorf("no file read for a missing chunk: %+v (read %q)", st, src.opened)
	}
	got := contents(t, meta, payload)
	for p, n := range tree {
		if n.info.Kind == KindFile && got[p] != string(n.content) {
			t.Errorf("%s archived wrong", p)
		}
	}
}

// changingSource changes the tree on disk at chosen points of the walk,
// forcing the interleavings of a backup with writers: after "grow" is
// stat'ed it grows, after "shrink" is stat'ed it shrinks, and "gone"
// vanishes once its directory was listed.
type changingSource struct {
	*DirSource
	root string
}

func (s *changingSource) Lstat(p string) (*SourceInfo, error) {
	info, err := s.DirSource.Lstat(p)
	switch p {
	case "grow":
		f, _ := os.OpenFile(filepath.Join(s.root, p), os.O_APPEND|os.O_WRONLY, 0)
		f.Write(bytes.Repeat([]byte("more"), 5000))
		f.Close()
	case "shrink":
		os.Truncate(filepath.Join(s.root, p), 10)
	}
	return info, err
}

func (s *changingSource) ReadDirNames(p string) ([]string, error) {
	names, err := s.DirSource.ReadDirNames(p)
	if p == "" {
		os.Remove(filepath.Join(s.root, "gone"))
	}
	return names, err
}

// TestTreeChangedWhileRead archives a tree changed under the backup
// (forced by a Source hook, in both data and metadata mode): the archive
// decodes, holds every file at its stat size, and each change is reported.
func TestTreeChangedWhileRead(t *testing.T) {
	for _, metadata := range []bool{false, true} {
		t.Run(fmt.Sprintf("metadata=%v", metadata), func(t *testing.T) {
			files := map[string]string{"a": strings.Repeat("a", 3000), "gone": "x", "grow": strings.Repeat("g", 4000), "shrink": strings.Repeat("s", 5000), "z": "zz"}
			root, prev := treeToChange(t, files, metadata)
			var warned, skipped []string
			src := &changingSource{DirSource: &DirSource{Root: root}, root: root}
			defer src.Close()
			meta, payload, _ := createSplit(t, src, prev, CreateOptions{
				Warn:    func(p string, err error) { warned = append(warned, p) },
				OnError: func(p string, err error) error { skipped = append(skipped, p); return nil },
			})
			got := contents(t, meta, payload)
			checkChangedWhileRead(t, got, files)
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

// aheadSource is a memSource that records content prefetches; its first
// Open waits (at most 10 s) until the files of want were prefetched, so
// a test sees whether they were asked for before any file was read.
type aheadSource struct {
	memSource
	want []string
	mu   sync.Mutex
	seen map[string]int
	// early are the prefetches made before the first Open.
	early  map[string]bool
	opened bool
}

func (s *aheadSource) Prefetch(p string, contents bool) {
	if contents {
		s.mu.Lock()
		s.seen[p]++
		s.mu.Unlock()
	}
}

func (s *aheadSource) Open(p string) (io.ReadCloser, error) {
	s.mu.Lock()
	first := !s.opened
	s.opened = true
	s.mu.Unlock()
	if first {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			s.mu.Lock()
			done := true
			for _, w := range s.want {
				done = done && s.seen[w] > 0
			}
			s.mu.Unlock()
			if done {
				break
			}
		}
		s.mu.Lock()
		for p, n := range s.seen {
			s.early[p] = n > 0
		}
		s.mu.Unlock()
	}
	return s.memSource.Open(p)
}

// TestLookAheadPrefetch: in a directory of files a..g lying in one chunk
// of the previous payload, b and f changed. The run c, d, e between them
// is read again by the 10 % rule (its chunk would be mostly padding), and
// a directory's look-ahead asks for it to be read before any file is
// read; g, whose run may go on beyond the directory, is left to the end
// of its run (a's run ends, and is prefetched, just before a is read). Each file is prefetched once, and the archive is
// the one written without prefetching. When the rule reuses everything
// (MaxPadding 1), nothing is read ahead.
func TestLookAheadPrefetch(t *testing.T) {
	base := memSource{"": {info: SourceInfo{Kind: KindDir, Metadata: Metadata{Mode: 0o40755}}}}
	for i, name := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		content := bytes.Repeat([]byte(name), 300+50*i)
		base[name] = &memNode{content: content, info: SourceInfo{Kind: KindFile, Size: uint64(len(content)), Ino: uint64(i + 1), Nlink: 1,
			Metadata: Metadata{Mode: 0o100644, Mtime: Timestamp{Secs: 1700000000}}}}
	}
	meta1, payload1, _ := createSplit(t, base, nil, CreateOptions{})
	tree := base.clone()
	for _, name := range []string{"b", "f"} {
		tree[name].content[0] ^= 1
		tree[name].info.Mtime.Secs++
	}
	previous := func(mc memChunks, max float64) func(out *bytes.Buffer) *Previous {
		return func(out *bytes.Buffer) *Previous {
			p := mc.previous(t, meta1, payload1, out, nil)
			mc.oneChunk(p)
			p.MaxPadding = max
			return p
		}
	}
	for _, tc := range []struct {
		max          float64
		early, later []string
		read         int64
	}{
		{0, []string{"c", "d", "e"}, []string{"g"}, 7},
		{1, nil, nil, 2},
	} {
		t.Run(fmt.Sprint(tc.max), func(t *testing.T) {
			src := &aheadSource{memSource: tree, want: tc.early, seen: map[string]int{}, early: map[string]bool{}}
			meta, payload, st := createSplit(t, src, previous(memChunks{}, tc.max), CreateOptions{})
			if st.FilesRead != tc.read {
				t.Errorf("read %d files, want %d", st.FilesRead, tc.read)
			}
			for _, p := range tc.early {
				if !src.early[p] {
					t.Errorf("%s not prefetched before the first read", p)
				}
			}
			for _, p := range tc.later {
				if src.early[p] {
					t.Errorf("%s prefetched before the first read, though its run may go on", p)
				}
			}
			for p, n := range src.seen {
				if n != 1 {
					t.Errorf("%s prefetched %d times, want once", p, n)
				}
			}
			if tc.max == 1 && len(src.seen) != 0 {
				t.Errorf("prefetched %v, want nothing: only the changed files are read", src.seen)
			}
			meta0, payload0, _ := createSplit(t, tree, previous(memChunks{}, tc.max), CreateOptions{})
			if !bytes.Equal(meta, meta0) || !bytes.Equal(payload, payload0) {
				t.Error("the archive differs from the one written without prefetching")
			}
		})
	}
}

// checkChangedWhileRead checks the archived contents got of the files a
// tree-changed-while-read test changed after their stat: "grow" archived
// with its stat size, "shrink" cut to what is left and padded with zeros
// to its stat size, "gone" not archived.
func checkChangedWhileRead(t *testing.T, got, files map[string]string) {
	t.Helper()
	if got["grow"] != files["grow"] {
		t.Errorf("grown file archived with %d bytes, want its stat size %d", len(got["grow"]), len(files["grow"]))
	}
	if want := "ssssssssss" + strings.Repeat("\x00", 4990); got["shrink"] != want {
		t.Errorf("shrunk file archived as %.20q (%d bytes), want 10 bytes and zeros to 5000", got["shrink"], len(got["shrink"]))
	}
	if _, ok := got["gone"]; ok {
		t.Error("vanished file archived")
	}
}

// treeToChange writes files (name: contents) into a new directory and
// returns it with, in metadata mode, the previous archive to back up
// against: one taken before the files are written again with other
// mtimes, so that every file is read again; nil otherwise.
func treeToChange(t *testing.T, files map[string]string, metadata bool) (string, func(*bytes.Buffer) *Previous) {
	t.Helper()
	root := t.TempDir()
	write := func() {
		for n, c := range files {
			if err := os.WriteFile(filepath.Join(root, n), []byte(c), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write()
	if !metadata {
		return root, nil
	}
	meta1, payload1, _ := createSplit(t, &DirSource{Root: root}, nil, CreateOptions{})
	write()
	mc := memChunks{}
	return root, func(out *bytes.Buffer) *Previous { return mc.previous(t, meta1, payload1, out, nil) }
}

// failingReaderAt fails every read.
type failingReaderAt struct{}

func (failingReaderAt) ReadAt([]byte, int64) (int, error) { return 0, io.ErrUnexpectedEOF }

// TestReusePaddingFromPrevious: the unchanged files that the padding rule
// encodes afresh are read from the previous payload stream
// (Previous.Payload), not from the source, and the archive is byte for
// byte the one written when they are read from the source. A payload
// item that cannot be read, or is not the file's, makes that file be
// read from the source instead.
func TestReusePaddingFromPrevious(t *testing.T) {
	base := reuseTree()
	meta1, payload1, _ := createSplit(t, base, nil, CreateOptions{})
	tree := base.clone()
	tree["c"].content[0] ^= 1
	tree["c"].info.Mtime.Secs++
	// One chunk for all files, so that the rule re-reads the unchanged
	// ones (see TestReusePadding).
	prev := func(mc memChunks, out *bytes.Buffer, payload io.ReaderAt) *Previous {
		p := mc.previous(t, meta1, payload1, out, nil)
		mc.oneChunk(p)
		p.Payload = payload
		return p
	}
	src := &openLog{Source: tree}
	wantMeta, wantPayload, wantSt := createSplit(t, src, func(out *bytes.Buffer) *Previous { return prev(memChunks{}, out, nil) }, CreateOptions{})
	if wantSt.FilesRead != 7 || wantSt.FilesReencoded != 6 || wantSt.FilesFromPrev != 0 {
		t.Fatalf("without Payload: stats %+v, want 7 read, 6 of them encoded afresh", wantSt)
	}
	// The previous payload with the header of "d"'s item damaged: its
	// size no longer says 16 + its length.
	damaged := slices.Clone(payload1)
	a, err := Open(bytes.NewReader(meta1), int64(len(meta1)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ed, err := a.Lookup("/d")
	if err != nil {
		t.Fatal(err)
	}
	damaged[ed.PayloadOffset+8]++
	for _, tc := range []struct {
		name       string
		payload    io.ReaderAt
		opened     []string
		fromPrev   int64
		unreadable int64
	}{
		{"intact", bytes.NewReader(payload1), []string{"c"}, 6, 0},
		{"damaged header", bytes.NewReader(damaged), []string{"c", "d"}, 5, 1},
		{"unreadable", failingReaderAt{}, []string{"a", "b", "c", "d", "sub/e", "sub/f", "z"}, 0, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &openLog{Source: tree}
			meta, payload, st := createSplit(t, src, func(out *bytes.Buffer) *Previous { return prev(memChunks{}, out, tc.payload) }, CreateOptions{})
			if !slices.Equal(src.opened, tc.opened) {
				t.Errorf("read %q from the source, want %q", src.opened, tc.opened)
			}
			if st.FilesFromPrev != tc.fromPrev || st.PrevUnreadable != tc.unreadable || st.FilesRead != int64(len(tc.opened)) || st.FilesReencoded != 6 {
				t.Errorf("stats %+v, want %d from the previous payload, %d unreadable", st, tc.fromPrev, tc.unreadable)
			}
			if !bytes.Equal(meta, wantMeta) || !bytes.Equal(payload, wantPayload) {
				t.Errorf("archive differs from the one read from the source: meta %d/%d bytes, payload %d/%d", len(meta), len(wantMeta), len(payload), len(wantPayload))
			}
		})
	}
}
