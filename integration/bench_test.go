package integration

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/internal/testutil"
	"github.com/pbsfs/pbsfs/store"
)

// envInt reads a positive integer from the environment.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// dropCaches empties the page cache so that "cold" means cold on both
// sides; it reports whether it could.
func dropCaches() bool {
	exec.Command("sync").Run()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0) == nil
}

func timeCmd(t *testing.T, name string, args ...string) time.Duration {
	t.Helper()
	cmd := exec.Command(name, args...) // stdout goes to /dev/null
	var stderr testutil.SyncBuffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, stderr.String())
	}
	return time.Since(start)
}

// randomReads does n preads of 4 KiB at 4 KiB-aligned offsets chosen by
// seed and returns the rate in reads per second.
func randomReads(t *testing.T, path string, n int, seed uint64) float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	blocks := fi.Size() / 4096
	r := rand.New(rand.NewPCG(seed, seed))
	buf := make([]byte, 4096)
	start := time.Now()
	for range n {
		if _, err := f.ReadAt(buf, r.Int64N(blocks)*4096); err != nil {
			t.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// peakRSS returns VmHWM of process pid in bytes.
func peakRSS(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return -1
}

// TestBench measures the mount beside a go-fuse loopback mount of the
// raw files, in one run, and prints the ratios. It runs only with
// PBSFS_BENCH=1 (see bench.sh); PBSFS_BENCH_IMAGE_MIB, PBSFS_BENCH_FILES
// and PBSFS_BENCH_SNAPSHOTS scale it down.
func TestBench(t *testing.T) {
	if os.Getenv("PBSFS_BENCH") != "1" {
		t.Skip("benchmarks run with PBSFS_BENCH=1 (integration/bench.sh)")
	}
	testutil.RequireFUSE(t)
	imageMiB := envInt("PBSFS_BENCH_IMAGE_MIB", 1024)
	nfiles := envInt("PBSFS_BENCH_FILES", 50000)
	nsnaps := envInt("PBSFS_BENCH_SNAPSHOTS", 1000)
	const preads = 20000

	loopback, err := testutil.Build(t.TempDir(), "github.com/pbsfs/pbsfs/integration/loopback")
	if err != nil {
		t.Fatal(err)
	}
	raw := t.TempDir()
	img := filepath.Join(raw, "disk.img")
	randomFile(t, img, int64(imageMiB)<<20, 11)
	tree := filepath.Join(raw, "tree")
	for i := range nfiles {
		d := filepath.Join(tree, fmt.Sprintf("d%03d", i%500))
		if i < 500 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%06d", i)), []byte(strconv.Itoa(i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnv(t)
	start := time.Now()
	snap := e.backup(t, "vm", "100", t0, "drive-scsi0.img:"+img, "root.pxar:"+tree)
	t.Logf("backup of %d MiB and %d files: %v", imageMiB, nfiles, time.Since(start))

	// A second store with one group of many snapshots.
	many := newEnv(t)
	ms := many.open(t)
	start = time.Now()
	g := store.GroupRef{Type: store.TypeHost, ID: "many"}
	for i := range nsnaps {
		b, err := ms.StartBackup(context.Background(), g, t0.Add(time.Duration(i)*time.Minute), store.BackupOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.AddBlob("host.conf", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if err := b.Finish(); err != nil {
			t.Fatal(err)
		}
	}
	ms.Close()
	t.Logf("%d snapshots made in %v", nsnaps, time.Since(start))

	lmnt := t.TempDir()
	startMount(t, lmnt, nil, loopback, raw, lmnt)
	mnt, cmd := e.mount(t)
	pimg := filepath.Join(mnt, "vm/100", snap, "drive-scsi0.img")
	ptree := filepath.Join(mnt, "vm/100", snap, "root.pxar")
	limg, ltree := filepath.Join(lmnt, "disk.img"), filepath.Join(lmnt, "tree")
	cold := dropCaches()
	if !cold {
		t.Log("cannot drop caches: cold numbers are warm")
	}

	type row struct {
		name, unit   string
		base, mount  float64
		higherBetter bool
		goal         string
	}
	var rows []row
	// Random reads, cold: fresh mounts, empty caches.
	dropCaches()
	lc := randomReads(t, limg, preads, 1)
	dropCaches()
	pc := randomReads(t, pimg, preads, 1)
	rows = append(rows, row{"20k random 4 KiB preads, cold", "IOPS", lc, pc, true, "-"})
	// Warm: the same offsets again.
	lw := randomReads(t, limg, preads, 1)
	pw := randomReads(t, pimg, preads, 1)
	rows = append(rows, row{"20k random 4 KiB preads, warm", "IOPS", lw, pw, true, ">= 0.5x"})
	// Sequential cat, cold.
	size := float64(int64(imageMiB) << 20)
	dropCaches()
	lcat := size / timeCmd(t, "cat", limg).Seconds() / (1 << 20)
	dropCaches()
	pcat := size / timeCmd(t, "cat", pimg).Seconds() / (1 << 20)
	rows = append(rows, row{fmt.Sprintf("cat of a %d MiB image, cold", imageMiB), "MiB/s", lcat, pcat, true, ">= 0.8x"})
	// find | wc -l, cold then warm.
	for _, pass := range []string{"cold", "warm"} {
		if pass == "cold" {
			dropCaches()
		}
		lf := timeCmd(t, "sh", "-c", "find "+ltree+" | wc -l").Seconds()
		pf := timeCmd(t, "sh", "-c", "find "+ptree+" | wc -l").Seconds()
		rows = append(rows, row{fmt.Sprintf("find | wc -l over %d files, %s", nfiles, pass), "s", lf, pf, false, "<= 2x"})
	}
	rss := peakRSS(cmd.Process.Pid)

	// Time to the first ls of a group of many snapshots, on a fresh
	// mount: with the snapshot directories in the OS cache, then cold.
	// The baseline reads what the mount must read: every snapshot
	// directory of the group (find -maxdepth 2), without FUSE.
	group := filepath.Join(many.store, "host/many")
	findArgs := []string{group, "-maxdepth", "2", "-name", "index.json.blob"}
	for _, pass := range []string{"OS cache warm", "cold"} {
		if pass == "cold" {
			dropCaches()
		} else {
			timeCmd(t, "find", findArgs...)
		}
		base := timeCmd(t, "find", findArgs...).Seconds()
		if pass == "cold" {
			dropCaches()
		}
		mmnt, _ := many.mount(t)
		lsGroup := timeCmd(t, "ls", filepath.Join(mmnt, "host/many")).Seconds()
		rows = append(rows, row{fmt.Sprintf("first ls of %d snapshots, %s", nsnaps, pass), "s", base, lsGroup, false, "< 0.1 s"})
	}
	mroot, _ := many.mount(t)
	lsRoot := timeCmd(t, "ls", mroot).Seconds()

	fmt.Printf("\npbsfs mount vs go-fuse loopback of the raw files (same disk, same run)\n")
	fmt.Printf("%-44s %12s %12s %8s  %s\n", "", "loopback", "pbsfs", "ratio", "goal")
	for _, r := range rows {
		ratio := r.mount / r.base
		fmt.Printf("%-44s %12.4g %12.4g %7.2fx  %s (%s; ratio = pbsfs/loopback)\n", r.name, r.base, r.mount, ratio, r.goal, r.unit)
	}
	fmt.Printf("%-44s %12s %12.4g\n", "first ls of the mount root", "", lsRoot)
	fmt.Printf("(the ls baseline is find over the group's snapshot directories on disk, no FUSE)\n")
	fmt.Printf("%-44s %12s %9.1f MB  goal < 200 MB\n\n", "pbsfs peak RSS after all reads", "", float64(rss)/1e6)
}
