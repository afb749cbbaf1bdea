package lock

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// newLockPath returns the path of a fresh .lock in a temporary store root.
func newLockPath(t *testing.T) string {
	t.Helper()
	return filepath.Join(t.TempDir(), ".lock")
}

func openLocker(t *testing.T, path string) *ProcessLocker {
	t.Helper()
	p, err := OpenProcessLocker(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func takeGuard(t *testing.T, p *ProcessLocker, mode string) *Guard {
	t.Helper()
	var g *Guard
	var err error
	if mode == "exclusive" {
		g, err = p.Exclusive()
	} else {
		g, err = p.Shared()
	}
	if err != nil {
		t.Fatalf("%s guard: %v", mode, err)
	}
	t.Cleanup(func() { g.Release() })
	return g
}

func release(t *testing.T, g *Guard) {
	t.Helper()
	if err := g.Release(); err != nil {
		t.Fatal(err)
	}
}

// TestProcessLockerParentFirst: this process holds guards, a second
// process tries to lock.
func TestProcessLockerParentFirst(t *testing.T) {
	tests := []struct {
		name   string
		parent []string // guards this process takes, in order
		child  string   // what the other process tries
		want   string
	}{
		{"shared/shared", []string{"shared"}, "shared", replyOK},
		{"shared/exclusive", []string{"shared"}, "exclusive", replyLocked},
		{"exclusive/shared", []string{"exclusive"}, "shared", replyLocked},
		{"exclusive/exclusive", []string{"exclusive"}, "exclusive", replyLocked},
		{"shared+exclusive/shared", []string{"shared", "exclusive"}, "shared", replyLocked},
		{"exclusive+shared/shared", []string{"exclusive", "shared"}, "shared", replyLocked},
		{"none/exclusive", nil, "exclusive", replyOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := newLockPath(t)
			p := openLocker(t, path)
			for _, mode := range tc.parent {
				takeGuard(t, p, mode) // same-process guards never conflict
			}
			if got := childTry(t, "proc", tc.child, path); got != tc.want {
				t.Errorf("other process %s: got %s, want %s", tc.child, got, tc.want)
			}
		})
	}
}

// TestProcessLockerChildFirst: a second process holds a guard, this
// process tries.
func TestProcessLockerChildFirst(t *testing.T) {
	tests := []struct {
		name    string
		child   string
		parent  string
		wantErr error
	}{
		{"shared/shared", "shared", "shared", nil},
		{"shared/exclusive", "shared", "exclusive", ErrLocked},
		{"exclusive/shared", "exclusive", "shared", ErrLocked},
		{"exclusive/exclusive", "exclusive", "exclusive", ErrLocked},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := newLockPath(t)
			h := startHelper(t, "proc", tc.child, path)
			if h.reply != replyOK {
				t.Fatalf("helper: %s %s", h.reply, h.detail)
			}
			p := openLocker(t, path)
			var g *Guard
			var err error
			if tc.parent == "exclusive" {
				g, err = p.Exclusive()
			} else {
				g, err = p.Shared()
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("%s: got %v, want %v", tc.parent, err, tc.wantErr)
			}
			if err != nil {
				// Once the other process is gone the lock is free.
				h.stop()
				if g, err = takeGuardErr(p, tc.parent); err != nil {
					t.Fatalf("%s after the other process exited: %v", tc.parent, err)
				}
			}
			release(t, g)
		})
	}
}

func takeGuardErr(p *ProcessLocker, mode string) (*Guard, error) {
	if mode == "exclusive" {
		return p.Exclusive()
	}
	return p.Shared()
}

