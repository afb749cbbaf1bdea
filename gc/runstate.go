package gc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/pbsfs/pbsfs/store"
	"golang.org/x/sys/unix"
)

// Index is the part of an index file the collector reads; store.Index
// satisfies it.
type Index interface {
	Len() int
	Chunk(i int) (d store.Digest, start, end uint64)
}

// runState is the mark state of one run, shared by phase 1 and
// WillRemove.
type runState struct {
	c *Collector
	// chunksFd is an open descriptor of the .chunks directory; touches
	// resolve "xxxx/<digest>" from it instead of the whole path.
	chunksFd int

	touched touchedSet // digests touched in this run (PBS's LRU)

	hits, misses, touches, missing atomic.Uint64

	mu          sync.Mutex
	processed   map[string]struct{} // index files marked
	unprocessed map[string]struct{} // index files of the initial walk not yet seen
	err         error               // first failure found outside phase 1's own loop
	files       uint64
	bytes       uint64
	// remote is set on an S3 datastore: a referenced chunk without a
	// local file gets a .using marker; using names them ("<digest>").
	remote bool
	using  map[string]struct{}
}

func newRunState(c *Collector) *runState {
	r := &runState{c: c, processed: make(map[string]struct{}), unprocessed: make(map[string]struct{}),
		remote: c.s.Remote(), using: make(map[string]struct{})}
	perShard := 0
	if c.opts.CacheCapacity > 0 {
		perShard = (c.opts.CacheCapacity + len(r.touched) - 1) / len(r.touched)
	}
	for i := range r.touched {
		r.touched[i].m = make(map[store.Digest]struct{})
		r.touched[i].max = perShard
	}
	return r
}

// touchedSet is a set of digests in 256 shards by first byte, so that
// parallel markers rarely wait for each other. With a capacity, a full
// shard is emptied: its digests are then touched again when they recur,
// which costs a syscall and is always safe.
type touchedSet [256]struct {
	mu  sync.Mutex
	m   map[store.Digest]struct{}
	max int // 0: unbounded
}

// add inserts d and reports whether it was new.
func (t *touchedSet) add(d store.Digest) bool {
	sh := &t[d[0]]
	sh.mu.Lock()
	_, ok := sh.m[d]
	if !ok {
		if sh.max > 0 && len(sh.m) >= sh.max {
			clear(sh.m)
		}
		sh.m[d] = struct{}{}
	}
	sh.mu.Unlock()
	return !ok
}

// fail records err, which aborts the run before its sweep.
func (r *runState) fail(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
}

func (r *runState) failed() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// fill copies the phase 1 counters into st.
func (r *runState) fill(st *Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st.IndexFileCount, st.IndexDataBytes = r.files, r.bytes
	st.CacheStats = &CacheStats{Hits: r.hits.Load(), Misses: r.misses.Load()}
	st.MissingChunks, st.Touches = r.missing.Load(), r.touches.Load()
}

// markFile marks the chunks of the index file at path. vanished reports an
// index that no longer exists; any other failure to open or parse it is an
// error, which aborts the run.
func (r *runState) markFile(ctx context.Context, path string) (vanished bool, err error) {
	if h := r.c.opts.Hooks.BeforeIndexOpen; h != nil {
		h(ctx, path)
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	idx, err := store.OpenIndex(path)
	if errors.Is(err, fs.ErrNotExist) {
		r.mu.Lock()
		delete(r.unprocessed, path)
		r.mu.Unlock()
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("index %w", err)
	}
	r.mu.Lock()
	delete(r.unprocessed, path)
	if _, ok := r.processed[path]; !ok {
		r.processed[path] = struct{}{}
		r.files++
		r.bytes += idx.Size()
		r.c.prog.indexFiles.Add(1)
	}
	r.mu.Unlock()
	return false, r.markChunks(ctx, idx, path)
}

// markChunks touches every chunk of idx that this run has not touched yet
// (spec §6.2), with the collector's workers when idx is large. A missing
// chunk is a warning; its .bad copies are touched so they stay while an
// index needs the chunk.
func (r *runState) markChunks(ctx context.Context, idx Index, name string) error {
	n := idx.Len()
	w := min(r.c.opts.Workers, (n+parallelMin-1)/parallelMin)
	if w <= 1 {
		return r.markRange(ctx, idx, name, 0, n, 1)
	}
	errs := make(chan error, w)
	for k := range w {
		go func() { errs <- r.markRange(ctx, idx, name, k, n, w) }()
	}
	var first error
	for range w {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// parallelMin is the number of chunks per worker below which an index is
// marked by fewer workers.
const parallelMin = 64

// markRange marks chunks from, from+step, … below n of idx.
func (r *runState) markRange(ctx context.Context, idx Index, name string, from, n, step int) error {
	chunks := r.c.s.Chunks()
	touch := r.touch
	for i, k := from, 0; i < n; i, k = i+step, k+1 {
		if k%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		d, _, _ := idx.Chunk(i)
		if !r.touched.add(d) {
			r.hits.Add(1)
			continue
		}
		r.misses.Add(1)
		r.touches.Add(1)
		path := chunks.Path(d)
		rel := path[len(chunks.Dir())+1:] // "xxxx/<digest>"
		err := touch(rel)
		if err == nil {
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("touch chunk %s: %w", d, err)
		}
		anyBad := false
		for j := 0; j <= 9; j++ {
			bad := fmt.Sprintf("%s.%d.bad", rel, j)
			err := touch(bad)
			r.touches.Add(1)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("touch %s: %w", filepath.Join(chunks.Dir(), bad), err)
			}
			anyBad = anyBad || err == nil
		}
		if r.remote && !anyBad {
			// No marker: the object may well be in the bucket; phase 2
			// makes the marker if it is (pbs4.md §A.5).
			if err := r.markUsing(rel); err != nil {
				return err
			}
			continue
		}
		r.missing.Add(1)
		r.c.log.Warn("unable to access non-existent chunk", "chunk", d.String(), "required_by", name)
	}
	return nil
}

// touch marks the chunk file rel ("xxxx/<digest>[.N.bad]") below .chunks
// (spec §6.2); a missing file gives an error matching fs.ErrNotExist.
func (r *runState) touch(rel string) error {
	if t := r.c.opts.test.touch; t != nil {
		return t(filepath.Join(r.c.s.Chunks().Dir(), rel))
	}
	ts := [2]unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}}
	for {
		err := unix.UtimesNanoAt(r.chunksFd, rel, ts[:], unix.AT_SYMLINK_NOFOLLOW)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// openChunks opens the .chunks directory for touches relative to it.
func (r *runState) openChunks() error {
	fd, err := unix.Open(r.c.s.Chunks().Dir(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", r.c.s.Chunks().Dir(), err)
	}
	r.chunksFd = fd
	return nil
}

// close releases the run's descriptors.
func (r *runState) close() { unix.Close(r.chunksFd) }
