package lock

import (
	"errors"
	"io"

	"golang.org/x/sys/unix"
)

// openNoEINTR is unix.Open, retried when a signal interrupts it.
func openNoEINTR(path string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flags, mode)
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}

// statNoEINTR is unix.Stat, retried when a signal interrupts it.
func statNoEINTR(path string, st *unix.Stat_t) error {
	for {
		err := unix.Stat(path, st)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// setRecordLock applies a whole-file POSIX record lock of type typ
// (F_RDLCK, F_WRLCK or F_UNLCK) with F_SETLK, which never blocks.
func setRecordLock(fd int, typ int16) error {
	fl := unix.Flock_t{Type: typ, Whence: io.SeekStart, Start: 0, Len: 0}
	for {
		err := unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &fl)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// flock applies flock(2); with wait false it does not block.
func flock(fd int, exclusive, wait bool) error {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	if !wait {
		how |= unix.LOCK_NB
	}
	for {
		err := unix.Flock(fd, how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// isConflict reports whether err is how the kernel says "somebody else
// holds a conflicting lock": EAGAIN/EWOULDBLOCK, or EACCES for fcntl.
func isConflict(err error) bool {
	return errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EWOULDBLOCK) || errors.Is(err, unix.EACCES)
}

// sameFile reports whether the open descriptor fd is still the file path
// names: the "double stat" that detects a lock file deleted (and perhaps
// recreated) while we were locking it.
func sameFile(fd int, path string) (bool, error) {
	var a, b unix.Stat_t
	if err := unix.Fstat(fd, &a); err != nil {
		return false, err
	}
	if err := statNoEINTR(path, &b); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	return a.Dev == b.Dev && a.Ino == b.Ino, nil
}
