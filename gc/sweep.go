package gc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/pbsfs/pbsfs/store"
	"golang.org/x/sys/unix"
)

// sweep is phase 2 (spec §6.4): every chunk directory, each held
// exclusively (the prefix lock inserts hold shared) while its files are
// judged and unlinked. Workers take the directories in numeric order.
func (c *Collector) sweep(ctx context.Context, r *runState, st *Status) error {
	minAtime, oldest := st.MinAtime.Unix(), st.OldestWriter.Unix()
	var next atomic.Int64
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	parts := make([]Status, c.opts.Workers)
	errs := make(chan error, len(parts))
	for w := range parts {
		go func() {
			for {
				p := next.Add(1) - 1
				if p > 0xffff {
					errs <- nil
					return
				}
				err := ctx.Err()
				if err == nil {
					if h := c.opts.Hooks.BeforePrefixSweep; h != nil {
						h(ctx, uint16(p))
					}
					err = c.sweepDir(ctx, r.chunksFd, uint16(p), minAtime, oldest, &parts[w])
				}
				if err != nil {
					cancel()
					errs <- err
					return
				}
				c.prog.prefixes.Add(1)
			}
		}()
	}
	var first error
	for range parts {
		if err := <-errs; err != nil && (first == nil || errors.Is(first, context.Canceled)) {
			first = err
		}
	}
	if first != nil {
		return first
	}
	for _, p := range parts {
		st.DiskBytes += p.DiskBytes
		st.DiskChunks += p.DiskChunks
		st.RemovedBytes += p.RemovedBytes
		st.RemovedChunks += p.RemovedChunks
		st.PendingBytes += p.PendingBytes
		st.PendingChunks += p.PendingChunks
		st.RemovedBad += p.RemovedBad
		st.StillBad += p.StillBad
		st.RemovedTemp += p.RemovedTemp
	}
	return nil
}

// sweepDir sweeps one chunk directory. A missing directory is skipped, as
// in PBS (and as stores made with LazyChunkDirs need).
func (c *Collector) sweepDir(ctx context.Context, chunksFd int, prefix uint16, minAtime, oldest int64, st *Status) error {
	dir := c.s.Chunks().PrefixDir(prefix)
	fd, err := unix.Openat(chunksFd, fmt.Sprintf("%04x", prefix), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("chunk directory: %w", &fs.PathError{Op: "open", Path: dir, Err: err})
	}
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close() // drops the lock
	if !c.opts.off.prefixLock {
		// The prefix lock: an flock on the directory, the same lock
		// lock.LockPrefixDir takes for inserts; taken on the descriptor
		// that is read, to save an open per directory.
		if err := flockWait(int(f.Fd())); err != nil {
			return fmt.Errorf("chunk directory %s: flock: %w", dir, err)
		}
	}
	names, err := f.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("chunk directory %s: %w", dir, err)
	}
	dfd := int(f.Fd())
	for _, name := range names {
		chunk := store.IsChunkName(name)
		if !chunk && !isTempChunkName(name) {
			continue
		}
		var sst unix.Stat_t
		if err := unix.Fstatat(dfd, name, &sst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue // vanished
		}
		if sst.Mode&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		size := uint64(sst.Size)
		if !chunk {
			// A temporary file left by a writer that died. No pbsfs
			// writer is inside this directory while we hold its lock, and
			// a PBS writer would be a foreign holder; the age test keeps
			// the rule independent of that.
			if sst.Mtim.Sec < minAtime && sst.Atim.Sec < minAtime {
				if err := c.unlink(dfd, dir, name); err != nil {
					return err
				}
				st.RemovedTemp++
			}
			continue
		}
		bad := len(name) == 70
		atime := sst.Atim.Sec
		switch {
		case atime < minAtime:
			if err := c.unlink(dfd, dir, name); err != nil {
				return err
			}
			if bad {
				st.RemovedBad++
			} else {
				st.RemovedChunks++
			}
			st.RemovedBytes += size
			c.prog.removed.Add(1)
			c.prog.removedBytes.Add(int64(size))
		case atime < oldest:
			if bad {
				st.StillBad++
			} else {
				st.PendingChunks++
			}
			st.PendingBytes += size
		default:
			if !bad {
				st.DiskChunks++
			}
			st.DiskBytes += size
		}
	}
	return ctx.Err()
}

// unlink removes dir/name unless this is a dry run. A file already gone
// is not an error; any other failure aborts the sweep, as in PBS.
func (c *Collector) unlink(dfd int, dir, name string) error {
	if h := c.opts.test.beforeUnlink; h != nil {
		h(filepath.Join(dir, name))
	}
	if c.opts.DryRun {
		return nil
	}
	err := unix.Unlinkat(dfd, name, 0)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s: %w", filepath.Join(dir, name), err)
	}
	return nil
}

// isTempChunkName matches the temporary file of an atomic chunk write:
// the 64 hex digits of the digest, ".tmp_", and a random suffix.
func isTempChunkName(name string) bool {
	return len(name) > 69 && name[64:69] == ".tmp_" && store.IsChunkName(name[:64])
}

// flockWait takes an exclusive flock on fd, waiting for it.
func flockWait(fd int) error {
	for {
		err := unix.Flock(fd, unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
