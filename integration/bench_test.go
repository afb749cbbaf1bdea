package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
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
	"golang.org/x/sys/unix"
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

// fadviseDontNeed drops the page cache of path alone: for a file in a
// FUSE mount, the kernel's copy of the mounted file, not the backing
// store, so that a "warm" read still goes through the FUSE daemon.
func fadviseDontNeed(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// sparseFile writes a sparse file of n bytes: 1 MiB of random data every
// 32 MiB, holes between.
func sparseFile(t *testing.T, p string, n int64, seed uint64) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(n); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 3))
	island := make([]byte, 1<<20)
	for off := int64(0); off < n; off += 32 << 20 {
		for i := range island {
			island[i] = byte(r.Uint32())
		}
		if _, err := f.WriteAt(island[:min(int64(len(island)), n-off)], off); err != nil {
			t.Fatal(err)
		}
	}
}

// textFile writes n bytes of log lines (zstd compresses them about 3x).
func textFile(t *testing.T, p string, n int64, seed uint64) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	r := rand.New(rand.NewPCG(seed, 4))
	words := []string{"GET", "POST", "/api/v1/items", "200", "404", "user", "session", "timeout", "backup", "chunk", "ok", "retry"}
	var written int64
	for i := 0; written < n; i++ {
		line := fmt.Sprintf("2026-12-01T%02d:%02d:%02d.%06dZ host%d %s %s %s id=%d latency=%dms\n",
			i/3600%24, i/60%60, i%60, r.IntN(1000000), r.IntN(50), words[r.IntN(len(words))],
			words[r.IntN(len(words))], words[r.IntN(len(words))], r.IntN(1<<30), r.IntN(5000))
		k, _ := w.WriteString(line[:min(int64(len(line)), n-written)])
		written += int64(k)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}

