package integration

import (
	"github.com/pbsfs/pbsfs/internal/testutil"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestProtectionAndNotesThroughMount round-trips protection and notes
// between the CLI and the mount's xattrs with the real setfattr/getfattr,
// and checks that a snapshot protected through setfattr resists rm -r.
func TestProtectionAndNotesThroughMount(t *testing.T) {
	testutil.RequireFUSE(t)
	for _, tool := range []string{"setfattr", "getfattr"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("PBSFS_REQUIRE_FUSE") == "1" {
				t.Fatalf("%s missing (install attr)", tool)
			}
			t.Skipf("%s missing (install attr)", tool)
		}
	}
	e := newEnv(t)
	conf := filepath.Join(t.TempDir(), "vm.conf")
	os.WriteFile(conf, []byte("memory: 1024\n"), 0o644)
	snap := e.backup(t, "vm", "100", t0, "qemu-server.conf:"+conf)
	ref := "vm/100/" + snap
	mnt, _ := e.mount(t)
	dir := filepath.Join(mnt, ref)

	getf := func(name string) string {
		out, err := run("getfattr", "--absolute-names", "--only-values", "-n", name, dir)
		if err != nil {
			t.Fatalf("getfattr %s: %v %s", name, err, out)
		}
		return out
	}
	// CLI → mount.
	e.pbsfs(t, "protect", ref)
	e.pbsfs(t, "notes", ref, "--set", "set by the CLI")
	if got := getf("user.pbs.protected"); got != "1" {
		t.Errorf("protected after pbsfs protect: %q", got)
	}
	if got := getf("user.pbs.notes"); got != "set by the CLI" {
		t.Errorf("notes: %q", got)
	}
	if out, _ := run("getfattr", "--absolute-names", "-d", dir); !strings.Contains(out, `user.pbs.size="`) || !strings.Contains(out, `user.pbs.owner="root@pam"`) {
		t.Errorf("getfattr -d:\n%s", out)
	}
	// Mount → CLI.
	if out, err := run("setfattr", "-n", "user.pbs.protected", "-v", "0", dir); err != nil {
		t.Fatal(err, out)
	}
	if out, err := run("setfattr", "-n", "user.pbs.notes", "-v", "set through the mount", dir); err != nil {
		t.Fatal(err, out)
	}
	if got := e.pbsfs(t, "notes", ref); strings.TrimSpace(got) != "set through the mount" {
		t.Errorf("pbsfs notes: %q", got)
	}
	if out, err := e.try("forget", ref); err != nil {
		t.Fatalf("forget after unprotect through the mount: %v %s", err, out)
	}
	// Protected through setfattr: rm -r refused, nothing removed.
	snap2 := e.backup(t, "vm", "100", t0.Add(1e9*3600), "qemu-server.conf:"+conf)
	dir2 := filepath.Join(mnt, "vm/100", snap2)
	if out, err := run("setfattr", "-n", "user.pbs.protected", "-v", "1", dir2); err != nil {
		t.Fatal(err, out)
	}
	if out, err := run("rm", "-r", dir2); err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Errorf("rm -r of a snapshot protected by setfattr: %v %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(e.store, "vm/100", snap2, "index.json.blob")); err != nil {
		t.Errorf("protected snapshot lost its manifest: %v", err)
	}
}
