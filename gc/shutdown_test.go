package gc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestStopDuringSweepFinishesDirectory cancels a run at its first unlink:
// every condemned file of that chunk directory is still removed (the
// directory is finished under its lock), no other directory is started,
// the run fails with the cancellation, and .gc-status keeps the previous
// run's content.
func TestStopDuringSweepFinishesDirectory(t *testing.T) {
	ts := newTestStore(t)
	ts.snapshot(snapRef(group("s"), 0), ts.chunks(2))
	run(t, ts.collector(Options{Workers: 1}))
	previous, err := os.ReadFile(ts.Path(".gc-status"))
	if err != nil {
		t.Fatal(err)
	}
	// Five garbage files in directory 1234, one in 9abc.
	var same []string
	for i := range 5 {
		dir := filepath.Join(ts.Chunks().Dir(), "1234")
		os.MkdirAll(dir, 0o755)
		p := filepath.Join(dir, fmt.Sprintf("1234%060x", i))
		os.WriteFile(p, []byte("garbage"), 0o644)
		ts.agePath(p, 3*days)
		same = append(same, p)
	}
	other := filepath.Join(ts.Chunks().Dir(), "9abc", fmt.Sprintf("9abc%060x", 7))
	os.MkdirAll(filepath.Dir(other), 0o755)
	os.WriteFile(other, []byte("garbage"), 0o644)
	ts.agePath(other, 3*days)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := ts.collector(Options{Workers: 1})
	c.opts.test.beforeUnlink = func(string) { cancel() }
	if _, err := c.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("run cancelled in its sweep: %v", err)
	}
	for _, p := range same {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s: left in the directory being swept", filepath.Base(p))
		}
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("a directory after the stop was swept: %v", err)
	}
	if now, _ := os.ReadFile(ts.Path(".gc-status")); string(now) != string(previous) {
		t.Errorf(".gc-status rewritten with partial figures: %s (was %s)", now, previous)
	}
}
