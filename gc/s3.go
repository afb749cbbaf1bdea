package gc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pbsfs/pbsfs/store"
	"golang.org/x/sys/unix"
)

// Garbage collection of an S3 datastore (pbs4.md §A.5). The local chunk
// directory (PBS's cache, or pbsfs's own for a bucket opened alone) holds
// markers: a file per chunk known to be in the bucket, 0 bytes or the
// chunk itself. The run is the local one with three changes:
//
//   - phase 1 marks as on disk; a referenced chunk with neither a file nor
//     a .bad copy gets `<digest>.using` ("referenced, no marker yet");
//   - phase 2 lists the bucket's `.chunks/` and judges each object by its
//     local marker under the prefix lock held exclusively (the lock pbsfs
//     writers hold shared from the upload to the marker): a marker older
//     than the cutoff, or no marker and no .using, sends the object to a
//     batch delete (100 keys, or 5 minutes, as PBS), and the prefix locks
//     of a batch's keys are held until DeleteObjects has returned; a
//     .using turns into a 0-byte marker;
//   - phase 3 is the local sweep over the markers (its counts thrown away,
//     as in PBS), then the .using files phase 2 did not consume go.
//
// One difference from PBS: an object with no marker and no .using is
// deleted only when its LastModified is older than the cutoff too. PBS
// deletes it at once; pbsfs keeps a fresh one as pending, since a writer
// pbsfs cannot see (another machine opening the bucket alone) may just
// have put it. This only ever keeps more.
//
// The run refuses to start while `<store>/.in-use` names a PBS host:
// PBS skips uploads of chunks its in-memory cache remembers and trusts
// its markers, so objects deleted beside a running PBS lose data in later
// backups (pbs4.md §0.7, §A.8).

// RemoteChunks is what the collector needs of a chunk store whose chunks
// live in object storage (store/s3.Chunks).
type RemoteChunks interface {
	// InUse returns the host named by the bucket's in-use marker, "" if
	// there is none.
	InUse(ctx context.Context) (string, error)
	// ListObjects calls fn for every chunk object in key order: its file
	// name (a digest, or one with .N.bad), size and modification time.
	ListObjects(ctx context.Context, fn func(name string, size int64, mtime time.Time) error) error
	// RemoveObjects deletes the chunk objects of the file names given.
	RemoveObjects(ctx context.Context, names []string) error
	// Location names the bucket for messages.
	Location() string
	// Requests summarises the requests sent so far.
	Requests() string
}

// ErrInUse reports an S3 datastore a PBS host uses.
var ErrInUse = errors.New("datastore in use by a PBS host")

// S3 batch limits of phase 2 (PBS's S3_DELETE_BATCH_LIMIT and
// S3_DELETE_DEFER_LIMIT_SECONDS).
const (
	s3DeleteBatch = 100
	s3DeleteDefer = 5 * time.Minute
)

// remote returns the store's remote chunk store, nil for a local store.
func (c *Collector) remote() RemoteChunks {
	if !c.s.Remote() {
		return nil
	}
	r, _ := c.s.ChunkStore().(RemoteChunks)
	return r
}

// checkInUse refuses a run beside a PBS host.
func (c *Collector) checkInUse(ctx context.Context, rc RemoteChunks) error {
	host, err := rc.InUse(ctx)
	if err != nil {
		return fmt.Errorf("read the in-use marker of %s: %w", rc.Location(), err)
	}
	if host != "" {
		return fmt.Errorf("%s: .in-use names PBS host %q: PBS skips uploads of chunks it remembers in memory, so a collection beside it can delete chunks its later backups rely on; collect with PBS there, or remove the datastore from that host (which removes .in-use) first: %w",
			rc.Location(), host, ErrInUse)
	}
	return nil
}

// usingName is the .using marker of chunk file rel ("xxxx/<digest>").
func usingName(rel string) string { return rel + ".using" }

// markUsing records that referenced chunk rel ("xxxx/<digest>") has no
// local file: it creates rel.using, making the prefix directory if
// needed (phase 1 on S3).
func (r *runState) markUsing(rel string) error {
	if r.c.opts.DryRun {
		r.mu.Lock()
		r.using[rel[5:]] = struct{}{}
		r.mu.Unlock()
		return nil
	}
	name := usingName(rel)
	fd, err := unix.Openat(r.chunksFd, name, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o644)
	if errors.Is(err, unix.ENOENT) {
		if err = unix.Mkdirat(r.chunksFd, rel[:4], 0o750); err == nil || errors.Is(err, unix.EEXIST) {
			fd, err = unix.Openat(r.chunksFd, name, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o644)
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(r.c.s.Chunks().Dir(), name), err)
	}
	unix.Close(fd)
	r.mu.Lock()
	r.using[rel[5:]] = struct{}{}
	r.mu.Unlock()
	return nil
}

// s3Batch is phase 2's pending deletes with the prefix locks they hold.
type s3Batch struct {
	names []string
	first time.Time
	locks map[uint16]*os.File
}

