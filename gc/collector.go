package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pbsfs/pbsfs/store"
)

// Options configure a Collector.
type Options struct {
	// Safety holds the sweep's time margins; the zero value means
	// PBSSafety().
	Safety Safety
	// Now is the clock phase 1 starts by; time.Now if nil. Chunk atimes
	// come from the file system's clock, so Now must follow it: tests use
	// it to pin the decision, not to travel in time.
	Now func() time.Time
	// DryRun makes the sweep count what it would remove without removing
	// it. A dry run writes no .gc-status.
	DryRun bool
	// SkipAtimeCheck skips the access time self-test before each run (PBS's
	// gc-atime-safety-check=false). A Safety.Cutoff below PBS's 24 h 5 min
	// is then refused.
	SkipAtimeCheck bool
	// Workers is the number of goroutines that touch chunks in phase 1 and
	// sweep chunk directories in phase 2; GOMAXPROCS if zero.
	Workers int
	// CacheCapacity bounds the set of digests phase 1 remembers as touched
	// (PBS's gc-cache-capacity, 1,048,576 by default there); zero or less
	// means no bound, so that every chunk is touched once per run. Beyond
	// the bound some chunks are touched more than once; memory is about
	// 60 bytes per entry.
	CacheCapacity int
	// Logger receives progress and warnings; the store's logger if nil.
	Logger *slog.Logger
	// Hooks are called at the points where tests force interleavings.
	Hooks Hooks

	// off switches safeguards off, for tests that prove each one matters.
	off safeguards
	// test holds internal test hooks.
	test testHooks
}

// Hooks are called synchronously by Run at fixed points; a hook that
// blocks stops the run there. Nil hooks are skipped.
type Hooks struct {
	// AfterLock runs once the run holds the GC lock and the process lock,
	// before the access time self-test.
	AfterLock func(ctx context.Context)
	// AfterGroupListed runs after phase 1 listed a group's snapshots
	// (oldest first), and again after every relisting; relists counts
	// those.
	AfterGroupListed func(ctx context.Context, g store.GroupRef, snaps []store.SnapshotInfo, relists int)
	// BeforeIndexOpen runs before phase 1 opens an index file, including
	// those WillRemove marks (from the caller's goroutine).
	BeforeIndexOpen func(ctx context.Context, path string)
	// BeforeSweep runs once phase 1 is complete, before the foreign-holder
	// check that precedes the sweep.
	BeforeSweep func(ctx context.Context)
	// BeforePrefixSweep runs before the sweep locks and reads the chunk
	// directory of prefix. With several workers it is called from several
	// goroutines at once.
	BeforePrefixSweep func(ctx context.Context, prefix uint16)
}

// safeguards lists the protections a test may switch off. The zero value
// has every safeguard on.
type safeguards struct {
	relistNewest   bool // PBS 2025+: relist when the newest listed snapshot lost an index
	relistFinished bool // R3: relist when the newest finished (or a newer) snapshot lost an index
	willRemove     bool // mark a snapshot before the mount removes it
	pins           bool // mark pinned (open) indexes
	prefixLock     bool // hold the prefix directory exclusively while sweeping it
	foreignCheck   bool // refuse when a non-pbsfs process holds .lock
	gcLock         bool // one collection per store
	writers        bool // bound the cutoff by the oldest registered writer
}

// testHooks are internal hooks for tests.
type testHooks struct {
	// beforeUnlink runs between the stat that condemned a chunk file and
	// its unlink, with the prefix lock held.
	beforeUnlink func(path string)
	// touch replaces store.TouchPath.
	touch func(path string) error
	// s3Batch, if set, replaces the keys per DeleteObjects request.
	s3Batch int
	// s3BatchDone runs when a batch's objects and markers are gone and
	// its prefix locks released.
	s3BatchDone func(names []string)
}

// Collector is the garbage collector of one datastore. Run collects; the
// mount also calls WillRemove before it removes a snapshot and Pin for the
// indexes of open files. A Collector is safe for concurrent use; one Run
// at a time proceeds, across processes too (ErrRunning).
type Collector struct {
	s    *store.Store
	opts Options
	log  *slog.Logger

	// phaseMu orders the phase changes of a run against WillRemove, which
	// holds it shared while it marks.
	phaseMu sync.RWMutex
	phase   Phase     // guarded by phaseMu
	run     *runState // current run while phase is PhaseMark; guarded by phaseMu

	pinMu   sync.Mutex
	pins    map[uint64]Index
	nextPin uint64

	prog progress
}

// Phase is the stage a collection is in.
type Phase int32

// Phases of a run.
const (
	PhaseIdle  Phase = iota // no run
	PhaseStart              // locks, checks, atime self-test
	PhaseMark               // phase 1
	PhaseSweep              // phase 2
)

// String returns the phase's name as progress shows it.
func (p Phase) String() string {
	switch p {
	case PhaseStart:
		return "starting"
	case PhaseMark:
		return "marking"
	case PhaseSweep:
		return "sweeping"
	}
	return "idle"
}

