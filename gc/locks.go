package gc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pbsfs/pbsfs/store/lock"
	"golang.org/x/sys/unix"
)

// gcLock is the flock on <runtime>/pbsfs/<store>/gc.lock that allows one
// collection per store at a time. flock locks belong to the open file
// description, so a second collector of the same process is refused too.
// The holder writes its pid into the file for the error message of the
// next one; /proc/locks is asked first, since it cannot be stale.
type gcLock struct{ f *os.File }

func acquireGCLock(path string) (*gcLock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("gc lock: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("gc lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s held by %s: %w", path, gcHolder(path), ErrRunning)
		}
		return nil, fmt.Errorf("gc lock %s: %w", path, err)
	}
	// The pid is informational; a failed write does not matter.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &gcLock{f: f}, nil
}

func (l *gcLock) release() {
	l.f.Truncate(0)
	l.f.Close()
}

// gcHolder names the process holding the GC lock at path.
func gcHolder(path string) string {
	if hs, err := lock.LockHolders(path); err == nil {
		for _, h := range hs {
			if h.Kind == lock.KindFlock && h.PID > 0 {
				return pidString(h.PID)
			}
		}
	}
	if b, err := os.ReadFile(path); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			return pidString(pid)
		}
	}
	return "an unknown process"
}

func pidString(pid int) string {
	if pid == os.Getpid() {
		return fmt.Sprintf("pid %d (this process)", pid)
	}
	return fmt.Sprintf("pid %d", pid)
}

// foreignCheckTries bounds the rereads of /proc/locks when a holder looks
// foreign: a pbsfs writer that registers or leaves between the reads of
// the registry and of /proc/locks can look foreign once, a PBS daemon looks
// foreign every time.
const foreignCheckTries = 3

// checkForeign fails with ErrForeignLock when a process other than this
// one and the registered pbsfs writers holds a lock on .lock. The caller
// holds the shared process lock; lock.ProcessLocker.OtherHolders finds the
// other holders whatever device numbers the file system reports, and fails
// (ErrForeignLock here) where it cannot prove it saw them all.
func (c *Collector) checkForeign() error {
	var foreign []lock.Holder
	for try := 0; try < foreignCheckTries; try++ {
		var err error
		foreign, err = c.foreignHolders()
		if err != nil {
			return err
		}
		if len(foreign) == 0 {
			return nil
		}
	}
	pids := make([]string, len(foreign))
	for i, h := range foreign {
		pids[i] = fmt.Sprintf("pid %d (%s %s)", h.PID, h.Kind, h.Type)
	}
	return fmt.Errorf("%s: held by %s; stop the PBS daemon using this store, or run the collector there: %w",
		c.s.ProcessLocker().Path(), strings.Join(pids, ", "), ErrForeignLock)
}

func (c *Collector) foreignHolders() ([]lock.Holder, error) {
	dir := c.s.WritersDir()
	before, err := lock.ListWriters(dir)
	if err != nil {
		return nil, err
	}
	holders, err := c.s.ProcessLocker().OtherHolders()
	if err != nil {
		if errors.Is(err, lock.ErrUnverifiable) {
			return nil, fmt.Errorf("%w: %w", err, ErrForeignLock)
		}
		return nil, err
	}
	after, err := lock.ListWriters(dir)
	if err != nil {
		return nil, err
	}
	known := make(map[int]bool)
	for _, w := range append(before, after...) {
		known[w.PID] = true
	}
	var foreign []lock.Holder
	for _, h := range holders {
		if h.PID > 0 && known[h.PID] {
			continue
		}
		foreign = append(foreign, h)
	}
	return foreign, nil
}

// oldestWriter returns the start of the oldest active writer: the oldest
// live registration in the writer registry (pbsfs writers of every
// process) and the oldest shared guard of this process's process lock
// (ours, taken at own, excepted), or start when there is none (spec §5.5).
func (c *Collector) oldestWriter(start, own time.Time) (time.Time, error) {
	oldest := start
	ws, err := lock.ListWriters(c.s.WritersDir())
	if err != nil {
		return time.Time{}, err
	}
	if len(ws) > 0 && ws[0].Start.Before(oldest) && !c.opts.off.writers {
		oldest = ws[0].Start
	}
	if t, ok := c.s.ProcessLocker().OldestShared(); ok && !t.Equal(own) && t.Before(oldest) {
		oldest = t
	}
	return oldest, nil
}
