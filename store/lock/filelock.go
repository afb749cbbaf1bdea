package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// FileLock is a held flock(2) lock on a lock file or a directory. The lock
// belongs to its own open file description: it conflicts with other locks
// on the same file even within this process. Unlock releases it; a
// FileLock that is dropped without Unlock keeps the lock (and a
// descriptor) until the process exits.
type FileLock struct {
	path      string
	exclusive bool

	mu sync.Mutex
	fd int // -1 after Unlock
}

// Path returns the locked file or directory.
func (l *FileLock) Path() string { return l.path }

// Exclusive reports whether the lock is exclusive.
func (l *FileLock) Exclusive() bool { return l.exclusive }

// Unlock releases the lock by closing its descriptor. Calls after the
// first do nothing.
func (l *FileLock) Unlock() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fd < 0 {
		return nil
	}
	err := unix.Close(l.fd)
	l.fd = -1
	if err != nil {
		return &os.PathError{Op: "close", Path: l.path, Err: err}
	}
	return nil
}

// lockHooks let tests stop a lock attempt at a chosen point. Nil hooks do
// nothing.
type lockHooks struct {
	// afterLock runs once the flock is held, before the double stat.
	afterLock func(path string)
	// retry runs each time a waiting lock finds the file busy, before it
	// waits for the next attempt.
	retry func(path string)
}

// Backoff of a waiting flock: flock(2) cannot be interrupted from another
// goroutine, so a lock with a deadline polls.
const (
	minRetryDelay = time.Millisecond
	maxRetryDelay = 50 * time.Millisecond
)

// lockFileOpts say how to take a lock on a lock file.
type lockFileOpts struct {
	exclusive bool
	// wait is how long to wait for a busy lock; 0 tries once.
	wait  time.Duration
	owner owner
	hooks lockHooks
}

// owner is who new lock files and directories should belong to; -1 keeps
// the creating process's ids.
type owner struct{ uid, gid int }

func (o owner) set() bool { return o.uid >= 0 || o.gid >= 0 }

func (o owner) chown(fd int, path string) error {
	if !o.set() {
		return nil
	}
	if err := unix.Fchown(fd, o.uid, o.gid); err != nil {
		return &os.PathError{Op: "chown", Path: path, Err: err}
	}
	return nil
}

// lockFileAt opens (creating with mode 0660 if needed) and flocks the lock
// file at path, then checks that path still names the locked file. subject
// names the locked object in errors.
func lockFileAt(ctx context.Context, subject, path string, o lockFileOpts) (*FileLock, error) {
	fd, err := openLockFile(path, o.owner)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", subject, err)
	}
	if err := flockWithin(ctx, fd, path, o); err != nil {
		unix.Close(fd)
		switch {
		case isConflict(err) && o.wait > 0:
			return nil, fmt.Errorf("%s: %s: still busy after %v: %w", subject, path, o.wait, ErrLocked)
		case isConflict(err):
			return nil, fmt.Errorf("%s: %s: %w", subject, path, ErrLocked)
		}
		return nil, fmt.Errorf("%s: %s: %w", subject, path, err)
	}
	if o.hooks.afterLock != nil {
		o.hooks.afterLock(path)
	}
	same, err := sameFile(fd, path)
	if err != nil || !same {
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", subject, path, err)
		}
		return nil, fmt.Errorf("%s: %s: %w", subject, path, ErrStale)
	}
	return &FileLock{path: path, exclusive: o.exclusive, fd: fd}, nil
}

// openLockFile opens path read-write, creating it with mode 0660 (not
// reduced by the umask) and the given owner if it does not exist. An
// existing file we may not write is opened read-only: flock does not care.
func openLockFile(path string, o owner) (int, error) {
	fd, err := openNoEINTR(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o660)
	if err == nil {
		if err := unix.Fchmod(fd, 0o660); err != nil {
			unix.Close(fd)
			return -1, &os.PathError{Op: "chmod", Path: path, Err: err}
		}
		if err := o.chown(fd, path); err != nil {
			unix.Close(fd)
			return -1, err
		}
		return fd, nil
	}
	if !errors.Is(err, unix.EEXIST) {
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	fd, err = openNoEINTR(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EROFS) {
		fd, err = openNoEINTR(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return fd, nil
}

// flockWithin takes the flock, trying once if o.wait is 0 and otherwise
// polling until it is free, o.wait has passed or ctx is done. A lock still
// busy at the end returns the kernel's EWOULDBLOCK.
func flockWithin(ctx context.Context, fd int, path string, o lockFileOpts) error {
	err := flock(fd, o.exclusive, false)
	if o.wait <= 0 || !isConflict(err) {
		return err
	}
	deadline := time.Now().Add(o.wait)
	for delay := minRetryDelay; ; delay = min(2*delay, maxRetryDelay) {
		if o.hooks.retry != nil {
			o.hooks.retry(path)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return err
		}
		timer := time.NewTimer(min(delay, left))
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
		err = flock(fd, o.exclusive, false)
		if !isConflict(err) {
			return err
		}
	}
}

// lockDirectory flocks the directory at path without waiting, the way
// PBS 3.2.4 locks groups and snapshots (proxmox-sys lock_dir_noblock).
func lockDirectory(subject, path string, exclusive, wait bool) (*FileLock, error) {
	fd, err := openNoEINTR(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", subject, &os.PathError{Op: "open", Path: path, Err: err})
	}
	if err := flock(fd, exclusive, wait); err != nil {
		unix.Close(fd)
		if isConflict(err) {
			return nil, fmt.Errorf("%s: %s: %w", subject, path, ErrLocked)
		}
		return nil, fmt.Errorf("%s: %s: flock: %w", subject, path, err)
	}
	return &FileLock{path: path, exclusive: exclusive, fd: fd}, nil
}
