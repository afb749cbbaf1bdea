package gc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/internal/testutil"
	"github.com/pbsfs/pbsfs/store"
	"golang.org/x/sys/unix"
)

// The tests in this file re-execute the test binary as a helper process
// ($GC_TEST_HELPER names the role); helperMain runs instead of the tests.

func TestMain(m *testing.M) {
	if role := os.Getenv("GC_TEST_HELPER"); role != "" {
		os.Exit(helperMain(role))
	}
	code := m.Run()
	s3shared.Close()
	os.Exit(code)
}

// helperMain runs a helper role:
//
//   - gc: run a collection of $GC_TEST_STORE (runtime dir $GC_TEST_RUNTIME),
//     print the error, exit 1 on failure;
//   - holdlock: hold a POSIX read lock on $GC_TEST_STORE/.lock, as a PBS
//     daemon's writer does;
//   - writer: do what a pbsfs writer does, with a start time of
//     $GC_TEST_START (unix nanoseconds): register in the writer registry
//     $GC_TEST_WRITERS and hold the read lock on .lock.
//
// holdlock and writer print "ready" and hold until stdin closes.
func helperMain(role string) int {
	root := os.Getenv("GC_TEST_STORE")
	switch role {
	case "gc":
		s, err := store.Open(root, store.Options{RuntimeDir: os.Getenv("GC_TEST_RUNTIME")})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
		if _, err := New(s, Options{}).Run(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	case "insert", "touch":
		// Reuse the chunk $GC_TEST_DATA as a pbsfs writer does: Insert
		// (which touches an existing chunk) or TouchIfPresent. Print
		// "locking" when at the prefix lock and the outcome at the end.
		s, err := store.Open(root, store.Options{RuntimeDir: os.Getenv("GC_TEST_RUNTIME")})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
		chunks := s.Chunks()
		orig := chunks.PrefixLock
		chunks.PrefixLock = func(p uint16, excl bool) (func(), error) {
			fmt.Println("locking")
			return orig(p, excl)
		}
		data := []byte(os.Getenv("GC_TEST_DATA"))
		d := store.DigestOf(data)
		var reused bool
		if role == "insert" {
			blob, _ := s.Codec().Encode(data, false)
			reused, err = chunks.Insert(context.Background(), d, blob)
		} else {
			reused, err = chunks.TouchIfPresent(context.Background(), d)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Printf("reused=%v\n", reused)
		return 0
	case "trypbsgc":
		// Try what a PBS garbage collection does first; print the outcome.
		f, err := os.OpenFile(filepath.Join(root, ".lock"), os.O_RDWR, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
		if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &unix.Flock_t{Type: unix.F_WRLCK}); err != nil {
			fmt.Println("busy")
		} else {
			fmt.Println("locked")
		}
		return 0
	case "writer":
		dir := os.Getenv("GC_TEST_WRITERS")
		start, _ := strconv.ParseInt(os.Getenv("GC_TEST_START"), 10, 64)
		name := fmt.Sprintf("%d-%d", start, os.Getpid())
		tmp := filepath.Join(dir, ".tmp-"+name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
		f, err := os.Create(tmp)
		if err == nil {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		}
		if err == nil {
			err = os.Link(tmp, filepath.Join(dir, name))
		}
		if err == nil {
			err = os.Remove(tmp)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
		fallthrough
	case "holdlock", "pbsgc":
		// holdlock is a PBS writer (read lock); pbsgc a PBS garbage
		// collection (write lock).
		typ := int16(unix.F_RDLCK)
		if role == "pbsgc" {
			typ = unix.F_WRLCK
		}
		f, err := os.OpenFile(filepath.Join(root, ".lock"), os.O_RDWR, 0)
		if err == nil {
			err = unix.FcntlFlock(f.Fd(), unix.F_SETLK, &unix.Flock_t{Type: typ, Whence: 0})
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
		fmt.Println("ready")
		io.Copy(io.Discard, os.Stdin)
		return 0
	}
	return 2
}

// helper starts the test binary in role and waits until it is ready; the
// returned func ends it.
func helper(t *testing.T, ts *testStore, role string, env ...string) (pid int, stop func()) {
	t.Helper()
	c := testutil.StartChild(t, append([]string{"GC_TEST_HELPER=" + role, "GC_TEST_STORE=" + ts.Root(),
		"GC_TEST_RUNTIME=" + ts.RuntimeDir(), "GC_TEST_WRITERS=" + ts.WritersDir()}, env...), "-test.run=^$")
	cmd, in := c.Cmd, c.Stdin
	line, err := c.ReadLine()
	if err != nil || line != "ready" {
		in.Close()
		cmd.Wait()
		t.Fatalf("helper %s: %q, %v", role, line, err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			in.Close()
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	return cmd.Process.Pid, stop
}

// TestSecondGCFromProcess: a `pbsfs gc` in another process is refused
// while this one runs, names this process and exits non-zero.
func TestSecondGCFromProcess(t *testing.T) {
	ts := newTestStore(t)
	var out strings.Builder
	var code int
	hooks := Hooks{BeforeSweep: func(context.Context) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "GC_TEST_HELPER=gc", "GC_TEST_STORE="+ts.Root(), "GC_TEST_RUNTIME="+ts.RuntimeDir())
		cmd.Stderr = &out
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Error(err)
		}
	}}
	run(t, ts.collector(Options{Hooks: hooks}))
	if code != 1 {
		t.Errorf("second gc exit code %d, want 1; stderr: %s", code, out.String())
	}
	want := fmt.Sprintf("held by pid %d", os.Getpid())
	if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), ErrRunning.Error()) {
		t.Errorf("second gc said %q, want it to contain %q", out.String(), want)
	}
}

// TestForeignLockHolder: a process holding .lock that is not a registered
// pbsfs writer (a PBS daemon) makes the collector refuse to start.
func TestForeignLockHolder(t *testing.T) {
	tests := []struct {
		name    string
		off     safeguards
		wantErr bool
	}{
		{"check", safeguards{}, true},
		{"no check", safeguards{foreignCheck: true}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestStore(t)
			garbage := ts.chunks(2)
			ts.age(3*days, garbage...)
			pid, _ := helper(t, ts, "holdlock")
			_, err := ts.collector(Options{off: tc.off}).Run(context.Background())
			if got := errors.Is(err, ErrForeignLock); got != tc.wantErr {
				t.Fatalf("Run = %v, want ErrForeignLock=%v", err, tc.wantErr)
			}
			if tc.wantErr {
				if !strings.Contains(err.Error(), fmt.Sprintf("pid %d", pid)) {
					t.Errorf("error does not name pid %d: %v", pid, err)
				}
				if lost := ts.lost(garbage); len(lost) > 0 {
					t.Errorf("refused run removed %d chunks", len(lost))
				}
			}
		})
	}
}

// TestForeignLockHolderBeforeSweep: a foreign holder that appears during
// phase 1 stops the run before the sweep.
func TestForeignLockHolderBeforeSweep(t *testing.T) {
	ts := newTestStore(t)
	garbage := ts.chunks(2)
	ts.age(3*days, garbage...)
	hooks := Hooks{BeforeSweep: func(context.Context) { helper(t, ts, "holdlock") }}
	_, err := ts.collector(Options{Hooks: hooks}).Run(context.Background())
	if !errors.Is(err, ErrForeignLock) || !strings.Contains(err.Error(), "before sweep") {
		t.Fatalf("Run = %v, want ErrForeignLock before sweep", err)
	}
	if lost := ts.lost(garbage); len(lost) > 0 {
		t.Errorf("removed %d chunks", len(lost))
	}
}

// TestWriterInOtherProcess: a pbsfs writer of another process, registered
// two days ago and holding .lock, is not foreign, and the chunks it may
// have written since its start survive while older garbage goes.
func TestWriterInOtherProcess(t *testing.T) {
	tests := []struct {
		name     string
		off      safeguards
		wantLost bool
	}{
		{"registry", safeguards{}, false},
		{"no registry", safeguards{writers: true}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestStore(t)
			start := time.Now().Add(-2 * days)
			helper(t, ts, "writer", fmt.Sprintf("GC_TEST_START=%d", start.UnixNano()))
			written := ts.chunks(3) // by the writer, after its start, no index yet
			ts.age(36*time.Hour, written...)
			garbage := ts.chunks(2) // older than the writer
			ts.age(3*days, garbage...)
			st := run(t, ts.collector(Options{off: tc.off}))
			if lost := ts.lost(written); (len(lost) == len(written)) != tc.wantLost {
				t.Fatalf("lost %d of %d chunks of the running writer, want lost=%v", len(lost), len(written), tc.wantLost)
			}
			if lost := ts.lost(garbage); len(lost) != len(garbage) {
				t.Errorf("kept %d chunks older than the writer", len(garbage)-len(lost))
			}
			if tc.wantLost {
				return
			}
			// Younger than the writer means in use (spec §6.4): 3 + the zero chunk.
			if !st.OldestWriter.Equal(time.Unix(0, start.UnixNano())) || st.DiskChunks != 4 || st.RemovedChunks != 2 {
				t.Errorf("oldest writer %v (want %v), in use %d (want 4), removed %d (want 2)", st.OldestWriter, start, st.DiskChunks, st.RemovedChunks)
			}
		})
	}
}

