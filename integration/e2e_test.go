package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/internal/testutil"
	"golang.org/x/sys/unix"
)

var t0 = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

// statLines runs stat over every entry below dir (relative names) and
// returns the sorted lines: type and mode, owner, size, nanosecond mtime,
// link count, device numbers and link target. Directory sizes and link
// counts depend on the file system, so directories omit them.
func statLines(t *testing.T, dir string) []string {
	t.Helper()
	var lines []string
	for _, q := range []struct{ find, format string }{
		{"!d", "%n|%f|%u|%g|%s|%y|%h|%t:%T|%N"},
		{"d", "%n|%f|%u|%g|%y"},
	} {
		args := []string{"."}
		if q.find == "d" {
			args = append(args, "-type", "d")
		} else {
			args = append(args, "!", "-type", "d")
		}
		args = append(args, "-exec", "stat", "-c", q.format, "{}", "+")
		out, err := runIn(dir, "find", args...)
		if err != nil {
			t.Fatalf("find | stat in %s: %v\n%s", dir, err, out)
		}
		lines = append(lines, strings.Split(strings.TrimSpace(out), "\n")...)
	}
	sort.Strings(lines)
	return lines
}

// xattrs lists every entry's extended attributes (ACLs and capabilities
// included) through the system calls.
func xattrs(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		buf := make([]byte, 1<<16)
		n, err := unix.Llistxattr(p, buf)
		if err != nil {
			t.Errorf("listxattr %s: %v", p, err)
			return nil
		}
		var names []string
		for _, name := range strings.Split(string(buf[:n]), "\x00") {
			if name != "" && !strings.HasPrefix(name, "security.selinux") {
				names = append(names, name)
			}
		}
		sort.Strings(names)
		for _, name := range names {
			v := make([]byte, 1<<16)
			k, err := unix.Lgetxattr(p, name, v)
			if err != nil {
				t.Errorf("getxattr %s %s: %v", p, name, err)
				continue
			}
			out = append(out, fmt.Sprintf("%s %s=%x", rel, name, v[:k]))
		}
		return nil
	})
	return out
}

func diffLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if slices.Equal(got, want) {
		return
	}
	n := 0
	for i := 0; i < max(len(got), len(want)) && n < 10; i++ {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			t.Errorf("%s line %d:\n mount: %s\nsource: %s", what, i, g, w)
			n++
		}
	}
	t.Errorf("%s: %d lines through the mount, %d in the source", what, len(got), len(want))
}

