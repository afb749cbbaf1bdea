package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Problem is an entry a listing skipped because its name or content does
// not parse. Listings report problems instead of failing.
type Problem struct {
	Path string // relative to the datastore root
	Err  error
}

func (p Problem) String() string { return p.Path + ": " + p.Err.Error() }

// SnapshotInfo describes one snapshot directory.
type SnapshotInfo struct {
	Ref SnapshotRef
	// Files are the archive files (*.fidx, *.didx, *.blob), sorted.
	Files []string
	// Finished reports that the manifest exists (the backup completed).
	Finished bool
	// Protected reports that the .protected marker exists.
	Protected bool
}

// HasFile reports whether the snapshot has archive file name.
func (si SnapshotInfo) HasFile(name string) bool {
	i := sort.SearchStrings(si.Files, name)
	return i < len(si.Files) && si.Files[i] == name
}

func readDirNames(dir string) ([]os.DirEntry, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNotFound)
	}
	return ents, err
}

// Namespaces lists parent and the namespaces below it, depth-first
// pre-order (parent first), down to maxDepth levels below parent
// (negative: no limit). Subdirectories of `ns/` with invalid names are
// reported as problems.
func (s *Store) Namespaces(ctx context.Context, parent Namespace, maxDepth int) ([]Namespace, []Problem, error) {
	if ok, err := exists(s.Path(parent.Dir())); err != nil || !ok {
		return nil, nil, fmt.Errorf("namespace %q: %w", parent, ErrNotFound)
	}
	var out []Namespace
	var problems []Problem
	var walk func(ns Namespace, depth int) error
	walk = func(ns Namespace, depth int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		out = append(out, ns)
		if maxDepth >= 0 && depth >= maxDepth || ns.Depth() >= MaxNamespaceDepth {
			return nil
		}
		dir := path.Join(ns.Dir(), "ns")
		ents, err := os.ReadDir(s.Path(dir))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			child := ns.Child(e.Name())
			if _, err := ParseNamespace(string(child)); err != nil {
				problems = append(problems, Problem{path.Join(dir, e.Name()), err})
				continue
			}
			if err := walk(child, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	err := walk(parent, 0)
	return out, problems, err
}

// Groups lists the backup groups of namespace ns, sorted by type and id.
func (s *Store) Groups(ns Namespace) ([]GroupRef, []Problem, error) {
	var out []GroupRef
	var problems []Problem
	if ok, err := exists(s.Path(ns.Dir())); err != nil || !ok {
		return nil, nil, fmt.Errorf("namespace %q: %w", ns, ErrNotFound)
	}
	for _, typ := range backupTypes {
		dir := path.Join(ns.Dir(), typ)
		ents, err := os.ReadDir(s.Path(dir))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			if err := ValidBackupID(e.Name()); err != nil {
				problems = append(problems, Problem{path.Join(dir, e.Name()), err})
				continue
			}
			out = append(out, GroupRef{NS: ns, Type: typ, ID: e.Name()})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Type != out[j].Type {
			return out[i].Type < out[j].Type
		}
		return out[i].ID < out[j].ID
	})
	return out, problems, nil
}

// Snapshots lists the snapshots of group g, oldest first.
func (s *Store) Snapshots(g GroupRef) ([]SnapshotInfo, []Problem, error) {
	if err := g.Validate(); err != nil {
		return nil, nil, err
	}
	ents, err := readDirNames(s.Path(g.Dir()))
	if err != nil {
		return nil, nil, fmt.Errorf("group %s: %w", g, err)
	}
	var out []SnapshotInfo
	var problems []Problem
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		t, err := ParseBackupTime(e.Name())
		if err != nil {
			problems = append(problems, Problem{path.Join(g.Dir(), e.Name()), err})
			continue
		}
		si, err := s.Snapshot(SnapshotRef{Group: g, Time: t})
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				continue // removed meanwhile
			}
			problems = append(problems, Problem{path.Join(g.Dir(), e.Name()), err})
			continue
		}
		out = append(out, si)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref.Time.Before(out[j].Ref.Time) })
	return out, problems, nil
}

// Snapshot describes one snapshot directory.
func (s *Store) Snapshot(ref SnapshotRef) (SnapshotInfo, error) {
	if err := ref.Group.Validate(); err != nil {
		return SnapshotInfo{}, err
	}
	ents, err := readDirNames(s.Path(ref.Dir()))
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot %s: %w", ref, err)
	}
	si := SnapshotInfo{Ref: ref}
	for _, e := range ents {
		name := e.Name()
		if name == ProtectedName {
			si.Protected = true
			continue
		}
		if !e.Type().IsRegular() || KindOf(name) == KindUnknown {
			continue
		}
		if name == ManifestName {
			si.Finished = true
		}
		si.Files = append(si.Files, name)
	}
	sort.Strings(si.Files)
	return si, nil
}

// LastFinished returns the newest finished snapshot of group g.
func (s *Store) LastFinished(g GroupRef) (SnapshotInfo, bool, error) {
	snaps, _, err := s.Snapshots(g)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return SnapshotInfo{}, false, nil
		}
		return SnapshotInfo{}, false, err
	}
	for i := len(snaps) - 1; i >= 0; i-- {
		if snaps[i].Finished {
			return snaps[i], true, nil
		}
	}
	return SnapshotInfo{}, false, nil
}

// Owner returns the owner (an Authid) of group g: the first line of its
// owner file, trailing whitespace trimmed.
func (s *Store) Owner(g GroupRef) (string, error) {
	b, err := os.ReadFile(s.Path(path.Join(g.Dir(), OwnerName)))
	if err != nil {
		return "", fmt.Errorf("owner of %s: %w", g, err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimRight(line, " \t\r"), nil
}

// GroupNotes returns the notes of group g ("" when there are none).
func (s *Store) GroupNotes(g GroupRef) (string, error) {
	b, err := os.ReadFile(s.Path(path.Join(g.Dir(), NotesName)))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	return string(b), err
}

// SetGroupNotes replaces the notes of group g atomically (PBS takes no lock).
func (s *Store) SetGroupNotes(g GroupRef, notes string) error {
	return s.writeFile(context.Background(), s.Path(path.Join(g.Dir(), NotesName)), []byte(notes)) // no context in the API (yet)
}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory: write, fsync, rename, fsync the directory.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeFileAtomic(path, data, perm, noOwner)
}

func writeFileAtomic(path string, data []byte, perm os.FileMode, owner fileOwner) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp_")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = owner.chownFile(f)
	}
	if err := finishFile(f, path, err); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// CreateNamespace makes the directories of namespace ns and its parents.
func (s *Store) CreateNamespace(ns Namespace) error {
	if _, err := ParseNamespace(string(ns)); err != nil {
		return err
	}
	if err := s.mkdirAll(ns.Dir(), 0o755); err != nil {
		return fmt.Errorf("namespace %q: %w", ns, err)
	}
	if s.mirror != nil {
		// Namespaces exist in a bucket only as .namespace objects
		// (pbs4.md §A.2), one per level.
		var cur Namespace
		for _, c := range ns.Components() {
			cur = cur.Child(c)
			if err := s.mirrorPut(context.Background(), s.Path(path.Join(cur.Dir(), ".namespace")), nil); err != nil { // no context in the API (yet)
				return fmt.Errorf("namespace %q: %w", ns, err)
			}
		}
	}
	return nil
}