// TestProcessLockerRelease walks the guard counts through their
// transitions and checks what another process can take after each step.
func TestProcessLockerRelease(t *testing.T) {
	path := newLockPath(t)
	p := openLocker(t, path)
	check := func(step, child, want string) {
		t.Helper()
		if got := childTry(t, "proc", child, path); got != want {
			t.Errorf("%s: other process %s: got %s, want %s", step, child, got, want)
		}
	}

	s1 := takeGuard(t, p, "shared")
	s2 := takeGuard(t, p, "shared")
	release(t, s1)
	check("one of two shared released", "exclusive", replyLocked)
	check("one of two shared released", "shared", replyOK)
	release(t, s2)
	check("all shared released", "exclusive", replyOK)

	s3 := takeGuard(t, p, "shared")
	x := takeGuard(t, p, "exclusive")
	check("shared+exclusive", "shared", replyLocked)
	release(t, x)
	check("exclusive released, shared left (F_RDLCK)", "shared", replyOK)
	check("exclusive released, shared left (F_RDLCK)", "exclusive", replyLocked)
	x2 := takeGuard(t, p, "exclusive")
	release(t, s3)
	check("shared released under exclusive", "shared", replyLocked)
	release(t, x2)
	check("everything released", "exclusive", replyOK)

	// Release is idempotent and does not disturb later guards.
	s4 := takeGuard(t, p, "shared")
	release(t, s1)
	release(t, x)
	check("stale double releases", "exclusive", replyLocked)
	release(t, s4)
}

// TestProcessLockerExclusiveTwice: upstream refuses a second exclusive
// guard in one process.
func TestProcessLockerExclusiveTwice(t *testing.T) {
	path := newLockPath(t)
	p := openLocker(t, path)
	q := openLocker(t, path)
	x := takeGuard(t, p, "exclusive")
	if _, err := q.Exclusive(); !errors.Is(err, ErrLocked) {
		t.Fatalf("second exclusive: got %v, want ErrLocked", err)
	}
	release(t, x)
	release(t, takeGuard(t, q, "exclusive"))
}

