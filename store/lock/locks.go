package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Facts of the group, snapshot and manifest locks (spec §5.2, §5.3).
const (
	// DefaultRuntimeDir is where PBS keeps its runtime files, lock files
	// included, on Linux.
	DefaultRuntimeDir = "/run/proxmox-backup"
	// ManifestLockWait is how long a manifest lock waits for a busy lock.
	ManifestLockWait = 5 * time.Second
	// oldLockingFlag, in the runtime dir, switches PBS (and us) back to
	// the 3.2.4 directory flocks.
	oldLockingFlag = "old-locking"
	// locksDir, in the runtime dir, holds one lock directory per store.
	locksDir = "locks"
	// manifestLockName is appended to a snapshot's path to name its
	// manifest lock.
	manifestLockName = ".index.json.lck"
	// maxNamespaceDepth is how many namespace components PBS allows.
	maxNamespaceDepth = 7
)

// Locks takes the group, snapshot and manifest locks of one datastore,
// compatible with the PBS processes using the same store and runtime dir.
//
// In the PBS 2025+ layout the locks are flock'd files under
// <runtimeDir>/locks/<store>/ (see GroupPath). If <runtimeDir>/old-locking
// exists when NewLocks runs (PBS creates it on upgrade while daemons of
// the old version may still run; a reboot clears it), Locks uses the
// PBS 3.2.4 scheme instead: flocks on the group and snapshot directories
// below the store root, and the 3.2.4 manifest lock path. Like PBS, the
// choice is made once.
//
// Namespaces are given as their components, root namespace nil. A Locks
// is safe for concurrent use.
type Locks struct {
	runtimeDir string
	storeName  string
	storeRoot  string
	oldLocking bool
	owner      owner
	// manifestWait is ManifestLockWait; tests shorten it.
	manifestWait time.Duration
	hooks        lockHooks
}

// Option configures a Locks.
type Option func(*Locks)

// WithOwner makes new lock files and lock directories belong to uid:gid
// (-1 leaves one unchanged). PBS daemons run as the backup user and must
// be able to open lock files pbsfs creates; pbsfs running as root should
// pass the backup user's ids (34:34 on Debian).
func WithOwner(uid, gid int) Option {
	return func(l *Locks) { l.owner = owner{uid: uid, gid: gid} }
}

// NewLocks returns the locks of the store named storeName whose directory
// is storeRoot. runtimeDir is normally DefaultRuntimeDir.
func NewLocks(runtimeDir, storeName, storeRoot string, opts ...Option) *Locks {
	l := &Locks{
		runtimeDir:   runtimeDir,
		storeName:    storeName,
		storeRoot:    storeRoot,
		owner:        owner{uid: -1, gid: -1},
		manifestWait: ManifestLockWait,
	}
	for _, o := range opts {
		o(l)
	}
	// PBS treats "cannot tell" as fatal; here it means the runtime dir is
	// unreadable, and every lock below will report why.
	_, err := os.Stat(filepath.Join(runtimeDir, oldLockingFlag))
	l.oldLocking = err == nil
	return l
}

// OldLocking reports whether the PBS 3.2.4 directory locks are in use.
func (l *Locks) OldLocking() bool { return l.oldLocking }

// Dir returns the store's lock directory, <runtimeDir>/locks/<store>.
func (l *Locks) Dir() string { return filepath.Join(l.runtimeDir, locksDir, l.storeName) }

// GroupPath returns the group's lock file in the PBS 2025+ layout:
// <Dir>/<ns-part>/<EscapeUnit("<type>/<id>")>, where ns-part is the
// namespace components joined with ':' and empty for the root namespace.
// A name whose escaped form is 255 bytes or longer is hashed (see
// EscapeUnit and spec §5.2). Example: <Dir>/a:b/vm-100.
func (l *Locks) GroupPath(ns []string, typ, id string) string {
	return filepath.Join(l.Dir(), lockFileName(ns, typ+"/"+id))
}

// SnapshotPath returns the snapshot's lock file in the PBS 2025+ layout,
// e.g. <Dir>/vm-100-2024\x2d06\x2d10T06\x3a13\x3a20Z.
func (l *Locks) SnapshotPath(ns []string, typ, id, backupTime string) string {
	return filepath.Join(l.Dir(), lockFileName(ns, typ+"/"+id+"/"+backupTime))
}

// ManifestPath returns the snapshot's manifest lock file in the PBS 2025+
// layout, e.g. <Dir>/vm-100-2024\x2d06\x2d10T06\x3a13\x3a20Z-.index.json.lck.
func (l *Locks) ManifestPath(ns []string, typ, id, backupTime string) string {
	return filepath.Join(l.Dir(), lockFileName(ns, typ+"/"+id+"/"+backupTime+"/"+manifestLockName))
}

// OldManifestPath returns the snapshot's manifest lock file in the
// PBS 3.2.4 layout: <Dir>/<ns path>/<type>/<id>/<time>/<time>.index.json.lck,
// the ns path being "ns/a/ns/b" for namespace a/b.
func (l *Locks) OldManifestPath(ns []string, typ, id, backupTime string) string {
	return filepath.Join(l.Dir(), relSnapshotPath(ns, typ, id, backupTime), backupTime+manifestLockName)
}

// GroupDir returns the group's directory below the store root (the
// PBS 3.2.4 group lock).
func (l *Locks) GroupDir(ns []string, typ, id string) string {
	return filepath.Join(l.storeRoot, relGroupPath(ns, typ, id))
}

// SnapshotDir returns the snapshot's directory below the store root (the
// PBS 3.2.4 snapshot lock).
func (l *Locks) SnapshotDir(ns []string, typ, id, backupTime string) string {
	return filepath.Join(l.storeRoot, relSnapshotPath(ns, typ, id, backupTime))
}

