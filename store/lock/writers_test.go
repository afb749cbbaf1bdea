package lock

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWriterRegistry(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "writers") // created on demand
	if ws, err := ListWriters(dir); err != nil || len(ws) != 0 {
		t.Fatalf("missing registry: %v, %v", ws, err)
	}
	r1, err := RegisterWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := RegisterWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Path() == r2.Path() || !r1.Start().Before(r2.Start()) {
		t.Fatalf("registrations %s and %s not distinct and ordered", r1.Path(), r2.Path())
	}
	// Our own registrations are locked through other open file
	// descriptions, so they count as alive.
	ws, err := ListWriters(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []WriterInfo{
		{Start: r1.Start(), PID: os.Getpid(), Path: r1.Path()},
		{Start: r2.Start(), PID: os.Getpid(), Path: r2.Path()},
	}
	if !sameWriters(ws, want) {
		t.Fatalf("ListWriters = %+v, want %+v", ws, want)
	}
	if err := r1.Release(); err != nil {
		t.Fatal(err)
	}
	if err := r1.Release(); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	ws, err = ListWriters(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !sameWriters(ws, want[1:]) {
		t.Fatalf("after release: %+v, want %+v", ws, want[1:])
	}
	if err := r2.Release(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("registry not empty: %v", ents)
	}
}

func sameWriters(a, b []WriterInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Start.Equal(b[i].Start) || a[i].PID != b[i].PID || a[i].Path != b[i].Path {
			return false
		}
	}
	return true
}

// TestWriterRegistryDeadWriter: a writer in another process is listed
// while it lives; once it is killed, its file is removed.
func TestWriterRegistryDeadWriter(t *testing.T) {
	dir := t.TempDir()
	h := startHelper(t, "writer", "-", dir)
	if h.reply != replyOK {
		t.Fatalf("helper: %s %s", h.reply, h.detail)
	}
	ws, err := ListWriters(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 1 || ws[0].PID != h.pid() || ws[0].Path != h.detail {
		t.Fatalf("live writer: %+v, want pid %d at %s", ws, h.pid(), h.detail)
	}
	if age := time.Since(ws[0].Start); age < 0 || age > time.Minute {
		t.Errorf("start time %v is %v old", ws[0].Start, age)
	}
	h.kill() // no Release: the file stays behind, unlocked
	if _, err := os.Stat(h.detail); err != nil {
		t.Fatalf("dead writer's file: %v", err)
	}
	ws, err = ListWriters(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 0 {
		t.Fatalf("dead writer listed: %+v", ws)
	}
	if _, err := os.Stat(h.detail); !os.IsNotExist(err) {
		t.Errorf("dead writer's file not removed: %v", err)
	}
}

// TestWriterRegistryOtherFiles: foreign names are ignored; temporary
// files are removed only when old and unlocked.
func TestWriterRegistryOtherFiles(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-time.Hour)
	files := []struct {
		name     string
		old      bool
		wantKept bool
	}{
		{"README", true, true},
		{"123-abc", true, true},
		{tmpPrefix + "1-2", true, false},
		{tmpPrefix + "3-4", false, true}, // may still be registering
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if f.old {
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	ws, err := ListWriters(dir)
	if err != nil || len(ws) != 0 {
		t.Fatalf("ListWriters = %v, %v; want none", ws, err)
	}
	for _, f := range files {
		_, err := os.Stat(filepath.Join(dir, f.name))
		if kept := err == nil; kept != f.wantKept {
			t.Errorf("%s kept=%v, want %v", f.name, kept, f.wantKept)
		}
	}
}

func TestParseWriterName(t *testing.T) {
	tests := []struct {
		name   string
		nanos  int64
		pid    int
		wantOK bool
	}{
		{"1718000000123456789-42", 1718000000123456789, 42, true},
		{"0-1", 0, 1, true},
		{"1-0", 0, 0, false},
		{"-1-2", 0, 0, false},
		{"1--2", 0, 0, false},
		{"1-2-3", 0, 0, false},
		{"99999999999999999999-1", 0, 0, false},
		{"1-99999999999999999999", 0, 0, false},
		{"+1-2", 0, 0, false},
		{"", 0, 0, false},
		{tmpPrefix + "1-2", 0, 0, false},
	}
	for _, tc := range tests {
		start, pid, ok := parseWriterName(tc.name)
		if ok != tc.wantOK || ok && (start.UnixNano() != tc.nanos || pid != tc.pid) {
			t.Errorf("parseWriterName(%q) = %v, %d, %v", tc.name, start.UnixNano(), pid, ok)
		}
	}
}
