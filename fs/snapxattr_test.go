package fs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func snapXattr(t *testing.T, p, name string) (string, error) {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := unix.Getxattr(p, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func TestSnapshotXattrs(t *testing.T) {
	s := newStore(t, nil)
	ref := backup(t, s, snap{g: vm, t: t0, image: randomBytes(5, 5000), blobs: map[string][]byte{"qemu-server.conf": []byte("x")}})
	mnt, _ := mountStore(t, s, Options{})
	dir := filepath.Join(mnt, "vm/100", ref.TimeString())

	buf := make([]byte, 1024)
	n, err := unix.Listxattr(dir, buf)
	if err != nil || strings.Join(strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00"), ",") != strings.Join(snapshotXattrNames, ",") {
		t.Fatalf("listxattr %q %v", buf[:n], err)
	}
	man, _ := s.LoadManifest(ref)
	var size uint64
	for _, f := range man.Files {
		size += f.Size
	}
	for name, want := range map[string]string{xattrProtected: "0", xattrNotes: "", xattrVerify: "none", xattrOwner: "root@pam",
		xattrSize: strconv.FormatUint(size, 10)} {
		if got, err := snapXattr(t, dir, name); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
	// Protection through setfattr reaches the store and refuses rm -r.
	if err := unix.Setxattr(dir, xattrProtected, []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	if si, _ := s.Snapshot(ref); !si.Protected {
		t.Fatal("setxattr did not protect the snapshot")
	}
	if out, err := exec.Command("rm", "-r", dir).CombinedOutput(); err == nil || !strings.Contains(string(out), "Operation not permitted") {
		t.Errorf("rm -r of a protected snapshot: %v %s", err, out)
	}
	if _, err := os.Stat(s.Path(ref.Dir())); err != nil {
		t.Fatalf("protected snapshot removed: %v", err)
	}
	// Notes round trip, through the manifest.
	if err := unix.Setxattr(dir, xattrNotes, []byte("before upgrade\nsecond line"), 0); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.LoadManifest(ref); m.Notes() != "before upgrade\nsecond line" {
		t.Errorf("manifest notes %q", m.Notes())
	}
	if got, _ := snapXattr(t, dir, xattrNotes); got != "before upgrade\nsecond line" {
		t.Errorf("notes read back %q", got)
	}
	// Read-only attributes and bad values.
	for _, tc := range []struct {
		name, value string
		want        syscall.Errno
	}{{xattrSize, "1", syscall.EPERM}, {xattrVerify, "ok", syscall.EPERM}, {xattrProtected, "yes", syscall.EINVAL}, {"user.other", "x", syscall.ENOTSUP}} {
		if err := unix.Setxattr(dir, tc.name, []byte(tc.value), 0); !errors.Is(err, tc.want) {
			t.Errorf("setxattr %s=%s: %v, want %v", tc.name, tc.value, err, tc.want)
		}
	}
	if err := unix.Setxattr(dir, xattrProtected, []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("rm", "-r", dir).CombinedOutput(); err != nil {
		t.Errorf("rm -r after unprotect: %v %s", err, out)
	}
}

func TestSnapshotXattrsReadOnly(t *testing.T) {
	s := newStore(t, nil)
	ref := backup(t, s, snap{g: vm, t: t0, image: randomBytes(6, 100)})
	mnt, _ := mountStore(t, s, Options{ReadOnly: true})
	dir := filepath.Join(mnt, "vm/100", ref.TimeString())
	if got, err := snapXattr(t, dir, xattrProtected); err != nil || got != "0" {
		t.Errorf("getxattr on a read-only mount: %q %v", got, err)
	}
	if err := unix.Setxattr(dir, xattrProtected, []byte("1"), 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("setxattr on a read-only mount: %v", err)
	}
	if si, _ := s.Snapshot(ref); si.Protected {
		t.Error("read-only mount protected the snapshot")
	}
}
