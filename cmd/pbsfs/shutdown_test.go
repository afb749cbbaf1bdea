package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"github.com/pbsfs/pbsfs/internal/testutil"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/gc"
	"github.com/pbsfs/pbsfs/store"
	"golang.org/x/sys/unix"
)

// ageTree sets the access time of every chunk file of the store at dir
// three days back, so that a collection that failed to mark one removes
// it.
func ageTree(t *testing.T, dir string) {
	t.Helper()
	if _, err := testutil.AgeChunks(dir, time.Now().Add(-72*time.Hour)); err != nil {
		t.Fatal(err)
	}
}

// garbage inserts n unreferenced chunks into the store at dir.
func garbage(t *testing.T, dir, rt string, n int) []string {
	t.Helper()
	s, err := store.Open(dir, store.Options{RuntimeDir: rt})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var paths []string
	for range n {
		data := make([]byte, 1000)
		rand.Read(data)
		d := store.DigestOf(data)
		blob, err := s.Codec().Encode(data, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Chunks().Insert(context.Background(), d, blob); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, s.Chunks().Path(d))
	}
	return paths
}

func countExisting(paths []string) int {
	n := 0
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			n++
		}
	}
	return n
}

// TestSIGTERMInGCPhase delivers a real SIGTERM to the mount (run in this
// process, as main runs it) at a point of each phase of a background
// collection, forced with the collector's hooks. Each time the mount
// exits 0, the run stops, .gc-status stays the previous run's, the store
// verifies (no chunk a snapshot needs went), and a run that is not
// interrupted afterwards writes a complete new .gc-status.
func TestSIGTERMInGCPhase(t *testing.T) {
	testutil.RequireFUSE(t)
	dir, flags := newStore(t)
	rt := flags[3]
	src := t.TempDir()
	img := make([]byte, 9<<20)
	rand.Read(img)
	os.WriteFile(filepath.Join(src, "disk.img"), img, 0o644)
	if code, _, errs := cli(t, append([]string{"backup", "--no-progress", "--type", "vm", "--id", "1", "--time", "2026-11-20T10:00:00Z",
		"drive-scsi0.img:" + filepath.Join(src, "disk.img")}, flags...)...); code != 0 {
		t.Fatalf("backup: %s", errs)
	}
	if code, _, errs := cli(t, append([]string{"gc", "--no-progress", "--cutoff", "1m"}, flags...)...); code != 0 {
		t.Fatalf("first gc: %s", errs)
	}
	statusPath := filepath.Join(dir, ".gc-status")
	previous, err := os.ReadFile(statusPath)
	if err != nil {
		t.Fatal(err)
	}
	junk := garbage(t, dir, rt, 64)
	ageTree(t, dir)

	stopAt := func(hooks *gc.Hooks, phase string, fire func(ctx context.Context)) {
		switch phase {
		case "starting":
			hooks.AfterLock = fire
		case "marking":
			hooks.BeforeIndexOpen = func(ctx context.Context, _ string) { fire(ctx) }
		case "before sweep":
			hooks.BeforeSweep = fire
		case "sweeping":
			hooks.BeforePrefixSweep = func(ctx context.Context, p uint16) {
				if p >= 0x8000 {
					fire(ctx)
				}
			}
		}
	}
	for _, phase := range []string{"starting", "marking", "before sweep", "sweeping"} {
		t.Run(phase, func(t *testing.T) {
			sigCtx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
			defer stop()
			var once sync.Once
			fired := make(chan struct{})
			var hooks gc.Hooks
			stopAt(&hooks, phase, func(ctx context.Context) {
				once.Do(func() {
					close(fired)
					syscall.Kill(os.Getpid(), syscall.SIGTERM)
				})
				<-ctx.Done() // the run is held here until the stop
			})
			mnt := t.TempDir()
			t.Cleanup(func() {
				if isMountPoint(mnt) {
					unix.Unmount(mnt, unix.MNT_DETACH)
				}
			})
			var out, errb bytes.Buffer
			code := run(withGCHooks(sigCtx, hooks), append([]string{"mount", "--gc-interval", "10ms", "--gc-cutoff", "1m", dir, mnt}, flags...), &out, &errb)
			select {
			case <-fired:
			default:
				t.Fatalf("the mount stopped before the hook fired: %d\n%s", code, errb.String())
			}
			if code != 0 {
				t.Errorf("mount exited %d after SIGTERM while %s\n%s", code, phase, errb.String())
			}
			if isMountPoint(mnt) {
				t.Errorf("still mounted")
			}
			if now, _ := os.ReadFile(statusPath); !bytes.Equal(now, previous) {
				t.Errorf(".gc-status rewritten by an interrupted run:\n%s\nwas\n%s", now, previous)
			}
			left := countExisting(junk)
			if phase != "sweeping" && left != len(junk) {
				t.Errorf("%d of %d garbage chunks removed by a run stopped while %s", len(junk)-left, len(junk), phase)
			}
			t.Logf("stopped while %s: %d of %d garbage chunks left", phase, left, len(junk))
			if code, vout, verrs := cli(t, append([]string{"verify", "--no-progress"}, flags...)...); code != 0 {
				t.Errorf("verify after the stop: %d\n%s%s", code, vout, verrs)
			}
		})
	}
	left := countExisting(junk)
	code, gout, errs := cli(t, append([]string{"gc", "--no-progress", "--cutoff", "1m"}, flags...)...)
	if code != 0 {
		t.Fatalf("gc after the stops: %s", errs)
	}
	now, _ := os.ReadFile(statusPath)
	if bytes.Equal(now, previous) || !strings.Contains(string(now), `"removed-chunks":`) {
		t.Errorf(".gc-status after a complete run: %s", now)
	}
	if countExisting(junk) != 0 {
		t.Errorf("garbage left after a complete run: %d\n%s", countExisting(junk), gout)
	}
	t.Logf("complete run after the stops removed the %d garbage chunks left; .gc-status %s", left, now)
	if code, vout, verrs := cli(t, append([]string{"verify", "--no-progress"}, flags...)...); code != 0 {
		t.Errorf("verify at the end: %d\n%s%s", code, vout, verrs)
	}
}

// isMountPoint reports whether dir is a mount point.
func isMountPoint(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}
