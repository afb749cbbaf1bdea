package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
	"time"

	pbsfs "github.com/pbsfs/pbsfs/fs"
	"github.com/pbsfs/pbsfs/gc"
	"github.com/pbsfs/pbsfs/gc/schedule"
	"github.com/pbsfs/pbsfs/metrics"
	"github.com/pbsfs/pbsfs/store"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// mountMemoryHeadroom is what the soft heap limit of a mount (GOMEMLIMIT
// overrides it) allows beyond the decoded-chunk cache: chunks being
// decoded (one per core), zstd state, directory listings and the
// collector's marks.
const mountMemoryHeadroom = 64 << 20

// servingProcs is how many Go processors a mount has beyond one per core
// (GOMAXPROCS overrides): room for the goroutines serving requests while
// read-ahead decodes keep the cores busy.
const servingProcs = 2

// coreProcs is the runtime's own GOMAXPROCS: the cores (or the CPU quota)
// the process may use, before a mount raises it by servingProcs.
var coreProcs = runtime.GOMAXPROCS(0)

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
	nonempty       bool
	shutdownWait   time.Duration
	metricsListen  string
	logFormat      string
	readyFD        int
	cacheSize      byteSize
	spillSize      byteSize
	spillDir       string
}

// gcHooksKey is the context key of collector hooks a test passes to the
// mount (withGCHooks).
type gcHooksKey struct{}

// withGCHooks returns ctx carrying collector hooks for the mount's
// collector: tests stop a run in a chosen phase.
func withGCHooks(ctx context.Context, h gc.Hooks) context.Context {
	return context.WithValue(ctx, gcHooksKey{}, h)
}

// byteSize is a flag value of bytes with an optional K, M, G or T suffix
// (powers of 1024; "KiB", "MB" and the like are read the same way).
type byteSize int64

func (b *byteSize) String() string {
	v := int64(*b)
	for _, u := range []string{"T", "G", "M", "K"} {
		n := int64(1) << (10 * (strings.Index("KMGT", u) + 1))
		if v >= n && v%n == 0 {
			return fmt.Sprintf("%d%s", v/n, u)
		}
	}
	return strconv.FormatInt(v, 10)
}

