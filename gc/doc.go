// Package gc is the garbage collector of a PBS datastore: PBS's mark and
// sweep (shared/spec/datastore.md §6), made safe against writers and
// pruners in other processes (shared/design/gc-safety.md).
//
// A run (Collector.Run):
//
//  1. takes the GC lock, an flock on <runtime>/pbsfs/<store>/gc.lock: one
//     collection per store across processes and within one (ErrRunning,
//     naming the holder's pid);
//  2. takes the shared fcntl process lock on <store>/.lock for the run,
//     which keeps a PBS garbage collection out and lets pbsfs writers of
//     other processes go on, and refuses to run when a process that is
//     neither this one nor a registered pbsfs writer holds a lock on .lock
//     (ErrForeignLock, see "Foreign holders") — a PBS daemon's writers are
//     invisible to pbsfs otherwise;
//  3. reads the oldest active writer from the writer registry and from
//     this process's process locker, runs the access time self-test and
//     computes the cutoff (Safety, cutoff);
//  4. phase 1 marks (utimensat atime NOW, mtime OMIT) every chunk of every
//     index, each digest once per run;
//  5. checks for foreign holders of .lock again, then sweeps each chunk
//     directory while holding its prefix lock exclusively;
//  6. writes .gc-status (PBS's JSON) atomically.
//
// Any error before the sweep ends the run with nothing removed.
//
// # Foreign holders
//
// PBS writers (backup sessions, sync/pull, tape restore) hold a shared
// POSIX record lock on the whole of <store>/.lock (F_SETLK, F_RDLCK) while
// they write; PBS's garbage collection takes it exclusively. A PBS daemon
// that is idle holds nothing. So every process other than this one holding
// any lock on .lock is either a registered pbsfs writer or foreign.
//
// The holders are found by lock.ProcessLocker.OtherHolders, which does not
// trust the device number of stat: /proc/locks prints the device of the
// file system's superblock, stat the one of the btrfs subvolume (and
// overlayfs its own), and inode numbers repeat across btrfs subvolumes.
// The check therefore
//
//   - places a probe, an OFD read lock on one byte at a random offset of at
//     least 2^62 (nothing PBS does locks there or conflicts with it), and
//     takes the name /proc/locks gives the file from the probe's line;
//     no such line, or two, refuses the run;
//   - requires this process's own POSIX lock under that name (it holds the
//     shared lock), or refuses;
//   - lists every other lock under that name; one is set aside only when
//     its process demonstrably has no descriptor of .lock open (every
//     /proc/PID/fd entry readable and none stats as the file — a POSIX lock
//     dies with the holder's last descriptor of the file), which is how a
//     lock on another subvolume's file with the same name is told apart;
//   - asks the lock itself (F_OFD_GETLK for an exclusive lock of the whole
//     file): the first conflicting lock the kernel names must be ours or a
//     holder found above, and pid 0 (a process this pid namespace cannot
//     see) refuses;
//   - outside the initial pid namespace, where /proc/locks hides the
//     locks of processes it cannot see, upgrades this process's lock to an
//     exclusive one for an instant (F_SETLK, never waiting) and back: that
//     succeeds only when no other process anywhere holds a lock; failing,
//     the run is refused. (A pbsfs backup starting in that instant
//     retries its shared lock for 100 ms.)
//
// Holders that remain and are not registered pbsfs writers are foreign.
// This is at least as safe as matching stat's device and inode in
// /proc/locks was: that found no holder on btrfs and refused everything,
// and where it worked it saw the same lines the probe finds. A holder is
// only ever dropped on positive evidence that it cannot hold .lock; every
// doubt (unreadable /proc/PID/fd, an OFD lock outside the probe range, a
// kernel answer /proc/locks does not explain) counts as foreign. The check
// runs before phase 1 and again before the sweep; tests run it on ext4,
// xfs, btrfs (plain, a subvolume, a subvol= mount, two subvolumes whose
// .lock files share an inode number), tmpfs, and in a pid namespace of its
// own beside a holder outside.
//
// # Phase 1
//
// As PBS 2025+: the list of index files from a walk of the whole store is
// taken first; then every namespace (pre-order), every group, each
// group's snapshots from the newest on. When an index vanishes, the group
// may be listed again; after 10 relists the group's lock is taken, after
// 11 the run fails (ErrRelists). Index files of the first walk that the
// iteration did not reach are marked last. An index that exists but does
// not parse fails the run; a missing chunk is a warning, and its .bad
// copies are touched instead.
//
// pbsfs relists in more cases than PBS. PBS relists when an index of the
// newest listed snapshot vanished: then a newer snapshot, which may reuse
// its chunks without touching them, has landed and its base was pruned
// (the race PBS fixed in 2025, spec §6.3). If the newest listed snapshot
// was a backup still in progress, its base is the newest finished one, and
// PBS misses that base's removal. pbsfs therefore relists when an index
// vanishes from the newest finished listed snapshot or anything newer. The
// issue asked to relist when any index vanished; limiting it to these
// snapshots is as safe — a new backup's base is always the newest finished
// snapshot at its start, which is at or after the newest finished one
// listed, and older snapshots are nobody's base — and it keeps a prune of
// many old snapshots from driving a run into the group lock and ErrRelists.
// Snapshots that land below the newest one (a PBS sync/pull) reuse no base:
// PBS's pull touches every chunk it finds present, as pbsfs writers do.
//
// Chunks are touched by Options.Workers goroutines (an index's chunks are
// split among them); the walk, the iteration and its relisting stay
// sequential, as in PBS.
//
// The set of touched digests is unbounded by default, where PBS keeps an
// LRU of 1,048,576 entries: each chunk is touched once per run
// (Status.Touches reports the calls), at about 60 bytes per distinct
// chunk. Options.CacheCapacity bounds it; forgetting a digest only costs
// another touch.
//
// # Removals and open files
//
// The mount passes WillRemove as the store.RemoveHook of its removals.
// While phase 1 runs it marks the snapshot's indexes before the files go.
// Removals made elsewhere (PBS, another pbsfs, rm) are covered by the
// relisting above; the mount's ones by both (a removal announced just
// before phase 1 starts and carried out while it runs is left to the
// relisting). Pin makes an index a root of
// every run, so a removed snapshot whose file is still open through the
// mount keeps its chunks; pins are seen by collectors of the same process
// only.
//
// # Sweep
//
// Per PBS (spec §6.4), in whole seconds: atime < min_atime → removed; atime
// < oldest writer → pending; else in use. min_atime = min(start − Cutoff,
// oldest writer − WriterMargin), never later than PBS 2025+'s value (see
// cutoff). A Cutoff shorter than PBS's 24 h 5 min requires the atime
// self-test, which, unlike PBS's, needs no one-second sleep (checkAtime).
// While a chunk directory is swept, its prefix lock is held exclusively;
// pbsfs inserts hold it shared around "exists, then touch, else write", so
// the stat → unlink of the sweep never interleaves with another process's
// reuse of the same chunk. Temporary chunk files (<digest>.tmp_*) older
// than min_atime are removed; PBS leaves them.
//
// Workers sweep directories in parallel; each directory is handled by one
// worker under its lock, so the per-chunk decision is PBS's.
//
// # Limits
//
//   - Pins are per process (see Pin).
//   - The foreign-holder check compares holder pids with the pids writers
//     registered; a pbsfs writer in another pid namespace (another
//     container) looks foreign and stops the collector, which is the safe
//     side. On a file system whose locks /proc/locks does not list (a FUSE
//     file system handling locks itself) the probe is not found, and every
//     run fails with ErrForeignLock.
//   - Snapshots moved between groups or namespaces during phase 1 are not
//     followed (PBS 2026 adds a move journal for that); pbsfs does not move
//     snapshots.
//   - Index temporary files (*.tmp_fidx, *.tmp_didx) of dead writers are
//     not cleaned.
//
// # Daemon
//
// Daemon runs a collector every interval, or at the events of a PBS
// calendar event (package schedule; the mount's --gc-schedule), skipping
// quietly when another collection holds the store. As in PBS, a run is due
// once the next event after the previous run's start has passed, and the
// wall clock is read again at least once a minute: runs missed while the
// machine slept give one catch-up run. The previous run's start is kept in
// <runtime>/pbsfs/<store>/gc-schedule.json (ScheduleState), as PBS keeps a
// job state; with none, the first run waits for the first event.
package gc
