package fs

import (
	"context"
	"errors"
	iofs "io/fs"
	"log/slog"
	"syscall"

	"github.com/pbsfs/pbsfs/store"
	"github.com/pbsfs/pbsfs/store/pxar"
)

// toErrno is the mount's one mapping from errors to errno values. What it
// does not know becomes EIO; errors that stand for bad data or an unknown
// failure are logged with op and args, so that a user seeing EIO can find
// out which chunk, index or blob is at fault.
func (m *mount) toErrno(err error, op string, args ...any) syscall.Errno {
	var errno syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return syscall.EINTR // the request was interrupted; not an I/O error
	case errors.Is(err, store.ErrProtected):
		return syscall.EPERM
	case errors.Is(err, store.ErrLocked):
		return syscall.EBUSY
	case errors.Is(err, store.ErrNotFound), errors.Is(err, iofs.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, store.ErrInvalidName):
		return syscall.ENOENT
	case errors.Is(err, pxar.ErrNotDir):
		return syscall.ENOTDIR
	case errors.Is(err, store.ErrEncrypted):
		m.log.Error("encrypted archive: a key is needed to read it; give the key its manifest names with --keyfile", append(args, "op", op, "err", err)...)
		return syscall.EACCES
	case errors.As(err, &errno) && !layoutErrno(errno):
		return errno
	default:
		// ErrCorrupt, ErrChunkMissing, pxar.ErrCorrupt, ErrTooLarge and
		// anything unexpected: the data cannot be served.
		m.log.Error("read failed", append(args, "op", op, "err", err)...)
		return syscall.EIO
	}
}

// logAttrs is a helper giving the stable log keys of a snapshot.
func snapAttr(ref store.SnapshotRef) slog.Attr {
	return slog.String("snapshot", ref.Group.NS.Dir()+"/"+ref.String())
}

// layoutErrno reports errnos that, coming from the store, mean a file of
// the datastore is not what the layout says (a chunk or index replaced by
// a directory or a symlink loop): damaged data, EIO, never an errno that
// would describe the file in the mount.
func layoutErrno(e syscall.Errno) bool {
	return e == syscall.EISDIR || e == syscall.ENOTDIR || e == syscall.ELOOP
}
