package store

import (
	"container/list"
	"sync"

	"github.com/pbsfs/pbsfs/store/crypto"
)

// chunkCache is a bounded cache of decoded chunks, segmented so that a
// sequential scan cannot flush a random-access working set (SLRU):
//
//   - a chunk enters the probation segment;
//   - a second access that is not part of a sequential scan moves it to
//     the protected segment (at most protectedShare of the capacity; its
//     least recently used chunks fall back to probation);
//   - eviction takes probation's least recently used chunk first.
//
// A scan touches each chunk many times, but its accesses are marked as
// such (scan=true) by the reader that detected the scan, so they never
// promote: a scan cycles through probation alone. Concurrent requests
// for the same chunk share one load; errors are not cached. Chunks are
// counted by the memory they hold (capacity), so the bound is RSS.
type chunkCache struct {
	mu        sync.Mutex
	max       int64
	cur, prot int64      // bytes held in all, in protected
	probation *list.List // of *cacheEntry, most recent first
	protected *list.List
	items     map[cacheKey]*list.Element
	loading   map[cacheKey]*cacheLoad
	stats     CacheStats
}

// cacheKey names a decoded chunk: its digest and the key it was
// decrypted with (nil for unencrypted chunks).
type cacheKey struct {
	d   Digest
	key *crypto.Key
}

// protectedShare is the part of the capacity the protected segment may
// use: the rest is room for scans and read-ahead.
const protectedShare = 0.75

type cacheEntry struct {
	d         cacheKey
	data      []byte
	protected bool
}

type cacheLoad struct {
	done chan struct{}
	data []byte
	err  error
}

// CacheStats counts what the decoded-chunk cache did.
type CacheStats struct {
	Hits, Misses, Evictions int64
	// Bytes is what the cache holds now.
	Bytes int64
}

func newChunkCache(max int64) *chunkCache {
	return &chunkCache{max: max, probation: list.New(), protected: list.New(),
		items: map[cacheKey]*list.Element{}, loading: map[cacheKey]*cacheLoad{}}
}

// peek returns chunk d if cached, counting the access (scan or not).
func (c *chunkCache) peek(d cacheKey, scan bool) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[d]
	if !ok {
		return nil, false
	}
	c.touch(e, scan)
	c.stats.Hits++
	return e.Value.(*cacheEntry).data, true
}

// touch records an access to a cached entry. c.mu is held.
func (c *chunkCache) touch(e *list.Element, scan bool) {
	ce := e.Value.(*cacheEntry)
	switch {
	case ce.protected:
		c.protected.MoveToFront(e)
	case scan:
		c.probation.MoveToFront(e)
	default:
		// Second access outside a scan: promote.
		c.probation.Remove(e)
		ce.protected = true
		c.items[ce.d] = c.protected.PushFront(ce)
		c.prot += int64(cap(ce.data))
		for c.prot > int64(float64(c.max)*protectedShare) {
			last := c.protected.Back()
			le := last.Value.(*cacheEntry)
			c.protected.Remove(last)
			le.protected = false
			c.prot -= int64(cap(le.data))
			c.items[le.d] = c.probation.PushFront(le)
		}
	}
}

// get returns the cached chunk d or loads it with load. scan tells
// whether the access is part of a sequential scan.
func (c *chunkCache) get(d cacheKey, scan bool, load func() ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	if e, ok := c.items[d]; ok {
		c.touch(e, scan)
		c.stats.Hits++
		data := e.Value.(*cacheEntry).data
		c.mu.Unlock()
		return data, nil
	}
	if l, ok := c.loading[d]; ok {
		c.mu.Unlock()
		<-l.done
		return l.data, l.err
	}
	c.stats.Misses++
	l := &cacheLoad{done: make(chan struct{})}
	c.loading[d] = l
	c.mu.Unlock()

	l.data, l.err = load()

	c.mu.Lock()
	delete(c.loading, d)
	if l.err == nil {
		c.add(d, l.data)
	}
	c.mu.Unlock()
	close(l.done)
	return l.data, l.err
}

// add inserts a chunk into probation and evicts down to the capacity.
// c.mu is held.
func (c *chunkCache) add(d cacheKey, data []byte) {
	if int64(cap(data)) > c.max {
		return
	}
	if _, ok := c.items[d]; ok {
		return
	}
	c.items[d] = c.probation.PushFront(&cacheEntry{d: d, data: data})
	c.cur += int64(cap(data))
	for c.cur > c.max {
		seg := c.probation
		if seg.Len() == 0 {
			seg = c.protected
		}
		last := seg.Back()
		e := last.Value.(*cacheEntry)
		seg.Remove(last)
		delete(c.items, e.d)
		c.cur -= int64(cap(e.data))
		if e.protected {
			c.prot -= int64(cap(e.data))
		}
		c.stats.Evictions++
	}
}

// Stats returns the counters and the bytes held.
func (c *chunkCache) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Bytes = c.cur
	return s
}
