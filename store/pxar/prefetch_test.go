package pxar

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// countingSource is a DirSource whose prefetches are recorded.
type countingSource struct {
	*DirSource
	mu   sync.Mutex
	seen map[string]int
}

func (s *countingSource) Prefetch(p string, contents bool) {
	s.mu.Lock()
	if contents {
		s.seen[p]++
	}
	s.mu.Unlock()
	s.DirSource.Prefetch(p, contents)
}

// plainSource hides DirSource's Prefetch.
type plainSource struct{ Source }

// TestPrefetch: a backup of a directory tree asks for every file to be
// read ahead once, and writes the same archive as without prefetching.
func TestPrefetch(t *testing.T) {
	root := t.TempDir()
	var files []string
	for d := range 3 {
		dir := filepath.Join(root, fmt.Sprintf("d%d", d))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := range 20 {
			name := fmt.Sprintf("d%d/f%02d", d, f)
			if err := os.WriteFile(filepath.Join(root, name), bytes.Repeat([]byte{byte(f)}, 1000*f+1), 0o644); err != nil {
				t.Fatal(err)
			}
			files = append(files, name)
		}
	}
	archive := func(src Source) []byte {
		var meta, payload bytes.Buffer
		if err := Create(context.Background(), src, NewWriter(&meta, &payload), CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		return append(meta.Bytes(), payload.Bytes()...)
	}
	cs := &countingSource{DirSource: &DirSource{Root: root}, seen: map[string]int{}}
	with := archive(cs)
	without := archive(plainSource{&DirSource{Root: root}})
	if !bytes.Equal(with, without) {
		t.Error("the archive differs with prefetching")
	}
	for _, f := range files {
		if cs.seen[f] != 1 {
			t.Errorf("%s prefetched %d times, want once", f, cs.seen[f])
		}
	}
}
