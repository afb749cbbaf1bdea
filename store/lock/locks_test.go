package lock

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	testStore = "store1"
	testTime  = "2024-06-10T06:13:20Z"
)

// newTestLocks returns Locks on a temporary runtime dir and store root.
func newTestLocks(t *testing.T, opts ...Option) (*Locks, string, string) {
	t.Helper()
	runtime, root := t.TempDir(), t.TempDir()
	return NewLocks(runtime, testStore, root, opts...), runtime, root
}

func unlock(t *testing.T, l *FileLock) {
	t.Helper()
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
}

// TestLockFileNames checks the spec §10.9 vectors and the examples of the
// upstream lock_file_path_helper doc comment.
func TestLockFileNames(t *testing.T) {
	l := NewLocks("/run/proxmox-backup", "<store>", "/unused")
	const dir = "/run/proxmox-backup/locks/<store>/"
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"group vm/100", l.GroupPath(nil, "vm", "100"), dir + "vm-100"},
		{"snapshot", l.SnapshotPath(nil, "vm", "100", testTime), dir + `vm-100-2024\x2d06\x2d10T06\x3a13\x3a20Z`},
		{"manifest", l.ManifestPath(nil, "vm", "100", testTime), dir + `vm-100-2024\x2d06\x2d10T06\x3a13\x3a20Z-.index.json.lck`},
		{"namespace a/b", l.GroupPath([]string{"a", "b"}, "vm", "100"), dir + "a:b/vm-100"},
		{"host id with - and .", l.SnapshotPath(nil, "host", "my-host.example", testTime), dir + `host-my\x2dhost.example-2024\x2d06\x2d10T06\x3a13\x3a20Z`},
		{"upstream doc, 7 namespaces", l.SnapshotPath([]string{"ns1", "ns2", "ns3", "ns4", "ns5", "ns6", "ns7"}, "vm", "100", "2022-05-02T08:11:33Z"),
			dir + `ns1:ns2:ns3:ns4:ns5:ns6:ns7/vm-100-2022\x2d05\x2d02T08\x3a11\x3a33Z`},
		{"3.2.4 manifest", l.OldManifestPath([]string{"a", "b"}, "vm", "100", testTime),
			dir + "ns/a/ns/b/vm/100/" + testTime + "/" + testTime + ".index.json.lck"},
		{"3.2.4 group dir", l.GroupDir([]string{"a", "b"}, "ct", "7"), "/unused/ns/a/ns/b/ct/7"},
		{"3.2.4 snapshot dir", l.SnapshotDir(nil, "ct", "7", testTime), "/unused/ct/7/" + testTime},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got  %s\nwant %s", tc.got, tc.want)
			}
		})
	}
}

