package store

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"github.com/pbsfs/pbsfs/store/lock"
)

// fileOwner is the uid and gid everything pbsfs creates in a datastore
// gets. PBS runs as the backup user and keeps its datastore owned by it
// (§1.1); files a root-run pbsfs left owned by root would be unusable to
// it (it could not touch chunks nor remove snapshots). When pbsfs runs as
// root and the datastore directory belongs to someone else, new files and
// directories are given to that owner. Otherwise chown is skipped.
type fileOwner struct{ uid, gid int }

// noOwner means: leave ownership as the kernel sets it.
var noOwner = fileOwner{-1, -1}

// ownerOf returns the owner new files in the datastore root should get.
func ownerOf(root string) fileOwner {
	if os.Geteuid() != 0 {
		return noOwner
	}
	st, err := os.Stat(root)
	if err != nil {
		return noOwner
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || sys.Uid == 0 && sys.Gid == 0 {
		return noOwner
	}
	return fileOwner{int(sys.Uid), int(sys.Gid)}
}

func (o fileOwner) set() bool { return o.uid >= 0 }

// chown gives path to the owner; errors are returned for the caller to
// treat like a failed write.
func (o fileOwner) chown(p string) error {
	if !o.set() {
		return nil
	}
	return os.Lchown(p, o.uid, o.gid)
}

// chownFile gives an open file to the owner.
func (o fileOwner) chownFile(f *os.File) error {
	if !o.set() {
		return nil
	}
	return f.Chown(o.uid, o.gid)
}

// mkdirAll makes the directories of rel (relative to the datastore root)
// that are missing, each with mode perm and the store's owner.
func (s *Store) mkdirAll(rel string, perm os.FileMode) error {
	cur := ""
	for _, part := range strings.Split(rel, "/") {
		if part == "" {
			continue
		}
		cur = path.Join(cur, part)
		err := os.Mkdir(s.Path(cur), perm)
		switch {
		case err == nil:
			if err := s.owner.chown(s.Path(cur)); err != nil {
				return err
			}
		case errors.Is(err, fs.ErrExist):
		default:
			return err
		}
	}
	return nil
}

// writeFile is WriteFileAtomic giving the file to the store's owner;
// with a mirror, the mirror's copy is written first (PBS 4's order for
// blobs, owner, notes and manifests).
func (s *Store) writeFile(ctx context.Context, p string, data []byte) error {
	if err := s.mirrorPut(ctx, p, data); err != nil {
		return err
	}
	return writeFileAtomic(p, data, 0o644, s.owner)
}

func newLocks(runtimeDir, name, root string, o fileOwner) *lock.Locks {
	if o.set() {
		return lock.NewLocks(runtimeDir, name, root, lock.WithOwner(o.uid, o.gid))
	}
	return lock.NewLocks(runtimeDir, name, root)
}
