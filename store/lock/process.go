package lock

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ProcessLocker is the chunk-store process lock on <root>/.lock
// (spec §5.1): POSIX fcntl record locks on the whole file, taken with
// F_SETLK so that they never block.
//
// Shared guards are held by writers. The first one takes F_RDLCK; later
// ones only count up, because POSIX locks of one process never conflict
// with each other. The exclusive guard (garbage collection) takes F_WRLCK,
// which upgrades this process's read lock and fails if any other process
// holds a lock of either kind. Releasing it drops back to F_RDLCK while
// shared guards remain. So the exclusive guard excludes writers of other
// processes only: a writer of this process is not stopped by it, and
// OldestShared reports when the oldest one started instead.
//
// All ProcessLockers of one file in a process share one descriptor and one
// guard count, however the file was named (see registry.go). A
// ProcessLocker is safe for concurrent use.
type ProcessLocker struct {
	lf   *lockFile
	path string

	mu     sync.Mutex
	closed bool
}

// OpenProcessLocker returns a locker for the process lock file at path,
// creating the file (mode 0644) if it does not exist. If this process
// already has the file open through another ProcessLocker, the new one
// shares its descriptor, guards and counts; the file is not opened again.
// Close it when done.
func OpenProcessLocker(path string) (*ProcessLocker, error) {
	lf, err := acquireLockFile(path)
	if err != nil {
		return nil, fmt.Errorf("chunk store lock: %w", err)
	}
	return &ProcessLocker{lf: lf, path: path}, nil
}

// Path returns the path the locker was opened with.
func (p *ProcessLocker) Path() string { return p.path }

// Shared takes a shared guard and records its creation time. It fails
// with ErrLocked if another process holds the exclusive lock.
func (p *ProcessLocker) Shared() (*Guard, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("chunk store lock %s: %w", p.path, ErrClosed)
	}
	lf := p.lf
	lf.mu.Lock()
	defer lf.mu.Unlock()
	if len(lf.shared) == 0 && !lf.exclusive {
		if err := setRecordLock(lf.fd, unix.F_RDLCK); err != nil {
			return nil, p.lockError("shared", err)
		}
	}
	id := lf.nextID
	lf.nextID++
	now := time.Now()
	lf.shared[id] = now
	lf.ref()
	return &Guard{lf: lf, path: p.path, id: id, t: now}, nil
}

// Exclusive takes the exclusive guard. It fails with ErrLocked if another
// process holds any lock on the file, or if this process already holds
// the exclusive guard. Shared guards of this process do not conflict.
func (p *ProcessLocker) Exclusive() (*Guard, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("chunk store lock %s: %w", p.path, ErrClosed)
	}
	lf := p.lf
	lf.mu.Lock()
	defer lf.mu.Unlock()
	if lf.exclusive {
		return nil, fmt.Errorf("chunk store lock %s: exclusive lock already held by this process: %w", p.path, ErrLocked)
	}
	if lf.readOnly {
		return nil, fmt.Errorf("chunk store lock %s: exclusive lock needs write access, file opened read-only", p.path)
	}
	if err := setRecordLock(lf.fd, unix.F_WRLCK); err != nil {
		// A failed F_SETLK leaves any read lock we had untouched.
		return nil, p.lockError("exclusive", err)
	}
	lf.exclusive = true
	lf.ref()
	return &Guard{lf: lf, path: p.path, exclusive: true, t: time.Now()}, nil
}

func (p *ProcessLocker) lockError(mode string, err error) error {
	if isConflict(err) {
		return fmt.Errorf("chunk store lock %s: %s: %w", p.path, mode, ErrLocked)
	}
	return fmt.Errorf("chunk store lock %s: %s: %w", p.path, mode, err)
}

// OldestShared returns the creation time of the oldest live shared guard
// of this process on the file, from any ProcessLocker sharing it, and
// false if there is none (upstream's oldest_shared_lock).
func (p *ProcessLocker) OldestShared() (time.Time, bool) {
	lf := p.lf
	lf.mu.Lock()
	defer lf.mu.Unlock()
	var oldest time.Time
	found := false
	for _, t := range lf.shared {
		if !found || t.Before(oldest) {
			oldest, found = t, true
		}
	}
	return oldest, found
}

// Close releases this locker. Guards it handed out stay valid: the
// descriptor, and with it the process's locks, is closed only after the
// last ProcessLocker of the file is closed and the last guard released.
// Calls after the first do nothing.
func (p *ProcessLocker) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	if err := p.lf.unref(); err != nil {
		return fmt.Errorf("chunk store lock: %w", err)
	}
	return nil
}

// Guard is a shared or exclusive hold on a process lock.
type Guard struct {
	lf        *lockFile
	path      string
	exclusive bool
	id        uint64
	t         time.Time
	released  bool // guarded by lf.mu
}

// Time returns when the guard was taken.
func (g *Guard) Time() time.Time { return g.t }

// Exclusive reports whether g is the exclusive guard.
func (g *Guard) Exclusive() bool { return g.exclusive }

// Release gives the guard back. The last shared guard unlocks the file
// unless the exclusive guard is held; the exclusive guard drops back to a
// read lock while shared guards remain, and unlocks otherwise. Calls after
// the first do nothing.
func (g *Guard) Release() error {
	if g == nil {
		return nil
	}
	lf := g.lf
	lf.mu.Lock()
	if g.released {
		lf.mu.Unlock()
		return nil
	}
	g.released = true
	var err error
	if g.exclusive {
		lf.exclusive = false
		typ := int16(unix.F_UNLCK)
		if len(lf.shared) > 0 {
			typ = unix.F_RDLCK
		}
		err = setRecordLock(lf.fd, typ)
	} else {
		delete(lf.shared, g.id)
		if len(lf.shared) == 0 && !lf.exclusive {
			err = setRecordLock(lf.fd, unix.F_UNLCK)
		}
	}
	lf.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("chunk store lock %s: release: %w", g.path, err)
	}
	return errors.Join(err, lf.unref())
}
