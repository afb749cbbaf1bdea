package lock

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// dropAfterFirstRead is /proc/locks that calls drop between the first
// read() and the next, once: the interleaving that makes the kernel's
// seq_file resume past lines nobody removed.
type dropAfterFirstRead struct {
	f    *os.File
	drop func()
}

func (r *dropAfterFirstRead) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	if r.drop != nil && n > 0 {
		r.drop()
		r.drop = nil
	}
	return n, err
}

func (r *dropAfterFirstRead) Close() error { return r.f.Close() }

// TestProcLocksResumed: /proc/locks is read a page per read(), each
// read() resuming by line number; locks at the head of the table dropped
// between two read()s make a single pass skip as many lines of locks held
// throughout. readProcLocks must return every lock held throughout.
func TestProcLocksResumed(t *testing.T) {
	// The kernel keeps one list of locks per CPU, newest first, and
	// /proc/locks walks them in CPU order: take every lock on one CPU so
	// that the extra locks are at the head, before ours.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var cpu0 unix.CPUSet
	cpu0.Set(0)
	if err := unix.SchedSetaffinity(0, &cpu0); err != nil {
		t.Skipf("cannot pin to CPU 0: %v", err)
	}
	dir := t.TempDir()
	open := func(name string) int {
		fd, err := unix.Open(filepath.Join(dir, name), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	const held, extra = 400, 20 // 400 lines: several pages
	ours := map[uint64]bool{}
	for i := range held {
		fd := open("held" + strconv.Itoa(i))
		if err := ofdLock(fd, unix.F_WRLCK, 0); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		ours[st.Ino] = true
	}
	extras := make([]int, extra)
	for i := range extras {
		extras[i] = open("extra" + strconv.Itoa(i))
	}
	lockExtras := func(typ int16) {
		for _, fd := range extras {
			if err := ofdLock(fd, typ, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	seen := func(entries []procLockEntry) int {
		m := map[uint64]bool{}
		for _, e := range entries {
			if ours[e.id.ino] && e.Kind == KindOFD {
				m[e.id.ino] = true
			}
		}
		return len(m)
	}
	opener := func() func() (io.ReadCloser, error) {
		first := true
		return func() (io.ReadCloser, error) {
			f, err := os.Open(procLocks)
			if err != nil || !first {
				return f, err
			}
			first = false
			return &dropAfterFirstRead{f: f, drop: func() { lockExtras(unix.F_UNLCK) }}, nil
		}
	}

	// One pass, as the table was read before: lines are skipped.
	lockExtras(unix.F_WRLCK)
	f, _ := opener()()
	one, err := parseProcLocks(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if n := seen(one); n == held {
		t.Logf("one pass saw all %d locks held throughout: the kernel did not skip here", held)
	} else {
		t.Logf("one pass saw %d of the %d locks held throughout", n, held)
	}

	// readProcLocks, whose first pass meets the same drop.
	lockExtras(unix.F_WRLCK)
	all, err := readProcLocksFrom(opener())
	if err != nil {
		t.Fatal(err)
	}
	if n := seen(all); n != held {
		t.Errorf("readProcLocks saw %d of the %d locks held throughout", n, held)
	}
}