func TestEscapeUnit(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "-"},
		{"/", "-"},
		{"///", "-"},
		{"/a/b", "a-b"},
		{"a//b", "a--b"}, // no path simplification, unlike systemd-escape --path
		{"a/b/", "a-b-"},
		{".hidden", `\x2ehidden`},
		{"/.hidden", `\x2ehidden`}, // first byte after the stripped slashes
		{"a/.b", "a-.b"},
		{"a.b", "a.b"},
		{"A_z09", "A_z09"},
		{"a-b:c", `a\x2db\x3ac`},
		{"sp ace", `sp\x20ace`},
		{`back\slash`, `back\x5cslash`},
		{"ü", `\xc3\xbc`},
		{"\x00\xff", `\x00\xff`},
	}
	for _, tc := range tests {
		if got := EscapeUnit(tc.in); got != tc.want {
			t.Errorf("EscapeUnit(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestLockFileNameHashed: escaped names of 255 bytes or more go to
// hashed/<first 80>...<last 80>-<sha256 of the unescaped path>.
func TestLockFileNameHashed(t *testing.T) {
	hashOf := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return hex.EncodeToString(sum[:])
	}
	tests := []struct {
		name string
		ns   []string
		rel  string
		want string
	}{
		{"254 bytes stays", nil, "vm/" + strings.Repeat("a", 251), "vm-" + strings.Repeat("a", 251)},
		{"255 bytes hashed", nil, "vm/" + strings.Repeat("a", 252),
			"hashed/vm-" + strings.Repeat("a", 77) + "..." + strings.Repeat("a", 80) + "-" + hashOf("vm/"+strings.Repeat("a", 252))},
		{"escapes count", []string{"x", "y"}, "ct/" + strings.Repeat("-", 63) + "/" + testTime,
			// 3 + 19*4 + 1 = 80 bytes; 3 + 11*4 + 33 = 80 bytes
			"x:y/hashed/ct-" + strings.Repeat(`\x2d`, 19) + `\` + "..." +
				"x2d" + strings.Repeat(`\x2d`, 11) + `-2024\x2d06\x2d10T06\x3a13\x3a20Z` + "-" + hashOf("ct/"+strings.Repeat("-", 63)+"/"+testTime)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := lockFileName(tc.ns, tc.rel)
			if got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
			if base := filepath.Base(got); len(base) > 255 {
				t.Errorf("name of %d bytes", len(base))
			}
		})
	}
}

// TestLocksInProcess: flock locks conflict between open file descriptions,
// so two locks of one process exclude each other.
func TestLocksInProcess(t *testing.T) {
	type lockFn func(l *Locks, excl bool) (*FileLock, error)
	group := func(l *Locks, excl bool) (*FileLock, error) { return l.LockGroup([]string{"a"}, "vm", "100", excl) }
	snap := func(l *Locks, excl bool) (*FileLock, error) {
		return l.LockSnapshot(nil, "vm", "100", testTime, excl)
	}
	tests := []struct {
		name          string
		lock          lockFn
		first, second bool // exclusive?
		wantErr       error
	}{
		{"group excl/excl", group, true, true, ErrLocked},
		{"group excl/shared", group, true, false, ErrLocked},
		{"group shared/excl", group, false, true, ErrLocked},
		{"group shared/shared", group, false, false, nil},
		{"snapshot excl/excl", snap, true, true, ErrLocked},
		{"snapshot excl/shared", snap, true, false, ErrLocked},
		{"snapshot shared/excl", snap, false, true, ErrLocked},
		{"snapshot shared/shared", snap, false, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, _, _ := newTestLocks(t)
			a, err := tc.lock(l, tc.first)
			if err != nil {
				t.Fatal(err)
			}
			b, err := tc.lock(l, tc.second)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("second lock: got %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "vm/100") {
					t.Errorf("error does not name the subject: %v", err)
				}
				unlock(t, a)
				if b, err = tc.lock(l, tc.second); err != nil {
					t.Fatalf("after unlock: %v", err)
				}
			} else {
				unlock(t, a)
			}
			unlock(t, b)
			if err := b.Unlock(); err != nil {
				t.Errorf("second Unlock: %v", err)
			}
		})
	}
}

func TestLockFileCreated(t *testing.T) {
	l, runtime, _ := newTestLocks(t)
	fl, err := l.LockSnapshot([]string{"a", "b"}, "vm", "100", testTime, true)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Unlock()
	want := filepath.Join(runtime, "locks", testStore, "a:b", `vm-100-2024\x2d06\x2d10T06\x3a13\x3a20Z`)
	if fl.Path() != want || !fl.Exclusive() {
		t.Errorf("lock %s exclusive=%v, want %s", fl.Path(), fl.Exclusive(), want)
	}
	fi, err := os.Stat(want)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("lock file mode %v, want 0660", fi.Mode().Perm())
	}
	hs, err := LockHolders(want)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 || hs[0] != (Holder{PID: os.Getpid(), Kind: KindFlock, Type: TypeWrite}) {
		t.Errorf("holders %+v, want our FLOCK WRITE", hs)
	}
}

func TestWithOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	const uid, gid = 4242, 4343
	l, runtime, _ := newTestLocks(t, WithOwner(uid, gid))
	fl, err := l.LockGroup([]string{"a"}, "vm", "100", true)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Unlock()
	for _, p := range []string{
		filepath.Join(runtime, "locks"),
		filepath.Join(runtime, "locks", testStore),
		filepath.Join(runtime, "locks", testStore, "a"),
		fl.Path(),
	} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("%s owned by %d:%d, want %d:%d", p, st.Uid, st.Gid, uid, gid)
		}
	}
}

func TestLocksCrossProcess(t *testing.T) {
	tests := []struct {
		name    string
		child   []string // after the runtime/store/root arguments
		parent  func(l *Locks) (*FileLock, error)
		wantErr error
	}{
		{"snapshot shared/shared", []string{"snapshot", "shared"}, func(l *Locks) (*FileLock, error) {
			return l.LockSnapshot([]string{"a"}, "vm", "100", testTime, false)
		}, nil},
		{"snapshot shared/exclusive", []string{"snapshot", "shared"}, func(l *Locks) (*FileLock, error) {
			return l.LockSnapshot([]string{"a"}, "vm", "100", testTime, true)
		}, ErrLocked},
		{"group exclusive/exclusive", []string{"group", "exclusive"}, func(l *Locks) (*FileLock, error) {
			return l.LockGroup([]string{"a"}, "vm", "100", true)
		}, ErrLocked},
		{"manifest/manifest", []string{"manifest", "-"}, func(l *Locks) (*FileLock, error) {
			return l.LockManifest(context.Background(), []string{"a"}, "vm", "100", testTime)
		}, ErrLocked},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, runtime, root := newTestLocks(t)
			l.manifestWait = 10 * time.Millisecond
			args := append(tc.child, runtime, testStore, root, "a", "vm", "100", testTime)
			h := startHelper(t, args...)
			if h.reply != replyOK {
				t.Fatalf("helper: %s %s", h.reply, h.detail)
			}
			fl, err := tc.parent(l)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				h.stop()
				if fl, err = tc.parent(l); err != nil {
					t.Fatalf("after the other process exited: %v", err)
				}
			}
			unlock(t, fl)
		})
	}
}

// TestLockManifestWaits: a busy manifest lock is waited for, and taken
// once the holder lets go.
func TestLockManifestWaits(t *testing.T) {
	l, _, _ := newTestLocks(t)
	held, err := l.LockManifest(context.Background(), nil, "vm", "100", testTime)
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{})
	var once bool
	l.hooks.retry = func(string) {
		if !once {
			once = true
			close(waiting)
		}
	}
	done := make(chan error, 1)
	go func() {
		fl, err := l.LockManifest(context.Background(), nil, "vm", "100", testTime)
		if err == nil {
			err = fl.Unlock()
		}
		done <- err
	}()
	<-waiting // the second locker found it busy and is waiting
	unlock(t, held)
	if err := <-done; err != nil {
		t.Fatalf("waiting manifest lock: %v", err)
	}
}

func TestLockManifestGivesUp(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		l, _, _ := newTestLocks(t)
		held, err := l.LockManifest(context.Background(), nil, "vm", "100", testTime)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Unlock()
		l.manifestWait = 20 * time.Millisecond
		retries := 0
		l.hooks.retry = func(string) { retries++ }
		_, err = l.LockManifest(context.Background(), nil, "vm", "100", testTime)
		if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "manifest vm/100/"+testTime) {
			t.Fatalf("got %v, want ErrLocked naming the manifest", err)
		}
		if retries < 2 {
			t.Errorf("gave up after %d retries", retries)
		}
	})
	t.Run("context", func(t *testing.T) {
		l, _, _ := newTestLocks(t)
		held, err := l.LockManifest(context.Background(), nil, "vm", "100", testTime)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Unlock()
		ctx, cancel := context.WithCancel(context.Background())
		l.hooks.retry = func(string) { cancel() }
		_, err = l.LockManifest(ctx, nil, "vm", "100", testTime)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
}

// TestDoubleStat: a lock file removed or replaced between open and flock
// is detected.
func TestDoubleStat(t *testing.T) {
	tests := []struct {
		name    string
		meddle  func(path string) error
		wantErr error
	}{
		{"untouched", func(string) error { return nil }, nil},
		{"removed", os.Remove, ErrStale},
		{"replaced", func(p string) error {
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.WriteFile(p, nil, 0o660)
		}, ErrStale},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, _, _ := newTestLocks(t)
			var hookErr error
			l.hooks.afterLock = func(p string) { hookErr = tc.meddle(p) }
			fl, err := l.LockGroup(nil, "vm", "100", true)
			if hookErr != nil {
				t.Fatal(hookErr)
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			if err == nil {
				unlock(t, fl)
			}
		})
	}
}

// TestRemoveSnapshotLocks: PBS's destroy order. A manifest locker that
// waited on the removed file fails its double stat.
func TestRemoveSnapshotLocks(t *testing.T) {
	l, _, _ := newTestLocks(t)
	ns := []string{"a"}
	snap, err := l.LockSnapshot(ns, "vm", "100", testTime, true)
	if err != nil {
		t.Fatal(err)
	}
	man, err := l.LockManifest(context.Background(), ns, "vm", "100", testTime)
	if err != nil {
		t.Fatal(err)
	}
	waiter := NewLocks(l.runtimeDir, l.storeName, l.storeRoot)
	waiting := make(chan struct{})
	var once bool
	waiter.hooks.retry = func(string) {
		if !once {
			once = true
			close(waiting)
		}
	}
	done := make(chan error, 1)
	go func() {
		fl, err := waiter.LockManifest(context.Background(), ns, "vm", "100", testTime)
		fl.Unlock()
		done <- err
	}()
	<-waiting
	if err := l.RemoveSnapshotLocks(ns, "vm", "100", testTime); err != nil {
		t.Fatal(err)
	}
	unlock(t, man)
	if err := <-done; !errors.Is(err, ErrStale) {
		t.Errorf("waiter: got %v, want ErrStale", err)
	}
	unlock(t, snap)
	for _, p := range []string{l.SnapshotPath(ns, "vm", "100", testTime), l.ManifestPath(ns, "vm", "100", testTime)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want gone", p, err)
		}
	}
	if err := l.RemoveSnapshotLocks(ns, "vm", "100", testTime); err != nil {
		t.Errorf("second removal: %v", err)
	}

	g, err := l.LockGroup(ns, "vm", "100", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.RemoveGroupLock(ns, "vm", "100"); err != nil {
		t.Fatal(err)
	}
	unlock(t, g)
	if _, err := os.Stat(l.GroupPath(ns, "vm", "100")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("group lock file: %v, want gone", err)
	}
}

// TestOldLocking: with <runtime>/old-locking present, groups and
// snapshots are locked by flocking their directories.
func TestOldLocking(t *testing.T) {
	runtime, root := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(runtime, "old-locking"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	l := NewLocks(runtime, testStore, root)
	if !l.OldLocking() {
		t.Fatal("old-locking flag not seen")
	}
	ns := []string{"a", "b"}
	snapDir := filepath.Join(root, "ns/a/ns/b/vm/100", testTime)
	if _, err := l.LockSnapshot(ns, "vm", "100", testTime, true); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("snapshot lock without its directory: %v, want not exist", err)
	}
	if err := os.MkdirAll(snapDir, 0o755); err != nil {
		t.Fatal(err)
	}

	g, err := l.LockGroup(ns, "vm", "100", true)
	if err != nil {
		t.Fatal(err)
	}
	if g.Path() != filepath.Dir(snapDir) {
		t.Errorf("group lock on %s, want %s", g.Path(), filepath.Dir(snapDir))
	}
	hs, err := LockHolders(g.Path())
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 || hs[0] != (Holder{PID: os.Getpid(), Kind: KindFlock, Type: TypeWrite}) {
		t.Errorf("group dir holders %+v", hs)
	}
	if _, err := l.LockGroup(ns, "vm", "100", true); !errors.Is(err, ErrLocked) {
		t.Errorf("second group lock: %v, want ErrLocked", err)
	}
	unlock(t, g)

	h := startHelper(t, "snapshot", "shared", runtime, testStore, root, "a/b", "vm", "100", testTime)
	if h.reply != replyOK {
		t.Fatalf("helper: %s %s", h.reply, h.detail)
	}
	if _, err := l.LockSnapshot(ns, "vm", "100", testTime, true); !errors.Is(err, ErrLocked) {
		t.Errorf("exclusive snapshot lock against another process's shared one: %v", err)
	}
	s, err := l.LockSnapshot(ns, "vm", "100", testTime, false)
	if err != nil {
		t.Fatal(err)
	}
	unlock(t, s)
	h.stop()

	m, err := l.LockManifest(context.Background(), ns, "vm", "100", testTime)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(runtime, "locks", testStore, "ns/a/ns/b/vm/100", testTime, testTime+".index.json.lck")
	if m.Path() != want {
		t.Errorf("manifest lock %s, want %s", m.Path(), want)
	}
	unlock(t, m)
	if _, err := os.Stat(l.GroupPath(ns, "vm", "100")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old locking created a 2025+ lock file: %v", err)
	}
}

func TestInvalidNames(t *testing.T) {
	tests := []struct {
		name       string
		ns         []string
		typ, id, t string
	}{
		{"dotdot id", nil, "vm", "..", testTime},
		{"slash id", nil, "vm", "a/b", testTime},
		{"empty id", nil, "vm", "", testTime},
		{"dot first", nil, "vm", ".x", testTime},
		{"dotdot namespace", []string{".."}, "vm", "100", testTime},
		{"colon namespace", []string{"a:b"}, "vm", "100", testTime},
		{"slash namespace", []string{"a/b"}, "vm", "100", testTime},
		{"too deep", []string{"1", "2", "3", "4", "5", "6", "7", "8"}, "vm", "100", testTime},
		{"bad type", nil, "v/m", "100", testTime},
		{"bad time", nil, "vm", "100", "2024-06-10T06:13:20"},
		{"traversing time", nil, "vm", "100", "../../../etc/x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, runtime, _ := newTestLocks(t)
			if _, err := l.LockSnapshot(tc.ns, tc.typ, tc.id, tc.t, true); !errors.Is(err, ErrInvalidName) {
				t.Errorf("LockSnapshot: %v, want ErrInvalidName", err)
			}
			if _, err := l.LockManifest(context.Background(), tc.ns, tc.typ, tc.id, tc.t); !errors.Is(err, ErrInvalidName) {
				t.Errorf("LockManifest: %v, want ErrInvalidName", err)
			}
			if err := l.RemoveSnapshotLocks(tc.ns, tc.typ, tc.id, tc.t); !errors.Is(err, ErrInvalidName) {
				t.Errorf("RemoveSnapshotLocks: %v, want ErrInvalidName", err)
			}
			if tc.t == testTime {
				if _, err := l.LockGroup(tc.ns, tc.typ, tc.id, true); !errors.Is(err, ErrInvalidName) {
					t.Errorf("LockGroup: %v, want ErrInvalidName", err)
				}
			}
			if ents, _ := os.ReadDir(runtime); len(ents) != 0 {
				t.Errorf("runtime dir not empty after invalid names")
			}
		})
	}
}
