package fs

import (
	"context"
	"errors"
	"syscall"
	"time"

	"github.com/pbsfs/pbsfs/store/pxar"
)

// dirErrTTL is how long a directory of an archive whose goodbye table
// could not be read answers lookups and opens with that error without
// reading again. ls or find in it then cost one failed chunk read, not
// one per name; after dirErrTTL (a chunk put back, a store repaired) it
// is read again.
const dirErrTTL = time.Minute

// dirKey names a directory of an archive: the archive directory's inode
// and the directory's entry offset.
type dirKey struct {
	ino uint64
	off int64
}

// dirFailed returns the errno of directory dir of the archive whose
// directory has inode ino if its goodbye table failed to read less than
// dirErrTTL ago (the failure was logged then), else 0.
func (m *mount) dirFailed(ino uint64, dir *pxar.Entry) syscall.Errno {
	if m.nDirErrs.Load() == 0 {
		return 0 // the common case: no lookup takes the mount's lock
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	errno, _ := m.dirErrs.get(dirKey{ino, dir.Offset}, time.Now())
	m.nDirErrs.Store(int64(m.dirErrs.len()))
	return errno
}

// noteDirErr remembers errno, what err gave, for directory dir when err
// says the directory's goodbye table cannot be read (not a canceled
// read, nor a child's damage).
func (m *mount) noteDirErr(ino uint64, dir *pxar.Entry, err error, errno syscall.Errno) {
	var te *pxar.TableError
	if !errors.As(err, &te) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dirErrs.put(dirKey{ino, dir.Offset}, errno, time.Now())
	m.nDirErrs.Store(int64(m.dirErrs.len()))
}