func (b *byteSize) Set(s string) error {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	shift := 0
	if t != "" {
		if i := strings.IndexByte("KMGT", t[len(t)-1]); i >= 0 {
			shift = 10 * (i + 1)
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)>>shift {
		return fmt.Errorf("%q: want a size such as 256M or 1G", s)
	}
	*b = byteSize(n << shift)
	return nil
}

func (b *byteSize) Type() string { return "size" }

func (c *mountCmd) flags(fs *pflag.FlagSet) {
	fs.BoolVar(&c.readOnly, "read-only", false, "mount read-only: rm cannot remove snapshots")
	fs.BoolVar(&c.allowOther, "allow-other", false, "let other users in, with the kernel checking the archives' modes (default_permissions)")
	durationFlag(fs, &c.gcInterval, "gc-interval", 0, "collect garbage in the background this often, e.g. 24h (0: never)")
	fs.StringVar(&c.gcSchedule, "gc-schedule", "", "collect garbage at the times of a PBS calendar event in the local time zone, e.g. daily, 'sat 18:15', 'mon..fri 02:00', '*:0/30'")
	gcSafetyFlags(fs, &c.gcCutoff, &c.skipAtimeCheck)
	fs.BoolVar(&c.nonempty, "nonempty", false, "mount even on a non-empty or already mounted directory (hiding what is there)")
	fs.StringVar(&c.metricsListen, "metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9750 (off if empty)")
	fs.DurationVar(&c.shutdownWait, "shutdown-wait", 5*time.Second, "on SIGTERM with files still open, serve them this long before exiting (they then fail with ENOTCONN)")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json (no timestamps when systemd's journal takes the log)")
	fs.BoolVar(&c.debug, "debug", false, "log every FUSE request")
	c.keys.addFlags(fs, "key file for encrypted snapshots, repeatable: each snapshot uses the key its manifest names")
	fs.IntVar(&c.readyFD, "ready-fd", 0, "write \"ready\" to this descriptor once the mount answers (the mount helper form)")
	fs.MarkHidden("ready-fd")
	c.cacheSize = store.DefaultCacheBytes
	fs.Var(&c.cacheSize, "cache-size", "memory for decoded chunks (e.g. 256M, 1G); the mount's memory stays near this plus 100M")
	c.spillSize = store.DefaultSpillBytes
	fs.Var(&c.spillSize, "spill-size", "disk for verified decoded chunks of unencrypted archives that reads come back to (those stored compressed), in an unnamed scratch file, at most a quarter of the free space (0: none)")
	fs.StringVar(&c.spillDir, "spill-dir", store.DefaultSpillDir, "directory of the --spill-size scratch file (a disk, not tmpfs)")
}

func (c *mountCmd) run(ctx context.Context, e *env, args []string) error {
	if p := os.Getenv("PBSFS_CPUPROFILE"); p != "" {
		// A CPU profile of the whole mount, for go tool pprof; %p in
		// the name is the process id (a benchmark runs several mounts).
		p = strings.ReplaceAll(p, "%p", strconv.Itoa(os.Getpid()))
		if f, err := os.Create(p); err == nil {
			if err := pprof.StartCPUProfile(f); err == nil {
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
		}
	}
	if p := os.Getenv("PBSFS_TRACE"); p != "" {
		// An execution trace of the whole mount, for go tool trace: where
		// reads wait (fetches in flight, read-ahead slots, locks); %p as
		// above.
		p = strings.ReplaceAll(p, "%p", strconv.Itoa(os.Getpid()))
		if f, err := os.Create(p); err == nil {
			if err := trace.Start(f); err == nil {
				defer func() { trace.Stop(); f.Close() }()
			}
		}
	}
	if p := os.Getenv("PBSFS_MEMPROFILE"); p != "" {
		// A heap profile written when the mount ends, for go tool pprof
		// (-sample_index=alloc_space shows what made garbage).
		defer func() {
			if f, err := os.Create(p); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	storeFromEnv := len(args) == 1 && !e.storeGiven()
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
	h, err := newLogHandler(e.logOut, c.logFormat, e.logLevel)
	if err != nil {
		return err
	}
	e.log = slog.New(h)
	if c.cacheSize < 1<<20 {
		return usagef("--cache-size %s: want at least 1M", c.cacheSize.String())
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// The chunk cache is bounded, but chunk loads in flight and
		// garbage are not: keep the heap near what the cache needs.
		debug.SetMemoryLimit(int64(c.cacheSize) + mountMemoryHeadroom)
	}
	mnt := args[0]
	if err := checkMountpoint(e.storePath, mnt, c.nonempty); err != nil {
		if storeFromEnv {
			err = fmt.Errorf("%w (the datastore is $PBSFS_STORE; give both: pbsfs mount STORE MOUNTPOINT)", err)
		}
		return err
	}
	if e.keys, err = c.keys.load(ctx, e); err != nil {
		return err
	}
	opts := e.storeOptions()
	opts.CacheBytes = int64(c.cacheSize)
	opts.SpillBytes, opts.SpillDir = int64(c.spillSize), c.spillDir
	if !e.isS3() {
		opts.ReadAheadSlots = coreProcs // one decode per core (see servingProcs)
	}
	s, err := e.openStoreWith(opts)
	if err != nil {
		return err
	}
	defer s.Close()
	go s.PrewarmMemory() // while the kernel mounts and the first requests come
	if os.Getenv("GOMAXPROCS") == "" {
		// The store's read-ahead decodes one chunk per core at a time
		// (its slots were counted when it opened). The goroutines that
		// serve FUSE requests get Go processors of their own beside
		// them, and the kernel shares the cores among the threads: with
		// one processor per core a request whose bytes are ready waited
		// until a decode let its processor go, which a SHA-256 or zstd
		// loop does only every few milliseconds (traced: a request
		// coming back from its read of /dev/fuse waited 1.3 ms for a
		// processor on average, 0.37 ms with two more processors).
		runtime.GOMAXPROCS(coreProcs + servingProcs)
	}

	safety := gc.PBSSafety()
	safety.Cutoff = c.gcCutoff
	hooks, _ := ctx.Value(gcHooksKey{}).(gc.Hooks)
	col := gc.New(s, gc.Options{Safety: safety, SkipAtimeCheck: c.skipAtimeCheck, Logger: e.log, Hooks: hooks})
	var met *metrics.Metrics
	metricsURL := ""
	if c.metricsListen != "" {
		met = metrics.New()
		met.WatchCollector(col)
		met.WatchStore(s)
		met.WatchCache(func() metrics.CacheStats {
			cs := s.CacheStats()
			return metrics.CacheStats{Hits: cs.Hits, Misses: cs.Misses, Evictions: cs.Evictions, Bytes: cs.Bytes}
		})
		met.WatchReadAhead(s.ReadAheadChunks)
		ms, err := metrics.Listen(c.metricsListen, met.Handler())
		if err != nil {
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		defer ms.Close()
		metricsURL = fmt.Sprintf("http://%s/metrics", ms.Addr())
		fmt.Fprintf(e.stdout, "pbsfs: metrics on %s\n", metricsURL)
	}
	mctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mopts := pbsfs.Options{
		Logger:     e.log,
		Observer:   col,
		Pin:        func(idx store.Index) func() { return col.Pin(idx) },
		ReadOnly:   c.readOnly,
		AllowOther: c.allowOther,
		Debug:      c.debug,
		// A bucket's images and large files are streamed once (a
		// restore, a copy): their pages are not kept behind the reader
		// (see fs.Options.DropBehind).
		DropBehind: e.isS3(),
	}
	if met != nil {
		mopts.Metrics = met
	}
	srv, err := pbsfs.Mount(mctx, mnt, s, mopts)
	if err != nil {
		return err
	}
	if err := mountAnswers(mnt); err != nil {
		srv.Unmount()
		return err
	}
	e.log.Info("datastore", "path", s.Root(), "name", s.Name(), "name_from", s.NameSource())
	fmt.Fprintf(e.stdout, "pbsfs: %s (datastore name %q, from the %s) mounted on %s; stop with Ctrl-C or kill\n",
		s.Root(), s.Name(), s.NameSource(), mnt)

	// The mount's record for pbsfs status.
	absMnt, _ := filepath.Abs(mnt)
	rec := gc.MountRecord{Mountpoint: absMnt, Started: time.Now(), GCSchedule: c.gcSchedule, Metrics: metricsURL}
	if c.gcInterval > 0 && sched == nil {
		rec.GCInterval = c.gcInterval.String()
	}
	var recMu sync.Mutex
	publish := func() {
		recMu.Lock()
		defer recMu.Unlock()
		if err := gc.PublishMount(s, rec); err != nil {
			e.log.Warn("mount record for pbsfs status", "err", err)
		}
	}
	publish()
	defer gc.UnpublishMount(s)

	gcCtx, gcCancel := context.WithCancel(context.Background())
	defer gcCancel()
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		d := &gc.Daemon{Collector: col, Interval: c.gcInterval, Schedule: sched, Logger: e.log}
		if met != nil {
			d.Ran = met.GCRan
		}
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
		}
		d.Planned = func(t time.Time) {
			recMu.Lock()
			rec.NextGC = nil
			if !t.IsZero() {
				rec.NextGC = &t
			}
			recMu.Unlock()
			publish()
			if !t.IsZero() && sched != nil {
				e.log.Info("next garbage collection", "at", t.Format(time.RFC3339), "schedule", sched.String())
			}
		}
		if err := d.Run(gcCtx); err != nil && !errors.Is(err, context.Canceled) {
			e.log.Error("garbage collector stopped", "err", err)
		}
	}()
	served := make(chan struct{})
	go func() { srv.Wait(); close(served) }()

	// Stopping: a collection under way ends first (see stopGC), then the
	// mount goes.
	stopGC := func() {
		gcCancel()
		<-gcDone
	}
	// Up and answering: tell the helper that started us, or systemd.
	signalReady(e, c.readyFD)
	select {
	case <-served: // unmounted from outside (umount, fusermount -u)
		sdNotify("STOPPING=1")
		e.log.Info("unmounted, stopping", "mountpoint", mnt)
		stopGC()
		return nil
	case <-ctx.Done():
	}
	sdNotify("STOPPING=1")
	e.log.Info("stopping", "mountpoint", mnt)
	stopGC()
	if err := srv.Unmount(); err != nil {
		// Busy: detach now, so that the mount point is free; open files
		// are served for --shutdown-wait, then the process exits and
		// they fail with ENOTCONN (never wrong data).
		e.log.Warn("mount busy, detaching", "mountpoint", mnt, "err", err)
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", mnt, err)
		}
		select {
		case <-served:
		case <-time.After(c.shutdownWait):
			e.log.Warn("files still open; exiting, they now fail with ENOTCONN", "mountpoint", mnt)
		}
		return nil
	}
	<-served
	return nil
}

// checkMountpoint refuses a mount point that would hurt: one that is the
// datastore, lies inside it or holds it (the mount would serve itself
// and hang), one that is not an empty directory (the mount would hide its
// files) and one that is mounted already (mounts would stack); nonempty
// allows the last two, as FUSE's option of that name does.
func checkMountpoint(storePath, mnt string, nonempty bool) error {
	fi, err := os.Stat(mnt)
	switch {
	case errors.Is(err, unix.ENOTCONN):
		return fmt.Errorf("mount point %s: a mount that died is still there; unmount it first: fusermount3 -u %s", mnt, mnt)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("mount point %s does not exist; create an empty directory first: mkdir -p %s", mnt, mnt)
	case err != nil:
		return fmt.Errorf("mount point: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("mount point %s is not a directory; mount on an empty directory", mnt)
	}
	dir, err := realPath(mnt)
	if err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	if root, err := realPath(storePath); err == nil {
		switch {
		case dir == root:
			return fmt.Errorf("mount point %s is the datastore itself: the mount would serve itself and hang; mount it on an empty directory outside the datastore, e.g. pbsfs mount %s /mnt/pbsfs", mnt, storePath)
		case within(dir, root):
			return fmt.Errorf("mount point %s is inside the datastore %s: the mount would serve itself and hang; use an empty directory outside the datastore", mnt, storePath)
		case within(root, dir):
			return fmt.Errorf("the datastore %s is inside mount point %s: the mount would hide the datastore from itself and hang; use an empty directory outside the datastore", storePath, mnt)
		}
	}
	if nonempty {
		return nil
	}
	if fstype, ok := mountedAt(dir); ok {
		return fmt.Errorf("mount point %s is already mounted (%s); unmount it first (umount %s), or add --nonempty to mount over it", mnt, fstype, mnt)
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	names, _ := f.Readdirnames(1)
	f.Close()
	if len(names) > 0 {
		return fmt.Errorf("mount point %s is not empty (it holds %s): the mount would hide its files; use an empty directory, or add --nonempty", mnt, names[0])
	}
	return nil
}

// realPath returns p absolute, with every symbolic link resolved.
func realPath(p string) (string, error) {
	p, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(p)
}

// within reports whether path p lies strictly below directory dir.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}

// mountedAt reports whether dir is a mount point of this mount namespace,
// and its file system type, from /proc/self/mountinfo.
func mountedAt(dir string) (string, bool) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	fstype, found := "", false
	for _, line := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint options... - fstype source superopts
		f := strings.Fields(line)
		if len(f) < 5 || unescapeMountinfo(f[4]) != dir {
			continue
		}
		found = true // the last match is the mount on top
		for i, x := range f {
			if x == "-" && i+1 < len(f) {
				fstype = f[i+1]
			}
		}
	}
	return fstype, found
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of a
// mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