// LockGroup locks a backup group without waiting: exclusively for a
// backup session, a group removal or the garbage collector, shared
// otherwise. A busy lock returns an error wrapping ErrLocked.
func (l *Locks) LockGroup(ns []string, typ, id string, exclusive bool) (*FileLock, error) {
	subject := "group " + relGroupPath(ns, typ, id)
	if err := checkGroup(ns, typ, id); err != nil {
		return nil, fmt.Errorf("%s: %w", subject, err)
	}
	if l.oldLocking {
		return lockDirectory(subject, l.GroupDir(ns, typ, id), exclusive, false)
	}
	return l.lockFile(context.Background(), subject, l.GroupPath(ns, typ, id), exclusive, 0)
}

// LockSnapshot locks a snapshot without waiting, shared (readers, verify,
// the base of a backup) or exclusive (the backup writing it, forget,
// prune, protection changes). A busy lock returns an error wrapping
// ErrLocked. In the 3.2.4 mode the snapshot directory must exist.
func (l *Locks) LockSnapshot(ns []string, typ, id, backupTime string, exclusive bool) (*FileLock, error) {
	subject := "snapshot " + relSnapshotPath(ns, typ, id, backupTime)
	if err := checkSnapshot(ns, typ, id, backupTime); err != nil {
		return nil, fmt.Errorf("%s: %w", subject, err)
	}
	if l.oldLocking {
		return lockDirectory(subject, l.SnapshotDir(ns, typ, id, backupTime), exclusive, false)
	}
	return l.lockFile(context.Background(), subject, l.SnapshotPath(ns, typ, id, backupTime), exclusive, 0)
}

// LockManifest takes the exclusive manifest lock of a snapshot, waiting up
// to ManifestLockWait for it, or until ctx is done. Take it to rewrite a
// manifest (which is replaced by rename, so it can never be its own lock)
// and, after the snapshot lock, to destroy a snapshot.
func (l *Locks) LockManifest(ctx context.Context, ns []string, typ, id, backupTime string) (*FileLock, error) {
	subject := "manifest " + relSnapshotPath(ns, typ, id, backupTime)
	if err := checkSnapshot(ns, typ, id, backupTime); err != nil {
		return nil, fmt.Errorf("%s: %w", subject, err)
	}
	path := l.ManifestPath(ns, typ, id, backupTime)
	if l.oldLocking {
		path = l.OldManifestPath(ns, typ, id, backupTime)
	}
	return l.lockFile(ctx, subject, path, true, l.manifestWait)
}

// lockFile creates the lock file's directory if needed and locks the file.
func (l *Locks) lockFile(ctx context.Context, subject, path string, exclusive bool, wait time.Duration) (*FileLock, error) {
	if err := mkdirAllOwned(filepath.Dir(path), l.owner); err != nil {
		return nil, fmt.Errorf("%s: %w", subject, err)
	}
	return lockFileAt(ctx, subject, path, lockFileOpts{
		exclusive: exclusive,
		wait:      wait,
		owner:     l.owner,
		hooks:     l.hooks,
	})
}

// RemoveSnapshotLocks removes the lock files of a destroyed snapshot: its
// manifest and snapshot lock files in the 2025+ layout and its 3.2.4
// manifest lock file. Call it after the snapshot directory is gone and
// while still holding the snapshot and manifest locks, as PBS does: a
// process waiting on the removed files then fails its double stat with
// ErrStale. Files that do not exist are not an error.
func (l *Locks) RemoveSnapshotLocks(ns []string, typ, id, backupTime string) error {
	if err := checkSnapshot(ns, typ, id, backupTime); err != nil {
		return fmt.Errorf("snapshot %s: %w", relSnapshotPath(ns, typ, id, backupTime), err)
	}
	return errors.Join(
		removeIfExists(l.ManifestPath(ns, typ, id, backupTime)),
		removeIfExists(l.SnapshotPath(ns, typ, id, backupTime)),
		removeIfExists(l.OldManifestPath(ns, typ, id, backupTime)),
	)
}

// RemoveGroupLock removes the lock file of a destroyed group. Call it
// after the group directory is gone, while still holding the group lock.
// A file that does not exist is not an error.
func (l *Locks) RemoveGroupLock(ns []string, typ, id string) error {
	if err := checkGroup(ns, typ, id); err != nil {
		return fmt.Errorf("group %s: %w", relGroupPath(ns, typ, id), err)
	}
	return removeIfExists(l.GroupPath(ns, typ, id))
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// mkdirAllOwned is os.MkdirAll (mode 0755 before the umask, like
// std::fs::create_dir_all) that gives each directory it creates to o.
func mkdirAllOwned(dir string, o owner) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return &os.PathError{Op: "mkdir", Path: dir, Err: unix.ENOTDIR}
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAllOwned(parent, o); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil // made by someone else meanwhile
		}
		return err
	}
	if o.set() {
		if err := os.Lchown(dir, o.uid, o.gid); err != nil {
			return err
		}
	}
	return nil
}

// relNamespacePath is the namespace's directory below the store root:
// "ns/a/ns/b" for a/b, "" for the root namespace.
func relNamespacePath(ns []string) string {
	var b strings.Builder
	for i, c := range ns {
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString("ns/")
		b.WriteString(c)
	}
	return b.String()
}

func relGroupPath(ns []string, typ, id string) string {
	return filepath.Join(relNamespacePath(ns), typ, id)
}

func relSnapshotPath(ns []string, typ, id, backupTime string) string {
	return filepath.Join(relNamespacePath(ns), typ, id, backupTime)
}
