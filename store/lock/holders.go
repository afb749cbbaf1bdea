package lock

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrUnverifiable reports that the holders of a process-lock file cannot be
// told for certain: /proc/locks does not show the file's locks, or shows
// them in a way that does not add up, or holders of other pid namespaces
// may hide. A caller that must not miss a holder treats it as a foreign one.
var ErrUnverifiable = errors.New("lock holders cannot be verified")

// probeBase is the start of the byte range pbsfs uses for its probe locks
// on a process-lock file: one byte at a random offset in
// [probeBase, probeBase+probeSpan). PBS only ever locks the whole file, so
// nothing else locks bytes this far out; an OFD lock found there is
// another pbsfs process's probe.
const (
	probeBase = 1 << 62
	probeSpan = 1<<62 - 1
)

// initPidNS is how /proc/self/ns/pid reads in the initial pid namespace
// (PROC_PID_INIT_INO), the only one whose /proc/locks shows every holder.
const initPidNS = "pid:[4026531836]"

// OtherHolders returns the locks that processes other than this one hold
// on the process-lock file, as the kernel reports them. The caller must
// hold a shared guard: the check relies on finding this process's own
// lock, and fails with ErrUnverifiable where it cannot prove that it sees
// every holder.
//
// /proc/locks names a file by the device of its superblock and its inode
// number, which is not always what stat reports: btrfs gives every
// subvolume its own anonymous device in stat, while /proc/locks prints
// the file system's; inode numbers repeat across btrfs subvolumes. So the
// file is not looked up by its stat identity. Instead:
//
//  1. A probe: an open-file-description (OFD) read lock on one byte at a
//     random offset of at least 2^62 is placed on this process's
//     descriptor of the file. Its line in /proc/locks (kind OFDLCK, that
//     exact range) names the file as /proc/locks does. No such line, or
//     more than one, is ErrUnverifiable. The lock conflicts with nothing
//     anybody takes (a PBS garbage collection's exclusive lock is already
//     kept out by our shared one) and is released before returning.
//  2. Every line with that name is a lock on the file, or on another file
//     with the same name (two btrfs subvolumes). This process's own POSIX
//     lock must be among them, or nothing can be trusted
//     (ErrUnverifiable).
//  3. A line of another process is dropped only when the process
//     demonstrably has no descriptor of this file open (every entry of
//     /proc/PID/fd is readable and none stats as this file): a POSIX
//     lock cannot outlive the holder's last descriptor of the file. A
//     holder whose descriptors cannot be read stays.
//  4. The lock itself is asked, with F_OFD_GETLK for an exclusive lock of
//     the whole file: the first conflicting lock it names must be ours or
//     one of the holders found; a pid of 0 is a holder in a pid namespace
//     this process cannot see.
//  5. Outside the initial pid namespace /proc/locks hides the locks of
//     processes it cannot see, so there the result is proven only by
//     upgrading this process's lock to an exclusive one for an instant
//     (F_SETLK, never waiting) and back: when that succeeds nobody else
//     holds a lock at all; when it fails and no visible holder explains
//     it, ErrUnverifiable.
//
// OFD locks in the probe range are other pbsfs probes and are left out.
func (p *ProcessLocker) OtherHolders() ([]Holder, error) {
	lf := p.lf
	lf.mu.Lock()
	defer lf.mu.Unlock()
	if len(lf.shared) == 0 && !lf.exclusive {
		return nil, fmt.Errorf("lock holders of %s: this process holds no lock on it", p.path)
	}
	var st unix.Stat_t
	if err := unix.Fstat(lf.fd, &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: p.path, Err: err}
	}
	off, err := probeOffset()
	if err != nil {
		return nil, err
	}
	if err := ofdLock(lf.fd, unix.F_RDLCK, off); err != nil {
		return nil, fmt.Errorf("lock holders of %s: probe lock: %v: %w", p.path, err, ErrUnverifiable)
	}
	entries, err := readProcLocks()
	ofdLock(lf.fd, unix.F_UNLCK, off)
	if err != nil {
		return nil, fmt.Errorf("lock holders of %s: %w", p.path, err)
	}
	holders, err := holdersOf(entries, off, os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("lock holders of %s: %w", p.path, err)
	}
	others := holders[:0]
	for _, h := range holders {
		if h.PID > 0 && !hasFileOpen(h.PID, &st) {
			continue
		}
		others = append(others, h)
	}
	if err := checkFirstConflict(lf.fd, holders); err != nil {
		return nil, fmt.Errorf("lock holders of %s: %w", p.path, err)
	}
	if !initialPidNS() {
		if err := proveAlone(lf, others); err != nil {
			return nil, fmt.Errorf("lock holders of %s: %w", p.path, err)
		}
	}
	return others, nil
}