// TestReuseFromProcessDuringSweep: a writer in another process reuses a
// chunk (Insert of an existing chunk, or TouchIfPresent) between the
// sweep's stat that condemned it and its unlink. With the prefix lock the
// writer waits and then finds the chunk gone (and writes it); without it,
// the writer reuses a chunk the sweep then deletes.
func TestReuseFromProcessDuringSweep(t *testing.T) {
	tests := []struct {
		name, role string
		off        safeguards
		wantLost   bool
	}{
		{"insert, prefix lock", "insert", safeguards{}, false},
		{"insert, no prefix lock", "insert", safeguards{prefixLock: true}, true},
		{"touch, prefix lock", "touch", safeguards{}, false},
		{"touch, no prefix lock", "touch", safeguards{prefixLock: true}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestStore(t)
			data := "chunk reused by " + tc.name
			d := store.DigestOf([]byte(data))
			blob, _ := ts.Codec().Encode([]byte(data), false)
			if _, err := ts.Chunks().Insert(context.Background(), d, blob); err != nil {
				t.Fatal(err)
			}
			ts.age(3*days, d)

			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "GC_TEST_HELPER="+tc.role, "GC_TEST_STORE="+ts.Root(),
				"GC_TEST_RUNTIME="+ts.RuntimeDir(), "GC_TEST_DATA="+data)
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			lines := bufio.NewReader(out)
			var outcome string
			test := testHooks{beforeUnlink: func(p string) {
				if p != ts.Chunks().Path(d) {
					return
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				if l, _ := lines.ReadString('\n'); l != "locking\n" {
					t.Errorf("helper said %q", l)
				}
				if tc.off.prefixLock {
					outcome, _ = lines.ReadString('\n') // it completes before the unlink
				}
			}}
			run(t, ts.collector(Options{off: tc.off, test: test}))
			if outcome == "" {
				outcome, _ = lines.ReadString('\n')
			}
			if err := cmd.Wait(); err != nil {
				t.Fatal(err)
			}
			reused := outcome == "reused=true\n"
			lost := !ts.exists(d)
			if reused && lost != tc.wantLost {
				t.Errorf("writer reused the chunk, lost=%v; want lost=%v", lost, tc.wantLost)
			}
			if !reused && tc.wantLost {
				t.Errorf("writer did not reuse the chunk (%q); the interleaving was not forced", outcome)
			}
			if !reused && tc.role == "insert" && lost {
				t.Error("insert did not write the swept chunk again")
			}
		})
	}
}

