package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/store"
)

// makeSnapshots backs up one small blob per time into group g of the
// store at dir, each a finished snapshot.
func makeSnapshots(t *testing.T, dir, runtimeDir string, g store.GroupRef, times ...string) {
	t.Helper()
	ctx := context.Background()
	s, err := store.Open(dir, store.Options{RuntimeDir: runtimeDir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateNamespace(g.NS); err != nil {
		t.Fatal(err)
	}
	for _, ts := range times {
		tm, err := store.ParseBackupTime(ts)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.StartBackup(ctx, g, tm, store.BackupOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.AddBlob(ctx, "conf", []byte("snapshot "+ts)); err != nil {
			t.Fatal(err)
		}
		if err := b.Finish(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// snapshotDirs lists the snapshot directories of group g.
func snapshotDirs(t *testing.T, dir string, g store.GroupRef) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, g.Dir()))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}

func wantDirs(t *testing.T, dir string, g store.GroupRef, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := snapshotDirs(t, dir, g); !slices.Equal(got, want) {
		t.Errorf("%s: snapshots %q, want %q", g, got, want)
	}
}

// TestPruneCLI prunes a real store through the command line. Every
// snapshot is at 12:00 or 12:30 UTC, on the same local day in any time
// zone, and the policy uses no weeks, so the expected sets hold whatever
// the machine's zone (the rules themselves are pinned to zones in
// store/prune_test.go).
func TestPruneCLI(t *testing.T) {
	dir, flags := newStore(t)
	rt := flags[3]
	vm := store.GroupRef{Type: store.TypeVM, ID: "100"}
	ct := store.GroupRef{NS: "prod", Type: store.TypeCT, ID: "200"}
	makeSnapshots(t, dir, rt, vm,
		"2025-11-10T12:00:00Z", // monthly, beyond N=2: removed
		"2025-12-10T12:00:00Z", // keep-monthly
		"2026-02-10T12:00:00Z", // keep-monthly
		"2026-03-18T12:00:00Z", // keep-daily
		"2026-03-19T12:00:00Z", // unfinished, not the newest: removed
		"2026-03-20T12:00:00Z", // keep-daily
		"2026-03-21T12:00:00Z", // same day as keep-last: removed
		"2026-03-21T12:30:00Z", // keep-last
		"2026-03-22T12:00:00Z", // protected
		"2026-03-23T12:00:00Z", // unfinished, the newest: partial
	)
	for _, unfinished := range []string{"2026-03-19T12:00:00Z", "2026-03-23T12:00:00Z"} {
		if err := os.Remove(filepath.Join(dir, vm.Dir(), unfinished, store.ManifestName)); err != nil {
			t.Fatal(err)
		}
	}
	makeSnapshots(t, dir, rt, ct, "2026-03-01T12:00:00Z", "2026-03-02T12:00:00Z", "2026-03-03T12:00:00Z",
		"2026-03-04T12:00:00Z", "2026-03-05T12:00:00Z")
	if code, _, errs := cli(t, append([]string{"protect", "vm/100/2026-03-22T12:00:00Z"}, flags...)...); code != 0 {
		t.Fatalf("protect: %s", errs)
	}
	allVM := snapshotDirs(t, dir, vm)
	allCT := snapshotDirs(t, dir, ct)
	policy := []string{"--keep-last", "1", "--keep-daily", "2", "--keep-monthly", "2"}

	// Dry run over every namespace: the marks, nothing removed.
	code, out, errs := cli(t, append(append([]string{"prune", "--dry-run", "--output", "json"}, policy...), flags...)...)
	if code != 0 {
		t.Fatalf("dry run: %d %s", code, errs)
	}
	var items []pruneItem
	if err := json.Unmarshal([]byte(out), &items); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, it := range items {
		key := filepath.Join(store.Namespace(it.NS).Dir(), it.BackupType, it.BackupID, store.FormatBackupTime(time.Unix(it.BackupTime, 0)))
		got[key] = it.Reason
		if it.Removed || it.Error != "" || it.Keep != (it.Reason != "") {
			t.Errorf("dry run item %+v", it)
		}
	}
	want := map[string]string{
		"vm/100/2025-11-10T12:00:00Z":         "",
		"vm/100/2025-12-10T12:00:00Z":         "keep-monthly",
		"vm/100/2026-02-10T12:00:00Z":         "keep-monthly",
		"vm/100/2026-03-18T12:00:00Z":         "keep-daily",
		"vm/100/2026-03-19T12:00:00Z":         "",
		"vm/100/2026-03-20T12:00:00Z":         "keep-daily",
		"vm/100/2026-03-21T12:00:00Z":         "",
		"vm/100/2026-03-21T12:30:00Z":         "keep-last",
		"vm/100/2026-03-22T12:00:00Z":         "protected",
		"vm/100/2026-03-23T12:00:00Z":         "partial",
		"ns/prod/ct/200/2026-03-01T12:00:00Z": "",
		"ns/prod/ct/200/2026-03-02T12:00:00Z": "",
		"ns/prod/ct/200/2026-03-03T12:00:00Z": "keep-daily",
		"ns/prod/ct/200/2026-03-04T12:00:00Z": "keep-daily",
		"ns/prod/ct/200/2026-03-05T12:00:00Z": "keep-last",
	}
	if len(got) != len(want) {
		t.Errorf("dry run: %d items, want %d: %v", len(got), len(want), got)
	}
	for k, w := range want {
		if r, ok := got[k]; !ok || r != w {
			t.Errorf("dry run %s: reason %q (listed %v), want %q", k, r, ok, w)
		}
	}
	wantDirs(t, dir, vm, allVM...)
	wantDirs(t, dir, ct, allCT...)

	// The text table of a dry run; still nothing removed.
	code, out, errs = cli(t, append(append([]string{"prune", "--dry-run", "vm/100"}, policy...), flags...)...)
	if code != 0 || !strings.Contains(out, "group vm/100\n") || !strings.Contains(out, "dry run: 7 kept, 3 to remove") ||
		!isRow(out, "vm/100/2026-03-21T12:00:00Z", "remove") || !isRow(out, "vm/100/2026-03-21T12:30:00Z", "keep", "keep-last") {
		t.Errorf("dry run table: %d\n%s%s", code, out, errs)
	}
	wantDirs(t, dir, vm, allVM...)

	// --max-depth 0: the root namespace only.
	code, out, errs = cli(t, append(append([]string{"prune", "--max-depth", "0"}, policy...), flags...)...)
	if code != 0 || !strings.Contains(out, "7 kept, 3 removed, 0 failed") {
		t.Fatalf("prune: %d\n%s%s", code, out, errs)
	}
	wantDirs(t, dir, vm, "2025-12-10T12:00:00Z", "2026-02-10T12:00:00Z", "2026-03-18T12:00:00Z", "2026-03-20T12:00:00Z",
		"2026-03-21T12:30:00Z", "2026-03-22T12:00:00Z", "2026-03-23T12:00:00Z")
	wantDirs(t, dir, ct, allCT...)

	// A group named with its namespace prefix.
	code, out, errs = cli(t, append(append([]string{"prune", "ns/prod/ct/200"}, policy...), flags...)...)
	if code != 0 || !strings.Contains(out, "group ns/prod/ct/200\n") {
		t.Fatalf("prune ct: %d\n%s%s", code, out, errs)
	}
	wantDirs(t, dir, ct, "2026-03-03T12:00:00Z", "2026-03-04T12:00:00Z", "2026-03-05T12:00:00Z")

	// Pruning again removes nothing more.
	code, out, errs = cli(t, append(append([]string{"prune"}, policy...), flags...)...)
	if code != 0 || !strings.Contains(out, "10 kept, 0 removed, 0 failed") {
		t.Errorf("prune again: %d\n%s%s", code, out, errs)
	}

	// No --keep option: everything stays, even with a policy-free run.
	code, out, errs = cli(t, append([]string{"prune", "vm/100"}, flags...)...)
	if code != 0 || !strings.Contains(errs, "keeping every snapshot") || !strings.Contains(out, "7 kept, 0 removed") {
		t.Errorf("no options: %d\n%s%s", code, out, errs)
	}
	if len(snapshotDirs(t, dir, vm)) != 7 {
		t.Error("prune without options removed snapshots")
	}
}

// tableRow returns the fields after first of the table row starting with
// first, joined by single blanks.
func tableRow(out, first string) (string, bool) {
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) > 0 && f[0] == first {
			return strings.Join(f[1:], " "), true
		}
	}
	return "", false
}

// isRow reports whether out has the row first with exactly fields rest.
func isRow(out, first string, rest ...string) bool {
	row, ok := tableRow(out, first)
	return ok && row == strings.Join(rest, " ")
}

// TestPruneCLILocked: a snapshot held by a reader is reported, the others
// still go, and the exit status is 1.
func TestPruneCLILocked(t *testing.T) {
	dir, flags := newStore(t)
	rt := flags[3]
	g := store.GroupRef{Type: store.TypeHost, ID: "web"}
	makeSnapshots(t, dir, rt, g, "2026-01-01T12:00:00Z", "2026-01-02T12:00:00Z", "2026-01-03T12:00:00Z", "2026-01-04T12:00:00Z")
	s, err := store.Open(dir, store.Options{RuntimeDir: rt})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rl, err := s.Locks().LockSnapshot(nil, g.Type, g.ID, "2026-01-02T12:00:00Z", false)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errs := cli(t, append([]string{"prune", "host/web", "--keep-last", "1"}, flags...)...)
	rl.Unlock()
	if code != 1 || !strings.Contains(out, "1 kept, 2 removed, 1 failed") || !strings.Contains(errs, "2026-01-02T12:00:00Z") {
		t.Errorf("locked: %d\n%s%s", code, out, errs)
	}
	if row, _ := tableRow(out, "host/web/2026-01-02T12:00:00Z"); !strings.HasPrefix(row, "remove failed: ") || !strings.Contains(row, "locked") {
		t.Errorf("table does not show the failure:\n%s", out)
	}
	wantDirs(t, dir, g, "2026-01-02T12:00:00Z", "2026-01-04T12:00:00Z")

	// JSON reports the error too, and the next run finishes the job.
	rl, err = s.Locks().LockSnapshot(nil, g.Type, g.ID, "2026-01-02T12:00:00Z", false)
	if err != nil {
		t.Fatal(err)
	}
	code, out, _ = cli(t, append([]string{"prune", "host/web", "--keep-last", "1", "--output", "json"}, flags...)...)
	rl.Unlock()
	var items []pruneItem
	if code != 1 || json.Unmarshal([]byte(out), &items) != nil || len(items) != 2 || items[1].Error == "" || items[1].Removed {
		t.Errorf("locked json: %d %s", code, out)
	}
	if code, _, errs := cli(t, append([]string{"prune", "host/web", "--keep-last", "1"}, flags...)...); code != 0 {
		t.Errorf("unlocked: %d %s", code, errs)
	}
	wantDirs(t, dir, g, "2026-01-04T12:00:00Z")
}

func TestLifecycleCLI(t *testing.T) {
	dir, flags := newStore(t)
	rt := flags[3]
	g := store.GroupRef{Type: store.TypeVM, ID: "300"}
	ng := store.GroupRef{NS: "a/b", Type: store.TypeHost, ID: "h"}
	makeSnapshots(t, dir, rt, g, "2026-01-01T12:00:00Z", "2026-01-02T12:00:00Z")
	makeSnapshots(t, dir, rt, ng, "2026-01-01T12:00:00Z")
	snap := "vm/300/2026-01-01T12:00:00Z"
	c := func(args ...string) (int, string, string) { return cli(t, append(args, flags...)...) }

	// protect → forget refused → unprotect → forget works.
	if code, _, errs := c("protect", snap); code != 0 {
		t.Fatalf("protect: %s", errs)
	}
	if _, err := os.Stat(filepath.Join(dir, g.Dir(), "2026-01-01T12:00:00Z", store.ProtectedName)); err != nil {
		t.Errorf("no .protected: %v", err)
	}
	if code, _, errs := c("forget", snap); code != 1 || !strings.Contains(errs, "protected") {
		t.Errorf("forget protected: %d %s", code, errs)
	}
	wantDirs(t, dir, g, "2026-01-01T12:00:00Z", "2026-01-02T12:00:00Z")
	if _, out, _ := c("snapshots"); !strings.HasSuffix(must(tableRow(out, snap)), " protected") {
		t.Errorf("snapshots does not show the protection:\n%s", out)
	}
	if code, _, errs := c("unprotect", snap); code != 0 {
		t.Fatalf("unprotect: %s", errs)
	}
	if code, _, errs := c("unprotect", snap); code != 0 {
		t.Errorf("unprotect twice: %s", errs)
	}
	if code, _, errs := c("forget", snap); code != 0 {
		t.Fatalf("forget: %s", errs)
	}
	wantDirs(t, dir, g, "2026-01-02T12:00:00Z")
	if code, _, _ := c("forget", snap); code != 1 {
		t.Errorf("forget twice: %d", code)
	}

	// Notes round trip, in the root namespace and through both ways of
	// naming a namespace.
	snap = "vm/300/2026-01-02T12:00:00Z"
	for _, tc := range []struct {
		args []string
		set  string
	}{
		{[]string{snap}, "first line\nsecond line"},
		{[]string{"ns/a/ns/b/host/h/2026-01-01T12:00:00Z"}, "nested"},
		{[]string{"--ns", "a/b", "host/h/2026-01-01T12:00:00Z"}, "nested, by flag\n"},
		{[]string{snap}, ""},
	} {
		if code, _, errs := c(append([]string{"notes", "--set", tc.set}, tc.args...)...); code != 0 {
			t.Fatalf("notes --set %q: %s", tc.set, errs)
		}
		code, out, errs := c(append([]string{"notes"}, tc.args...)...)
		want := tc.set
		if want != "" && !strings.HasSuffix(want, "\n") {
			want += "\n"
		}
		if code != 0 || out != want {
			t.Errorf("notes %q: %d %q %s, want %q", tc.args, code, out, errs, want)
		}
	}
	// The notes are in the manifest, where PBS keeps them.
	s, err := store.Open(dir, store.Options{RuntimeDir: rt})
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := store.ParseSnapshot("", "ns/a/ns/b/host/h/2026-01-01T12:00:00Z")
	m, err := s.LoadManifest(ref)
	s.Close()
	if err != nil || m.Notes() != "nested, by flag\n" {
		t.Errorf("manifest notes %q %v", m.Notes(), err)
	}

	// Protection with a namespace; forget and prune respect it.
	nsnap := "ns/a/ns/b/host/h/2026-01-01T12:00:00Z"
	if code, _, errs := c("protect", nsnap); code != 0 {
		t.Fatalf("protect nested: %s", errs)
	}
	if code, _, _ := c("forget", "--ns", "a/b", "host/h/2026-01-01T12:00:00Z"); code != 1 {
		t.Errorf("forget protected nested: %d", code)
	}
	if code, out, errs := c("prune", "--ns", "a", "--keep-last", "1"); code != 0 || !isRow(out, nsnap, "keep", "protected") {
		t.Errorf("prune nested: %d\n%s%s", code, out, errs)
	}
	wantDirs(t, dir, ng, "2026-01-01T12:00:00Z")

	// Bad input.
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"forget"}, 2},
		{[]string{"forget", "vm/300"}, 2},
		{[]string{"forget", "vm/300/yesterday"}, 2},
		{[]string{"forget", "vm/300/2020-01-01T00:00:00Z"}, 1},
		{[]string{"protect", "vm/300/2020-01-01T00:00:00Z"}, 1},
		{[]string{"unprotect", "a", "b"}, 2},
		{[]string{"notes", "vm/300/2020-01-01T00:00:00Z"}, 1},
		{[]string{"notes", "--ns", "../x", snap}, 2},
		{[]string{"prune", "--keep-last", "-1"}, 2},
		{[]string{"prune", "--keep-daily", "x"}, 2},
		{[]string{"prune", "--max-depth", "8"}, 2},
		{[]string{"prune", "--output", "xml"}, 2},
		{[]string{"prune", "vm/300", "vm/301"}, 2},
		{[]string{"prune", "vm"}, 2},
		{[]string{"prune", "vm/999", "--keep-last", "1"}, 1},
	} {
		if code, _, errs := c(tc.args...); code != tc.code {
			t.Errorf("pbsfs %q: exit %d, want %d (%s)", tc.args, code, tc.code, errs)
		}
	}
}

