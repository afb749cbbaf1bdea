package pxar

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// genWideTree writes files files of 0..8 KiB into dirs of 100 files and
// returns the total content size.
func genWideTree(b *testing.B, root string, files int) int64 {
	b.Helper()
	buf := make([]byte, 8<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	var total int64
	for i := 0; i < files; i++ {
		dir := filepath.Join(root, fmt.Sprintf("d%04d", i/100))
		if i%100 == 0 {
			if err := os.Mkdir(dir, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		n := (i * 2654435761) % len(buf)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%06d", i)), buf[:n], 0o644); err != nil {
			b.Fatal(err)
		}
		total += int64(n)
	}
	return total
}

// BenchmarkEncode archives a generated 50k-file tree beside GNU tar of the
// same tree (piped, so tar reads the contents), in the same run.
func BenchmarkEncode(b *testing.B) {
	root := b.TempDir()
	total := genWideTree(b, root, 50000)
	b.Logf("tree: 50000 files, %d MiB", total>>20)
	results := map[string]time.Duration{}
	run := func(name string, fn func(b *testing.B)) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(total)
			start := time.Now()
			for b.Loop() {
				fn(b)
			}
			results[name] = time.Since(start) / time.Duration(b.N)
		})
	}
	run("baseline=tar", func(b *testing.B) {
		cmd := exec.Command("tar", "cf", "-", "-C", root, ".")
		cmd.Stdout = io.Discard
		if err := cmd.Run(); err != nil {
			b.Skipf("tar: %v", err)
		}
	})
	for _, split := range []bool{false, true} {
		name := "pxar=v1"
		if split {
			name = "pxar=split"
		}
		run(name, func(b *testing.B) {
			var payload io.Writer
			if split {
				payload = io.Discard
			}
			w := NewWriter(io.Discard, payload)
			if err := CreateFromDir(context.Background(), root, w, CreateOptions{}); err != nil {
				b.Fatal(err)
			}
		})
	}
	run("pxar=v1-stat-only", func(b *testing.B) {
		src := &DirSource{Root: root, SkipXattrs: true, SkipFlags: true}
		if err := Create(context.Background(), src, NewWriter(io.Discard, nil), CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	})
	if base := results["baseline=tar"]; base > 0 {
		for _, n := range []string{"pxar=v1", "pxar=split", "pxar=v1-stat-only"} {
			if d := results[n]; d > 0 {
				b.Logf("%s: %.2fx the time of tar", n, float64(d)/float64(base))
			}
		}
	}
}

// countingReaderAt counts ReadAt calls.
type countingReaderAt struct {
	r     io.ReaderAt
	calls atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.calls.Add(1)
	return c.r.ReadAt(p, off)
}

// BenchmarkLookup looks up one name in a directory of 100k entries through
// the goodbye table, beside a sequential scan for the same name, counting
// ReadAt calls (reads/op).
func BenchmarkLookup(b *testing.B) {
	const n = 100000
	var meta bytes.Buffer
	w := NewWriter(&meta, nil)
	if err := w.BeginDir("", &Metadata{Mode: 0o40755}); err != nil {
		b.Fatal(err)
	}
	md := &Metadata{Mode: 0o100644}
	for i := 0; i < n; i++ {
		if _, err := w.AddFile(fmt.Sprintf("file-%06d", i), md, 0, nil); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.EndDir(); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	target := fmt.Sprintf("file-%06d", n*3/4)
	b.Logf("archive: %d entries, %d bytes", n, meta.Len())
	b.Run("baseline=scan", func(b *testing.B) {
		cr := &countingReaderAt{r: bytes.NewReader(meta.Bytes())}
		for b.Loop() {
			d := NewDecoder(cr, int64(meta.Len()), nil)
			for {
				e, err := d.Next()
				if err != nil {
					b.Fatal(err)
				}
				if e.Path == "/"+target {
					break
				}
			}
		}
		b.ReportMetric(float64(cr.calls.Load())/float64(b.N), "reads/op")
	})
	b.Run("goodbye", func(b *testing.B) {
		cr := &countingReaderAt{r: bytes.NewReader(meta.Bytes())}
		a, err := Open(cr, int64(meta.Len()), nil)
		if err != nil {
			b.Fatal(err)
		}
		cr.calls.Store(0)
		for b.Loop() {
			e, err := a.Lookup(target)
			if err != nil || e.Name() != target {
				b.Fatal(e, err)
			}
		}
		b.ReportMetric(float64(cr.calls.Load())/float64(b.N), "reads/op")
	})
}

// BenchmarkDecode decodes an in-memory archive of 20k small files
// sequentially, reading every file, beside copying the same bytes.
func BenchmarkDecode(b *testing.B) {
	tree := memSource{"": {info: SourceInfo{Kind: KindDir, Metadata: Metadata{Mode: 0o40755}}}}
	content := bytes.Repeat([]byte("0123456789abcdef"), 256)
	for i := 0; i < 20000; i++ {
		n := (i * 7919) % len(content)
		tree[fmt.Sprintf("d%03d/f%05d", i/100, i)] = &memNode{info: SourceInfo{Kind: KindFile, Size: uint64(n), Metadata: Metadata{Mode: 0o100644}}, content: content[:n]}
		if i%100 == 0 {
			tree[fmt.Sprintf("d%03d", i/100)] = &memNode{info: SourceInfo{Kind: KindDir, Metadata: Metadata{Mode: 0o40755}}}
		}
	}
	var meta bytes.Buffer
	if err := Create(context.Background(), tree, NewWriter(&meta, nil), CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	data := meta.Bytes()
	b.Run("baseline=copy", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			io.Copy(io.Discard, io.NewSectionReader(bytes.NewReader(data), 0, int64(len(data))))
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			d := NewDecoder(bytes.NewReader(data), int64(len(data)), nil)
			for {
				_, err := d.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, d)
			}
		}
	})
}
