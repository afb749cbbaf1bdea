package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestSIGTERMOpenFile: SIGTERM with a file open detaches the mount, serves
// the file for --shutdown-wait, then exits 0; the open file then fails
// with ENOTCONN (or EIO), never returns wrong data.
func TestSIGTERMOpenFile(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	conf := filepath.Join(t.TempDir(), "a.conf")
	os.WriteFile(conf, []byte("abc"), 0o644)
	snap := e.backup(t, "host", "h", t0, "a.conf:"+conf)
	mnt := t.TempDir()
	cmd := exec.Command(bin, "mount", "--shutdown-wait", "300ms", e.store, mnt)
	cmd.Env = append(os.Environ(), "PBSFS_RUNTIME_DIR="+e.run)
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		if mounted(mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); !mounted(mnt); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("mount did not come up\n%s", logs.String())
		}
	}
	f, err := os.Open(filepath.Join(mnt, "host/h", snap, "a.conf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("pbsfs mount after SIGTERM with an open file: %v\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("pbsfs mount did not exit\n%s", logs.String())
	}
	if mounted(mnt) {
		t.Errorf("still mounted")
	}
	buf := make([]byte, 3)
	n, err := f.ReadAt(buf, 0)
	if err == nil || !(errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.EIO)) {
		t.Errorf("read of a file open across the stop: %q, %v; want ENOTCONN or EIO", buf[:n], err)
	}
}
