package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
)

// RemoveHook is called once a snapshot's locks are held and before any of
// its files go; an error aborts the removal. The mount uses it to tell the
// collector (design/gc-safety.md, hazard 3).
type RemoveHook func(ctx context.Context, ref SnapshotRef) error

// RemoveSnapshot forgets snapshot ref the way PBS's forget does (§7.3):
// an exclusive snapshot lock (ErrLocked if a backup, reader or verify holds
// it), the manifest lock, refusal if protected (ErrProtected), then the
// directory goes and the lock files with it. Afterwards, as PBS 2025+
// does, the group is removed too when this was its last snapshot and its
// lock is free.
func (s *Store) RemoveSnapshot(ctx context.Context, ref SnapshotRef, hook RemoveHook) error {
	if err := s.destroySnapshot(ctx, ref, hook); err != nil {
		return err
	}
	s.cleanupGroup(ctx, ref.Group)
	return nil
}

func (s *Store) destroySnapshot(ctx context.Context, ref SnapshotRef, hook RemoveHook) error {
	if err := ref.Group.Validate(); err != nil {
		return err
	}
	g, ns, ts := ref.Group, ref.Group.NS.Components(), ref.TimeString()
	dir := s.Path(ref.Dir())
	if ok, err := exists(dir); err != nil || !ok {
		return fmt.Errorf("snapshot %s: %w", ref, ErrNotFound)
	}
	sl, err := s.locks.LockSnapshot(ns, g.Type, g.ID, ts, true)
	if err != nil {
		return err // names the snapshot
	}
	defer sl.Unlock()
	ml, err := s.locks.LockManifest(ctx, ns, g.Type, g.ID, ts)
	if err != nil {
		return err
	}
	defer ml.Unlock()
	if ok, err := exists(path.Join(dir, ProtectedName)); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("snapshot %s: %w", ref, ErrProtected)
	}
	if ok, _ := exists(dir); !ok {
		return fmt.Errorf("snapshot %s: %w", ref, ErrNotFound)
	}
	if hook != nil {
		if err := hook(ctx, ref); err != nil {
			return fmt.Errorf("snapshot %s: %w", ref, err)
		}
	}
	if err := s.mirrorRemoveSnapshot(ctx, ref); err != nil {
		return err
	}
	if err := s.removeSnapshotDir(dir); err != nil {
		return fmt.Errorf("remove snapshot %s: %w", ref, err)
	}
	if err := s.locks.RemoveSnapshotLocks(ns, g.Type, g.ID, ts); err != nil {
		s.log.Warn("remove snapshot lock files", "snapshot", ref.String(), "err", err)
	}
	s.step("lock files removed")
	return nil
}

