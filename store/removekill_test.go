package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Environment of the removal helper process (TestRemoveKillHelper).
const (
	killEnvStore = "STORE_TEST_KILL_STORE"
	killEnvRun   = "STORE_TEST_KILL_RUNTIME"
	killEnvOp    = "STORE_TEST_KILL_OP"
	killEnvStep  = "STORE_TEST_KILL_STEP"
)

var killGroup = GroupRef{Type: TypeVM, ID: "100"}

// killSnapshot makes a snapshot with many files: blobs, an image (fixed
// index) and a stream (dynamic index), so that a removal has many steps.
func killSnapshot(t *testing.T, s *Store, when time.Time) SnapshotRef {
	t.Helper()
	ctx := context.Background()
	b, err := s.StartBackup(ctx, killGroup, when, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := b.AddBlob(ctx, fmt.Sprintf("conf%d.conf", i), []byte(fmt.Sprint("config ", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.AddImage(ctx, "drive-scsi0.img", bytes.NewReader([]byte("disk")), 4); err != nil {
		t.Fatal(err)
	}
	if err := b.AddStream(ctx, "data.pxar", bytes.NewReader(bytes.Repeat([]byte("x"), 1000)), 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := b.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	return b.Ref()
}

// TestRemoveKillHelper is the body of the helper process of
// TestRemoveKilledAtEveryStep: it removes with the operation in
// $STORE_TEST_KILL_OP and kills itself with SIGKILL right after step
// number $STORE_TEST_KILL_STEP of the removal.
func TestRemoveKillHelper(t *testing.T) {
	root := os.Getenv(killEnvStore)
	if root == "" {
		t.Skip("runs only as a helper process")
	}
	s, err := Open(root, Options{RuntimeDir: os.Getenv(killEnvRun)})
	if err != nil {
		t.Fatal(err)
	}
	killAt, _ := strconv.Atoi(os.Getenv(killEnvStep))
	n := 0
	s.removeStep = func(string) {
		if n++; n == killAt {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // never returns
		}
	}
	ctx := context.Background()
	snaps, _, err := s.Snapshots(killGroup)
	if err != nil || len(snaps) == 0 {
		t.Fatalf("snapshots: %v, %d", err, len(snaps))
	}
	switch os.Getenv(killEnvOp) {
	case "forget":
		err = s.RemoveSnapshot(ctx, snaps[0].Ref, nil)
	case "prune":
		_, err = s.Prune(ctx, killGroup, KeepOptions{Last: 1}, false, nil)
	case "group":
		err = s.RemoveGroup(ctx, killGroup, nil)
	default:
		t.Fatalf("unknown op %q", os.Getenv(killEnvOp))
	}
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("done after %d steps\n", n)
}

// TestRemoveKilledAtEveryStep kills a process removing snapshots (forget,
// prune, group removal) with SIGKILL after each step of the removal in
// turn, until it gets through. After every kill, each snapshot that lists
// as finished must still have every file its manifest names and verify;
// the interrupted one may be left unfinished, and a second removal
// finishes the job.
func TestRemoveKilledAtEveryStep(t *testing.T) {
	for _, op := range []string{"forget", "prune", "group"} {
		t.Run(op, func(t *testing.T) {
			kills := 0
			for step := 1; ; step++ {
				s := newTestStore(t)
				t0 := time.Unix(1_800_000_000, 0)
				killSnapshot(t, s, t0)
				killSnapshot(t, s, t0.Add(time.Hour))
				cmd := exec.Command(os.Args[0], "-test.run=^TestRemoveKillHelper$")
				cmd.Env = append(os.Environ(), killEnvStore+"="+s.Root(), killEnvRun+"="+s.RuntimeDir(),
					killEnvOp+"="+op, killEnvStep+"="+strconv.Itoa(step))
				out, err := cmd.CombinedOutput()
				var ee *exec.ExitError
				killed := errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
				if err != nil && !killed {
					t.Fatalf("step %d: helper: %v\n%s", step, err, out)
				}
				checkFinishedComplete(t, s, fmt.Sprintf("%s killed after step %d", op, step))
				if !killed {
					t.Logf("%s: killed after each of %d steps; every finished snapshot complete each time (%s)",
						op, kills, bytes.TrimSpace(bytes.SplitN(out, []byte("\n"), 2)[0]))
					break
				}
				kills++
				// What was interrupted can be finished.
				if op != "group" {
					if _, err := s.Prune(context.Background(), killGroup, KeepOptions{Last: 1}, false, nil); err != nil {
						t.Fatalf("step %d: prune after the kill: %v", step, err)
					}
					checkFinishedComplete(t, s, "prune after the kill")
				} else if err := s.RemoveGroup(context.Background(), killGroup, nil); err != nil && !errors.Is(err, ErrNotFound) {
					t.Fatalf("step %d: group removal after the kill: %v", step, err)
				}
				if step > 200 {
					t.Fatal("removal never got through")
				}
			}
			if kills < 8 {
				t.Errorf("only %d steps: the removal is not hooked step by step", kills)
			}
		})
	}
}

// checkFinishedComplete fails when a snapshot listed as finished lacks a
// file its manifest names, or does not verify.
func checkFinishedComplete(t *testing.T, s *Store, when string) {
	t.Helper()
	snaps, _, err := s.Snapshots(killGroup)
	if errors.Is(err, ErrNotFound) {
		return
	}
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	for _, si := range snaps {
		if !si.Finished {
			continue
		}
		m, err := s.LoadManifest(si.Ref)
		if err != nil {
			t.Fatalf("%s: %s finished but its manifest: %v", when, si.Ref, err)
		}
		for _, f := range m.Files {
			if _, err := os.Stat(filepath.Join(s.Path(si.Ref.Dir()), f.Filename)); err != nil {
				t.Fatalf("%s: %s lists as finished but lacks %s", when, si.Ref, f.Filename)
			}
		}
		if r := verifyAll(t, s, si.Ref); len(r.Problems) > 0 {
			t.Fatalf("%s: %s does not verify", when, si.Ref)
		}
	}
}
