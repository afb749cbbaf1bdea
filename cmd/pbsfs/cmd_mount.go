package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	pbsfs "github.com/pbsfs/pbsfs/fs"
	"github.com/pbsfs/pbsfs/gc"
	"github.com/pbsfs/pbsfs/gc/schedule"
	"github.com/pbsfs/pbsfs/store"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// mountMemoryLimit is the soft heap limit of a mount (GOMEMLIMIT
// overrides it): the 64 MiB chunk cache, chunks being decoded and room
// for the collector.
const mountMemoryLimit = 128 << 20

// mountCmd serves a datastore over FUSE in the foreground until SIGINT or
// SIGTERM, then unmounts. Removals through the mount (rm -r of a snapshot
// or group) are announced to the garbage collector, which can run in the
// background (--gc-interval).
type mountCmd struct {
	readOnly       bool
	allowOther     bool
	debug          bool
	gcInterval     time.Duration
	gcSchedule     string
	gcCutoff       time.Duration
	skipAtimeCheck bool
	keys           keyOpts
}

func (c *mountCmd) flags(fs *pflag.FlagSet) {
	fs.BoolVar(&c.readOnly, "read-only", false, "mount read-only: rm cannot remove snapshots")
	fs.BoolVar(&c.allowOther, "allow-other", false, "let other users in, with the kernel checking the archives' modes (default_permissions)")
	durationFlag(fs, &c.gcInterval, "gc-interval", 0, "collect garbage in the background this often, e.g. 24h (0: never)")
	fs.StringVar(&c.gcSchedule, "gc-schedule", "", "collect garbage at the times of a PBS calendar event in the local time zone, e.g. daily, 'sat 18:15', 'mon..fri 02:00', '*:0/30'")
	gcSafetyFlags(fs, &c.gcCutoff, &c.skipAtimeCheck)
	fs.BoolVar(&c.debug, "debug", false, "log every FUSE request")
	c.keys.addFlags(fs, "key file for encrypted snapshots, repeatable: each snapshot uses the key its manifest names")
}

func (c *mountCmd) run(ctx context.Context, e *env, args []string) error {
	switch len(args) {
	case 1:
		if e.storePath == "" {
			return usagef("want STORE MOUNTPOINT, e.g. pbsfs mount /srv/ds /mnt/ds (or MOUNTPOINT with --store or PBSFS_STORE)")
		}
	case 2:
		if err := e.storeArg(args[0]); err != nil {
			return err
		}
		args = args[1:]
	default:
		return usagef("want STORE MOUNTPOINT, e.g. pbsfs mount /srv/ds /mnt/ds (or MOUNTPOINT with --store or PBSFS_STORE)")
	}
	var sched *schedule.Event
	if c.gcSchedule != "" {
		if c.gcInterval != 0 {
			return usagef("--gc-schedule and --gc-interval: give one")
		}
		ev, err := schedule.Parse(c.gcSchedule)
		if err != nil {
			return usagef("--gc-schedule: %v", err)
		}
		sched = ev
	}
	if err := checkCutoff(e.stderr, c.gcCutoff, c.skipAtimeCheck); err != nil {
		return err
	}
	// A daemon: say what it does (removals, protection, scheduled
	// collections) at Info; --debug shows every request.
	e.logLevel.Set(slog.LevelInfo)
	if c.debug {
		e.logLevel.Set(slog.LevelDebug)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// The chunk cache is bounded, but chunk loads in flight and
		// garbage are not: keep the heap near what the cache needs.
		debug.SetMemoryLimit(mountMemoryLimit)
	}
	mnt := args[0]
	if fi, err := os.Stat(mnt); err != nil || !fi.IsDir() {
		return usagef("mount point %s: not a directory", mnt)
	}
	var err error
	if e.keys, err = c.keys.load(ctx, e); err != nil {
		return err
	}
	s, err := e.openStore()
	if err != nil {
		return err
	}
	defer s.Close()

	safety := gc.PBSSafety()
	safety.Cutoff = c.gcCutoff
	col := gc.New(s, gc.Options{Safety: safety, SkipAtimeCheck: c.skipAtimeCheck, Logger: e.log})
	mctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := pbsfs.Mount(mctx, mnt, s, pbsfs.Options{
		Logger:     e.log,
		Observer:   col,
		Pin:        func(idx store.Index) func() { return col.Pin(idx) },
		ReadOnly:   c.readOnly,
		AllowOther: c.allowOther,
		Debug:      c.debug,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "pbsfs: %s mounted on %s; stop with Ctrl-C or kill\n", s.Root(), mnt)

	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		d := &gc.Daemon{Collector: col, Interval: c.gcInterval, Schedule: sched, Logger: e.log}
		if sched != nil {
			st, err := gc.LoadScheduleState(s)
			if err != nil {
				e.log.Warn("garbage collection schedule state", "err", err)
			}
			d.Last = st.LastRun
			d.Started = func(t time.Time) {
				if err := gc.SaveScheduleState(s, gc.ScheduleState{LastRun: t}); err != nil {
					e.log.Warn("save garbage collection schedule state", "err", err)
				}
			}
			d.Planned = func(t time.Time) {
				if !t.IsZero() {
					e.log.Info("next garbage collection", "at", t.Format(time.RFC3339), "schedule", sched.String())
				}
			}
		}
		if err := d.Run(mctx); err != nil && !errors.Is(err, context.Canceled) {
			e.log.Error("garbage collector stopped", "err", err)
		}
	}()
	served := make(chan struct{})
	go func() { srv.Wait(); close(served) }()

	select {
	case <-served: // unmounted from outside (umount, fusermount -u)
	case <-ctx.Done():
		if err := srv.Unmount(); err != nil {
			// Busy: detach now; the kernel finishes when the last user
			// leaves.
			e.log.Warn("mount busy, detaching", "mountpoint", mnt, "err", err)
			if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
				cancel()
				<-gcDone
				return fmt.Errorf("unmount %s: %w", mnt, err)
			}
		}
		<-served
	}
	cancel()
	<-gcDone
	return nil
}
