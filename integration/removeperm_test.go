package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestAllowOtherRemoveDiskModes: with --allow-other, removing a snapshot
// or a group through the mount asks for what removing it on disk would:
// write and search permission on the directory holding it (with its
// sticky bit), and on the directories whose entries go. The kernel alone
// checks only the directory it sees the name in (the snapshot directory
// for the unlink of index.json). Each removal is tried as a second user
// through the real binary's mount, and the same removal (rm -r of the
// directory) on a copy of the store on disk, which must agree.
func TestAllowOtherRemoveDiskModes(t *testing.T) {
	requireSetpriv(t)
	e := newEnv(t)
	conf := filepath.Join(t.TempDir(), "a.conf")
	os.WriteFile(conf, []byte("a"), 0o644)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "d"), 0o755)
	for i := range 50 {
		os.WriteFile(filepath.Join(src, "d", fmt.Sprint(i)), []byte("x"), 0o644)
	}
	snap := e.backup(t, "vm", "100", t0, "a.conf:"+conf, "root.pxar:"+src)
	e.backup(t, "vm", "103", t0, "a.conf:"+conf, "root.pxar:"+src)
	for _, g := range []string{"101", "102", "104"} {
		e.backup(t, "vm", g, t0, "a.conf:"+conf)
	}
	e.backup(t, "ct", "200", t0, "a.conf:"+conf)
	openToAll(t, e.store)
	const backupID, member, nobody = 34, 4321, 65534
	chown := func(root string) {
		err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, backupID, backupID)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	chown(e.store)
	modes := []struct {
		rel  string
		mode os.FileMode
	}{
		{".", 0o755}, {"vm", 0o755}, {"ct", 0o777},
		// Snapshot directory open to all, group closed: on disk
		// nobody empties the snapshot but cannot take it out.
		{"vm/100", 0o755}, {"vm/100/" + snap, 0o777},
		// Group open to all, snapshot closed: nobody cannot empty it.
		{"vm/101", 0o777}, {"vm/101/" + snap, 0o755},
		// Sticky group: only the owners may take snapshots out.
		{"vm/102", 0o1777}, {"vm/102/" + snap, 0o777},
		// Group-writable for the backup group throughout.
		{"vm/103", 0o775}, {"vm/103/" + snap, 0o775},
		{"vm/104", 0o775}, {"vm/104/" + snap, 0o775},
		// Type directory open to all, group closed.
		{"ct/200", 0o755}, {"ct/200/" + snap, 0o777},
	}
	for _, m := range modes {
		// syscall.Chmod: os.Chmod takes the sticky bit as os.ModeSticky.
		if err := syscall.Chmod(filepath.Join(e.store, m.rel), uint32(m.mode)); err != nil {
			t.Fatal(err)
		}
	}
	// The disk twins, where the same removals are tried, one a case:
	// copies made before the mount removes anything.
	twins := t.TempDir()
	twin := func(i int) string {
		return filepath.Join(twins, fmt.Sprint(i))
	}
	mnt, _ := e.mount(t, "--allow-other")
	os.Chmod(filepath.Dir(mnt), 0o755)

	cases := []struct {
		who    string
		uid    int
		groups string // supplementary groups, "" for none
		cmd    string // rm or rmdir
		rel    string // the path removed, in the mount
		disk   string // what goes on disk: rm -r of it in the twin
		ok     bool
	}{
		{"nobody", nobody, "", "rm", "vm/100/" + snap + "/index.json", "vm/100/" + snap, false},
		{"nobody", nobody, "", "rm -r", "vm/100/" + snap, "vm/100/" + snap, false},
		{"nobody", nobody, "", "rmdir", "vm/101/" + snap, "vm/101/" + snap, false},
		{"nobody", nobody, "", "rmdir", "vm/102/" + snap, "vm/102/" + snap, false},
		{"nobody", nobody, "", "rmdir", "ct/200", "ct/200", false},
		{"nobody", nobody, "", "rm -r", "vm/103/" + snap, "vm/103/" + snap, false},
		// A member of the backup group by its supplementary groups.
		{"member", member, "34", "rm -r", "vm/103/" + snap, "vm/103/" + snap, true},
		{"member", member, "34", "rmdir", "vm/104", "vm/104", false}, // vm is 0755
		{"member", member, "34", "rmdir", "vm/104/" + snap, "vm/104/" + snap, true},
	}
	for i := range cases {
		if out, err := run("cp", "-a", e.store, twin(i)); err != nil {
			t.Fatalf("cp: %v\n%s", err, out)
		}
	}
	openToAll(t, twin(0))
	for i, tc := range cases {
		args := append(strings.Fields(tc.cmd), filepath.Join(mnt, tc.rel))
		out, err := asGroups(tc.uid, nobody, tc.groups, args...)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %s %s: %v (%s), want ok=%v", tc.who, tc.cmd, tc.rel, err, strings.TrimSpace(out), tc.ok)
		}
		_, serr := os.Stat(filepath.Join(e.store, tc.disk))
		if gone := serr != nil; gone != tc.ok {
			t.Errorf("%s: %s %s: on disk gone=%v (%v), want %v", tc.who, tc.cmd, tc.rel, gone, serr, tc.ok)
		}
		dout, derr := asGroups(tc.uid, nobody, tc.groups, "rm", "-r", filepath.Join(twin(i), tc.disk))
		if (derr == nil) != tc.ok {
			t.Errorf("%s: rm -r %s on disk: %v (%s), but the mount's %s %s must agree (ok=%v)", tc.who, tc.disk, derr, strings.TrimSpace(dout), tc.cmd, tc.rel, tc.ok)
		}
	}
	// The refused rm -r did not walk the archive.
	if out, _ := asGroups(nobody, nobody, "", "rm", "-r", filepath.Join(mnt, "vm/100", snap)); strings.Contains(out, "root.pxar/") {
		t.Errorf("refused rm -r walked the archive:\n%s", out)
	}
}

// asGroups runs a command as uid:gid with the supplementary groups
// groups (comma-separated, "" for none).
func asGroups(uid, gid int, groups string, args ...string) (string, error) {
	g := "--clear-groups"
	if groups != "" {
		g = "--groups=" + groups
	}
	return run("setpriv", append([]string{fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", gid), g}, args...)...)
}
