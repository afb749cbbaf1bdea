package gc

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/gc/schedule"
)

// fakeClock is a wall clock a test sets, with timers it fires by hand.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits chan time.Duration
	ticks chan time.Time
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now, waits: make(chan time.Duration, 1), ticks: make(chan time.Time)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.waits <- d
	return c.ticks
}

// stop waits for done, firing the daemon's pending timer if it waits for
// it rather than for its cancelled context.
func (c *fakeClock) stop(done <-chan error) error {
	for {
		select {
		case c.ticks <- time.Time{}:
		case <-c.waits:
		case err := <-done:
			return err
		}
	}
}

// TestDaemonSchedule runs an hourly schedule with a fake wall clock: the
// daemon waits for the event in steps of at most Poll, runs once when it
// is due, runs once (not three times) after the clock jumped over three
// events, and reports the next planned run.
func TestDaemonSchedule(t *testing.T) {
	ts := newTestStore(t)
	start := time.Date(2026, 6, 10, 10, 20, 0, 0, time.UTC)
	clk := newFakeClock(start)
	var mu sync.Mutex
	var runs, started, planned []time.Time
	ran := make(chan error, 10)
	d := &Daemon{
		Collector: ts.collector(Options{}),
		Schedule:  schedule.MustParse("hourly"),
		Location:  time.UTC,
		Now:       clk.Now,
		After:     clk.After,
		Planned:   func(t time.Time) { mu.Lock(); planned = append(planned, t); mu.Unlock() },
		Started:   func(t time.Time) { mu.Lock(); started = append(started, t); mu.Unlock() },
		Ran: func(st Status, err error) {
			mu.Lock()
			runs = append(runs, st.Start)
			mu.Unlock()
			ran <- err
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()

	expectWait := func(want time.Duration) {
		t.Helper()
		if w := <-clk.waits; w != want {
			t.Fatalf("wait %v, want %v", w, want)
		}
	}
	expectRuns := func(n int) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if len(runs) != n {
			t.Fatalf("%d runs, want %d (started %v)", len(runs), n, started)
		}
	}
	// 10:20, next event 11:00: waits of one minute.
	expectWait(time.Minute)
	clk.set(start.Add(39*time.Minute + 30*time.Second)) // 10:59:30
	clk.ticks <- time.Time{}
	expectWait(30 * time.Second)
	expectRuns(0)
	clk.set(time.Date(2026, 6, 10, 11, 0, 1, 0, time.UTC))
	clk.ticks <- time.Time{}
	if err := <-ran; err != nil {
		t.Fatalf("scheduled run: %v", err)
	}
	expectWait(time.Minute) // next 12:00
	expectRuns(1)

	// The machine sleeps from 11:01 to 14:30: events at 12, 13 and 14
	// were missed; one run follows at once.
	clk.set(time.Date(2026, 6, 10, 14, 30, 0, 0, time.UTC))
	clk.ticks <- time.Time{}
	if err := <-ran; err != nil {
		t.Fatalf("catch-up run: %v", err)
	}
	expectWait(time.Minute) // next 15:00
	clk.set(time.Date(2026, 6, 10, 14, 31, 0, 0, time.UTC))
	clk.ticks <- time.Time{}
	expectWait(time.Minute)
	expectRuns(2)
	cancel()
	if err := clk.stop(done); err != nil {
		t.Fatalf("daemon: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	wantStarted := []time.Time{time.Date(2026, 6, 10, 11, 0, 1, 0, time.UTC), time.Date(2026, 6, 10, 14, 30, 0, 0, time.UTC)}
	wantPlanned := []time.Time{time.Date(2026, 6, 10, 11, 0, 0, 0, time.UTC), time.Date(2026, 6, 10, 12, 0, 0, 0, time.UTC), time.Date(2026, 6, 10, 15, 0, 0, 0, time.UTC)}
	if !equalTimes(started, wantStarted) {
		t.Errorf("started %v, want %v", started, wantStarted)
	}
	if !equalTimes(planned, wantPlanned) {
		t.Errorf("planned %v, want %v", planned, wantPlanned)
	}
}

// TestDaemonScheduleLast: a daemon started with the previous run's start
// (kept across a restart) that is older than the next event runs at once,
// one time.
func TestDaemonScheduleLast(t *testing.T) {
	ts := newTestStore(t)
	clk := newFakeClock(time.Date(2026, 6, 12, 9, 0, 0, 0, time.UTC))
	ran := make(chan error, 10)
	d := &Daemon{
		Collector: ts.collector(Options{}),
		Schedule:  schedule.MustParse("daily"),
		Location:  time.UTC,
		Last:      time.Date(2026, 6, 9, 0, 0, 5, 0, time.UTC),
		Now:       clk.Now,
		After:     clk.After,
		Ran:       func(_ Status, err error) { ran <- err },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	if w := <-clk.waits; w != time.Minute {
		t.Errorf("wait %v after the catch-up run", w)
	}
	select {
	case <-ran:
		t.Fatal("second catch-up run")
	default:
	}
	cancel()
	clk.stop(done)
}

func equalTimes(a, b []time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

func TestScheduleState(t *testing.T) {
	ts := newTestStore(t)
	st, err := LoadScheduleState(ts.Store)
	if err != nil || !st.LastRun.IsZero() {
		t.Fatalf("state of a new store: %+v, %v", st, err)
	}
	want := time.Date(2026, 6, 10, 11, 0, 1, 0, time.UTC)
	if err := SaveScheduleState(ts.Store, ScheduleState{LastRun: want}); err != nil {
		t.Fatal(err)
	}
	st, err = LoadScheduleState(ts.Store)
	if err != nil || !st.LastRun.Equal(want) {
		t.Fatalf("state read back: %+v, %v; want %v", st, err, want)
	}
}
