package lock

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func newPrefixDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), ".chunks", "ab12")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestPrefixDirTry(t *testing.T) {
	tests := []struct {
		name          string
		first, second bool // exclusive?
		wantErr       error
	}{
		{"shared/shared", false, false, nil},
		{"shared/exclusive", false, true, ErrLocked},
		{"exclusive/shared", true, false, ErrLocked},
		{"exclusive/exclusive", true, true, ErrLocked},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := newPrefixDir(t)
			a, err := LockPrefixDir(dir, tc.first)
			if err != nil {
				t.Fatal(err)
			}
			b, err := TryLockPrefixDir(dir, tc.second)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("second lock in the same process: %v, want %v", err, tc.wantErr)
			}
			unlock(t, a)
			unlock(t, b) // nil-safe when the try failed
			if tc.wantErr != nil {
				if b, err = TryLockPrefixDir(dir, tc.second); err != nil {
					t.Fatalf("after unlock: %v", err)
				}
				unlock(t, b)
			}
		})
	}
	if _, err := TryLockPrefixDir(filepath.Join(t.TempDir(), "none"), true); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing dir: %v", err)
	}
}

func TestPrefixDirCrossProcess(t *testing.T) {
	dir := newPrefixDir(t)
	h := startHelper(t, "prefix", "shared", dir)
	if h.reply != replyOK {
		t.Fatalf("helper: %s %s", h.reply, h.detail)
	}
	if _, err := TryLockPrefixDir(dir, true); !errors.Is(err, ErrLocked) {
		t.Fatalf("sweep lock against another process's insert: %v, want ErrLocked", err)
	}
	s, err := TryLockPrefixDir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	unlock(t, s)
	h.stop()
	x, err := TryLockPrefixDir(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := childTry(t, "prefix", "shared", dir); got != replyLocked {
		t.Errorf("insert lock of another process during the sweep: %s, want locked", got)
	}
	unlock(t, x)
}

// TestPrefixDirBlocks: a blocking lock waits for the holder (seen as a
// blocked request in /proc/locks) and gets the lock once it is released.
func TestPrefixDirBlocks(t *testing.T) {
	dir := newPrefixDir(t)
	sweep, err := LockPrefixDir(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *FileLock)
	errc := make(chan error, 1)
	go func() {
		fl, err := LockPrefixDir(dir, false)
		if err != nil {
			errc <- err
			return
		}
		got <- fl
	}()
	waitFor(t, "a blocked flock on the prefix dir", func() bool { return waitersOn(t, dir) == 1 })
	select {
	case <-got:
		t.Fatal("insert lock granted during the sweep")
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	unlock(t, sweep)
	var ins *FileLock
	select {
	case ins = <-got:
	case err := <-errc:
		t.Fatal(err)
	}
	if _, err := TryLockPrefixDir(dir, true); !errors.Is(err, ErrLocked) {
		t.Errorf("sweep lock while the insert lock is held: %v", err)
	}
	unlock(t, ins)
}

// waitersOn counts blocked lock requests ("->" lines) on path in
// /proc/locks.
func waitersOn(t *testing.T, path string) int {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)), st.Ino)
	f, err := os.Open("/proc/locks")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 6 && fs[1] == "->" && fs[6] == id {
			n++
		}
	}
	return n
}
