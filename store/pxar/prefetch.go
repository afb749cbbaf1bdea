package pxar

import (
	"context"
	"sync"
)

// A Prefetcher is a Source that can ask the kernel to start reading a
// file's contents ahead of Open (DirSource: posix_fadvise WILLNEED). On a
// cold page cache, a backup otherwise reads its many small files one
// synchronous disk request at a time; with a few prefetches in flight the
// disk serves them in parallel and the encoder finds them cached.
//
// With contents false only the entry's inode is read (its stat), for a
// metadata-mode backup that compares metadata before it decides to read.
type Prefetcher interface {
	Prefetch(path string, contents bool)
}

// prefetchWorkers is how many prefetches run at once; prefetchQueue how
// many paths may wait (more are dropped: a prefetch is only a hint).
const (
	prefetchWorkers = 16
	prefetchQueue   = 1024
)

type prefetchJob struct {
	path     string
	contents bool
}

// prefetcher runs Prefetch calls of a Source on a few goroutines.
type prefetcher struct {
	src  Prefetcher
	ch   chan prefetchJob
	wg   sync.WaitGroup
	once sync.Once
}

// newPrefetcher returns a prefetcher for src, or nil if src cannot
// prefetch. stop ends it.
func newPrefetcher(ctx context.Context, src Source) *prefetcher {
	p, ok := src.(Prefetcher)
	if !ok {
		return nil
	}
	pf := &prefetcher{src: p, ch: make(chan prefetchJob, prefetchQueue)}
	for range prefetchWorkers {
		pf.wg.Add(1)
		go func() {
			defer pf.wg.Done()
			for j := range pf.ch {
				if ctx.Err() == nil {
					p.Prefetch(j.path, j.contents)
				}
			}
		}()
	}
	return pf
}

// add queues path, unless the queue is full.
func (pf *prefetcher) add(path string, contents bool) {
	if pf == nil {
		return
	}
	select {
	case pf.ch <- prefetchJob{path, contents}:
	default:
	}
}

// wait queues path, waiting for room in the queue unless stop is closed
// first.
func (pf *prefetcher) wait(path string, contents bool, stop <-chan struct{}) {
	if pf == nil {
		return
	}
	select {
	case pf.ch <- prefetchJob{path, contents}:
	case <-stop:
	}
}

// stop ends the workers after the queued prefetches.
func (pf *prefetcher) stop() {
	if pf == nil {
		return
	}
	pf.once.Do(func() {
		close(pf.ch)
		pf.wg.Wait()
	})
}
