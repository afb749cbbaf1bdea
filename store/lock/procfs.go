package lock

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Lock kinds and types as /proc/locks prints them.
const (
	KindPOSIX = "POSIX"  // fcntl record lock, owned by a process
	KindFlock = "FLOCK"  // flock(2) lock, owned by an open file description
	KindOFD   = "OFDLCK" // open file description record lock
	TypeRead  = "READ"   // shared
	TypeWrite = "WRITE"  // exclusive
)

// procLocks is the kernel's table of held file locks.
const procLocks = "/proc/locks"

// Limits on reading /proc/locks.
const (
	maxProcLocksLine = 4096     // one line is ~60 bytes
	maxProcLocksSize = 64 << 20 // the whole table
)

// Holder is a process holding a lock on a file, as /proc/locks reports it.
type Holder struct {
	// PID is the holder as seen from this process's pid namespace. The
	// kernel reports -1 for OFD locks and 0 for a process it cannot
	// translate into this namespace.
	PID  int
	Kind string // KindPOSIX, KindFlock, KindOFD, or another kind the kernel prints
	Type string // TypeRead, TypeWrite, or another type the kernel prints
}

// LockHolders returns every lock held on the file at path, in the order
// of /proc/locks, each once (read in passes, see readProcLocks); waiting
// (blocked) requests are left out. The file is
// matched by device (major:minor) and inode, and it is only stat'ed, never
// opened, so path may be a process-lock file. A collector uses this to
// find a foreign PBS process holding the fcntl lock on <root>/.lock.
//
// On file systems whose stat reports another device than the one locks
// are recorded under (btrfs subvolumes, overlayfs), nothing matches. A
// caller that holds a lock on the file itself should therefore find its
// own pid in the result, and must not trust a result without it.
func LockHolders(path string) ([]Holder, error) {
	var st unix.Stat_t
	if err := statNoEINTR(path, &st); err != nil {
		return nil, fmt.Errorf("lock holders: %w", &os.PathError{Op: "stat", Path: path, Err: err})
	}
	entries, err := readProcLocks()
	if err != nil {
		return nil, fmt.Errorf("lock holders of %s: %w", path, err)
	}
	return holdersOfFile(entries, procFileID{unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)), st.Ino}), nil
}

// errProcLocks reports a /proc/locks line too long to be one.
var errProcLocks = errors.New("lock: malformed /proc/locks")

// parseProcLocks returns the held locks listed in r. A line looks like
//
//	3: POSIX  ADVISORY  WRITE 5256 fe:00:9979882 0 EOF
//	3: -> POSIX  ADVISORY  WRITE 5300 fe:00:9979882 0 EOF   (a waiter)
//
// with major and minor in hex and the inode in decimal. Waiters and lines
// that do not parse are skipped; a line over maxProcLocksLine is an error.
func parseProcLocks(r io.Reader) ([]procLockEntry, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxProcLocksLine)
	var out []procLockEntry
	for sc.Scan() {
		if e, ok := parseProcLockEntry(sc.Text()); ok {
			out = append(out, e)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: line over %d bytes", errProcLocks, maxProcLocksLine)
		}
		return nil, err
	}
	return out, nil
}

// holdersOfFile returns the holders of the locks in entries on file id.
func holdersOfFile(entries []procLockEntry, id procFileID) []Holder {
	var hs []Holder
	for _, e := range entries {
		if e.id == id {
			hs = append(hs, e.Holder)
		}
	}
	return hs
}

type procFileID struct {
	major, minor uint32
	ino          uint64
}

func parseProcLocksLine(line []byte) (Holder, procFileID, bool) {
	f := strings.Fields(string(bytes.TrimSpace(line)))
	// "N:" [->] KIND MODE TYPE PID MAJ:MIN:INO START END
	if len(f) < 6 || !strings.HasSuffix(f[0], ":") {
		return Holder{}, procFileID{}, false
	}
	f = f[1:]
	if f[0] == "->" {
		return Holder{}, procFileID{}, false // blocked, not holding
	}
	kind, typ := f[0], f[2]
	pid, err := strconv.Atoi(f[3])
	if err != nil {
		return Holder{}, procFileID{}, false
	}
	id, ok := parseProcFileID(f[4])
	if !ok {
		return Holder{}, procFileID{}, false
	}
	return Holder{PID: pid, Kind: kind, Type: typ}, id, true
}

// parseProcFileID parses "fe:00:9979882" (hex:hex:decimal).
func parseProcFileID(s string) (procFileID, bool) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return procFileID{}, false
	}
	maj, err1 := strconv.ParseUint(parts[0], 16, 32)
	mnr, err2 := strconv.ParseUint(parts[1], 16, 32)
	ino, err3 := strconv.ParseUint(parts[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return procFileID{}, false
	}
	return procFileID{uint32(maj), uint32(mnr), ino}, true
}
