package gc

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Daemon runs a collector at a fixed interval, as the mount does in the
// background (`--gc-interval`).
type Daemon struct {
	// Collector is run; required.
	Collector *Collector
	// Interval is the time between the end of one run and the start of the
	// next. Zero or less turns the daemon off: Run returns at once.
	Interval time.Duration
	// FirstDelay is the wait before the first run; zero means one Interval.
	FirstDelay time.Duration
	// Logger receives one line per run; the collector's logger if nil.
	Logger *slog.Logger
	// After returns a channel that fires once d has passed; time.After if
	// nil. Tests inject a fake timer.
	After func(d time.Duration) <-chan time.Time
	// Ran, if set, is called after each run with its outcome.
	Ran func(Status, error)
}

// Run collects every Interval until ctx is done, and then returns nil. A
// run that finds another collection holding the store is skipped quietly;
// other failures are logged, and the next run comes after Interval.
func (d *Daemon) Run(ctx context.Context) error {
	if d.Interval <= 0 {
		return nil
	}
	log := d.Logger
	if log == nil {
		log = d.Collector.log
	}
	after := d.After
	if after == nil {
		after = time.After
	}
	wait := d.FirstDelay
	if wait <= 0 {
		wait = d.Interval
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-after(wait):
		}
		wait = d.Interval
		st, err := d.Collector.Run(ctx)
		switch {
		case err == nil:
			log.Info("scheduled garbage collection done", "removed_chunks", st.RemovedChunks,
				"removed_bytes", st.RemovedBytes, "pending_chunks", st.PendingChunks)
		case isRunning(err):
			log.Debug("scheduled garbage collection skipped", "reason", err)
		case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		default:
			log.Error("scheduled garbage collection failed", "err", err)
		}
		if d.Ran != nil {
			d.Ran(st, err)
		}
	}
}

// RunDaemon runs c every interval, the first time after one interval,
// until ctx is done (see Daemon).
func RunDaemon(ctx context.Context, c *Collector, interval time.Duration) error {
	return (&Daemon{Collector: c, Interval: interval}).Run(ctx)
}
