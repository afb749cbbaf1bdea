package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/internal/testutil"
)

// backupRSSLimit is the peak RSS a backup may reach on any input (issue
// 14): the chunks in flight are bounded, not the input.
const backupRSSLimit = 150 << 20

// TestBackupPeakRSS backs up a tree of small files and a 320 MiB
// incompressible file (many times the memory budget) with the real binary
// and checks the process's peak RSS from the kernel's accounting.
func TestBackupPeakRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 320 MiB")
	}
	e := newEnv(t)
	src := t.TempDir()
	smallTree(t, filepath.Join(src, "small"), 3000)
	pureRandom(t, filepath.Join(src, "big.bin"), 320<<20)
	for i, mode := range []string{"legacy", "data"} {
		cmd := exec.Command(bin, "backup", "--no-progress", "--id", "mem", "--change-detection-mode", mode,
			"--time", time.Unix(1700000000+int64(i)*60, 0).UTC().Format(time.RFC3339), "root.pxar:"+src)
		cmd.Env = append(os.Environ(), "PBSFS_RUNTIME_DIR="+e.run, "PBSFS_STORE="+e.store)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("backup %s: %v\n%s", mode, err, out)
		}
		rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
		t.Logf("backup (%s) of 340 MiB: peak RSS %d MiB\n%s", mode, rss>>20, out)
		if rss > backupRSSLimit {
			t.Errorf("backup (%s): peak RSS %d MiB, want at most %d MiB", mode, rss>>20, backupRSSLimit>>20)
		}
	}
}

// TestMetadataModeEndToEnd: a data-mode backup, then a metadata-mode one
// after changing a few files: the second reads those and reuses the
// rest as far as the padding rule allows (its summary says so), `pbsfs verify` passes on both, and the tree through the
// mount and restored from the second equals the source.
func TestMetadataModeEndToEnd(t *testing.T) {
	testutil.RequireFUSE(t)
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	info := genTree(t, src, 3000)
	pureRandom(t, filepath.Join(src, "big.bin"), 24<<20)
	e.backup(t, "host", "m", t0, "--change-detection-mode", "data", "root.pxar:"+src)
	changed, seen := 0, 0
	filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
			return nil
		}
		if seen++; seen%100 == 7 {
			if err := os.WriteFile(p, append([]byte("changed "), p...), fi.Mode().Perm()); err != nil {
				t.Fatal(err)
			}
			changed++
		}
		return nil
	})
	if changed == 0 {
		t.Fatal("no file changed")
	}
	args := []string{"backup", "--no-progress", "--type", "host", "--id", "m", "--time", t0.Add(time.Hour).Format(time.RFC3339),
		"--change-detection-mode", "metadata", "root.pxar:" + src}
	out := e.pbsfs(t, args...)
	var read, reused, afresh, fromPrev int
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "change detection metadata: ") {
			fmt.Sscanf(l, "change detection metadata: %d files read, %d reused", &read, &reused)
			if _, rest, ok := strings.Cut(l, "by reference, "); ok {
				fmt.Sscanf(rest, "%d unchanged encoded afresh (padding; %d of them from the previous snapshot)", &afresh, &fromPrev)
			}
		}
	}
	t.Logf("%s", out)
	// Small unchanged files near changed ones share chunks with them and
	// are encoded afresh under the client's padding rule, their bytes
	// taken from the previous snapshot (what the diff below compares);
	// big.bin is reused.
	if read < changed || reused == 0 || fromPrev == 0 || fromPrev > afresh {
		t.Errorf("metadata mode read %d files, reused %d and encoded %d afresh (%d from the previous snapshot) after %d of %d changed",
			read, reused, afresh, fromPrev, changed, seen)
	}
	e.pbsfs(t, "verify")
	snap := t0.Add(time.Hour).UTC().Format("2006-01-02T15:04:05Z")
	restored := filepath.Join(t.TempDir(), "restored")
	e.pbsfs(t, "restore", "host/m/"+snap, "root.pxar", restored)
	openChunks(t, e.store)
	mnt, _ := e.mount(t)
	wantStat := statLines(t, src)
	for what, root := range map[string]string{"mount": filepath.Join(mnt, "host/m", snap, "root.pxar"), "restore": restored} {
		diffArgs := []string{"-r", "--no-dereference"}
		for _, s := range info.specials {
			diffArgs = append(diffArgs, "-x", s)
		}
		if out, err := run("diff", append(diffArgs, src, root)...); err != nil {
			t.Errorf("%s: diff -r: %v\n%.2000s", what, err, out)
		}
		diffLines(t, what+" stat", statLines(t, root), wantStat)
	}
}
