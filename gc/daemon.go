package gc

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/pbsfs/pbsfs/gc/schedule"
)

// DefaultPoll is how often a scheduled daemon reads the wall clock while it
// waits for the next event. PBS's proxy checks its job schedules once a
// minute; reading the clock again, rather than sleeping until the event,
// notices a wall clock that jumped (the machine slept, the clock was set).
const DefaultPoll = time.Minute

// Daemon runs a collector in the background, as the mount does: at the
// events of a PBS calendar event (`--gc-schedule`), or at a fixed interval
// (`--gc-interval`).
type Daemon struct {
	// Collector is run; required.
	Collector *Collector
	// Schedule, if set, runs the collector at its events in Location, and
	// Interval and FirstDelay are ignored. As in PBS, a run is due when the
	// next event after the previous run's start has passed: events missed
	// while the machine slept or the daemon was not running give one run,
	// at once, not one per event.
	Schedule *schedule.Event
	// Location is the time zone of Schedule; time.Local if nil.
	Location *time.Location
	// Last is when the previous scheduled run started (kept by the caller
	// across restarts); the zero time means now, so that a new daemon
	// waits for the first event.
	Last time.Time
	// Poll bounds each wait for a scheduled run; DefaultPoll if zero.
	Poll time.Duration
	// Interval is the time between the end of one run and the start of the
	// next. With no Schedule, zero or less turns the daemon off: Run
	// returns at once.
	Interval time.Duration
	// FirstDelay is the wait before the first run; zero means one Interval.
	FirstDelay time.Duration
	// Logger receives one line per run; the collector's logger if nil.
	Logger *slog.Logger
	// Now is the wall clock; time.Now if nil.
	Now func() time.Time
	// After returns a channel that fires once d has passed; time.After if
	// nil. Tests inject a fake timer.
	After func(d time.Duration) <-chan time.Time
	// Planned, if set, is called with the time of the next run whenever
	// it changes (the zero time when the schedule has no more events).
	Planned func(next time.Time)
	// Started, if set, is called when a scheduled run starts, with its
	// start (the Last of a later daemon).
	Started func(start time.Time)
	// Ran, if set, is called after each run with its outcome.
	Ran func(Status, error)
}

// Run collects at the schedule or every Interval until ctx is done, and
// then returns nil. A run that finds another collection holding the store
// is skipped quietly; other failures are logged, and the next run comes at
// the next event or after Interval. A run under way when ctx is done stops
// (see Collector.Run).
func (d *Daemon) Run(ctx context.Context) error {
	if d.Schedule != nil {
		return d.runScheduled(ctx)
	}
	if d.Interval <= 0 {
		return nil
	}
	after := d.after()
	wait := d.FirstDelay
	if wait <= 0 {
		wait = d.Interval
	}
	now := d.Now
	if now == nil {
		now = time.Now
	}
	for {
		if d.Planned != nil {
			d.Planned(now().Add(wait))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-after(wait):
		}
		wait = d.Interval
		d.collect(ctx)
	}
}

func (d *Daemon) runScheduled(ctx context.Context) error {
	now, after := d.Now, d.after()
	if now == nil {
		now = time.Now
	}
	loc := d.Location
	if loc == nil {
		loc = time.Local
	}
	poll := d.Poll
	if poll <= 0 {
		poll = DefaultPoll
	}
	last := d.Last
	if last.IsZero() {
		last = now()
	}
	var planned time.Time
	for {
		next, ok := d.Schedule.Next(last, loc)
		if !ok {
			next = time.Time{}
		}
		if d.Planned != nil && !next.Equal(planned) {
			d.Planned(next)
		}
		planned = next
		if !ok {
			d.log().Info("garbage collection schedule has no more events", "schedule", d.Schedule.String())
			<-ctx.Done()
			return nil
		}
		t := now()
		if t.Before(next) {
			select {
			case <-ctx.Done():
				return nil
			case <-after(min(next.Sub(t), poll)):
			}
			continue
		}
		// Due: one run, however many events were missed.
		if d.Started != nil {
			d.Started(t)
		}
		last = t
		d.collect(ctx)
		if ctx.Err() != nil {
			return nil
		}
	}
}

func (d *Daemon) after() func(time.Duration) <-chan time.Time {
	if d.After != nil {
		return d.After
	}
	return time.After
}

func (d *Daemon) log() *slog.Logger {
	if d.Logger != nil {
		return d.Logger
	}
	return d.Collector.log
}

// collect runs the collector once and logs the outcome.
func (d *Daemon) collect(ctx context.Context) {
	log := d.log()
	st, err := d.Collector.Run(ctx)
	switch {
	case err == nil:
		log.Info("scheduled garbage collection done", "removed_chunks", st.RemovedChunks,
			"removed_bytes", st.RemovedBytes, "pending_chunks", st.PendingChunks)
	case isRunning(err):
		log.Debug("scheduled garbage collection skipped", "reason", err)
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		log.Info("garbage collection stopped", "reason", "shutdown", "err", err)
	default:
		log.Error("scheduled garbage collection failed", "err", err)
	}
	if d.Ran != nil {
		d.Ran(st, err)
	}
}

// RunDaemon runs c every interval, the first time after one interval,
// until ctx is done (see Daemon).
func RunDaemon(ctx context.Context, c *Collector, interval time.Duration) error {
	return (&Daemon{Collector: c, Interval: interval}).Run(ctx)
}
