package lock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The writer registry (shared/design/gc-safety.md, Hazard 1). A garbage
// collector needs the start time of the oldest live writer, but upstream's
// ProcessLocker only knows the writers of its own process. Every pbsfs
// writer therefore also registers a file <dir>/<unix-nanos>-<pid>, which it
// holds with an exclusive flock for its whole life. A file that a lister
// can lock itself has lost its holder: that writer died without cleaning
// up, and the lister removes the file.

// tmpPrefix starts the name a registration has before it is locked and
// linked into place. ListWriters ignores such names, except that it
// removes one left by a writer that died in RegisterWriter: unlocked and
// older than staleTmpAge, far longer than the microseconds a live writer
// leaves its file unlocked.
const (
	tmpPrefix   = ".tmp-"
	staleTmpAge = time.Minute
)

// Registration is a live writer's entry in a writer registry.
type Registration struct {
	path  string
	start time.Time

	mu sync.Mutex
	fd int // -1 after Release
}

// RegisterWriter registers the calling process as a writer in the registry
// directory dir (created if needed) and returns the registration, to be
// released when the writer is done. Its start time is now.
//
// The file is created under a temporary name, locked, and then linked to
// its final name, so that a lister never sees it unlocked.
func RegisterWriter(dir string) (*Registration, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("writer registry: %w", err)
	}
	start := time.Now()
	pid := os.Getpid()
	tmp := filepath.Join(dir, fmt.Sprintf("%s%d-%d", tmpPrefix, start.UnixNano(), pid))
	fd, err := openNoEINTR(tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("writer registry: %w", &os.PathError{Op: "create", Path: tmp, Err: err})
	}
	fail := func(err error) (*Registration, error) {
		unix.Unlink(tmp)
		unix.Close(fd)
		return nil, fmt.Errorf("writer registry: %w", err)
	}
	if err := flock(fd, true, false); err != nil {
		return fail(&os.PathError{Op: "flock", Path: tmp, Err: err})
	}
	// Two registrations of one process may read the same clock value;
	// the later one moves its start a nanosecond on.
	var final string
	for {
		final = filepath.Join(dir, fmt.Sprintf("%d-%d", start.UnixNano(), pid))
		err := unix.Link(tmp, final)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EEXIST) {
			return fail(&os.LinkError{Op: "link", Old: tmp, New: final, Err: err})
		}
		start = start.Add(time.Nanosecond)
	}
	if err := unix.Unlink(tmp); err != nil {
		unix.Unlink(final)
		return fail(&os.PathError{Op: "unlink", Path: tmp, Err: err})
	}
	return &Registration{path: final, start: start, fd: fd}, nil
}

// Path returns the registration's file.
func (r *Registration) Path() string { return r.path }

// Start returns the registered start time.
func (r *Registration) Start() time.Time { return r.start }

// Release removes the registration. Calls after the first do nothing.
func (r *Registration) Release() error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fd < 0 {
		return nil
	}
	// Unlink while still locked, so no lister takes us for dead.
	err := unix.Unlink(r.path)
	if errors.Is(err, unix.ENOENT) {
		err = nil
	}
	if cerr := unix.Close(r.fd); err == nil {
		err = cerr
	}
	r.fd = -1
	if err != nil {
		return fmt.Errorf("writer registry: %w", &os.PathError{Op: "release", Path: r.path, Err: err})
	}
	return nil
}

// WriterInfo describes a live registered writer.
type WriterInfo struct {
	Start time.Time // when the writer registered
	PID   int       // its process id, as it saw it
	Path  string    // its registration file
}

// ListWriters returns the live writers registered in dir, oldest first. A
// registration whose lock it can take belongs to a dead writer: it is
// removed and left out. A missing dir has no writers. Files with other
// names are ignored.
func ListWriters(dir string) ([]WriterInfo, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("writer registry: %w", err)
	}
	var out []WriterInfo
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if err := removeStaleTmp(filepath.Join(dir, e.Name())); err != nil {
				return nil, fmt.Errorf("writer registry: %w", err)
			}
			continue
		}
		start, pid, ok := parseWriterName(e.Name())
		if !ok {
			continue
		}
		path := filepath.Join(dir, e.Name())
		alive, err := writerAlive(path)
		if err != nil {
			return nil, fmt.Errorf("writer registry: %w", err)
		}
		if alive {
			out = append(out, WriterInfo{Start: start, PID: pid, Path: path})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Start.Equal(out[j].Start) {
			return out[i].Start.Before(out[j].Start)
		}
		return out[i].PID < out[j].PID
	})
	return out, nil
}

// writerAlive tries to lock a registration file. Busy means its writer
// lives. Lockable means it is dead: the file is removed while we hold the
// lock. A file gone meanwhile was released.
func writerAlive(path string) (bool, error) {
	fd, err := openNoEINTR(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	err = flock(fd, true, false)
	if isConflict(err) {
		return true, nil
	}
	if err != nil {
		return false, &os.PathError{Op: "flock", Path: path, Err: err}
	}
	// Names are unique, but do not remove a file that is not the one we
	// locked.
	if same, _ := sameFile(fd, path); same {
		if err := unix.Unlink(path); err != nil && !errors.Is(err, unix.ENOENT) {
			return false, &os.PathError{Op: "remove dead writer", Path: path, Err: err}
		}
	}
	return false, nil
}

// removeStaleTmp removes a temporary registration file that is older than
// staleTmpAge and not locked.
func removeStaleTmp(path string) error {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || time.Since(fi.ModTime()) < staleTmpAge {
		return nil // gone, odd, or perhaps still being registered
	}
	_, err = writerAlive(path) // removes it if unlocked
	return err
}

// parseWriterName parses "<unix-nanos>-<pid>".
func parseWriterName(name string) (time.Time, int, bool) {
	ns, pidStr, ok := strings.Cut(name, "-")
	if !ok || !allDigits(ns) || !allDigits(pidStr) {
		return time.Time{}, 0, false
	}
	nanos, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return time.Time{}, 0, false
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return time.Time{}, 0, false
	}
	return time.Unix(0, nanos), pid, true
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
