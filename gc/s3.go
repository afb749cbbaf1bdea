package gc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
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

// Batches of phase 2.
const (
	// s3DeleteBatch is the most keys one DeleteObjects request may carry
	// in S3. PBS sends 100 (S3_DELETE_BATCH_LIMIT) because it holds a
	// flock descriptor per pending key and must stay under a soft limit
	// of 1024 descriptors; pbsfs holds one per prefix directory, and
	// sends fewer when RLIMIT_NOFILE is low (s3BatchSize).
	s3DeleteBatch = 1000
	// s3DeletesInFlight bounds the DeleteObjects requests sent at once;
	// the listing goes on while they run.
	s3DeletesInFlight = 4
	// s3DeleteDefer is how long a key may wait in a batch that does not
	// fill (PBS's S3_DELETE_DEFER_LIMIT_SECONDS).
	s3DeleteDefer = 5 * time.Minute
)

// s3BatchSize returns the keys per DeleteObjects request: s3DeleteBatch,
// unless the prefix locks of the batches in flight and the one filling
// (at most a descriptor per key) would need more than half of the
// process's descriptors.
func s3BatchSize() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil {
		if n := int(rl.Cur) / 2 / (s3DeletesInFlight + 1); n < s3DeleteBatch {
			return max(n, 1)
		}
	}
	return s3DeleteBatch
}

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

// s3Sweep is phase 2 on S3 under way: the prefix locks held and the
// DeleteObjects requests in flight.
type s3Sweep struct {
	c     *Collector
	r     *runState
	rc    RemoteChunks
	slots chan struct{} // one per DeleteObjects request in flight
	wg    sync.WaitGroup

	mu   sync.Mutex
	held map[uint16]*heldPrefix
	err  error         // the first failed delete
	busy time.Duration // summed time of the DeleteObjects requests
}

// heldPrefix is a prefix lock held by the listing (while it is in that
// prefix) and by every batch with a key in it, until its delete returned.
type heldPrefix struct {
	f    *os.File // nil with the prefix locks off (tests)
	refs int
}

// s3Batch is a batch of chunk objects to delete and the prefixes of its
// keys, whose locks it holds.
type s3Batch struct {
	names    []string
	prefixes map[uint16]bool
	first    time.Time
}

// hold takes (or shares) the lock of prefix p for the listing.
func (w *s3Sweep) hold(p uint16) error {
	w.mu.Lock()
	if h := w.held[p]; h != nil {
		h.refs++
		w.mu.Unlock()
		return nil
	}
	w.mu.Unlock()
	var f *os.File
	if !w.c.opts.off.prefixLock {
		var err error
		if f, err = w.c.lockPrefix(p); err != nil {
			return err
		}
	}
	w.mu.Lock()
	w.held[p] = &heldPrefix{f: f, refs: 1}
	w.mu.Unlock()
	return nil
}

// share adds a reference to the held lock of prefix p.
func (w *s3Sweep) share(p uint16) {
	w.mu.Lock()
	w.held[p].refs++
	w.mu.Unlock()
}

// drop releases a reference to the lock of prefix p; the last one
// unlocks it.
func (w *s3Sweep) drop(p uint16) {
	w.mu.Lock()
	h := w.held[p]
	h.refs--
	if h.refs > 0 {
		w.mu.Unlock()
		return
	}
	delete(w.held, p)
	w.mu.Unlock()
	if h.f != nil {
		h.f.Close() // drops the flock
	}
}

func (w *s3Sweep) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// send deletes batch b in the background, at most s3DeletesInFlight at
// a time (waiting for a slot while holding its locks), and releases its
// locks once the objects and their markers are gone.
func (w *s3Sweep) send(ctx context.Context, b *s3Batch, st *Status) error {
	start := time.Now()
	select {
	case w.slots <- struct{}{}:
	case <-ctx.Done():
		for p := range b.prefixes {
			w.drop(p)
		}
		return ctx.Err()
	}
	st.S3DeleteWait += time.Since(start)
	st.S3DeleteCalls++
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		t0 := time.Now()
		err := w.delete(ctx, b.names)
		w.mu.Lock()
		w.busy += time.Since(t0)
		if err != nil && w.err == nil {
			w.err = err
		}
		w.mu.Unlock()
		for p := range b.prefixes {
			w.drop(p)
		}
		if h := w.c.opts.test.s3BatchDone; h != nil {
			h(b.names)
		}
		<-w.slots
	}()
	return nil
}

// delete removes the chunk objects names, then their local markers.
func (w *s3Sweep) delete(ctx context.Context, names []string) error {
	c := w.c
	if c.opts.DryRun {
		return nil
	}
	if h := c.opts.test.beforeUnlink; h != nil {
		for _, n := range names {
			h(filepath.Join(c.s.Chunks().Dir(), n[:4], n))
		}
	}
	if err := w.rc.RemoveObjects(ctx, names); err != nil {
		return fmt.Errorf("delete %d chunk objects: %w", len(names), err)
	}
	for _, n := range names {
		rel := n[:4] + "/" + n
		if err := unix.Unlinkat(w.r.chunksFd, rel, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove marker %s: %w", rel, err)
		}
	}
	return nil
}

// sweepS3 is phase 2 on S3: it lists the chunk objects and deletes those
// no index needs, in batches (s3BatchSize keys, or s3DeleteDefer),
// several in flight while the listing goes on. Each object is judged
// under its prefix lock, which stays held until the object and its
// marker are gone.
func (c *Collector) sweepS3(ctx context.Context, r *runState, rc RemoteChunks, st *Status) error {
	// Whole seconds, as the local sweep and PBS compare (file times come
	// from a coarser clock than time.Now).
	minAtime, oldest := st.MinAtime.Unix(), st.OldestWriter.Unix()
	w := &s3Sweep{c: c, r: r, rc: rc, slots: make(chan struct{}, s3DeletesInFlight), held: map[uint16]*heldPrefix{}}
	batchSize := s3BatchSize()
	if n := c.opts.test.s3Batch; n > 0 {
		batchSize = n
	}
	newBatch := func() *s3Batch { return &s3Batch{prefixes: map[uint16]bool{}} }
	b := newBatch()
	cur := -1 // prefix whose lock the listing holds
	flush := func() error {
		if len(b.names) == 0 {
			return nil
		}
		full := b
		b = newBatch()
		return w.send(ctx, full, st)
	}
	err := rc.ListObjects(ctx, func(name string, size int64, mtime time.Time) error {
		if err := w.failed(); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		prefix := int(hexPrefix(name))
		if prefix != cur {
			if cur >= 0 {
				w.drop(uint16(cur))
				cur = -1
			}
			if h := c.opts.Hooks.BeforePrefixSweep; h != nil {
				h(ctx, uint16(prefix))
			}
			if err := w.hold(uint16(prefix)); err != nil {
				return err
			}
			cur = prefix
			c.prog.prefixes.Store(int64(prefix))
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
		if p := uint16(cur); !b.prefixes[p] {
			b.prefixes[p] = true
			w.share(p)
		}
		if len(b.names) >= batchSize || time.Since(b.first) > s3DeleteDefer {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	} else {
		for p := range b.prefixes {
			w.drop(p)
		}
	}
	if cur >= 0 {
		w.drop(uint16(cur))
	}
	w.wg.Wait()
	st.S3DeleteTime = w.busy
	if err == nil {
		err = w.failed()
	}
	return err
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
