package store

import (
	"fmt"
	"path"
	"strings"
	"time"
)

// Backup types (§1.4).
const (
	TypeVM   = "vm"
	TypeCT   = "ct"
	TypeHost = "host"
)

// BackupTypes lists the backup types in the order PBS lists them.
var backupTypes = [...]string{TypeCT, TypeHost, TypeVM}

// snapshotTimeLayout is the snapshot directory name: RFC 3339 in UTC with a
// literal Z and whole seconds (§1.4).
const snapshotTimeLayout = "2006-01-02T15:04:05Z"

// ValidBackupType checks a backup type: vm, ct or host.
func ValidBackupType(t string) error {
	switch t {
	case TypeVM, TypeCT, TypeHost:
		return nil
	}
	return fmt.Errorf("backup type %q: want vm, ct or host: %w", t, ErrInvalidName)
}

// isSafeID reports whether s matches `^[A-Za-z0-9_][A-Za-z0-9._\-]*$`.
func isSafeID(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_'
		if i > 0 {
			ok = ok || c == '.' || c == '-'
		}
		if !ok {
			return false
		}
	}
	return true
}

// ValidBackupID checks a backup id against PBS's regex (§1.4).
func ValidBackupID(id string) error {
	if !isSafeID(id) {
		return fmt.Errorf("backup id %q: %w", id, ErrInvalidName)
	}
	return nil
}

// validArchiveName checks an archive file name of a snapshot (§1.4).
func validArchiveName(name string) error {
	if !isSafeID(name) || KindOf(name) == KindUnknown {
		return fmt.Errorf("archive name %q: want a safe id ending in .fidx, .didx or .blob: %w", name, ErrInvalidName)
	}
	return nil
}

// ParseBackupTime parses a snapshot directory name such as
// 2026-11-20T10:00:00Z.
func ParseBackupTime(s string) (time.Time, error) {
	if len(s) != len(snapshotTimeLayout) {
		return time.Time{}, fmt.Errorf("snapshot time %q: %w", s, ErrInvalidName)
	}
	t, err := time.Parse(snapshotTimeLayout, s)
	if err != nil || t.Unix() < 1 || t.Format(snapshotTimeLayout) != s {
		return time.Time{}, fmt.Errorf("snapshot time %q: %w", s, ErrInvalidName)
	}
	return t, nil
}

// FormatBackupTime returns the snapshot directory name of t.
func FormatBackupTime(t time.Time) string { return t.UTC().Format(snapshotTimeLayout) }

// Namespace is a datastore namespace, its components joined with "/"; the
// root namespace is "" (§1.3).
type Namespace string

// ParseNamespace checks a namespace path such as "prod/web".
func ParseNamespace(s string) (Namespace, error) {
	s = strings.Trim(s, "/")
	if s == "" {
		return "", nil
	}
	if len(s) > maxNamespaceLength {
		return "", fmt.Errorf("namespace %q longer than %d: %w", s, maxNamespaceLength, ErrInvalidName)
	}
	parts := strings.Split(s, "/")
	if len(parts) > MaxNamespaceDepth {
		return "", fmt.Errorf("namespace %q deeper than %d: %w", s, MaxNamespaceDepth, ErrInvalidName)
	}
	for _, p := range parts {
		if !isSafeID(p) {
			return "", fmt.Errorf("namespace component %q: %w", p, ErrInvalidName)
		}
	}
	return Namespace(s), nil
}

// Components returns the namespace's components, none for the root.
func (ns Namespace) Components() []string {
	if ns == "" {
		return nil
	}
	return strings.Split(string(ns), "/")
}

// Depth returns the number of components.
func (ns Namespace) Depth() int { return len(ns.Components()) }

// Child returns the namespace name below ns.
func (ns Namespace) Child(name string) Namespace {
	if ns == "" {
		return Namespace(name)
	}
	return Namespace(string(ns) + "/" + name)
}

// Dir returns the namespace directory relative to the datastore root:
// "" for the root, "ns/a/ns/b" for a/b.
func (ns Namespace) Dir() string {
	var b strings.Builder
	for i, p := range ns.Components() {
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString("ns/")
		b.WriteString(p)
	}
	return b.String()
}

// GroupRef names a backup group: namespace, type and id.
type GroupRef struct {
	NS   Namespace
	Type string
	ID   string
}

// String returns "type/id".
func (g GroupRef) String() string { return g.Type + "/" + g.ID }

// Dir returns the group directory relative to the datastore root.
func (g GroupRef) Dir() string { return path.Join(g.NS.Dir(), g.Type, g.ID) }

// Validate checks type and id.
func (g GroupRef) Validate() error {
	if err := ValidBackupType(g.Type); err != nil {
		return err
	}
	return ValidBackupID(g.ID)
}

// SnapshotRef names one snapshot of a group.
type SnapshotRef struct {
	Group GroupRef
	Time  time.Time
}

// TimeString returns the snapshot directory name.
func (s SnapshotRef) TimeString() string { return FormatBackupTime(s.Time) }

// String returns "type/id/time".
func (s SnapshotRef) String() string { return s.Group.String() + "/" + s.TimeString() }

// Dir returns the snapshot directory relative to the datastore root.
func (s SnapshotRef) Dir() string { return path.Join(s.Group.Dir(), s.TimeString()) }

// ParseGroup parses "type/id", optionally preceded by "ns/a/ns/b/", in
// namespace ns (a leading ns/… path is appended to ns).
func ParseGroup(ns Namespace, s string) (GroupRef, error) {
	ns, rest, err := splitNSPrefix(ns, strings.Trim(s, "/"))
	if err != nil {
		return GroupRef{}, err
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 2 {
		return GroupRef{}, fmt.Errorf("group %q: want type/id: %w", s, ErrInvalidName)
	}
	g := GroupRef{NS: ns, Type: parts[0], ID: parts[1]}
	return g, g.Validate()
}

// ParseSnapshot parses "type/id/time", optionally preceded by
// "ns/a/ns/b/", in namespace ns.
func ParseSnapshot(ns Namespace, s string) (SnapshotRef, error) {
	s = strings.Trim(s, "/")
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return SnapshotRef{}, fmt.Errorf("snapshot %q: want type/id/time: %w", s, ErrInvalidName)
	}
	g, err := ParseGroup(ns, s[:i])
	if err != nil {
		return SnapshotRef{}, err
	}
	t, err := ParseBackupTime(s[i+1:])
	if err != nil {
		return SnapshotRef{}, err
	}
	return SnapshotRef{Group: g, Time: t}, nil
}

func splitNSPrefix(ns Namespace, s string) (Namespace, string, error) {
	for strings.HasPrefix(s, "ns/") {
		rest := s[3:]
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			return "", "", fmt.Errorf("path %q ends in a namespace: %w", s, ErrInvalidName)
		}
		ns = ns.Child(rest[:i])
		s = rest[i+1:]
	}
	if _, err := ParseNamespace(string(ns)); err != nil {
		return "", "", err
	}
	return ns, s, nil
}
