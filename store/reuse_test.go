package store

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/store/crypto"
	"github.com/pbsfs/pbsfs/store/pxar"
)

// reuseTreeDir writes files big enough to have chunks of their own (so
// that an unchanged file's payload is always reusable) and a few small
// ones.
func reuseTreeDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for i := range 5 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("big%d", i)), xorshiftBytes(uint64(i+1), 1<<20+i*4099), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := os.WriteFile(filepath.Join(dir, "sub", fmt.Sprintf("s%02d", i)), bytes.Repeat([]byte{byte(i)}, 100+i), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// metadataBackup backs dir up as root.pxar in metadata mode at minute n.
func metadataBackup(t *testing.T, s *Store, dir string, n int, key *crypto.Key) (SnapshotRef, pxar.ReuseStats, []string) {
	t.Helper()
	ctx := context.Background()
	g := GroupRef{Type: TypeHost, ID: "reuse"}
	b, err := s.StartBackup(ctx, g, time.Unix(1700000000+int64(n)*60, 0), BackupOptions{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	var st pxar.ReuseStats
	var warnings []string
	if _, err := b.AddPxar(ctx, "root.pxar", dir, PxarOptions{Metadata: true, Stats: &st,
		OnWarning: func(p string, err error) { warnings = append(warnings, fmt.Sprintf("%s: %v", p, err)) }}); err != nil {
		b.Abort()
		t.Fatal(err)
	}
	if err := b.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	return b.Ref(), st, warnings
}

// checkArchive verifies the snapshot and compares every file of its
// split archive with dir.
func checkArchive(t *testing.T, s *Store, ref SnapshotRef, dir string) {
	t.Helper()
	verifyAll(t, s, ref)
	si, err := s.Snapshot(ref)
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.OpenPxar(context.Background(), si, "root.pxar")
	if err != nil {
		t.Fatal(err)
	}
	if !a.Split() {
		t.Fatal("metadata mode wrote a plain archive")
	}
	n := 0
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		e, err := a.Lookup(rel)
		if err != nil {
			return err
		}
		r, err := a.Content(e)
		if err != nil {
			return err
		}
		got, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		want, _ := os.ReadFile(p)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: archive content differs", rel)
		}
		n++
		return nil
	})
	if err != nil || n != 25 {
		t.Fatalf("compared %d files: %v", n, err)
	}
}

// TestMetadataModeReuse: a second metadata-mode backup of an unchanged
// tree reads no file, a changed file alone is read, and both archives
// verify and hold the tree's bytes.
func TestMetadataModeReuse(t *testing.T) {
	s := newTestStore(t)
	dir := reuseTreeDir(t)
	ref1, st1, w1 := metadataBackup(t, s, dir, 1, nil)
	if st1.FilesRead != 25 || st1.FilesReused != 0 || len(w1) != 1 {
		t.Errorf("first backup: %+v, warnings %q (want one: no previous snapshot)", st1, w1)
	}
	checkArchive(t, s, ref1, dir)
	ref2, st2, w2 := metadataBackup(t, s, dir, 2, nil)
	if st2.FilesRead != 0 || st2.FilesReused != 25 || len(w2) != 0 {
		t.Errorf("unchanged tree: %+v, warnings %q", st2, w2)
	}
	checkArchive(t, s, ref2, dir)
	if err := os.WriteFile(filepath.Join(dir, "big2"), xorshiftBytes(99, 1<<20+2*4099), 0o644); err != nil {
		t.Fatal(err)
	}
	ref3, st3, _ := metadataBackup(t, s, dir, 3, nil)
	if st3.FilesRead != 1 || st3.FilesReused != 24 {
		t.Errorf("one file changed: %+v", st3)
	}
	checkArchive(t, s, ref3, dir)
}

// TestNoReuseFromFailedVerify: the last finished snapshot failed
// verification, so nothing is reused from it (as the PBS server hands the
// client no previous snapshot then), and the next backup after a good one
// reuses again.
func TestNoReuseFromFailedVerify(t *testing.T) {
	s := newTestStore(t)
	dir := reuseTreeDir(t)
	ref1, _, _ := metadataBackup(t, s, dir, 1, nil)
	err := s.UpdateManifest(context.Background(), ref1, func(m *Manifest) error {
		return m.SetUnprotected("verify_state", VerifyState{State: "failed", UPID: "UPID:test"})
	})
	if err != nil {
		t.Fatal(err)
	}
	ref2, st2, w2 := metadataBackup(t, s, dir, 2, nil)
	if st2.FilesReused != 0 || st2.FilesRead != 25 || len(w2) != 1 {
		t.Errorf("reused from a base that failed verification: %+v, warnings %q", st2, w2)
	}
	checkArchive(t, s, ref2, dir)
	_, st3, _ := metadataBackup(t, s, dir, 3, nil)
	if st3.FilesReused != 25 {
		t.Errorf("after a good snapshot: %+v", st3)
	}
}

// TestNoReuseAcrossKeys: a backup with another key (or none) than the
// previous snapshot's reads everything.
func TestNoReuseAcrossKeys(t *testing.T) {
	s := newTestStore(t)
	dir := reuseTreeDir(t)
	metadataBackup(t, s, dir, 1, vectorKey())
	_, st, _ := metadataBackup(t, s, dir, 2, otherKey())
	if st.FilesReused != 0 {
		t.Errorf("reused another key's payload: %+v", st)
	}
	_, st, _ = metadataBackup(t, s, dir, 3, nil)
	if st.FilesReused != 0 {
		t.Errorf("plain backup reused an encrypted payload: %+v", st)
	}
	metadataBackup(t, s, dir, 4, otherKey())
	ref, st, _ := metadataBackup(t, s, dir, 5, otherKey())
	if st.FilesReused != 25 {
		t.Errorf("same key: %+v", st)
	}
	checkArchive(t, reopen(t, s, otherKey()), ref, dir)
}