// TestEndToEnd backs up a generated tree (plain and split) and a disk
// image with the binary, mounts the store with the binary, and compares
// with real tools.
func TestEndToEnd(t *testing.T) {
	testutil.RequireFUSE(t)
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	info := genTree(t, src, 5200)
	img := filepath.Join(t.TempDir(), "disk.img")
	randomFile(t, img, 37<<20+12345, 9)
	conf := filepath.Join(t.TempDir(), "qemu-server.conf")
	os.WriteFile(conf, []byte("memory: 4096\nscsi0: local:200/disk.img\n"), 0o644)

	plain := e.backup(t, "ct", "100", t0, "root.pxar:"+src)
	split := filepath.Base(e.backup(t, "ct", "100", t0.Add(time.Hour), "--split", "root.pxar:"+src))
	vm1 := e.backup(t, "vm", "200", t0, "drive-scsi0.img:"+img, "qemu-server.conf:"+conf)
	vm2 := e.backup(t, "vm", "200", t0.Add(time.Hour), "drive-scsi0.img:"+img, "qemu-server.conf:"+conf)
	// An archive's root directory takes the owner and mode of its index
	// file (root 0644 -> 0755), less what .chunks and its prefix
	// directories on disk (0750) deny (fs/gate.go); with them open to all
	// it equals the source's root.
	openChunks(t, e.store)
	mnt, _ := e.mount(t)

	wantStat, wantX := statLines(t, src), xattrs(t, src)
	for _, snap := range []string{plain, split} {
		root := filepath.Join(mnt, "ct/100", snap, "root.pxar")
		t.Run("tree "+snap, func(t *testing.T) {
			args := []string{"-r", "--no-dereference"}
			for _, s := range info.specials {
				args = append(args, "-x", s)
			}
			if out, err := run("diff", append(args, src, root)...); err != nil {
				t.Errorf("diff -r: %v\n%.2000s", err, out)
			}
			diffLines(t, "stat", statLines(t, root), wantStat)
			diffLines(t, "xattrs", xattrs(t, root), wantX)
			for _, tool := range [][]string{
				{"getfattr", "-R", "-P", "-d", "-m", "-", "-e", "hex", "."},
				{"getfacl", "-R", "-P", "."},
			} {
				if _, err := exec.LookPath(tool[0]); err != nil {
					t.Logf("%s not installed; the xattr comparison above covers it", tool[0])
					continue
				}
				want, err1 := outputIn(src, tool[0], tool[1:]...)
				got, err2 := outputIn(root, tool[0], tool[1:]...)
				// Both print one block per entry in directory order,
				// which differs (pxar lists in hash order).
				got, want = sortBlocks(got), sortBlocks(want)
				if got != want {
					diffLines(t, tool[0], strings.Split(got, "\n"), strings.Split(want, "\n"))
				}
				if (err1 == nil) != (err2 == nil) {
					t.Errorf("%s: exit %v through the mount, %v on the source", tool[0], err2, err1)
				}
			}
			for _, group := range info.hardlinks {
				var inos []string
				for _, p := range group {
					rel, _ := filepath.Rel(src, p)
					out, err := run("stat", "-c", "%i %h", filepath.Join(root, rel))
					if err != nil {
						t.Fatal(err)
					}
					inos = append(inos, strings.TrimSpace(out))
				}
				want := fmt.Sprintf("%s %d", strings.Fields(inos[0])[0], len(group))
				for _, got := range inos {
					if got != want {
						t.Errorf("hardlinks %v: inode and nlink %q, want all %q", group, inos, want)
						break
					}
				}
			}
			out, err := runIn(root, "sh", "-c", "find . | wc -l")
			want, _ := runIn(src, "sh", "-c", "find . | wc -l")
			if err != nil || out != want {
				t.Errorf("find | wc -l: %q, want %q (%v)", out, want, err)
			}
		})
	}

	t.Run("image", func(t *testing.T) {
		for _, snap := range []string{vm1, vm2, "latest"} {
			if out, err := run("cmp", img, filepath.Join(mnt, "vm/200", snap, "drive-scsi0.img")); err != nil {
				t.Errorf("cmp %s: %v\n%s", snap, err, out)
			}
		}
		got, err := os.ReadFile(filepath.Join(mnt, "vm/200/latest/qemu-server.conf"))
		want, _ := os.ReadFile(conf)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("qemu-server.conf: %q, %v", got, err)
		}
		if out, _ := run("readlink", filepath.Join(mnt, "vm/200/latest")); strings.TrimSpace(out) != vm2 {
			t.Errorf("latest -> %q, want %s", out, vm2)
		}
		out, err := run("stat", "-c", "%Y %s", filepath.Join(mnt, "vm/200", vm1), filepath.Join(mnt, "vm/200", vm1, "drive-scsi0.img"))
		fi, _ := os.Stat(img)
		want2 := fmt.Sprintf("%d 0\n%d %d\n", t0.Unix(), t0.Unix(), fi.Size())
		if err != nil || out != want2 {
			t.Errorf("stat snapshot and image: %q, want %q", out, want2)
		}
		if out, err := run("ls", filepath.Join(mnt, "vm/200", vm1)); err != nil || out != "drive-scsi0.img\nindex.json\nqemu-server.conf\n" {
			t.Errorf("ls snapshot: %q, %v", out, err)
		}
	})

	t.Run("rm", func(t *testing.T) {
		s := e.open(t)
		// A lock held by another process (this test) while pbsfs
		// mount tries to forget.
		lk, err := s.Locks().LockSnapshot(nil, "vm", "200", vm2, false)
		if err != nil {
			t.Fatal(err)
		}
		out, err := run("rm", "-r", filepath.Join(mnt, "vm/200", vm2))
		lk.Unlock()
		if err == nil || !strings.Contains(out, "Device or resource busy") {
			t.Errorf("rm -r of a locked snapshot: %v\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Join(e.store, "vm/200", vm2, "drive-scsi0.img.fidx")); err != nil {
			t.Errorf("locked snapshot lost files: %v", err)
		}

		e.pbsfs(t, "protect", "ct/100/"+plain)
		out, err = run("rm", "-r", filepath.Join(mnt, "ct/100", plain))
		if err == nil || !strings.Contains(out, "Operation not permitted") {
			t.Errorf("rm -r of a protected snapshot: %v\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Join(e.store, "ct/100", plain, "root.pxar.didx")); err != nil {
			t.Errorf("protected snapshot lost files: %v", err)
		}
		out, err = run("rm", filepath.Join(mnt, "ct/100", split, "root.pxar/special/fifo-a"))
		if err == nil || !strings.Contains(out, "Read-only file system") {
			t.Errorf("rm inside an archive: %v\n%s", err, out)
		}

		start := time.Now()
		if out, err := run("rm", "-r", filepath.Join(mnt, "ct/100", split)); err != nil {
			t.Errorf("rm -r: %v\n%s", err, out)
		}
		t.Logf("rm -r of a snapshot with a %d-file archive: %v", info.files, time.Since(start))
		if _, err := os.Stat(filepath.Join(e.store, "ct/100", split)); !os.IsNotExist(err) {
			t.Errorf("snapshot directory after rm -r: %v", err)
		}
		if out, _ := run("readlink", filepath.Join(mnt, "ct/100/latest")); strings.TrimSpace(out) != plain {
			t.Errorf("latest after rm -r -> %q, want %s", out, plain)
		}
		if err := syscall.Rmdir(filepath.Join(mnt, "vm/200", vm1)); err != nil {
			t.Errorf("rmdir snapshot: %v", err)
		}
		if out, err := run("rm", "-r", filepath.Join(mnt, "vm/200")); err != nil {
			t.Errorf("rm -r group: %v\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Join(e.store, "vm/200")); !os.IsNotExist(err) {
			t.Errorf("group after rm -r: %v", err)
		}
		if out, _ := run("ls", mnt); out != "ct\n" {
			t.Errorf("ls after the prune: %q", out)
		}
	})
}

// sortBlocks sorts the blank-line separated blocks of out.
func sortBlocks(out string) string {
	blocks := strings.Split(strings.TrimSpace(out), "\n\n")
	sort.Strings(blocks)
	return strings.Join(blocks, "\n\n")
}

// outputIn runs a tool in dir and returns its standard output.
func outputIn(dir, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	return string(out), err
}