// must drops tableRow's found flag.
func must(row string, _ bool) string { return row }

// TestSnapshotsCorruptManifest: a snapshot whose index.json.blob does not
// load is listed as damaged, not ok, and "finished": false in JSON with the
// reason; the other snapshots list as before.
func TestSnapshotsCorruptManifest(t *testing.T) {
	dir, flags := newStore(t)
	g := store.GroupRef{Type: "vm", ID: "100"}
	makeSnapshots(t, dir, flags[3], g, "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z")
	man := filepath.Join(dir, "vm/100/2026-01-01T00:00:00Z", store.ManifestName)
	b, err := os.ReadFile(man)
	if err != nil {
		t.Fatal(err)
	}
	for i := 12; i < len(b); i++ { // past the header: the CRC no longer matches
		b[i] ^= 0x55
	}
	if err := os.WriteFile(man, b, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := cli(t, append([]string{"snapshots"}, flags...)...)
	if code != 0 {
		t.Fatalf("snapshots: exit %d: %s", code, errs)
	}
	if row, _ := tableRow(out, "vm/100/2026-01-01T00:00:00Z"); !strings.Contains(row, "damaged") || strings.HasSuffix(row, " ok") {
		t.Errorf("corrupt manifest listed as %q\n%s", row, out)
	}
	if row, _ := tableRow(out, "vm/100/2026-01-02T00:00:00Z"); !strings.HasSuffix(strings.TrimSpace(row), "ok") {
		t.Errorf("intact snapshot listed as %q", row)
	}
	code, out, _ = cli(t, append([]string{"snapshots", "--output", "json"}, flags...)...)
	var items []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &items) != nil || len(items) != 2 {
		t.Fatalf("snapshots --output json: exit %d\n%s", code, out)
	}
	if items[0]["finished"] != false || items[0]["manifest-error"] == nil {
		t.Errorf("corrupt manifest in JSON: %v", items[0])
	}
	if items[1]["finished"] != true || items[1]["manifest-error"] != nil {
		t.Errorf("intact snapshot in JSON: %v", items[1])
	}
}
