package store

import (
	"container/list"
	"sync"

	"github.com/pbsfs/pbsfs/store/crypto"
)

// chunkCache is a bounded LRU of decoded chunks. Concurrent requests for
// the same chunk share one load.
type chunkCache struct {
	mu       sync.Mutex
	max, cur int64
	lru      *list.List // of *cacheEntry, most recent first
	items    map[cacheKey]*list.Element
	loading  map[cacheKey]*cacheLoad
}

// cacheKey names a decoded chunk: its digest and the key it was
// decrypted with (nil for unencrypted chunks).
type cacheKey struct {
	d   Digest
	key *crypto.Key
}

type cacheEntry struct {
	d    cacheKey
	data []byte
}

type cacheLoad struct {
	done chan struct{}
	data []byte
	err  error
}

func newChunkCache(max int64) *chunkCache {
	return &chunkCache{max: max, lru: list.New(), items: map[cacheKey]*list.Element{}, loading: map[cacheKey]*cacheLoad{}}
}

// get returns the cached chunk d or loads it with load. Errors are not cached.
func (c *chunkCache) get(d cacheKey, load func() ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	if e, ok := c.items[d]; ok {
		c.lru.MoveToFront(e)
		data := e.Value.(*cacheEntry).data
		c.mu.Unlock()
		return data, nil
	}
	if l, ok := c.loading[d]; ok {
		c.mu.Unlock()
		<-l.done
		return l.data, l.err
	}
	l := &cacheLoad{done: make(chan struct{})}
	c.loading[d] = l
	c.mu.Unlock()

	l.data, l.err = load()

	c.mu.Lock()
	delete(c.loading, d)
	if l.err == nil && int64(len(l.data)) <= c.max {
		c.items[d] = c.lru.PushFront(&cacheEntry{d: d, data: l.data})
		c.cur += int64(len(l.data))
		for c.cur > c.max {
			last := c.lru.Back()
			e := last.Value.(*cacheEntry)
			c.lru.Remove(last)
			delete(c.items, e.d)
			c.cur -= int64(len(e.data))
		}
	}
	c.mu.Unlock()
	close(l.done)
	return l.data, l.err
}
