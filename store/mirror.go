package store

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
)

// Mirror keeps a copy of a datastore's metadata outside its directory:
// the `<store>/.cnt/` objects of an S3 datastore (pbs4.md §A.2, see
// store/s3). Paths are slash-separated and relative to the datastore
// root. The store calls it in PBS 4's order (spec A.3): blobs, owner,
// notes and manifests are put before the local file is written, index
// files after theirs is closed (so the manifest, written last, is last
// in both places), and a removal deletes the objects before the local
// files.
type Mirror interface {
	// PutFile stores data as the object of file rel (overwriting).
	PutFile(ctx context.Context, rel string, data []byte) error
	// RemoveFile deletes the object of file rel; a missing one is fine.
	RemoveFile(ctx context.Context, rel string) error
	// RemoveDir deletes every object below directory rel (the prefix
	// "rel/", never a bare "rel" that would also match its siblings).
	RemoveDir(ctx context.Context, rel string) error
}

// rel returns p, a path below the datastore root, relative to it with
// slashes.
func (s *Store) rel(p string) (string, error) {
	r, err := filepath.Rel(s.root, p)
	if err != nil || r == "." || r == ".." || len(r) > 2 && r[:3] == "../" {
		return "", fmt.Errorf("%s is not below the datastore %s", p, s.root)
	}
	return filepath.ToSlash(r), nil
}

// mirrorPut stores data as the mirror's copy of file p; ctx bounds the
// upload.
func (s *Store) mirrorPut(ctx context.Context, p string, data []byte) error {
	if s.mirror == nil {
		return nil
	}
	rel, err := s.rel(p)
	if err != nil {
		return err
	}
	if err := s.mirror.PutFile(ctx, rel, data); err != nil {
		return fmt.Errorf("upload %s: %w", rel, err)
	}
	return nil
}

// mirrorFile stores the content of the local file p in the mirror.
func (s *Store) mirrorFile(ctx context.Context, p string) error {
	if s.mirror == nil {
		return nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return s.mirrorPut(ctx, p, b)
}

// mirrorRemove deletes the mirror's copy of file p.
func (s *Store) mirrorRemove(ctx context.Context, p string) error {
	if s.mirror == nil {
		return nil
	}
	rel, err := s.rel(p)
	if err != nil {
		return err
	}
	if err := s.mirror.RemoveFile(ctx, rel); err != nil {
		return fmt.Errorf("remove %s from %s: %w", rel, "the bucket", err)
	}
	return nil
}

// mirrorRemoveSnapshot deletes the mirror's copy of snapshot ref: its
// manifest first, so that it turns unfinished there before any other
// object goes, then everything below its directory.
func (s *Store) mirrorRemoveSnapshot(ctx context.Context, ref SnapshotRef) error {
	if s.mirror == nil {
		return nil
	}
	if err := s.mirror.RemoveFile(ctx, path.Join(ref.Dir(), ManifestName)); err != nil {
		return fmt.Errorf("remove snapshot %s from the bucket: %w", ref, err)
	}
	if err := s.mirror.RemoveDir(ctx, ref.Dir()); err != nil {
		return fmt.Errorf("remove snapshot %s from the bucket: %w", ref, err)
	}
	return nil
}

// insertChunk stores chunk d in the store's backend (the chunk directory,
// or the bucket behind it).
func (s *Store) insertChunk(ctx context.Context, d Digest, blob []byte) (bool, error) {
	return s.backend.Insert(ctx, d, blob)
}

// reuseChunk touches chunk d and reports whether the store has it, so a
// writer can skip storing it again.
func (s *Store) reuseChunk(ctx context.Context, d Digest) (bool, error) {
	if t, ok := s.backend.(interface {
		TouchIfPresent(context.Context, Digest) (bool, error)
	}); ok {
		return t.TouchIfPresent(ctx, d)
	}
	return false, nil
}