// smallTree writes n small files (1-8 KiB, 60 % text, 40 % random) in
// n/100 directories below dir.
func smallTree(t *testing.T, dir string, n int) {
	t.Helper()
	r := rand.New(rand.NewPCG(5, 5))
	for i := range n {
		d := filepath.Join(dir, fmt.Sprintf("d%03d", i%max(1, n/100)))
		if i < max(1, n/100) {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		size := 1024 + r.IntN(7*1024)
		b := make([]byte, size)
		if r.IntN(10) < 6 {
			line := []byte(fmt.Sprintf("file %d line of text for a small log file\n", i))
			for j := range b {
				b[j] = line[j%len(line)]
			}
		} else {
			for j := range b {
				b[j] = byte(r.Uint32())
			}
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%06d", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// catRate times cat of path and returns MiB/s.
func catRate(t *testing.T, path string) float64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return float64(fi.Size()) / timeCmd(t, "cat", path).Seconds() / (1 << 20)
}

// benchRow is one line of the table: a measurement on the mount beside
// the same one on the loopback mount.
type benchRow struct {
	name, unit   string
	base, mount  float64
	higherBetter bool
	goal         string
}

// TestBench measures the mount beside a go-fuse loopback mount of the
// raw files (served by its daemon), in one run, and prints the ratios.
// It runs only with PBSFS_BENCH=1 (see bench.sh). PBSFS_BENCH_FILE_MIB
// (1024) sizes the large files, PBSFS_BENCH_FILES (20000) the small-file
// tree, PBSFS_BENCH_SNAPSHOTS (1000) the store with many snapshots and
// PBSFS_BENCH_PREADS (20000) the random-read passes; PBSFS_BENCH_LARGE=0
// leaves out the rows of the large files (they are still backed up).
func TestBench(t *testing.T) {
	ctx := context.Background()
	if os.Getenv("PBSFS_BENCH") != "1" {
		t.Skip("benchmarks run with PBSFS_BENCH=1 (integration/bench.sh)")
	}
	testutil.RequireFUSE(t)
	fileMiB := envInt("PBSFS_BENCH_FILE_MIB", 1024)
	nfiles := envInt("PBSFS_BENCH_FILES", 20000)
	nsnaps := envInt("PBSFS_BENCH_SNAPSHOTS", 1000)
	preads := envInt("PBSFS_BENCH_PREADS", 20000)
	size := int64(fileMiB) << 20

	loopback, err := testutil.Build(t.TempDir(), "github.com/pbsfs/pbsfs/integration/loopback")
	if err != nil {
		t.Fatal(err)
	}
	raw := t.TempDir()
	tree := filepath.Join(raw, "tree")
	large := filepath.Join(tree, "large")
	if err := os.MkdirAll(large, 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	pureRandom(t, filepath.Join(large, "random.bin"), size)
	textFile(t, filepath.Join(large, "text.log"), size, 12)
	sparseFile(t, filepath.Join(large, "sparse.img"), size, 13)
	smallTree(t, filepath.Join(tree, "small"), nfiles)
	t.Logf("dataset: 3 files of %d MiB, %d small files: %v", fileMiB, nfiles, time.Since(start))

	e := newEnv(t)
	start = time.Now()
	snap := e.backup(t, "vm", "100", t0,
		"random.img:"+filepath.Join(large, "random.bin"), "text.img:"+filepath.Join(large, "text.log"),
		"sparse.img:"+filepath.Join(large, "sparse.img"), "root.pxar:"+tree)
	e.pbsfs(t, "backup", "--no-progress", "--split", "--type", "host", "--id", "split", "--time", t0.UTC().Format(time.RFC3339), "root.pxar:"+tree)
	t.Logf("backups (images, plain and split pxar): %v", time.Since(start))
	// Many snapshots beside them, for the time to the first listing.
	ms := e.open(t)
	g := store.GroupRef{Type: store.TypeHost, ID: "many"}
	for i := range nsnaps {
		b, err := ms.StartBackup(ctx, g, t0.Add(time.Duration(i)*time.Minute), store.BackupOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.AddBlob(ctx, "host.conf", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if err := b.Finish(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ms.Close()

	lmnt := t.TempDir()
	startMount(t, lmnt, nil, loopback, raw, lmnt)
	// Each file is read through a fresh mount: the plain and split
	// archives share most chunks (content-defined chunking finds the same
	// boundaries), so on one mount a "cold" read of the split archive
	// would find the plain one's chunks in the mount's cache.
	var rss int64
	fresh := func() (string, *exec.Cmd) { return e.mount(t) }
	mnt, cmd := fresh()
	at := func(mnt string) (plain, split, img string) {
		return filepath.Join(mnt, "vm/100", snap, "root.pxar"), filepath.Join(mnt, "host/split", snap, "root.pxar"), filepath.Join(mnt, "vm/100", snap)
	}
	plain, split, _ := at(mnt)
	ltree := filepath.Join(lmnt, "tree")
	if !dropCaches() {
		t.Log("cannot drop caches: cold numbers are warm")
	}

	var rows []benchRow
	type target struct {
		name string
		path func(mnt string) string // the file in a mount at mnt
	}
	files := []struct{ name, loop string }{
		{"random", "large/random.bin"}, {"text", "large/text.log"}, {"sparse", "large/sparse.img"},
	}
	imgName := map[string]string{"random": "random.img", "text": "text.img", "sparse": "sparse.img"}
	if os.Getenv("PBSFS_BENCH_LARGE") == "0" {
		files = nil // the small-file rows and the start only
	}
	for _, f := range files {
		lpath := filepath.Join(ltree, f.loop)
		targets := []target{
			{"plain pxar", func(m string) string { p, _, _ := at(m); return filepath.Join(p, f.loop) }},
			{"split pxar", func(m string) string { _, sp, _ := at(m); return filepath.Join(sp, f.loop) }},
			{"image", func(m string) string { _, _, im := at(m); return filepath.Join(im, imgName[f.name]) }},
		}
		// Loopback: cold, warm.
		dropCaches()
		lcold := catRate(t, lpath)
		fadviseDontNeed(t, lpath)
		lwarm := catRate(t, lpath)
		dropCaches()
		lpc := randomReads(t, lpath, preads, 1)
		fadviseDontNeed(t, lpath)
		lpw := randomReads(t, lpath, preads, 2)
		for _, tg := range targets {
			m, mc := fresh()
			path := tg.path(m)
			dropCaches()
			pcold := catRate(t, path)
			fadviseDontNeed(t, path)
			pwarm := catRate(t, path)
			dropCaches()
			ppc := randomReads(t, path, preads, 1)
			fadviseDontNeed(t, path)
			ppw := randomReads(t, path, preads, 2)
			rss = max(rss, peakRSS(mc.Process.Pid))
			goal := ">= 0.5x"
			if f.name == "text" {
				goal = ">= 0.3x"
			}
			n := fmt.Sprintf("%s %d MiB, %s", f.name, fileMiB, tg.name)
			rows = append(rows,
				benchRow{"cat " + n + ", cold", "MiB/s", lcold, pcold, true, goal},
				benchRow{"cat " + n + ", warm", "MiB/s", lwarm, pwarm, true, "-"},
				benchRow{fmt.Sprintf("%dk preads %s, cold", preads/1000, n), "IOPS", lpc, ppc, true, ">= 3000/s"},
				benchRow{fmt.Sprintf("%dk preads %s, warm", preads/1000, n), "IOPS", lpw, ppw, true, ">= 3000/s"})
		}
	}
	rss = max(rss, peakRSS(cmd.Process.Pid))

	// Small files, cold, in the plain and split archives beside loopback.
	var small []benchRow
	for _, op := range []struct{ name, sh string }{
		{"find | wc -l", "find . | wc -l"},
		{"du -sh", "du -sh ."},
		{"tar cf - . | wc -c", "tar cf - . | wc -c"},
		{"grep -r", "grep -r -c zzzz-no-such-text . | wc -l"},
	} {
		var res [3]float64
		for i, dir := range []string{filepath.Join(ltree, "small"), filepath.Join(plain, "small"), filepath.Join(split, "small")} {
			dropCaches()
			c := exec.Command("sh", "-c", op.sh)
			c.Dir = dir
			st := time.Now()
			if out, err := c.CombinedOutput(); err != nil {
				t.Fatalf("%s in %s: %v\n%s", op.sh, dir, err, out)
			}
			res[i] = time.Since(st).Seconds()
		}
		small = append(small,
			benchRow{fmt.Sprintf("%s, %d files, plain, cold", op.name, nfiles), "s", res[0], res[1], false, "<= 3x, <= 2x split"},
			benchRow{fmt.Sprintf("%s, %d files, split, cold", op.name, nfiles), "s", res[0], res[2], false, "<= 3x"})
	}

	// First stat of a small file in the plain archive, and time from
	// starting the mount to the first listing of the archive root, on
	// fresh mounts with the page cache dropped.
	rel := filepath.Join("small", fmt.Sprintf("d%03d", 7%max(1, nfiles/100)), fmt.Sprintf("f%06d", 7))
	var firstStat, dirStat, firstList [2]float64
	// freshRoot starts a fresh mount, loopback (i == 0) or pbsfs, with
	// the page cache dropped, and returns the archive root in it (the
	// tree's root for loopback) and when the mount was started.
	freshRoot := func(i int) (string, time.Time) {
		dropCaches()
		dir := t.TempDir()
		st := time.Now()
		if i == 0 {
			startMount(t, dir, nil, loopback, raw, dir)
			return filepath.Join(dir, "tree"), st
		}
		startMount(t, dir, []string{"PBSFS_RUNTIME_DIR=" + e.run}, bin, "mount", e.store, dir)
		return filepath.Join(dir, "vm/100", snap, "root.pxar"), st
	}
	// firstLstat times the first lstat of rel on a fresh mount.
	firstLstat := func(i int, rel string) float64 {
		root, _ := freshRoot(i)
		var sb unix.Stat_t
		st := time.Now()
		if err := unix.Lstat(filepath.Join(root, rel), &sb); err != nil {
			t.Fatal(err)
		}
		return time.Since(st).Seconds()
	}
	for i := range 2 {
		root, st := freshRoot(i)
		for {
			if ents, err := os.ReadDir(root); err == nil && len(ents) > 0 {
				break
			}
			if time.Since(st) > time.Minute {
				t.Fatalf("no listing of %s after a minute", root)
			}
			time.Sleep(2 * time.Millisecond)
		}
		firstList[i] = time.Since(st).Seconds()
		firstStat[i] = firstLstat(i, rel)
		// The same file's directory, alone, on another fresh mount: the
		// lookup the file's first stat is to cost about as much as.
		dirStat[i] = firstLstat(i, filepath.Dir(rel))
	}
	rows = append(rows,
		benchRow{fmt.Sprintf("first stat of a file, plain archive %d MiB, fresh mount, cold", 3*fileMiB), "s", firstStat[0], firstStat[1], false, "~ its directory's lookup"},
		benchRow{"first stat of that file's directory, fresh mount, cold", "s", dirStat[0], dirStat[1], false, "(the lookup above is compared with)"},
		benchRow{fmt.Sprintf("mount to first listing of the archive root (%d snapshots), cold", nsnaps+2), "s", firstList[0], firstList[1], false, "<= 0.26 s"})

	print := func(title string, rows []benchRow) {
		fmt.Printf("\n%s\n", title)
		fmt.Printf("%-58s %10s %10s %8s  %s\n", "", "loopback", "pbsfs", "ratio", "goal (unit; ratio = pbsfs/loopback)")
		for _, r := range rows {
			fmt.Printf("%-58s %10.4g %10.4g %7.2fx  %s (%s)\n", r.name, r.base, r.mount, r.mount/r.base, r.goal, r.unit)
		}
	}
	print("pbsfs mount vs go-fuse loopback of the raw files, served by its daemon (same disk, same run)", rows)
	print("small files, cold (page cache dropped before each command)", small)
	fmt.Printf("%-58s %10s %7.2fx  goal ~ 1x (pbsfs: first stat of the file / first stat of its directory)\n", "first stat of a file vs its directory's lookup", "", firstStat[1]/dirStat[1])
	fmt.Printf("%-58s %10s %7.1f MB  goal <= cache size + 100 MiB (%d MiB)\n\n", "pbsfs peak RSS after all reads", "", float64(rss)/1e6, store.DefaultCacheBytes>>20+100)
}

// pureRandom overwrites p with n bytes of incompressible random data.
func pureRandom(t *testing.T, p string, n int64) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{1})
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := io.CopyN(w, r, n); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}