// TestPBSGCRunning: a PBS garbage collection holds .lock exclusively; the
// collector cannot take its shared lock and does not run.
func TestPBSGCRunning(t *testing.T) {
	ts := newTestStore(t)
	garbage := ts.chunks(1)
	ts.age(3*days, garbage...)
	helper(t, ts, "pbsgc")
	if _, err := ts.collector(Options{}).Run(context.Background()); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("Run = %v, want ErrLocked", err)
	}
	if !ts.exists(garbage[0]) {
		t.Error("chunk removed")
	}
}

// TestPBSGCExcluded: while the collector runs, a PBS garbage collection
// cannot take .lock.
func TestPBSGCExcluded(t *testing.T) {
	ts := newTestStore(t)
	var out []byte
	hooks := Hooks{BeforeSweep: func(context.Context) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "GC_TEST_HELPER=trypbsgc", "GC_TEST_STORE="+ts.Root())
		var err error
		if out, err = cmd.Output(); err != nil {
			t.Error(err)
		}
	}}
	run(t, ts.collector(Options{Hooks: hooks}))
	if string(out) != "busy\n" {
		t.Errorf("a PBS GC beside ours: %q, want busy", out)
	}
}

// TestForeignHolderOtherPidNamespace runs the collector in a new pid
// namespace with its own /proc (as in a container), where /proc/locks does
// not show the processes outside. A holder of .lock outside must still stop
// it; without one it runs.
func TestForeignHolderOtherPidNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unshare --pid needs root")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) not installed")
	}
	ts := newTestStore(t)
	garbage := ts.chunks(2)
	ts.age(3*days, garbage...)
	gcInNamespace := func() (string, error) {
		cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "GC_TEST_HELPER=gc", "GC_TEST_STORE="+ts.Root(), "GC_TEST_RUNTIME="+ts.RuntimeDir())
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	_, stop := helper(t, ts, "holdlock")
	out, err := gcInNamespace()
	t.Logf("refused: %s", strings.TrimSpace(out))
	if err == nil || !strings.Contains(out, ErrForeignLock.Error()) {
		t.Fatalf("gc in a pid namespace beside a holder outside: %v\n%s", err, out)
	}
	if lost := ts.lost(garbage); len(lost) > 0 {
		t.Fatalf("refused run removed %d chunks", len(lost))
	}
	stop()
	if out, err := gcInNamespace(); err != nil {
		t.Fatalf("gc in a pid namespace, nobody else holding .lock: %v\n%s", err, out)
	}
	if lost := ts.lost(garbage); len(lost) != 2 {
		t.Errorf("gc in a pid namespace removed %d of 2 garbage chunks", len(lost))
	}
}
