package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

func backupOne(t *testing.T, s *Store, g GroupRef, when time.Time) SnapshotRef {
	t.Helper()
	ctx := context.Background()
	b, err := s.StartBackup(ctx, g, when, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddImage(ctx, "d.img", bytes.NewReader([]byte("disk")), 4); err != nil {
		t.Fatal(err)
	}
	if err := b.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	return b.Ref()
}

func TestRemoveSnapshot(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	g := GroupRef{NS: "", Type: TypeVM, ID: "100"}
	t0 := time.Unix(1_800_000_000, 0)
	r1 := backupOne(t, s, g, t0)
	r2 := backupOne(t, s, g, t0.Add(time.Hour))

	// Protected: refused, nothing removed, hook not called.
	if err := s.SetProtected(r1, true); err != nil {
		t.Fatal(err)
	}
	called := 0
	hook := func(ctx context.Context, ref SnapshotRef) error {
		called++
		if _, err := os.Stat(s.Path(ref.Dir())); err != nil {
			t.Errorf("hook ran after the snapshot went: %v", err)
		}
		return nil
	}
	if err := s.RemoveSnapshot(ctx, r1, hook); !errors.Is(err, ErrProtected) || called != 0 {
		t.Fatalf("protected: %v, hook called %d", err, called)
	}
	// Locked by a reader: EBUSY-like, nothing removed.
	rl, err := s.locks.LockSnapshot(nil, g.Type, g.ID, r2.TimeString(), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveSnapshot(ctx, r2, hook); !errors.Is(err, ErrLocked) || called != 0 {
		t.Fatalf("locked: %v", err)
	}
	rl.Unlock()
	// A failing hook aborts.
	if err := s.RemoveSnapshot(ctx, r2, func(context.Context, SnapshotRef) error { return errors.New("no") }); err == nil {
		t.Fatal("hook error ignored")
	}
	if err := s.RemoveSnapshot(ctx, r2, hook); err != nil || called != 1 {
		t.Fatalf("remove: %v, hook %d", err, called)
	}
	if _, err := s.Snapshot(r2); !errors.Is(err, ErrNotFound) {
		t.Errorf("snapshot still there: %v", err)
	}
	// Group remains (r1 protected); unprotect and remove the last one.
	if err := s.SetProtected(r1, false); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSnapshotNotes(ctx, r1, "keep?"); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.LoadManifest(r1); m.Notes() != "keep?" {
		t.Errorf("notes %q", m.Notes())
	}
	verifyAll(t, s, r1)
	if err := s.RemoveSnapshot(ctx, r1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Path(g.Dir())); !os.IsNotExist(err) {
		t.Errorf("empty group not removed: %v", err)
	}
	if err := s.RemoveSnapshot(ctx, r1, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("second remove: %v", err)
	}
}

func TestRemoveGroup(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	g := GroupRef{NS: "", Type: TypeCT, ID: "200"}
	t0 := time.Unix(1_800_000_000, 0)
	var refs []SnapshotRef
	for i := range 3 {
		refs = append(refs, backupOne(t, s, g, t0.Add(time.Duration(i)*time.Hour)))
	}
	s.SetProtected(refs[1], true)
	if err := s.RemoveGroup(ctx, g, nil); !errors.Is(err, ErrProtected) {
		t.Fatalf("RemoveGroup with a protected snapshot: %v", err)
	}
	snaps, _, _ := s.Snapshots(g)
	if len(snaps) != 1 || !snaps[0].Ref.Time.Equal(refs[1].Time) {
		t.Fatalf("left %v", snaps)
	}
	s.SetProtected(refs[1], false)
	if err := s.RemoveGroup(ctx, g, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Path(g.Dir())); !os.IsNotExist(err) {
		t.Errorf("group left: %v", err)
	}
}
