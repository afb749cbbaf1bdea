package lock

import (
	"context"
	"errors"
	"fmt"
	"github.com/pbsfs/pbsfs/internal/testutil"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Cross-process tests re-run the test binary as a helper process that
// takes one lock, reports the outcome on its stdout and holds the lock
// until its stdin is closed (or it is killed).

const helperEnv = "PBSFS_LOCK_HELPER"

// Helper replies.
const (
	replyOK     = "ok"
	replyLocked = "locked"
)

// TestHelperProcess is not a real test: it is the body of the helper
// process started by startHelper.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("runs only as a helper process")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	reply, err := helperDo(args)
	switch {
	case err == nil:
		fmt.Printf("%s %s\n", replyOK, reply)
	case errors.Is(err, ErrLocked):
		fmt.Printf("%s %v\n", replyLocked, err)
	default:
		fmt.Printf("err %v\n", err)
	}
	// Hold whatever was taken until the parent closes our stdin.
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// helperDo takes the lock args describe and returns a detail for the
// parent (a path, for the writer registry).
func helperDo(args []string) (string, error) {
	if len(args) < 2 {
		return "", fmt.Errorf("helper: bad args %q", args)
	}
	excl := func(s string) bool { return s == "exclusive" }
	nsOf := func(s string) []string {
		if s == "" || s == "-" {
			return nil
		}
		return strings.Split(s, "/")
	}
	switch args[0] {
	case "proc": // proc shared|exclusive PATH
		p, err := OpenProcessLocker(args[2])
		if err != nil {
			return "", err
		}
		if excl(args[1]) {
			_, err = p.Exclusive()
		} else {
			_, err = p.Shared()
		}
		return "", err
	case "group": // group shared|exclusive RUNTIME STORE ROOT NS TYPE ID
		l := NewLocks(args[2], args[3], args[4])
		_, err := l.LockGroup(nsOf(args[5]), args[6], args[7], excl(args[1]))
		return "", err
	case "snapshot": // snapshot shared|exclusive RUNTIME STORE ROOT NS TYPE ID TIME
		l := NewLocks(args[2], args[3], args[4])
		_, err := l.LockSnapshot(nsOf(args[5]), args[6], args[7], args[8], excl(args[1]))
		return "", err
	case "manifest": // manifest - RUNTIME STORE ROOT NS TYPE ID TIME
		l := NewLocks(args[2], args[3], args[4])
		_, err := l.LockManifest(context.Background(), nsOf(args[5]), args[6], args[7], args[8])
		return "", err
	case "prefix": // prefix shared|exclusive DIR
		_, err := TryLockPrefixDir(args[2], excl(args[1]))
		return "", err
	case "writer": // writer - DIR
		r, err := RegisterWriter(args[2])
		if err != nil {
			return "", err
		}
		return r.Path(), nil
	}
	return "", fmt.Errorf("helper: unknown command %q", args[0])
}

// helper is a running helper process.
type helper struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	reply  string // replyOK, replyLocked or "err"
	detail string
	done   bool
}

// startHelper runs a helper process with args and waits for its reply.
// The helper is stopped at the end of the test if not before.
func startHelper(t *testing.T, args ...string) *helper {
	t.Helper()
	c := testutil.StartChild(t, []string{helperEnv + "=1"}, append([]string{"-test.run=^TestHelperProcess$", "--"}, args...)...)
	cmd, stdin, stdout := c.Cmd, c.Stdin, c.Stdout
	h := &helper{t: t, cmd: cmd, stdin: stdin}
	t.Cleanup(h.stop)
	line, err := stdout.ReadString('\n')
	if err != nil {
		t.Fatalf("helper %q: no reply: %v", args, err)
	}
	h.reply, h.detail, _ = strings.Cut(strings.TrimSpace(line), " ")
	if h.reply != replyOK && h.reply != replyLocked {
		t.Fatalf("helper %q failed: %s", args, line)
	}
	return h
}

// pid returns the helper's process id.
func (h *helper) pid() int { return h.cmd.Process.Pid }

// stop lets the helper exit, releasing its locks, and waits for it.
func (h *helper) stop() {
	if h.done {
		return
	}
	h.done = true
	h.stdin.Close()
	if err := h.cmd.Wait(); err != nil {
		h.t.Errorf("helper exit: %v", err)
	}
}

// kill kills the helper without letting it clean up, and waits for it.
func (h *helper) kill() {
	if h.done {
		return
	}
	h.done = true
	h.cmd.Process.Kill()
	h.cmd.Wait()
	h.stdin.Close()
}

// childTry runs a helper that tries a lock, returns its reply and stops it.
func childTry(t *testing.T, args ...string) string {
	t.Helper()
	h := startHelper(t, args...)
	h.stop()
	return h.reply
}

// waitFor polls cond until it holds or 10 s pass. It waits for an
// observable kernel state (a blocked lock request), not for time.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// fdsOn counts this process's descriptors open on path.
func fdsOn(t *testing.T, path string) int {
	t.Helper()
	want, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == want {
			n++
		}
	}
	return n
}
