package fs

import (
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSeekdirPastEnd: seeking a directory of an archive past its last
// entry and reading again ends the listing; it used to spin forever in
// the daemon (any user could hang a handler with lseek and getdents).
func TestSeekdirPastEnd(t *testing.T) {
	src := t.TempDir()
	tree(t, src)
	s := newStore(t, nil)
	ref := backup(t, s, snap{g: ct, t: t0, pxarDir: src})
	mnt, _ := mountStore(t, s, Options{})
	dir := filepath.Join(mnt, "ct/200", ref.TimeString(), "root.pxar")
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	if n, err := unix.Getdents(fd, buf); err != nil || n == 0 {
		t.Fatalf("first getdents: %d, %v", n, err)
	}
	done := make(chan error, 1)
	go func() {
		if _, err := unix.Seek(fd, 1000, 0); err != nil {
			done <- err
			return
		}
		n, err := unix.Getdents(fd, buf)
		if err == nil && n != 0 {
			t.Errorf("getdents past the end: %d bytes, want 0", n)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("seek and getdents past the end: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("getdents after a seek past the end did not return")
	}
}
