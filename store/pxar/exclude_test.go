package pxar

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/pbsfs/pbsfs/store/exclude"
)

// archivePaths lists the entries of an archive in stored order.
func archivePaths(t *testing.T, meta, payload []byte) ([]string, map[string]string) {
	t.Helper()
	var pr io.ReaderAt
	if payload != nil {
		pr = bytes.NewReader(payload)
	}
	d := NewDecoder(bytes.NewReader(meta), int64(len(meta)), pr)
	var paths []string
	data := map[string]string{}
	for {
		e, err := d.Next()
		if err == io.EOF {
			return paths, data
		}
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, e.Path)
		if e.Kind == KindFile {
			b, _ := io.ReadAll(d)
			data[e.Path] = string(b)
		}
	}
}

// TestExcludes: --exclude patterns and .pxarexclude files (inherited by
// subdirectories, anchored at their directory, '!' re-includes, trailing
// '/' for directories only), and how the patterns are recorded: a last
// .pxarexclude-cli entry in a plain archive, the prelude in a split one.
func TestExcludes(t *testing.T) {
	dir := func() *memNode { return &memNode{info: SourceInfo{Kind: KindDir, Metadata: Metadata{Mode: 0o40755}}} }
	file := func(content string) *memNode {
		return &memNode{content: []byte(content), info: SourceInfo{Kind: KindFile, Size: uint64(len(content)), Nlink: 1, Metadata: Metadata{Mode: 0o100644}}}
	}
	tree := memSource{"": dir(), "a.log": file("x"), "keep.log": file("k"), "cache": dir(), "cache/x": file("c"),
		"src": dir(), "src/.pxarexclude": file("# objects\n*.o\n/build\n!/gen/keep.o\nlogs/\n"),
		"src/main.c": file("m"), "src/main.o": file("o"), "src/build": dir(), "src/build/out": file("b"),
		"src/gen": dir(), "src/gen/keep.o": file("g"), "src/gen/x.o": file("x"), "src/gen/build": file("nested build, not anchored"),
		"src/logs": file("a file, not a directory"), "src/d": dir(), "src/d/logs": dir(), "src/d/logs/l": file("l"),
		"other": dir(), "other/main.o": file("not below src"), ".pxarexclude-cli": file("a stale one")}
	var cli exclude.List
	for _, s := range []string{"*.log", "!keep.log", "cache/"} {
		p, err := exclude.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		cli = append(cli, p)
	}
	want := []string{"/", "/keep.log", "/other", "/other/main.o", "/src", "/src/.pxarexclude", "/src/d",
		"/src/gen", "/src/gen/build", "/src/gen/keep.o", "/src/logs", "/src/main.c"}

	var m bytes.Buffer
	if err := Create(context.Background(), tree, NewWriter(&m, nil), CreateOptions{Exclude: cli}); err != nil {
		t.Fatal(err)
	}
	got, data := archivePaths(t, m.Bytes(), nil)
	if !slices.Equal(got, append(slices.Clone(want), "/.pxarexclude-cli")) {
		t.Errorf("plain archive has\n%q\nwant\n%q and .pxarexclude-cli last", got, want)
	}
	if c := data["/.pxarexclude-cli"]; c != "*.log\n!keep.log\ncache/\n" {
		t.Errorf(".pxarexclude-cli holds %q", c)
	}

	var sm, sp bytes.Buffer
	if err := Create(context.Background(), tree, NewWriter(&sm, &sp), CreateOptions{Exclude: cli, Prelude: []byte(`{"exclude-patterns":"*.log\n!keep.log\ncache/\n"}`)}); err != nil {
		t.Fatal(err)
	}
	got, _ = archivePaths(t, sm.Bytes(), sp.Bytes())
	if !slices.Equal(got, want) {
		t.Errorf("split archive has\n%q\nwant\n%q", got, want)
	}
	a, err := Open(bytes.NewReader(sm.Bytes()), int64(sm.Len()), bytes.NewReader(sp.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var prelude map[string]string
	if err := json.Unmarshal(a.Prelude(), &prelude); err != nil || !strings.Contains(prelude["exclude-patterns"], "cache/") {
		t.Errorf("prelude %q: %v", a.Prelude(), err)
	}
}
