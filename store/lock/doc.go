// Package lock implements the locks a PBS datastore is shared under, in the
// form real Proxmox Backup Server processes use them, plus the few
// cross-process locks pbsfs adds for garbage collection.
//
// The locks, by file (shared/spec/datastore.md §5):
//
//   - <root>/.lock: the chunk-store process lock, POSIX fcntl record locks
//     taken with F_SETLK on the whole file (never blocking). A [ProcessLocker]
//     hands out shared guards (writers) and an exclusive guard (garbage
//     collection). These locks belong to the process, not to a descriptor:
//     guards of one process never conflict with each other, and closing any
//     descriptor of the file drops them all. OpenProcessLocker therefore keeps
//     exactly one descriptor per lock file per process (see registry.go).
//   - <runtime>/locks/<store>/<ns-part>/<escaped path>: group, snapshot and
//     manifest locks in the PBS 2025+ layout, flock'd files checked with a
//     "double stat" ([Locks]). With <runtime>/old-locking present, the
//     PBS 3.2.4 directory flocks are used instead.
//   - <dir>/<unix-nanos>-<pid>: the pbsfs writer registry ([RegisterWriter],
//     [ListWriters]), so a collector in another process learns the start time
//     of every live writer (shared/design/gc-safety.md, Hazard 1).
//   - .chunks/XXXX: prefix-directory flocks that exclude the sweep from
//     inserts in the same directory across processes and goroutines
//     ([LockPrefixDir], Hazard 2).
//
// [ProcessLocker.OtherHolders] finds every other process holding a lock on
// .lock (a foreign PBS daemon, for a collector), on any file system: a
// probe lock tells how /proc/locks names the file. [LockHolders] reads
// /proc/locks by stat identity, for files on ordinary file systems.
//
// Nothing in this package opens a .lock file except through the process
// locker registry, and no other package may open one at all: one stray
// open and close silently drops every process lock pbsfs holds on it.
//
// Errors name the subject and wrap a sentinel: a busy lock wraps [ErrLocked]
// ("snapshot vm/100/2024-06-10T06:13:20Z: lock: held by another").
package lock
