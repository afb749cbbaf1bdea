// Package testutil holds what the tests of several packages need alike:
// whether FUSE can be used, what is mounted, buffers for logs written
// from several goroutines, child processes of the test binary, binaries
// built from this module and chunk files aged for the collector.
//
// It imports nothing of pbsfs, so that every package's tests (internal
// ones too) can use it.
package testutil

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RequireFUSE skips the test when this process cannot mount, unless
// PBSFS_REQUIRE_FUSE=1 (set by CI) asks for a failure instead.
func RequireFUSE(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err == nil {
		f.Close()
		if os.Geteuid() == 0 {
			return
		}
		err = syscall.EPERM
	}
	if os.Getenv("PBSFS_REQUIRE_FUSE") == "1" {
		t.Fatalf("FUSE required (PBSFS_REQUIRE_FUSE=1) but unusable: %v", err)
	}
	t.Skipf("no usable /dev/fuse (%v); set PBSFS_REQUIRE_FUSE=1 to fail instead", err)
}

// MountCount returns how many mounts of this mount namespace stand on
// dir (stacked mounts count each), from /proc/self/mountinfo.
func MountCount(dir string) int {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			n++
		}
	}
	return n
}

// Mounted reports whether dir is a mount point.
func Mounted(dir string) bool { return MountCount(dir) > 0 }

// SyncBuffer is a bytes.Buffer safe for concurrent writes, such as a
// logger's or a child process's output read while it runs.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Child is a child process of the test binary (a helper that takes
// locks or runs a collection in another process), talking over its
// stdin and stdout.
type Child struct {
	Cmd    *exec.Cmd
	Stdin  io.WriteCloser
	Stdout *bufio.Reader
}

// StartChild runs the test binary again with args and env added to this
// process's environment; its stderr is the test's.
func StartChild(t testing.TB, env []string, args ...string) *Child {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return &Child{Cmd: cmd, Stdin: in, Stdout: bufio.NewReader(out)}
}

// ReadLine returns the child's next line of output without its newline.
func (c *Child) ReadLine() (string, error) {
	line, err := c.Stdout.ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

// Build builds package pkg of this module into dir and returns the
// binary's path.
func Build(dir, pkg string) (string, error) {
	bin := filepath.Join(dir, filepath.Base(pkg))
	out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
	if err != nil {
		return "", &BuildError{pkg, err, string(out)}
	}
	return bin, nil
}

// BuildError is a failed go build with its output.
type BuildError struct {
	Pkg    string
	Err    error
	Output string
}

func (e *BuildError) Error() string { return "build " + e.Pkg + ": " + e.Err.Error() + "\n" + e.Output }

// SetAtime sets the access time of path to when and leaves its
// modification time alone, as a touch by the collector does.
func SetAtime(path string, when time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(when.UnixNano()), {Nsec: unix.UTIME_OMIT}}
	return unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, 0)
}

// AgeChunks sets the access time of every chunk file (64 hex digits)
// below the datastore root's .chunks to when and returns their count.
func AgeChunks(root string, when time.Time) (int, error) {
	n := 0
	err := filepath.WalkDir(filepath.Join(root, ".chunks"), func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || !isChunkName(d.Name()) {
			return nil
		}
		if err := SetAtime(p, when); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile
			}
			return err
		}
		n++
		return nil
	})
	return n, err
}

func isChunkName(name string) bool {
	if len(name) != 64 {
		return false
	}
	for _, c := range name {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
