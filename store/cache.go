package store

import (
	"container/list"
	"sync"
)

// chunkCache is a bounded LRU of decoded chunks. Concurrent requests for
// the same chunk share one load.
type chunkCache struct {
	mu       sync.Mutex
	max, cur int64
	lru      *list.List // of *cacheEntry, most recent first
	items    map[Digest]*list.Element
	loading  map[Digest]*cacheLoad
}

type cacheEntry struct {
	d    Digest
	data []byte
}

type cacheLoad struct {
	done chan struct{}
	data []byte
	err  error
}

func newChunkCache(max int64) *chunkCache {
	return &chunkCache{max: max, lru: list.New(), items: map[Digest]*list.Element{}, loading: map[Digest]*cacheLoad{}}
}

// get returns the cached chunk d or loads it with load. Errors are not cached.
func (c *chunkCache) get(d Digest, load func() ([]byte, error)) ([]byte, error) {
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