// TestProcessLockerRegistry: a second locker on the same file, by the same
// path, a symlink or a hard link, shares the first one's descriptor, and
// closing it keeps the first one's locks.
func TestProcessLockerRegistry(t *testing.T) {
	for _, how := range []string{"same path", "symlink", "hard link"} {
		t.Run(how, func(t *testing.T) {
			path := newLockPath(t)
			p := openLocker(t, path)
			g := takeGuard(t, p, "shared")

			other := path
			switch how {
			case "symlink":
				other = filepath.Join(t.TempDir(), "via-symlink")
				if err := os.Symlink(path, other); err != nil {
					t.Fatal(err)
				}
			case "hard link":
				other = filepath.Join(filepath.Dir(path), "via-link")
				if err := os.Link(path, other); err != nil {
					t.Fatal(err)
				}
			}
			q, err := OpenProcessLocker(other)
			if err != nil {
				t.Fatal(err)
			}
			if q.lf != p.lf {
				t.Errorf("second locker has its own state")
			}
			if n := fdsOn(t, path); n != 1 {
				t.Errorf("%d descriptors open on %s, want 1", n, path)
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			if got := childTry(t, "proc", "exclusive", path); got != replyLocked {
				t.Fatalf("after closing the second locker, other process exclusive: got %s, want locked", got)
			}

			// Closing the last locker while a guard lives keeps the lock
			// until the guard goes.
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			if got := childTry(t, "proc", "exclusive", path); got != replyLocked {
				t.Fatalf("after closing with a live guard: got %s, want locked", got)
			}
			release(t, g)
			if got := childTry(t, "proc", "exclusive", path); got != replyOK {
				t.Fatalf("after the last guard: got %s, want ok", got)
			}
			if n := fdsOn(t, path); n != 0 {
				t.Errorf("%d descriptors still open on %s", n, path)
			}
			lockers.mu.Lock()
			_, ok := lockers.m[p.lf.key]
			lockers.mu.Unlock()
			if ok {
				t.Errorf("registry still holds the file")
			}
		})
	}
}

// TestProcessLockerReplacedFile: a .lock replaced by a new file is a new
// lock; the old descriptor stays with its guards.
func TestProcessLockerReplacedFile(t *testing.T) {
	path := newLockPath(t)
	p := openLocker(t, path)
	g := takeGuard(t, p, "exclusive")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	q := openLocker(t, path)
	if q.lf == p.lf {
		t.Fatal("new file shares the old file's state")
	}
	release(t, takeGuard(t, q, "exclusive")) // the new inode is free
	release(t, g)
}

func TestProcessLockerOldestShared(t *testing.T) {
	path := newLockPath(t)
	p := openLocker(t, path)
	q := openLocker(t, path)
	if _, ok := p.OldestShared(); ok {
		t.Fatal("OldestShared with no guards reported one")
	}
	x := takeGuard(t, p, "exclusive")
	if _, ok := p.OldestShared(); ok {
		t.Fatal("the exclusive guard counted as a writer")
	}
	g1 := takeGuard(t, p, "shared")
	g2 := takeGuard(t, q, "shared")
	if g2.Time().Before(g1.Time()) {
		t.Fatal("clock went backwards")
	}
	for _, l := range []*ProcessLocker{p, q} {
		if got, ok := l.OldestShared(); !ok || !got.Equal(g1.Time()) {
			t.Fatalf("OldestShared = %v, %v; want %v", got, ok, g1.Time())
		}
	}
	release(t, g1)
	if got, ok := p.OldestShared(); !ok || !got.Equal(g2.Time()) {
		t.Fatalf("after releasing the oldest: %v, %v; want %v", got, ok, g2.Time())
	}
	release(t, g2)
	release(t, x)
	if _, ok := q.OldestShared(); ok {
		t.Fatal("OldestShared after all releases reported one")
	}
}

func TestProcessLockerClosed(t *testing.T) {
	p, err := OpenProcessLocker(newLockPath(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := p.Shared(); !errors.Is(err, ErrClosed) {
		t.Errorf("Shared after Close: %v, want ErrClosed", err)
	}
	if _, err := p.Exclusive(); !errors.Is(err, ErrClosed) {
		t.Errorf("Exclusive after Close: %v, want ErrClosed", err)
	}
	var nilGuard *Guard
	if err := nilGuard.Release(); err != nil {
		t.Errorf("nil guard Release: %v", err)
	}
}

func TestProcessLockerCreatesFile(t *testing.T) {
	path := newLockPath(t)
	openLocker(t, path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() || fi.Size() != 0 {
		t.Errorf("lock file: mode %v size %d", fi.Mode(), fi.Size())
	}
	if _, err := OpenProcessLocker(filepath.Join(t.TempDir(), "missing", ".lock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("locker in a missing directory: %v", err)
	}
	if _, err := OpenProcessLocker(t.TempDir()); err == nil {
		t.Error("locker on a directory succeeded")
	}
}

// TestProcessLockerConcurrent hammers one file from many goroutines and
// lockers (run with -race), then checks that every lock is gone.
func TestProcessLockerConcurrent(t *testing.T) {
	path := newLockPath(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				p, err := OpenProcessLocker(path)
				if err != nil {
					errs <- err
					return
				}
				g, err := p.Shared()
				if err != nil {
					errs <- err
					return
				}
				if x, err := p.Exclusive(); err == nil {
					x.Release()
				} else if !errors.Is(err, ErrLocked) {
					errs <- err
				}
				p.OldestShared()
				if i%2 == 0 {
					p.Close()
					g.Release()
				} else {
					g.Release()
					p.Close()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := fdsOn(t, path); n != 0 {
		t.Errorf("%d descriptors left open", n)
	}
	if got := childTry(t, "proc", "exclusive", path); got != replyOK {
		t.Errorf("other process exclusive after all goroutines: %s", got)
	}
}

// TestProcessLockerFailedUpgrade: an exclusive guard refused because
// another process reads leaves this process's read lock in place.
func TestProcessLockerFailedUpgrade(t *testing.T) {
	path := newLockPath(t)
	p := openLocker(t, path)
	g := takeGuard(t, p, "shared")
	h := startHelper(t, "proc", "shared", path)
	if h.reply != replyOK {
		t.Fatalf("helper: %s %s", h.reply, h.detail)
	}
	if _, err := p.Exclusive(); !errors.Is(err, ErrLocked) {
		t.Fatalf("upgrade while another process reads: %v, want ErrLocked", err)
	}
	h.stop()
	if got := childTry(t, "proc", "exclusive", path); got != replyLocked {
		t.Errorf("after the failed upgrade, other process exclusive: %s, want locked", got)
	}
	x := takeGuard(t, p, "exclusive") // the reader is gone now
	release(t, x)
	release(t, g)
	if got := childTry(t, "proc", "exclusive", path); got != replyOK {
		t.Errorf("after all releases: %s, want ok", got)
	}
}
