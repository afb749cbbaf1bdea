package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/pbsfs/pbsfs/internal/testutil"
	"github.com/pbsfs/pbsfs/store"
	"github.com/pbsfs/pbsfs/store/s3"
	"golang.org/x/sys/unix"
)

// downloadAll GETs the chunk objects of the digests ds with c, par at a
// time, and returns the time and the bytes: the baseline of a read from
// the bucket (the same client library and settings pbsfs uses).
func downloadAll(t *testing.T, c *s3.Client, ds []store.Digest, par int) (time.Duration, int64) {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		bytes int64
	)
	jobs := make(chan store.Digest)
	start := time.Now()
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range jobs {
				b, _, err := c.Get(context.Background(), s3.ObjectRel(d.String()), 32<<20)
				if err != nil {
					t.Error(err)
					continue
				}
				mu.Lock()
				bytes += int64(len(b))
				mu.Unlock()
			}
		}()
	}
	for _, d := range ds {
		jobs <- d
	}
	close(jobs)
	wg.Wait()
	return time.Since(start), bytes
}

// indexDigests returns the distinct digests of an index file, in order.
func indexDigests(t *testing.T, p string) []store.Digest {
	t.Helper()
	idx, err := store.OpenIndex(p)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[store.Digest]bool{}
	var out []store.Digest
	for i := range idx.Len() {
		d, _, _ := idx.Chunk(i)
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// TestBenchS3 measures reads from a bucket beside a baseline in the same
// run: cat of an image and of a file in a pxar archive (with pbsfs cat and
// through a fresh mount) against downloading the same chunk objects with
// the same client, 16 at a time, each measurement right after its
// baseline, in $PBSFS_BENCH_S3_REPS rounds (default 3; the machine is
// noisy), with the CPU the mount and the server used; random 4 KiB reads
// through the mount against whole-object GETs of random chunks one at a
// time. Size: $PBSFS_BENCH_S3_MIB (default 256). Runs with PBSFS_BENCH=1.
// With $PBSFS_BENCH_S3_OLD, the mount of that binary is measured too.
func TestBenchS3(t *testing.T) {
	if os.Getenv("PBSFS_BENCH") != "1" {
		t.Skip("benchmarks run with PBSFS_BENCH=1")
	}
	testutil.RequireFUSE(t)
	mib := envInt("PBSFS_BENCH_S3_MIB", 256)
	srv := s3srv.Get(t)
	e := &s3Env{env: newEnv(t), srv: srv}
	dir := t.TempDir()
	e.img = filepath.Join(dir, "disk.img")
	pureRandom(t, e.img, int64(mib)<<20)
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(tree, 0o755)
	pureRandom(t, filepath.Join(tree, "big.bin"), int64(mib)<<20)
	e.vm = e.backup(t, "vm", "300", t0, "drive-scsi0.img:"+e.img)
	e.tree = e.backup(t, "host", "bench", t0, "root.pxar:"+tree)
	name := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	e.c = s3Client(t, srv, name)
	start := time.Now()
	e.chunks = uploadPBS4(t, e.c, e.store)
	e.url = "s3+http://" + srv.Endpoint + "/" + srv.Bucket + "/" + name
	t.Logf("%d MiB image and a %d MiB file in a pxar archive; %d chunk objects uploaded in %v (load: %s)",
		mib, mib, e.chunks, time.Since(start).Round(time.Millisecond), loadavg())

	imgDs := indexDigests(t, filepath.Join(e.store, "vm/300", e.vm, "drive-scsi0.img.fidx"))
	pxDs := indexDigests(t, filepath.Join(e.store, "host/bench", e.tree, "root.pxar.didx"))
	mbps := func(d time.Duration) float64 { return float64(mib) / d.Seconds() }
	row := func(what string, base, got time.Duration) {
		t.Logf("%-44s baseline %7.1f MiB/s  pbsfs %7.1f MiB/s  ratio %.2f", what, mbps(base), mbps(got), base.Seconds()/got.Seconds())
	}
	cache := "PBSFS_S3_CACHE_DIR=" + filepath.Join(e.run, "s3cache")
	envs := append([]string{"PBSFS_STORE=" + e.url, cache, "PBSFS_RUNTIME_DIR=" + e.run}, s3Creds...)

	// perGiB is CPU time per GiB read.
	perGiB := func(d time.Duration) string {
		return fmt.Sprintf("%.2fs/GiB", d.Seconds()*1024/float64(mib))
	}
	// mountCats times cat of the image and of the file in the archive
	// through a fresh mount served by binary prog, each right after its
	// baseline.
	mountCats := func(label, prog string) {
		mnt, cmd := e.mountS3Cmd(t, prog)
		base, _ := downloadAll(t, e.c, imgDs, 16)
		w0, m0 := srv.CPUTime(), testutil.ProcessCPU(cmd.Process.Pid)
		imgPath := filepath.Join(mnt, "vm/300", e.vm, "drive-scsi0.img")
		got := timeCmd(t, "cat", imgPath)
		row("image: cat through the mount (cold)"+label, base, got)
		kept := pageCached(t, imgPath)
		t.Logf("  CPU of that cat: mount %s, server %v; the kernel kept %d MiB of the image's pages", perGiB(testutil.ProcessCPU(cmd.Process.Pid)-m0),
			(srv.CPUTime() - w0).Round(10*time.Millisecond), kept>>20)
		if prog == bin && kept > 32<<20 {
			// The mount drops what a sequential reader has gone
			// past (fs.Options.DropBehind): at most 16 MiB behind
			// the end, 4 MiB steps and the kernel's read-ahead.
			t.Errorf("the kernel kept %d MiB of the image's pages after a cat through the mount; want 32 at most", kept>>20)
		}

		base, _ = downloadAll(t, e.c, pxDs, 16)
		w0, m0 = srv.CPUTime(), testutil.ProcessCPU(cmd.Process.Pid)
		got = timeCmd(t, "cat", filepath.Join(mnt, "host/bench", e.tree, "root.pxar/big.bin"))
		row("file in a pxar archive: cat through the mount"+label, base, got)
		t.Logf("  CPU of that cat: mount %s, server %v; mount peak RSS after the cats: %d MiB",
			perGiB(testutil.ProcessCPU(cmd.Process.Pid)-m0), (srv.CPUTime() - w0).Round(10*time.Millisecond), peakRSS(cmd.Process.Pid)>>20)
	}
	// $PBSFS_BENCH_S3_OLD names another pbsfs binary (an older build)
	// whose mount is measured beside this one's in every round.
	old := os.Getenv("PBSFS_BENCH_S3_OLD")
	reps := envInt("PBSFS_BENCH_S3_REPS", 3)
	for rep := range reps {
		t.Logf("round %d of %d (load %s)", rep+1, reps, loadavg())
		base, _ := downloadAll(t, e.c, imgDs, 16)
		c0, w0 := childrenCPU(), srv.CPUTime()
		start = time.Now()
		if code, errs := e.runEnv(envs, nil, "cat", "vm/300/"+e.vm, "drive-scsi0.img"); code != 0 {
			t.Fatalf("pbsfs cat: exit %d\n%s", code, errs)
		}
		row("image: pbsfs cat", base, time.Since(start))
		t.Logf("  CPU of that cat: pbsfs %s, server %v", perGiB(childrenCPU()-c0), (srv.CPUTime() - w0).Round(10*time.Millisecond))

		// A fresh mount each round: nothing of the image in its cache or
		// in the kernel's pages of its files.
		mountCats("", bin)
		if old != "" {
			mountCats(" (old)", old)
		}
	}
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	w0 := srv.CPUTime()
	downloadAll(t, e.c, imgDs, 16)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := func(r syscall.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	t.Logf("CPU of the baseline download of the image: client %s, server %v", perGiB(cpu(ru1)-cpu(ru0)),
		(srv.CPUTime() - w0).Round(10*time.Millisecond))

	mnt2, cmd2 := e.mountS3Cmd(t, bin)
	const n = 200
	rate := randomReads(t, filepath.Join(mnt2, "vm/300", e.vm, "drive-scsi0.img"), n, 7)
	r := rand.New(rand.NewPCG(7, 7))
	start = time.Now()
	for range n {
		d := imgDs[r.IntN(len(imgDs))]
		if _, _, err := e.c.Get(context.Background(), s3.ObjectRel(d.String()), 32<<20); err != nil {
			t.Fatal(err)
		}
	}
	baseRate := float64(n) / time.Since(start).Seconds()
	t.Logf("random 4 KiB reads (%d, one at a time): baseline %.0f whole-chunk GETs/s, mount %.0f reads/s, ratio %.2f (mount peak RSS %d MiB)",
		n, baseRate, rate, rate/baseRate, peakRSS(cmd2.Process.Pid)>>20)
}

// mountS3Cmd mounts the bucket with binary prog and returns the mount
// point and process.
func (e *s3Env) mountS3Cmd(t *testing.T, prog string) (string, *exec.Cmd) {
	t.Helper()
	mnt := t.TempDir()
	env := append([]string{"PBSFS_RUNTIME_DIR=" + e.run, "PBSFS_S3_CACHE_DIR=" + filepath.Join(e.run, "s3cache")}, s3Creds...)
	return mnt, startMount(t, mnt, env, prog, "mount", e.url, mnt)
}

// childrenCPU returns the CPU time of the test's children that ended.
func childrenCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return string(b[:min(len(b), 14)])
}

// pageCached returns how many bytes of the file at path are in the
// kernel's page cache (mincore of a mapping of it).
func pageCached(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return 0
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	page := int64(os.Getpagesize())
	vec := make([]byte, (fi.Size()+page-1)/page)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	var n int64
	for _, v := range vec {
		if v&1 != 0 {
			n += page
		}
	}
	return n
}
