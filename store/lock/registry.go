package lock

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// fileKey identifies a file by device and inode, whatever path names it.
type fileKey struct{ dev, ino uint64 }

func keyOf(st *unix.Stat_t) fileKey { return fileKey{dev: uint64(st.Dev), ino: st.Ino} }

// lockers is the process-wide table of open process-lock files.
//
// It is the one piece of package-level mutable state in pbsfs, and it
// cannot be avoided: POSIX record locks belong to the process, and closing
// any descriptor of a file drops every record lock the process holds on
// that file (fcntl(2), "the locks are released when any descriptor is
// closed"). Two independent lockers of one .lock (a datastore opened twice,
// by two paths, through a hard link or a bind mount) would each own a
// descriptor, and closing the second would silently release the first one's
// locks, letting a PBS garbage collection run beside our writers. Keying the
// table by (device, inode) makes every OpenProcessLocker of one file share
// one descriptor and one set of guard counts, as upstream does by caching
// one ChunkStore per datastore per process (spec §5.1).
var lockers = struct {
	mu sync.Mutex
	m  map[fileKey]*lockFile
}{m: make(map[fileKey]*lockFile)}

// lockFile is the shared state of one process-lock file.
type lockFile struct {
	key  fileKey
	path string // the path it was first opened by, for messages
	fd   int
	// spare holds descriptors of the same file opened by a lost race
	// (the file was replaced between stat and open). They cannot be
	// closed before fd without dropping the locks, so they live as long.
	spare    []int
	readOnly bool // opened O_RDONLY: shared locks only

	// refs counts open ProcessLockers and live guards; guarded by lockers.mu.
	refs int

	mu        sync.Mutex
	exclusive bool                 // this process holds F_WRLCK through a guard
	shared    map[uint64]time.Time // live shared guards: id → creation time
	nextID    uint64
}

// acquireLockFile returns the process's lockFile for path, opening (and
// creating) the file only when no entry for its inode exists yet.
func acquireLockFile(path string) (*lockFile, error) {
	lockers.mu.Lock()
	defer lockers.mu.Unlock()

	var st unix.Stat_t
	err := statNoEINTR(path, &st)
	switch {
	case err == nil:
		if lf := lockers.m[keyOf(&st)]; lf != nil {
			lf.refs++
			return lf, nil
		}
	case errors.Is(err, unix.ENOENT):
		// Created below.
	default:
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}

	fd, readOnly, err := openProcessLockFile(path)
	if err != nil {
		return nil, err
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd) // no entry for this inode was found: no locks to lose
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("chunk store lock %s: not a regular file", path)
	}
	k := keyOf(&st)
	if lf := lockers.m[k]; lf != nil {
		// The path was replaced by a file we already hold between the
		// stat and the open. Closing fd now would drop lf's locks.
		lf.spare = append(lf.spare, fd)
		lf.refs++
		return lf, nil
	}
	lf := &lockFile{
		key:      k,
		path:     path,
		fd:       fd,
		readOnly: readOnly,
		refs:     1,
		shared:   make(map[uint64]time.Time),
	}
	lockers.m[k] = lf
	return lf, nil
}

// openProcessLockFile opens path read-write, creating it with mode 0644
// like upstream's ProcessLocker::new. A store we may only read still gets
// a read-only descriptor, which can take shared locks.
func openProcessLockFile(path string) (fd int, readOnly bool, err error) {
	fd, err = openNoEINTR(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EROFS) {
		fd, err = openNoEINTR(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		readOnly = true
	}
	if err != nil {
		return -1, false, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return fd, readOnly, nil
}

// ref counts one more user (a guard) of lf.
func (lf *lockFile) ref() {
	lockers.mu.Lock()
	lf.refs++
	lockers.mu.Unlock()
}

// unref drops one user of lf and closes the file after the last one. The
// descriptors are closed under lockers.mu so that a concurrent
// OpenProcessLocker cannot open (and lock) the file in between and then
// lose its locks to our close.
func (lf *lockFile) unref() error {
	lockers.mu.Lock()
	defer lockers.mu.Unlock()
	lf.refs--
	if lf.refs > 0 {
		return nil
	}
	if lockers.m[lf.key] == lf {
		delete(lockers.m, lf.key)
	}
	var errs []error
	for _, fd := range append(lf.spare, lf.fd) {
		if err := unix.Close(fd); err != nil {
			errs = append(errs, &os.PathError{Op: "close", Path: lf.path, Err: err})
		}
	}
	lf.spare = nil
	lf.fd = -1
	return errors.Join(errs...)
}
