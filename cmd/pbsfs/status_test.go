package main

import (
	"context"
	"encoding/json"
	"github.com/pbsfs/pbsfs/internal/testutil"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/gc"
	"github.com/pbsfs/pbsfs/store"
	"github.com/pbsfs/pbsfs/store/lock"
	"golang.org/x/sys/unix"
)

func statusJSON(t *testing.T, flags []string) gc.StoreStatus {
	t.Helper()
	code, out, errs := cli(t, append([]string{"status", "--output", "json"}, flags...)...)
	if code != 0 {
		t.Fatalf("status: %d %s", code, errs)
	}
	var st gc.StoreStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	return st
}

// TestStatus: a new store has nothing to show; after pbsfs gc the last
// collection is there, with .gc-status's figures and the run's times; a
// mount with a background collection held in its sweep shows as the
// running collection (pid, phase) and as a mount (mountpoint, schedule,
// next run); a registered writer shows.
func TestStatus(t *testing.T) {
	testutil.RequireFUSE(t)
	dir, flags := newStore(t)
	rt := flags[3]
	st := statusJSON(t, flags)
	if st.LastGC.Status != nil || st.LastGC.Run != nil || st.Running != nil || len(st.Mounts) != 0 || len(st.Writers) != 0 {
		t.Errorf("status of a new store: %+v", st)
	}
	if code, out, _ := cli(t, append([]string{"status"}, flags...)...); code != 0 || strings.Count(out, "none") != 4 {
		t.Errorf("status text of a new store:\n%s", out)
	}

	junk := garbage(t, dir, rt, 5)
	ageTree(t, dir)
	if code, _, errs := cli(t, append([]string{"gc", "--no-progress", "--gc-cutoff", "1m"}, flags...)...); code != 0 {
		t.Fatal(errs)
	}
	st = statusJSON(t, flags)
	if st.LastGC.Status == nil || st.LastGC.Status.RemovedChunks != uint64(len(junk)) {
		t.Errorf("last gc figures: %+v", st.LastGC.Status)
	}
	if r := st.LastGC.Run; r == nil || r.Result != "ok" || r.PID != os.Getpid() || !r.End.After(r.Start) || time.Since(r.Start) > time.Minute {
		t.Errorf("last gc run: %+v", r)
	}
	_, out, _ := cli(t, append([]string{"status"}, flags...)...)
	if !strings.Contains(out, "ok, started") || !strings.Contains(out, "removed: 5 chunks") {
		t.Errorf("status text after gc:\n%s", out)
	}

	// A writer, and a mount whose collection is held in its sweep.
	s, err := store.Open(dir, store.Options{RuntimeDir: rt})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := lock.RegisterWriter(s.WritersDir())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	defer reg.Release()
	release := make(chan struct{})
	hooks := gc.Hooks{BeforeSweep: func(ctx context.Context) {
		select {
		case <-release:
		case <-ctx.Done():
		}
	}}
	mnt := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var mout, merr lockedBuffer
	go func() {
		done <- run(withGCHooks(ctx, hooks), append([]string{"mount", "--gc-schedule", "minutely", "--gc-cutoff", "1m", dir, mnt}, flags...), &mout, &merr)
	}()
	var once sync.Once
	code := -1
	stop := func() int {
		once.Do(func() {
			cancel()
			close(release)
			code = <-done
			if isMountPoint(mnt) {
				unix.Unmount(mnt, unix.MNT_DETACH)
			}
		})
		return code
	}
	defer stop()
	// The first scheduled run comes at the next full minute.
	var running *gc.RunProgress
	for deadline := time.Now().Add(75 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st = statusJSON(t, flags)
		if st.Running != nil && st.Running.Phase == "sweeping" {
			running = st.Running
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no running collection in the status: %+v\n%s", st, merr.String())
		}
	}
	if running.PID != os.Getpid() {
		t.Errorf("running collection pid %d, want %d", running.PID, os.Getpid())
	}
	if len(st.Mounts) != 1 || st.Mounts[0].Mountpoint != mnt || st.Mounts[0].GCSchedule != "minutely" || st.Mounts[0].PID != os.Getpid() {
		t.Errorf("mounts: %+v", st.Mounts)
	} else if n := st.Mounts[0].NextGC; n == nil || n.Second() != 0 || time.Until(*n) > 2*time.Minute {
		t.Errorf("next gc: %v", n)
	}
	if len(st.Writers) != 1 || st.Writers[0].PID != os.Getpid() {
		t.Errorf("writers: %+v", st.Writers)
	}
	_, out, _ = cli(t, append([]string{"status"}, flags...)...)
	for _, want := range []string{"name from the path", "sweeping", "on " + mnt, `gc schedule "minutely", next `} {
		if !strings.Contains(out, want) {
			t.Errorf("status text lacks %q:\n%s", want, out)
		}
	}
	t.Logf("status while a scheduled collection sweeps:\n%s", out)
	if code := stop(); code != 0 {
		t.Errorf("mount exited %d", code)
	}
	st = statusJSON(t, flags)
	if len(st.Mounts) != 0 || st.Running != nil {
		t.Errorf("after the mount: %+v %+v", st.Mounts, st.Running)
	}
	if _, err := os.Stat(filepath.Join(rt, "pbsfs", st.Store, "gc-progress.json")); err == nil {
		t.Errorf("gc-progress.json left behind")
	}
}