// sweepS3 is phase 2 on S3: it lists the chunk objects and deletes those
// no index needs, in batches.
func (c *Collector) sweepS3(ctx context.Context, r *runState, rc RemoteChunks, st *Status) error {
	// Whole seconds, as the local sweep and PBS compare (file times come
	// from a coarser clock than time.Now).
	minAtime, oldest := st.MinAtime.Unix(), st.OldestWriter.Unix()
	b := &s3Batch{locks: map[uint16]*os.File{}}
	var (
		cur    = -1 // prefix whose lock is held for the current object
		curF   *os.File
		failed error
	)
	release := func(f *os.File) {
		if f != nil {
			f.Close() // drops the flock
		}
	}
	defer func() {
		if _, kept := b.locks[uint16(cur)]; !kept {
			release(curF)
		}
		for _, f := range b.locks {
			release(f)
		}
	}()
	flush := func() error {
		if len(b.names) == 0 {
			return nil
		}
		if !c.opts.DryRun {
			if h := c.opts.test.beforeUnlink; h != nil {
				for _, n := range b.names {
					h(filepath.Join(c.s.Chunks().Dir(), n[:4], n))
				}
			}
			if err := rc.RemoveObjects(ctx, b.names); err != nil {
				return fmt.Errorf("delete %d chunk objects: %w", len(b.names), err)
			}
			for _, n := range b.names {
				rel := n[:4] + "/" + n
				if err := unix.Unlinkat(r.chunksFd, rel, 0); err != nil && !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("remove marker %s: %w", rel, err)
				}
			}
		}
		st.S3DeleteCalls++
		for p, f := range b.locks {
			if int(p) != cur {
				release(f)
			}
			delete(b.locks, p)
		}
		b.names = b.names[:0]
		return nil
	}
	err := rc.ListObjects(ctx, func(name string, size int64, mtime time.Time) error {
		prefix := int(hexPrefix(name))
		if prefix != cur {
			if _, kept := b.locks[uint16(cur)]; !kept {
				release(curF)
			}
			curF = nil
			cur = prefix
			if h := c.opts.Hooks.BeforePrefixSweep; h != nil {
				h(ctx, uint16(prefix))
			}
			if !c.opts.off.prefixLock {
				f, err := c.lockPrefix(uint16(prefix))
				if err != nil {
					return err
				}
				curF = f
			}
			c.prog.prefixes.Store(int64(prefix))
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		st.S3Objects++
		rel := name[:4] + "/" + name
		bad := len(name) == 70
		var sst unix.Stat_t
		err := unix.Fstatat(r.chunksFd, rel, &sst, unix.AT_SYMLINK_NOFOLLOW)
		remove := false
		switch {
		case err == nil:
			switch atime := sst.Atim.Sec; {
			case atime < minAtime:
				remove = true
			case atime < oldest:
				st.pending(bad, size)
			default:
				st.inUse(bad, size)
			}
		case !errors.Is(err, unix.ENOENT):
			return fmt.Errorf("marker %s: %w", rel, err)
		case !bad && r.consumeUsing(name):
			// Referenced, no marker: the marker is made now.
			if !c.opts.DryRun {
				if err := c.s.Chunks().WriteMarker(ctx, mustDigest(name)); err != nil {
					return err
				}
				unix.Unlinkat(r.chunksFd, usingName(rel), 0)
			}
			st.inUse(bad, size)
		case mtime.Unix() < minAtime:
			remove = true
		default:
			st.pending(bad, size)
		}
		if !remove {
			return nil
		}
		if bad {
			st.RemovedBad++
		} else {
			st.RemovedChunks++
		}
		st.RemovedBytes += uint64(size)
		c.prog.removed.Add(1)
		c.prog.removedBytes.Add(size)
		if len(b.names) == 0 {
			b.first = time.Now()
		}
		b.names = append(b.names, name)
		if curF != nil {
			b.locks[uint16(cur)] = curF
		}
		if len(b.names) >= s3DeleteBatch || time.Since(b.first) > s3DeleteDefer {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil && failed == nil {
		failed = err
	}
	return failed
}

// s3Phase3 is the local sweep over the markers, its counts thrown away,
// then the removal of the .using files phase 2 did not consume (their
// chunks are not in the bucket).
func (c *Collector) s3Phase3(ctx context.Context, r *runState, st *Status) error {
	var local Status
	local.MinAtime, local.OldestWriter = st.MinAtime, st.OldestWriter
	if err := c.sweep(ctx, r, &local); err != nil {
		return err
	}
	st.RemovedTemp += local.RemovedTemp
	if c.opts.DryRun {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for name := range r.using {
		unix.Unlinkat(r.chunksFd, usingName(name[:4]+"/"+name), 0)
	}
	r.using = map[string]struct{}{}
	return nil
}

// consumeUsing reports whether phase 1 made a .using marker for chunk
// name, and forgets it.
func (r *runState) consumeUsing(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.using[name]; ok {
		delete(r.using, name)
		return true
	}
	return false
}

// lockPrefix takes the prefix lock of a chunk directory exclusively (the
// flock pbsfs writers take shared, lock.LockPrefixDir), making the
// directory if it is missing.
func (c *Collector) lockPrefix(prefix uint16) (*os.File, error) {
	dir := c.s.Chunks().PrefixDir(prefix)
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err = os.Mkdir(dir, 0o750); err == nil || errors.Is(err, os.ErrExist) {
			f, err = os.Open(dir)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("chunk directory: %w", err)
	}
	if err := flockWait(int(f.Fd())); err != nil {
		f.Close()
		return nil, fmt.Errorf("chunk directory %s: flock: %w", dir, err)
	}
	return f, nil
}

func hexPrefix(name string) uint16 {
	var p uint16
	for i := range 4 {
		c := name[i]
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		}
		p = p<<4 | uint16(v)
	}
	return p
}

func mustDigest(name string) store.Digest {
	d, _ := store.ParseDigest(name[:64])
	return d
}

// pending counts an unmarked chunk (or .bad copy) too young to go.
func (st *Status) pending(bad bool, size int64) {
	if bad {
		st.StillBad++
	} else {
		st.PendingChunks++
	}
	st.PendingBytes += uint64(size)
}

// inUse counts a chunk in use.
func (st *Status) inUse(bad bool, size int64) {
	if !bad {
		st.DiskChunks++
	}
	st.DiskBytes += uint64(size)
}