// removeSnapshotDir deletes a snapshot directory so that an interruption
// at any point (a crash, kill -9, power loss) never leaves a snapshot that
// lists as finished but lacks files: the manifest goes first and the
// directory is fsynced, which makes the snapshot unfinished (PBS's
// is_finished is "index.json.blob exists") before any archive is touched;
// then the other files, then the directory, and the group directory is
// fsynced. What an interruption leaves is an unfinished snapshot, which
// PBS and pbsfs prune remove and the mount does not show.
//
// PBS's destroy calls remove_dir_all on the directory, which deletes in
// readdir order with no manifest-first rule; an interrupted PBS forget can
// leave index.json.blob beside a partial set of archives.
func (s *Store) removeSnapshotDir(dir string) error {
	err := os.Remove(filepath.Join(dir, ManifestName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	s.step("manifest removed")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if e.IsDir() {
			err = os.RemoveAll(p) // nothing PBS writes; whatever it is
		} else {
			err = os.Remove(p)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		s.step("file removed")
	}
	if err := os.Remove(dir); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	s.step("directory removed")
	return nil
}

// step calls the test hook of removals, if any, naming the step done.
func (s *Store) step(name string) {
	if s.removeStep != nil {
		s.removeStep(name)
	}
}

// cleanupGroup removes group g when it has no snapshot left and nobody
// holds its lock (PBS 2025+, §7.4). Failures leave the group in place.
func (s *Store) cleanupGroup(ctx context.Context, g GroupRef) {
	if s.locks.OldLocking() {
		return // PBS keeps empty groups in old-locking mode
	}
	// Look before locking: a group that still has snapshots is left
	// alone without taking its lock, which would make a backup of the
	// group starting at this moment fail.
	if snaps, _, err := s.Snapshots(g); err != nil || len(snaps) > 0 {
		return
	}
	gl, err := s.locks.LockGroup(g.NS.Components(), g.Type, g.ID, true)
	if err != nil {
		return
	}
	defer gl.Unlock()
	if err := s.removeEmptyGroup(ctx, g); err != nil && !errors.Is(err, errGroupNotEmpty) {
		s.log.Warn("remove empty group", "group", g.String(), "err", err)
	}
}

var errGroupNotEmpty = errors.New("group not empty")

// removeEmptyGroup deletes notes, owner and the directory of g if it holds
// no snapshot directory; the caller holds the group lock.
func (s *Store) removeEmptyGroup(ctx context.Context, g GroupRef) error {
	ents, err := os.ReadDir(s.Path(g.Dir()))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			return errGroupNotEmpty
		}
	}
	for _, name := range []string{NotesName, OwnerName} {
		if err := s.mirrorRemove(ctx, s.Path(path.Join(g.Dir(), name))); err != nil {
			return err
		}
		if err := os.Remove(s.Path(path.Join(g.Dir(), name))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := os.Remove(s.Path(g.Dir())); err != nil {
		return err
	}
	return s.locks.RemoveGroupLock(g.NS.Components(), g.Type, g.ID)
}

// RemoveGroup removes every unprotected snapshot of group g under the
// exclusive group lock, then the group itself (§7.4). When protected
// snapshots remain it removes the others and returns an ErrProtected error.
func (s *Store) RemoveGroup(ctx context.Context, g GroupRef, hook RemoveHook) error {
	if err := g.Validate(); err != nil {
		return err
	}
	if ok, err := exists(s.Path(g.Dir())); err != nil || !ok {
		return fmt.Errorf("group %s: %w", g, ErrNotFound)
	}
	gl, err := s.locks.LockGroup(g.NS.Components(), g.Type, g.ID, true)
	if err != nil {
		return err
	}
	defer gl.Unlock()
	snaps, _, err := s.Snapshots(g)
	if err != nil {
		return err
	}
	protected := 0
	for _, si := range snaps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if si.Protected {
			protected++
			continue
		}
		if err := s.destroySnapshot(ctx, si.Ref, hook); err != nil {
			return err
		}
	}
	if protected > 0 {
		return fmt.Errorf("group %s: %d protected snapshots kept: %w", g, protected, ErrProtected)
	}
	if err := s.removeEmptyGroup(ctx, g); err != nil {
		return fmt.Errorf("remove group %s: %w", g, err)
	}
	return nil
}

// SetProtected sets or clears the protection of snapshot ref under an
// exclusive snapshot lock (§5.4).
func (s *Store) SetProtected(ref SnapshotRef, protected bool) error {
	g := ref.Group
	sl, err := s.locks.LockSnapshot(g.NS.Components(), g.Type, g.ID, ref.TimeString(), true)
	if err != nil {
		return err
	}
	defer sl.Unlock()
	p := s.Path(path.Join(ref.Dir(), ProtectedName))
	if ok, err := exists(s.Path(ref.Dir())); err != nil || !ok {
		return fmt.Errorf("snapshot %s: %w", ref, ErrNotFound)
	}
	if !protected {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := syncDir(s.Path(ref.Dir())); err != nil {
			return err
		}
		// The bucket's marker goes last: a failure leaves it protected there.
		return s.mirrorRemove(context.Background(), p) // SetProtected takes no context (yet)
	}
	if err := s.mirrorPut(context.Background(), p, nil); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if err := s.owner.chownFile(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return syncDir(s.Path(ref.Dir()))
}

// UpdateManifest changes the unprotected part of snapshot ref's manifest
// under the manifest lock and writes it back atomically (§4).
func (s *Store) UpdateManifest(ctx context.Context, ref SnapshotRef, fn func(*Manifest) error) error {
	g := ref.Group
	ml, err := s.locks.LockManifest(ctx, g.NS.Components(), g.Type, g.ID, ref.TimeString())
	if err != nil {
		return err
	}
	defer ml.Unlock()
	m, err := s.LoadManifest(ref)
	if err != nil {
		return err
	}
	files, typ, id, t, sig := append([]FileInfo(nil), m.Files...), m.BackupType, m.BackupID, m.BackupTime, m.Signature
	if err := fn(m); err != nil {
		return err
	}
	m.Files, m.BackupType, m.BackupID, m.BackupTime, m.Signature = files, typ, id, t, sig // only unprotected may change
	return s.writeManifest(ctx, ref, m)
}

// SetSnapshotNotes replaces the notes of snapshot ref.
func (s *Store) SetSnapshotNotes(ctx context.Context, ref SnapshotRef, notes string) error {
	return s.UpdateManifest(ctx, ref, func(m *Manifest) error { return m.SetUnprotected("notes", notes) })
}