// procLockEntry is one held (not waiting) lock of /proc/locks.
type procLockEntry struct {
	Holder
	id         procFileID
	start, end int64 // end is -1 for EOF
}

// Passes over /proc/locks that readProcLocks makes.
const (
	minProcLocksPasses = 3
	maxProcLocksPasses = 10
)

// readProcLocks returns every held lock of /proc/locks, read in several
// passes: the union of what the passes saw, each lock once.
//
// Why several: /proc/locks is a seq_file. The kernel fills one read() with
// at most a page of lines and resumes the next read() by line number, so
// a lock taken or dropped before the resume point between two read()s
// shifts the lines, and one line is skipped or shown twice. A single pass
// over a table longer than a page can therefore miss a lock that was held
// the whole time (TestProcLocksResumed makes it happen), and a missed
// holder is the one thing the collector must never conclude. A lock held throughout is in the union unless every pass
// skipped it; the passes go on until one adds nothing new (at least
// minProcLocksPasses). The union may also hold a lock that was released
// meanwhile; that makes a caller more careful, never less.
func readProcLocks() ([]procLockEntry, error) {
	return readProcLocksFrom(func() (io.ReadCloser, error) { return os.Open(procLocks) })
}

// readProcLocksFrom is readProcLocks with the table opened by open.
func readProcLocksFrom(open func() (io.ReadCloser, error)) ([]procLockEntry, error) {
	seen := map[procLockEntry]bool{}
	var out []procLockEntry
	for pass := 0; pass < maxProcLocksPasses; pass++ {
		f, err := open()
		if err != nil {
			return nil, err
		}
		entries, err := parseProcLocks(io.LimitReader(f, maxProcLocksSize))
		f.Close()
		if err != nil {
			return nil, err
		}
		added := false
		for _, e := range entries {
			if !seen[e] {
				seen[e] = true
				out = append(out, e)
				added = true
			}
		}
		if pass+1 >= minProcLocksPasses && !added {
			break
		}
	}
	return out, nil
}

func parseProcLockEntry(line string) (procLockEntry, bool) {
	h, id, ok := parseProcLocksLine([]byte(line))
	if !ok {
		return procLockEntry{}, false
	}
	f := strings.Fields(line)
	// "N:" KIND MODE TYPE PID ID START END
	if len(f) != 8 {
		return procLockEntry{}, false
	}
	start, err := strconv.ParseInt(f[6], 10, 64)
	if err != nil {
		return procLockEntry{}, false
	}
	end := int64(-1)
	if f[7] != "EOF" {
		if end, err = strconv.ParseInt(f[7], 10, 64); err != nil {
			return procLockEntry{}, false
		}
	}
	return procLockEntry{Holder: h, id: id, start: start, end: end}, true
}

