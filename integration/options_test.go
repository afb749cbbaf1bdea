package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReadOnly: with --read-only, rm -r is refused and nothing goes.
func TestReadOnly(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	conf := filepath.Join(t.TempDir(), "a.conf")
	os.WriteFile(conf, []byte("a"), 0o644)
	snap := e.backup(t, "host", "h", t0, "a.conf:"+conf)
	mnt, _ := e.mount(t, "--read-only")
	out, err := run("rm", "-r", filepath.Join(mnt, "host/h", snap))
	if err == nil || !strings.Contains(out, "Read-only file system") {
		t.Errorf("rm -r on a read-only mount: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(e.store, "host/h", snap, "index.json.blob")); err != nil {
		t.Errorf("snapshot lost files: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "host/h", snap, "a.conf")); err != nil || string(got) != "a" {
		t.Errorf("read on a read-only mount: %q, %v", got, err)
	}
}

// TestAllowOther: other users get in, and the kernel enforces the stored
// modes (default_permissions): nobody reads a 0644 file of an archive but
// not a 0600 one, and cannot prune.
func TestAllowOther(t *testing.T) {
	requireFUSE(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not installed")
	}
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	os.Chmod(src, 0o755)
	os.WriteFile(filepath.Join(src, "public"), []byte("public"), 0o644)
	os.WriteFile(filepath.Join(src, "secret"), []byte("secret"), 0o600)
	snap := e.backup(t, "ct", "1", t0, "root.pxar:"+src)
	mnt, _ := e.mount(t, "--allow-other")
	os.Chmod(filepath.Dir(mnt), 0o755) // let nobody reach the mount point
	asNobody := func(args ...string) (string, error) {
		return run("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups"}, args...)...)
	}
	dir := filepath.Join(mnt, "ct/1", snap, "root.pxar")
	if out, err := asNobody("cat", filepath.Join(dir, "public")); err != nil || out != "public" {
		t.Errorf("nobody reads public: %q, %v", out, err)
	}
	if out, err := asNobody("cat", filepath.Join(dir, "secret")); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("nobody reads secret: %q, %v", out, err)
	}
	if out, err := asNobody("rm", "-r", filepath.Join(mnt, "ct/1", snap)); err == nil {
		t.Errorf("nobody pruned a snapshot: %q", out)
	}
	if _, err := os.Stat(filepath.Join(e.store, "ct/1", snap)); err != nil {
		t.Errorf("snapshot after nobody's rm: %v", err)
	}
}

// TestSignalWhileBusy: SIGINT with a file open detaches the mount at once
// and the process exits 0 when the file is closed.
func TestSignalWhileBusy(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	conf := filepath.Join(t.TempDir(), "a.conf")
	os.WriteFile(conf, []byte("a"), 0o644)
	snap := e.backup(t, "host", "h", t0, "a.conf:"+conf)
	mnt := t.TempDir()
	cmd := exec.Command(bin, "mount", e.store, mnt)
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
	cmd.Process.Signal(os.Interrupt)
	for deadline := time.Now().Add(10 * time.Second); mounted(mnt); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still mounted after SIGINT\n%s", logs.String())
		}
	}
	buf := make([]byte, 1)
	if _, err := f.ReadAt(buf, 0); err != nil || buf[0] != 'a' {
		t.Errorf("open file after the detach: %q, %v", buf, err)
	}
	f.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("pbsfs mount: %v\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("pbsfs mount did not exit after the last file closed\n%s", logs.String())
	}
}
