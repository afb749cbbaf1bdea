package gc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"

	"github.com/pbsfs/pbsfs/store"
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

	mu          sync.Mutex
	touched     map[store.Digest]struct{} // digests touched in this run (PBS's LRU, unbounded)
	processed   map[string]struct{}       // index files marked
	unprocessed map[string]struct{}       // index files of the initial walk not yet seen
	err         error                     // first failure found outside phase 1's own loop
	files       uint64
	bytes       uint64
	hits        uint64
	misses      uint64
	touches     uint64
	missing     uint64
}

func newRunState(c *Collector) *runState {
	return &runState{c: c, touched: make(map[store.Digest]struct{}),
		processed: make(map[string]struct{}), unprocessed: make(map[string]struct{})}
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
	st.CacheStats = &CacheStats{Hits: r.hits, Misses: r.misses}
	st.MissingChunks, st.Touches = r.missing, r.touches
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
// (spec §6.2). A missing chunk is a warning; its .bad copies are touched
// so they stay while an index needs the chunk.
func (r *runState) markChunks(ctx context.Context, idx Index, name string) error {
	chunks := r.c.s.Chunks()
	touch := r.c.opts.test.touch
	n := idx.Len()
	for i := 0; i < n; i++ {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		d, _, _ := idx.Chunk(i)
		r.mu.Lock()
		_, hit := r.touched[d]
		if hit {
			r.hits++
		} else {
			r.touched[d] = struct{}{}
			r.misses++
			r.touches++
		}
		r.mu.Unlock()
		if hit {
			continue
		}
		path := chunks.Path(d)
		err := touch(path)
		if err == nil {
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("touch chunk %s: %w", d, err)
		}
		for n := 0; n <= 9; n++ {
			bad := fmt.Sprintf("%s.%d.bad", path, n)
			err := touch(bad)
			r.mu.Lock()
			r.touches++
			r.mu.Unlock()
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("touch %s: %w", bad, err)
			}
		}
		r.mu.Lock()
		r.missing++
		r.mu.Unlock()
		r.c.log.Warn("unable to access non-existent chunk", "chunk", d.String(), "required_by", name)
	}
	return nil
}
