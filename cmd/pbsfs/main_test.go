package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pbsfs/pbsfs/store"
)

// cli runs pbsfs in-process and returns its exit code and output.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// newStore makes a lazily created datastore and the flags that reach it.
func newStore(t *testing.T) (string, []string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ds")
	rt := t.TempDir()
	s, err := store.Create(dir, store.Options{RuntimeDir: rt, LazyChunkDirs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	return dir, []string{"--store", dir, "--runtime-dir", rt}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"--help"}, 0},
		{[]string{"nope"}, 2},
		{[]string{"backup", "--help"}, 0},
		{[]string{"backup", "--bogus"}, 2},
		{[]string{"cat", "--store", "/nonexistent", "vm/100"}, 2},
		{[]string{"snapshots", "--store", "/nonexistent"}, 1},
		{[]string{"backup", "--store", "/x", "--type", "vm", "--id", "1", "disk"}, 2},
		{[]string{"backup", "--store", "/x", "--type", "qemu", "--id", "1", "a.img:/x"}, 2},
	} {
		if code, _, errs := cli(t, tc.args...); code != tc.code {
			t.Errorf("pbsfs %q: exit %d, want %d (%s)", tc.args, code, tc.code, errs)
		}
	}
}

func TestBackupSnapshotsCatRestore(t *testing.T) {
	dir, flags := newStore(t)
	src := t.TempDir()
	img := bytes.Repeat([]byte("0123456789abcdef"), 600_000) // 9.2 MB: 3 chunks
	os.WriteFile(filepath.Join(src, "disk.img"), img, 0o644)
	os.WriteFile(filepath.Join(src, "vm.conf"), []byte("memory: 512\n"), 0o644)
	tree := filepath.Join(src, "tree")
	os.MkdirAll(filepath.Join(tree, "a/b"), 0o755)
	os.WriteFile(filepath.Join(tree, "a/b/file"), []byte("hello pxar"), 0o640)
	os.Symlink("b/file", filepath.Join(tree, "a/link"))

	args := append([]string{"backup", "--type", "vm", "--id", "100", "--time", "2026-11-20T10:00:00Z"}, flags...)
	args = append(args, "drive-scsi0.img:"+filepath.Join(src, "disk.img"), "qemu-server.conf:"+filepath.Join(src, "vm.conf"), "root.pxar:"+tree)
	code, out, errs := cli(t, args...)
	if code != 0 || !strings.Contains(out, "snapshot vm/100/2026-11-20T10:00:00Z") {
		t.Fatalf("backup: %d %s %s", code, out, errs)
	}
	code, out, errs = cli(t, append([]string{"snapshots", "--output", "json"}, flags...)...)
	var items []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &items) != nil || len(items) != 1 || items[0]["backup-time"] != float64(1_795_168_800) {
		t.Fatalf("snapshots: %d %s %s", code, out, errs)
	}
	snap := "vm/100/2026-11-20T10:00:00Z"
	for name, want := range map[string][]byte{"drive-scsi0.img": img, "qemu-server.conf": []byte("memory: 512\n")} {
		code, out, errs := cli(t, append([]string{"cat", snap, name}, flags...)...)
		if code != 0 || out != string(want) {
			t.Errorf("cat %s: %d, %d bytes, %s", name, code, len(out), errs)
		}
	}
	target := filepath.Join(t.TempDir(), "restore")
	if code, _, errs := cli(t, append([]string{"restore", snap, "root.pxar", target}, flags...)...); code != 0 {
		t.Fatalf("restore: %s", errs)
	}
	if b, err := os.ReadFile(filepath.Join(target, "a/b/file")); err != nil || string(b) != "hello pxar" {
		t.Errorf("restored file %q %v", b, err)
	}
	if l, err := os.Readlink(filepath.Join(target, "a/link")); err != nil || l != "b/file" {
		t.Errorf("restored link %q %v", l, err)
	}
	// Bad input names the broken file or digest; nothing panics.
	s, _ := store.Open(dir, store.Options{RuntimeDir: flags[3]})
	ref, _ := store.ParseSnapshot("", snap)
	idx, _ := s.OpenIndex(ref, "drive-scsi0.img.fidx")
	d, _, _ := idx.Chunk(1)
	s.Close()
	os.Remove(filepath.Join(dir, ".chunks", d.String()[:4], d.String()))
	code, _, errs = cli(t, append([]string{"cat", snap, "drive-scsi0.img"}, flags...)...)
	if code != 1 || !strings.Contains(errs, d.String()) || !strings.Contains(errs, "missing") {
		t.Errorf("missing chunk: %d %s", code, errs)
	}
	conf := filepath.Join(dir, "vm/100/2026-11-20T10:00:00Z/qemu-server.conf.blob")
	os.WriteFile(conf, []byte("garbage"), 0o644)
	code, _, errs = cli(t, append([]string{"cat", snap, "qemu-server.conf"}, flags...)...)
	if code != 1 || !strings.Contains(errs, conf) {
		t.Errorf("garbage blob: %d %s", code, errs)
	}
	manifest := filepath.Join(dir, "vm/100/2026-11-20T10:00:00Z/index.json.blob")
	b, _ := os.ReadFile(manifest)
	os.WriteFile(manifest, b[:len(b)/2], 0o644)
	code, _, errs = cli(t, append([]string{"snapshots"}, flags...)...)
	if code != 0 || !strings.Contains(errs, manifest) {
		t.Errorf("truncated manifest: %d %s", code, errs)
	}
}
