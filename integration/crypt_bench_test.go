package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/internal/testutil"
	"github.com/pbsfs/pbsfs/store"
)

// loadAvg returns the load averages (1, 5, 15 minutes) as /proc/loadavg
// gives them.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// TestBenchCrypt measures encrypted beside unencrypted data in one run:
// backup ingest of an image and a tree, and reads through one mount of
// the 1 GiB image and of a large file in a pxar archive, cold and warm.
// It runs with PBSFS_BENCH=1 (integration/bench.sh -run TestBenchCrypt);
// PBSFS_BENCH_IMAGE_MIB scales it down.
func TestBenchCrypt(t *testing.T) {
	if os.Getenv("PBSFS_BENCH") != "1" {
		t.Skip("benchmarks run with PBSFS_BENCH=1 (integration/bench.sh)")
	}
	testutil.RequireFUSE(t)
	imageMiB := envInt("PBSFS_BENCH_IMAGE_MIB", 1024)
	fileMiB := imageMiB / 4
	runs := envInt("PBSFS_BENCH_RUNS", 3)

	cfg := t.TempDir()
	key := filepath.Join(cfg, "key.json")
	e := newEnv(t)
	envs := []string{"XDG_CONFIG_HOME=" + cfg, "PBS_ENCRYPTION_PASSWORD=bench-password"}
	if code, _, errs := e.tryEnv(envs, "key", "create", "--kdf", "scrypt", key); code != 0 {
		t.Fatal(errs)
	}
	raw := t.TempDir()
	img := filepath.Join(raw, "disk.img")
	randomFile(t, img, int64(imageMiB)<<20, 21)
	tree := filepath.Join(raw, "tree")
	os.MkdirAll(filepath.Join(tree, "sub"), 0o755)
	randomFile(t, filepath.Join(tree, "sub/big.bin"), int64(fileMiB)<<20, 22)
	for i := range 200 {
		os.WriteFile(filepath.Join(tree, "sub", fmt.Sprintf("f%03d", i)), []byte(fmt.Sprint(i)), 0o644)
	}
	timeCmd(t, "cat", img) // the source in the page cache for both backups

	type row struct {
		name, unit   string
		plain, enc   float64
		goal         string
		higherBetter bool
	}
	var rows []row
	ingest := func(id string, withKey bool) float64 {
		var best time.Duration
		for i := range runs {
			// A fresh group each run, so nothing is deduplicated
			// against an earlier run (keyed digests differ anyway).
			when := t0.Add(time.Duration(i) * time.Hour)
			args := []string{"backup", "--no-progress", "--crypt-mode", "none", "--type", "vm", "--id", fmt.Sprintf("%s-%d", id, i), "--time", when.UTC().Format(time.RFC3339),
				"drive-scsi0.img:" + img, "root.pxar:" + tree}
			if withKey {
				args[3] = "encrypt"
				args = append(args[:1], append([]string{"--keyfile", key}, args[1:]...)...)
			}
			start := time.Now()
			if code, out, errs := e.tryEnv(envs, args...); code != 0 {
				t.Fatalf("backup: %s %s", out, errs)
			}
			if d := time.Since(start); best == 0 || d < best {
				best = d
			}
		}
		return float64(imageMiB+fileMiB) / best.Seconds()
	}
	pIn := ingest("plain", false)
	eIn := ingest("enc", true)
	rows = append(rows, row{fmt.Sprintf("backup ingest, %d MiB image + %d MiB tree", imageMiB, fileMiB), "MiB/s", pIn, eIn, ">= 0.8x", true})

	mnt := t.TempDir()
	cmd := startMount(t, mnt, append([]string{"PBSFS_RUNTIME_DIR=" + e.run}, envs...), bin, "mount", "--keyfile", key, e.store, mnt)
	snap := t0.UTC().Format("2006-01-02T15:04:05Z")
	files := map[string][2]string{
		fmt.Sprintf("%d MiB image", imageMiB): {
			filepath.Join(mnt, "vm/plain-0", snap, "drive-scsi0.img"), filepath.Join(mnt, "vm/enc-0", snap, "drive-scsi0.img")},
		fmt.Sprintf("%d MiB file in a pxar archive", fileMiB): {
			filepath.Join(mnt, "vm/plain-0", snap, "root.pxar/sub/big.bin"), filepath.Join(mnt, "vm/enc-0", snap, "root.pxar/sub/big.bin")},
	}
	for _, what := range []string{fmt.Sprintf("%d MiB image", imageMiB), fmt.Sprintf("%d MiB file in a pxar archive", fileMiB)} {
		pair := files[what]
		size := float64(imageMiB)
		if what != fmt.Sprintf("%d MiB image", imageMiB) {
			size = float64(fileMiB)
		}
		if out, err := run("cmp", pair[0], pair[1]); err != nil {
			t.Fatalf("%s: encrypted and plain differ: %v %s", what, err, out)
		}
		for _, pass := range []string{"cold", "warm"} {
			// Plain and encrypted in turn (ABBA...), best of runs each:
			// the load of a shared machine drifts, and a drift must not
			// fall on one side only.
			var best [2]time.Duration
			for k := range 2 * runs {
				i := k % 2
				if k/2%2 == 1 {
					i = 1 - i
				}
				p := pair[i]
				if pass == "cold" {
					if !dropCaches() {
						t.Log("cannot drop caches: cold is warm")
					}
				} else {
					timeCmd(t, "cat", p) // store pages in the OS cache
					fadviseDontNeed(t, p)
				}
				if d := timeCmd(t, "cat", p); best[i] == 0 || d < best[i] {
					best[i] = d
				}
			}
			rate := [2]float64{size / best[0].Seconds(), size / best[1].Seconds()}
			rows = append(rows, row{fmt.Sprintf("cat of a %s, %s", what, pass), "MiB/s", rate[0], rate[1], ">= 0.8x", true})
		}
	}
	rss := peakRSS(cmd.Process.Pid)
	fmt.Printf("\nencrypted vs unencrypted (AES-256-GCM, scrypt key file), same store, same mount, same run; reads in turn, best of %d each; load %s; shared 2-core machine\n", runs, loadAvg())
	fmt.Printf("%-58s %12s %12s %8s  %s\n", "", "plain", "encrypted", "ratio", "goal")
	for _, r := range rows {
		fmt.Printf("%-58s %12.1f %12.1f %7.2fx  %s (%s; ratio = encrypted/plain)\n", r.name, r.plain, r.enc, r.enc/r.plain, r.goal, r.unit)
	}
	fmt.Printf("%-58s %12s %9.1f MB  goal <= cache size + 100 MiB (%d MiB)\n\n", "pbsfs mount peak RSS after all reads", "", float64(rss)/1e6, store.DefaultCacheBytes>>20+100)
}
