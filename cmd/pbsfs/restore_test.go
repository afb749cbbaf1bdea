package main

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRestoreSetIDAndSpecials: a user's set-uid file restored without
// owners (--no-owners, --ignore-ownership) loses its set-id bits instead
// of becoming a set-uid file of the restoring user; with owners (as root)
// it comes back as it was. --no-device-nodes, --no-fifos and --no-sockets
// each leave their kind out.
func TestRestoreSetIDAndSpecials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to back up a file of another user and device nodes")
	}
	_, flags := newStore(t)
	tree := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	suid := filepath.Join(tree, "suid")
	must(os.WriteFile(suid, []byte("#!/bin/sh\n"), 0o755))
	must(os.Chown(suid, 1000, 1000))
	must(os.Chmod(suid, 0o755|os.ModeSetuid))
	sgid := filepath.Join(tree, "sgid")
	must(os.WriteFile(sgid, nil, 0o711))
	must(os.Chown(sgid, 1000, 50))
	must(os.Chmod(sgid, 0o711|os.ModeSetgid))
	must(unix.Mknod(filepath.Join(tree, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(filepath.Join(tree, "loop"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 0))))
	must(unix.Mkfifo(filepath.Join(tree, "fifo"), 0o644))
	must(unix.Mknod(filepath.Join(tree, "sock"), unix.S_IFSOCK|0o755, 0))
	args := append([]string{"backup", "--type", "host", "--id", "h", "--time", "2026-11-20T10:00:00Z"}, flags...)
	if code, _, errs := cli(t, append(args, "root.pxar:"+tree)...); code != 0 {
		t.Fatalf("backup: %s", errs)
	}
	snap := "host/h/2026-11-20T10:00:00Z"
	restore := func(extra ...string) string {
		t.Helper()
		target := filepath.Join(t.TempDir(), "r")
		if code, _, errs := cli(t, append(append([]string{"restore", snap, "root.pxar", target}, flags...), extra...)...); code != 0 {
			t.Fatalf("restore %q: %s", extra, errs)
		}
		return target
	}
	stat := func(p string) (mode, uid uint32, err error) {
		var st unix.Stat_t
		err = unix.Lstat(p, &st)
		return st.Mode, st.Uid, err
	}
	for _, flag := range []string{"--no-owners", "--ignore-ownership"} {
		dst := restore(flag)
		for name, want := range map[string]uint32{"suid": 0o755, "sgid": 0o711} {
			mode, uid, err := stat(filepath.Join(dst, name))
			if err != nil || mode&0o7777 != want || uid != 0 {
				t.Errorf("%s: %s: mode %o uid %d (%v), want %o uid 0", flag, name, mode&0o7777, uid, err, want)
			}
		}
	}
	dst := restore()
	for name, want := range map[string]uint32{"suid": 0o4755, "sgid": 0o2711} {
		mode, uid, err := stat(filepath.Join(dst, name))
		if err != nil || mode&0o7777 != want || uid != 1000 {
			t.Errorf("with owners: %s: mode %o uid %d (%v), want %o uid 1000", name, mode&0o7777, uid, err, want)
		}
	}
	for _, tc := range []struct {
		flag string
		gone []string
	}{
		{"", nil},
		{"--no-device-nodes", []string{"null", "loop"}},
		{"--no-fifos", []string{"fifo"}},
		{"--no-sockets", []string{"sock"}},
	} {
		var dst string
		if tc.flag == "" {
			dst = restore()
		} else {
			dst = restore(tc.flag)
		}
		for name, typ := range map[string]uint32{"null": unix.S_IFCHR, "loop": unix.S_IFBLK, "fifo": unix.S_IFIFO, "sock": unix.S_IFSOCK} {
			mode, _, err := stat(filepath.Join(dst, name))
			gone := false
			for _, g := range tc.gone {
				gone = gone || g == name
			}
			if gone != (err != nil) || (!gone && mode&unix.S_IFMT != typ) {
				t.Errorf("restore %s: %s: mode %o, %v; want gone=%v", tc.flag, name, mode, err, gone)
			}
		}
		if _, err := os.Stat(filepath.Join(dst, "suid")); err != nil {
			t.Errorf("restore %s: regular file missing: %v", tc.flag, err)
		}
	}
}