// New returns a collector for s. The collector does not own s.
func New(s *store.Store, opts Options) *Collector {
	if opts.Safety == (Safety{}) {
		opts.Safety = PBSSafety()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = s.Logger()
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	return &Collector{s: s, opts: opts, log: opts.Logger, pins: make(map[uint64]Index)}
}

// Store returns the collected store.
func (c *Collector) Store() *store.Store { return c.s }

// lockPath is the GC lock of the store: <runtime>/pbsfs/<store>/gc.lock.
func (c *Collector) lockPath() string {
	return filepath.Join(c.s.RuntimeDir(), "pbsfs", c.s.Name(), "gc.lock")
}

// Run collects garbage once: phase 1 marks every chunk an index refers
// to, phase 2 removes the chunk files whose atime is older than the cutoff
// (spec §6). It writes .gc-status when it succeeds, unless DryRun is set.
// Any error leaves the chunks as they were from that point on: nothing is
// swept after an incomplete mark.
func (c *Collector) Run(ctx context.Context) (st Status, err error) {
	o := c.opts
	if o.Safety.Cutoff < MinCutoff {
		return Status{}, fmt.Errorf("cutoff %s is below %s: %w", o.Safety.Cutoff, MinCutoff, ErrUnsafeCutoff)
	}
	if o.SkipAtimeCheck && o.Safety.Cutoff < PBSSafety().Cutoff {
		return Status{}, fmt.Errorf("cutoff %s without the atime self-test: %w", o.Safety.Cutoff, ErrUnsafeCutoff)
	}
	if !o.off.gcLock {
		gl, err := acquireGCLock(c.lockPath())
		if err != nil {
			return Status{}, fmt.Errorf("datastore %s: %w", c.s.Name(), err)
		}
		defer gl.release()
	}
	c.setPhase(PhaseStart, nil)
	defer c.setPhase(PhaseIdle, nil)
	c.prog.reset()
	if !o.DryRun {
		// What `pbsfs status` shows: progress while the run goes on, the
		// outcome at the end.
		started := time.Now()
		stop, done := make(chan struct{}), make(chan struct{})
		go c.publishProgress(started, time.Second, stop, done)
		defer func() {
			close(stop)
			<-done
			c.recordRun(started, st, err)
		}()
	}

	// The shared process lock keeps a PBS garbage collection (which needs
	// it exclusively) out for the whole run, and lets pbsfs writers of
	// other processes go on.
	guard, err := c.s.ProcessLocker().Shared()
	if err != nil {
		return Status{}, fmt.Errorf("datastore %s: process lock: %w", c.s.Name(), err)
	}
	defer guard.Release()
	if !o.off.foreignCheck {
		if err := c.checkForeign(); err != nil {
			return Status{}, err
		}
	}
	rc := c.remote()
	if c.s.Remote() && rc == nil {
		return Status{}, fmt.Errorf("datastore %s: its chunk store cannot be collected", c.s.Name())
	}
	if rc != nil {
		if err := c.checkInUse(ctx, rc); err != nil {
			return Status{}, err
		}
	}

	if h := o.Hooks.AfterLock; h != nil {
		h(ctx)
	}
	if err := ctx.Err(); err != nil {
		return Status{}, err
	}
	st = Status{Start: o.Now(), DryRun: o.DryRun}
	oldest, err := c.oldestWriter(st.Start, guard.Time())
	if err != nil {
		return Status{}, err
	}
	st.OldestWriter = oldest
	if !o.SkipAtimeCheck {
		if err := c.checkAtime(ctx); err != nil {
			return Status{}, err
		}
	}
	st.MinAtime = cutoff(st.Start, st.OldestWriter, o.Safety)
	c.log.Info("garbage collection started", "store", c.s.Name(), "store_name_from", c.s.NameSource(), "min_atime", st.MinAtime.UTC().Format(time.RFC3339),
		"oldest_writer", st.OldestWriter.UTC().Format(time.RFC3339), "dry_run", o.DryRun)

	r := newRunState(c)
	if err := r.openChunks(); err != nil {
		return Status{}, err
	}
	defer r.close()
	markStart := time.Now()
	c.setPhase(PhaseMark, r)
	if err := c.mark(ctx, r); err != nil {
		c.setPhase(PhaseStart, nil)
		return Status{}, fmt.Errorf("phase 1 (mark): %w", err)
	}
	// Close phase 1: after this no WillRemove marks, and every pin taken
	// so far is a root.
	pins := c.sealMark()
	if err := r.failed(); err != nil {
		return Status{}, fmt.Errorf("phase 1 (mark): %w", err)
	}
	if !o.off.pins {
		for _, idx := range pins {
			if err := r.markChunks(ctx, idx, "pinned index"); err != nil {
				return Status{}, fmt.Errorf("phase 1 (mark pins): %w", err)
			}
		}
	}
	r.fill(&st)
	st.MarkTime = time.Since(markStart)
	if h := o.Hooks.BeforeSweep; h != nil {
		h(ctx)
	}
	if !o.off.foreignCheck {
		if err := c.checkForeign(); err != nil {
			return Status{}, fmt.Errorf("before sweep: %w", err)
		}
	}
	if rc != nil {
		if err := c.checkInUse(ctx, rc); err != nil {
			return Status{}, fmt.Errorf("before sweep: %w", err)
		}
	}
	c.setPhase(PhaseSweep, nil)
	sweepStart := time.Now()
	if rc != nil {
		if err := c.sweepS3(ctx, r, rc, &st); err != nil {
			return Status{}, fmt.Errorf("phase 2 (sweep %s): %w", rc.Location(), err)
		}
		if err := c.s3Phase3(ctx, r, &st); err != nil {
			return Status{}, fmt.Errorf("phase 3 (sweep the markers): %w", err)
		}
		st.S3Requests = rc.Requests()
	} else if err := c.sweep(ctx, r, &st); err != nil {
		return Status{}, fmt.Errorf("phase 2 (sweep): %w", err)
	}
	st.SweepTime = time.Since(sweepStart)
	c.logSummary(st)
	if !o.DryRun {
		c.writeStatus(st)
	}
	return st, nil
}

// setPhase moves the collector to phase p with run state r.
func (c *Collector) setPhase(p Phase, r *runState) {
	c.phaseMu.Lock()
	c.phase, c.run = p, r
	c.prog.phase.Store(int32(p))
	c.phaseMu.Unlock()
}

// sealMark ends phase 1 for WillRemove and returns the pins to mark.
func (c *Collector) sealMark() []Index {
	c.phaseMu.Lock()
	defer c.phaseMu.Unlock()
	c.phase, c.run = PhaseSweep, nil
	c.prog.phase.Store(int32(PhaseSweep))
	c.pinMu.Lock()
	defer c.pinMu.Unlock()
	out := make([]Index, 0, len(c.pins))
	for _, idx := range c.pins {
		out = append(out, idx)
	}
	return out
}

// writeStatus writes .gc-status atomically; failures are only logged, as
// in PBS.
func (c *Collector) writeStatus(st Status) {
	b, err := st.MarshalGCStatus()
	if err == nil {
		err = store.WriteFileAtomic(filepath.Join(c.s.Root(), ".gc-status"), b, 0o644)
	}
	if err != nil {
		c.log.Warn("write .gc-status", "err", err)
	}
}

func (c *Collector) logSummary(st Status) {
	verb := "removed"
	if st.DryRun {
		verb = "would remove"
	}
	c.log.Info("garbage collection done",
		"index_files", st.IndexFileCount, "index_bytes", st.IndexDataBytes,
		verb+"_chunks", st.RemovedChunks, verb+"_bytes", st.RemovedBytes, verb+"_bad", st.RemovedBad,
		"pending_chunks", st.PendingChunks, "pending_bytes", st.PendingBytes,
		"disk_chunks", st.DiskChunks, "disk_bytes", st.DiskBytes, "still_bad", st.StillBad,
		"missing_chunks", st.MissingChunks, "dedup_factor", fmt.Sprintf("%.2f", st.DedupFactor()),
		"mark_time", st.MarkTime.Round(time.Millisecond), "sweep_time", st.SweepTime.Round(time.Millisecond))
}

// progress holds counters Progress reads while a run goes on.
type progress struct {
	phase        atomic.Int32
	indexFiles   atomic.Int64
	indexTotal   atomic.Int64
	prefixes     atomic.Int64
	removed      atomic.Int64
	removedBytes atomic.Int64
}

func (p *progress) reset() {
	p.indexFiles.Store(0)
	p.indexTotal.Store(0)
	p.prefixes.Store(0)
	p.removed.Store(0)
	p.removedBytes.Store(0)
}

// Progress is a view of a running collection.
type Progress struct {
	Phase Phase
	// IndexFiles is the number of index files marked so far; IndexTotal
	// the number the initial walk found.
	IndexFiles, IndexTotal int64
	// Prefixes is the number of chunk directories swept, of 65536.
	Prefixes int64
	// Removed and RemovedBytes count the files removed so far (or that
	// would be, in a dry run).
	Removed, RemovedBytes int64
}

// Progress returns the state of the current run.
func (c *Collector) Progress() Progress {
	return Progress{
		Phase:      Phase(c.prog.phase.Load()),
		IndexFiles: c.prog.indexFiles.Load(), IndexTotal: c.prog.indexTotal.Load(),
		Prefixes: c.prog.prefixes.Load(),
		Removed:  c.prog.removed.Load(), RemovedBytes: c.prog.removedBytes.Load(),
	}
}

// isRunning reports whether err says another collection holds the lock.
func isRunning(err error) bool { return errors.Is(err, ErrRunning) }