// holdersOf finds the probe lock at off in entries, and returns the other
// processes' locks on the file it names, after checking that process self
// holds a POSIX lock there.
func holdersOf(entries []procLockEntry, off int64, self int) ([]Holder, error) {
	var probes []procLockEntry
	for _, e := range entries {
		if e.Kind == KindOFD && e.start == off && e.end == off {
			probes = append(probes, e)
		}
	}
	if len(probes) != 1 {
		return nil, fmt.Errorf("/proc/locks shows %d probe locks, want 1: %w", len(probes), ErrUnverifiable)
	}
	id := probes[0].id
	sawSelf := false
	var out []Holder
	for _, e := range entries {
		if e.id != id {
			continue
		}
		switch {
		case e.Kind == KindOFD && e.start >= probeBase && e.end == e.start:
			// A probe, ours or another pbsfs process's.
		case e.PID == self:
			if e.Kind == KindPOSIX {
				sawSelf = true
			}
		default:
			out = append(out, e.Holder)
		}
	}
	if !sawSelf {
		return nil, fmt.Errorf("/proc/locks does not show this process's lock: %w", ErrUnverifiable)
	}
	return out, nil
}

// checkFirstConflict asks the kernel for the first lock that would keep an
// exclusive OFD lock of the whole file out. It must be a lock /proc/locks
// showed: this process's, or one in holders.
func checkFirstConflict(fd int, holders []Holder) error {
	fl := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	for {
		err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &fl)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("F_OFD_GETLK: %v: %w", err, ErrUnverifiable)
		}
		break
	}
	pid := int(fl.Pid)
	switch {
	case fl.Type == unix.F_UNLCK:
		return fmt.Errorf("the kernel reports no lock, though this process holds one: %w", ErrUnverifiable)
	case pid == 0:
		return fmt.Errorf("held by a process of another pid namespace: %w", ErrUnverifiable)
	case pid == os.Getpid(), pid == -1 && fl.Start >= probeBase:
		return nil
	}
	for _, h := range holders {
		if h.PID == pid {
			return nil
		}
	}
	return fmt.Errorf("the kernel names holder pid %d, which /proc/locks does not show: %w", pid, ErrUnverifiable)
}

// proveAlone upgrades this process's lock to an exclusive one and back.
// Success proves that no other process holds a lock; failure is explained
// only by visible holders.
func proveAlone(lf *lockFile, visible []Holder) error {
	if lf.exclusive {
		return nil // an exclusive lock already proves it
	}
	err := setRecordLock(lf.fd, unix.F_WRLCK)
	if err == nil {
		return setRecordLock(lf.fd, unix.F_RDLCK)
	}
	if !isConflict(err) {
		return fmt.Errorf("exclusive probe: %v: %w", err, ErrUnverifiable)
	}
	if len(visible) == 0 {
		return fmt.Errorf("held by a process this pid namespace cannot see: %w", ErrUnverifiable)
	}
	return fmt.Errorf("outside the initial pid namespace holders cannot all be seen while others hold the lock: %w", ErrUnverifiable)
}

// hasFileOpen reports whether process pid may have the file st open: false
// only when every descriptor of the process could be checked and none is
// the file.
func hasFileOpen(pid int, st *unix.Stat_t) bool {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return true
	}
	for _, e := range ents {
		// AT_STATX_DONT_SYNC: a descriptor on a network file system
		// must not make the check wait for its server.
		var stx unix.Statx_t
		err := unix.Statx(unix.AT_FDCWD, filepath.Join(dir, e.Name()), unix.AT_STATX_DONT_SYNC, unix.STATX_INO, &stx)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // closed meanwhile
			}
			return true
		}
		if unix.Mkdev(stx.Dev_major, stx.Dev_minor) == uint64(st.Dev) && stx.Ino == st.Ino {
			return true
		}
	}
	return false
}

// initialPidNS reports whether this process lives in the initial pid
// namespace, where /proc/locks shows every holder.
func initialPidNS() bool {
	ns, err := os.Readlink("/proc/self/ns/pid")
	return err == nil && ns == initPidNS
}

func probeOffset() (int64, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, fmt.Errorf("probe offset: %w", err)
	}
	return probeBase + int64(binary.LittleEndian.Uint64(b[:])%probeSpan), nil
}

// ofdLock sets or clears an OFD record lock on the one byte at off.
func ofdLock(fd int, typ int16, off int64) error {
	fl := unix.Flock_t{Type: typ, Whence: io.SeekStart, Start: off, Len: 1}
	for {
		err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &fl)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
