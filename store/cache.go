package store

import (
	"container/list"
	"sync"

	"github.com/pbsfs/pbsfs/store/crypto"
)

// chunkCache is a bounded cache of decoded chunks, segmented so that a
// sequential scan cannot flush a random-access working set (SLRU):
//
//   - a chunk loaded by a sequential scan (a reader that detected one, or
//     its read-ahead) enters the scan segment, bounded by scanShare of
//     the capacity: a scan cycles through it alone, and its buffers are
//     used again for the next chunks of the scan (fresh memory costs more
//     than decoding here, see chunkMem); scan accesses do not reorder it
//     (first in, first out), so the chunks a reader passed go before
//     those read ahead of it; and a chunk its reader has passed (pass),
//     that nothing touched since and no one holds, gives its buffer to
//     the next chunk loaded before the cache maps fresh memory (reclaim),
//     full or not: a stream read once keeps about its read-ahead and
//     passMargin behind it in memory, not the whole segment;
//   - any other chunk enters the probation segment, and so does a
//     scanned chunk at its first access outside a scan;
//   - a second access that is not part of a scan moves a chunk from
//     probation to the protected segment (at most protectedShare of the
//     capacity; its least recently used chunks fall back to probation);
//   - eviction takes the scan segment's oldest chunk first while that
//     segment holds more than its reserve (scanReserve: the lesser of
//     its bound and half the capacity), then probation's least recently
//     used chunk, then protected's, and the chunk just added last of
//     all. So a scan keeps room to cycle through (and its read-ahead
//     room to land) when the other segments have filled the cache: a
//     reader whose chunk were evicted the moment it was added would
//     decode it again at its next request (a plain archive's directory
//     read entry by entry did so, one decode per entry); and a scan
//     takes at most that reserve from a random-access working set.
//
// A scan touches each chunk many times, but its accesses are marked as
// such (scan=true), so they never promote. Concurrent requests for the
// same chunk share one load; errors are not cached. Chunks are counted by
// the memory they hold (their buffer), so the bound is RSS.
//
// Entries are referenced: get and peek return an entry its caller holds
// until release. An entry evicted while held leaves the cache at once but
// its buffer goes back to mem only at its last release, so a buffer is
// never reused while a reader (a FUSE reply being written, a copy) still
// reads it.
type chunkCache struct {
	mu    sync.Mutex
	mem   *chunkMem
	max   int64
	cur   int64           // bytes held in all
	bytes [segments]int64 // bytes held per segment
	segs  [segments]*list.List
	items map[cacheKey]*list.Element
	// loading has the chunks being loaded, for requests to wait on.
	loading map[cacheKey]*cacheLoad
	stats   CacheStats

	// minScan is a lower bound of the scan segment beside minScanBytes:
	// room for a longer read-ahead (Options.ReadAheadBytes).
	minScan int64
}

// The segments, in eviction order.
const (
	segScan = iota
	segProbation
	segProtected
	segments
)

// cacheKey names a decoded chunk: its digest and the key it was
// decrypted with (nil for unencrypted chunks).
type cacheKey struct {
	d   Digest
	key *crypto.Key
}

// protectedShare is the part of the capacity the protected segment may
// use: the rest is room for scans and read-ahead.
const protectedShare = 0.75

// scanShare is the part of the capacity the scan segment may use, but
// at least minScanBytes: room for the read-ahead of two sequential
// readers (readAheadBytes each, plus the chunk being read), or of one
// reader of 16 MiB chunks (minAheadChunks of them ahead, the one being
// read, the one passed) without evicting the chunk being read.
const (
	scanShare    = 0.25
	minScanBytes = 96 << 20
)

type cacheEntry struct {
	d    cacheKey
	data []byte
	buf  *memBuf // holds data; nil for memory not from mem
	size int64   // what the entry counts against max
	refs int
	gone bool // not (or no longer) in the cache: freed at the last release
	seg  int
	// rereadable: kept in the scan segment (see get).
	rereadable bool
	// passed: a sequential reader has gone past it, and no access came
	// since (see pass).
	passed bool
}

// Data returns the decoded chunk.
func (e *cacheEntry) Data() []byte { return e.data }

type cacheLoad struct {
	done    chan struct{}
	e       *cacheEntry
	err     error
	waiters int
}

// CacheStats counts what the decoded-chunk cache did.
type CacheStats struct {
	Hits, Misses, Evictions int64
	// Bytes is what the cache holds now.
	Bytes int64
}

func newChunkCache(max int64, mem *chunkMem) *chunkCache {
	c := &chunkCache{max: max, mem: mem,
		items: map[cacheKey]*list.Element{}, loading: map[cacheKey]*cacheLoad{}}
	for i := range c.segs {
		c.segs[i] = list.New()
	}
	mem.reclaim = c.reclaim
	return c
}

// pass records that a sequential reader has gone past chunk d (and the
// requests that come out of order behind it, see passMargin). A chunk
// only scans have touched, passed and held by no one, gives its buffer
// to the next chunk that needs memory (reclaim) before the cache takes
// fresh memory: a stream read once cycles through the buffers of the
// chunks it has read instead of filling the scan segment with fresh
// memory first (on VMs that report free memory to the host, each fresh
// page faults on the host: zeroing fresh huge pages took 15 % of a
// mount's samples in the first cat from a bucket). Any later access
// clears the mark: a chunk someone reads again stays.
func (c *chunkCache) pass(d cacheKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[d]; ok {
		if ce := e.Value.(*cacheEntry); ce.seg == segScan {
			ce.passed = true
		}
	}
}

// reclaim evicts chunks of the scan segment that sequential readers have
// passed and no one holds (refs 0: no reader, reply or spill write uses
// their bytes), oldest first, and returns their buffers, which are the
// caller's now: one of a size in [lo, hi] if lo > 0 and there is one;
// else buffers of whole huge pages adding up to want bytes, or fewer.
// It is chunkMem's reclaim; c.mu is not held.
func (c *chunkCache) reclaim(lo, hi, want int) []*memBuf {
	c.mu.Lock()
	defer c.mu.Unlock()
	free := func(ce *cacheEntry) bool {
		return ce.passed && ce.refs == 0 && ce.buf != nil && !ce.buf.heap
	}
	seg := c.segs[segScan]
	if lo > 0 {
		for el := seg.Back(); el != nil; el = el.Prev() {
			ce := el.Value.(*cacheEntry)
			if free(ce) && len(ce.buf.mem) >= lo && len(ce.buf.mem) <= hi {
				return []*memBuf{c.take(el)}
			}
		}
	}
	var out []*memBuf
	for el, got := seg.Back(), 0; el != nil && got < want; {
		prev := el.Prev()
		if ce := el.Value.(*cacheEntry); free(ce) && len(ce.buf.mem)%hugePage == 0 {
			got += len(ce.buf.mem)
			out = append(out, c.take(el))
		}
		el = prev
	}
	return out
}

// take evicts entry el, which no one holds, and returns its buffer
// instead of freeing it. c.mu is held.
func (c *chunkCache) take(el *list.Element) *memBuf {
	e := el.Value.(*cacheEntry)
	buf := e.buf
	e.buf, e.data = nil, nil
	c.evict(el)
	return buf
}

// peek returns chunk d, referenced, if cached, counting the access (scan
// or not).
func (c *chunkCache) peek(d cacheKey, scan bool) (*cacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[d]
	if !ok {
		return nil, false
	}
	c.touch(e, scan)
	c.stats.Hits++
	ce := e.Value.(*cacheEntry)
	ce.refs++
	return ce, true
}

// has reports whether chunk d is cached or being loaded, without
// counting an access.
func (c *chunkCache) has(d cacheKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.items[d]
	_, loading := c.loading[d]
	return ok || loading
}

// retain adds a reference to e, which the caller holds one of.
func (c *chunkCache) retain(e *cacheEntry) {
	c.mu.Lock()
	e.refs++
	c.mu.Unlock()
}

// release drops a reference from get, peek or retain.
func (c *chunkCache) release(e *cacheEntry) {
	c.mu.Lock()
	e.refs--
	free := e.refs == 0 && e.gone
	c.mu.Unlock()
	if free {
		c.mem.put(e.buf)
	}
}

// move puts entry e at the front of segment seg. c.mu is held.
func (c *chunkCache) move(e *list.Element, seg int) *list.Element {
	ce := e.Value.(*cacheEntry)
	if ce.seg == seg {
		c.segs[seg].MoveToFront(e)
		return e
	}
	c.segs[ce.seg].Remove(e)
	c.bytes[ce.seg] -= ce.size
	ce.seg = seg
	c.bytes[seg] += ce.size
	ne := c.segs[seg].PushFront(ce)
	c.items[ce.d] = ne
	return ne
}

// touch records an access to a cached entry. c.mu is held.
func (c *chunkCache) touch(e *list.Element, scan bool) {
	ce := e.Value.(*cacheEntry)
	ce.passed = false
	switch {
	case scan && ce.seg == segScan:
		// The scan segment is first in, first out for scans: a chunk
		// the reader has passed goes before the chunks read ahead of
		// it, which were loaded later, though the reader touched the
		// passed one last.
	case scan || ce.seg == segProtected || ce.rereadable:
		c.move(e, ce.seg)
	case ce.seg == segScan:
		// First access outside a scan.
		c.move(e, segProbation)
	default:
		// Second access outside a scan: promote.
		c.move(e, segProtected)
		for c.bytes[segProtected] > int64(float64(c.max)*protectedShare) {
			c.move(c.segs[segProtected].Back(), segProbation)
		}
	}
}

// get returns the cached chunk d, referenced, or loads it with load,
// which returns the data and the buffer holding it (nil if not from
// c.mem). scan tells whether the access is part of a sequential scan.
//
// load also reports whether the chunk is cheap to read again without
// the cache (a verified uncompressed chunk, whose small random reads are
// served by pread): such a chunk stays in the scan segment whatever its
// accesses, so that random reads of disk images do not fill the cache
// with chunks they never read from it.
func (c *chunkCache) get(d cacheKey, scan bool, load func() ([]byte, *memBuf, bool, error)) (*cacheEntry, error) {
	c.mu.Lock()
	if e, ok := c.items[d]; ok {
		c.touch(e, scan)
		c.stats.Hits++
		ce := e.Value.(*cacheEntry)
		ce.refs++
		c.mu.Unlock()
		return ce, nil
	}
	if l, ok := c.loading[d]; ok {
		l.waiters++ // counted in the entry's references when it lands
		c.mu.Unlock()
		<-l.done
		return l.e, l.err
	}
	c.stats.Misses++
	l := &cacheLoad{done: make(chan struct{})}
	c.loading[d] = l
	c.mu.Unlock()

	data, buf, rereadable, err := load()

	c.mu.Lock()
	delete(c.loading, d)
	if err == nil {
		size := int64(cap(data))
		if buf != nil {
			size = int64(len(buf.mem))
		}
		l.e = &cacheEntry{d: d, data: data, buf: buf, size: size, refs: 1 + l.waiters, rereadable: rereadable}
		c.add(l.e, scan || rereadable)
	}
	l.err = err
	c.mu.Unlock()
	close(l.done)
	return l.e, l.err
}

// add inserts an entry, into the scan segment for a scan, else into
// probation, and evicts down to the capacity. c.mu is held.
func (c *chunkCache) add(ce *cacheEntry, scan bool) {
	if _, ok := c.items[ce.d]; ok || ce.size > c.max {
		ce.gone = true
		return
	}
	ce.seg = segProbation
	if scan {
		ce.seg = segScan
	}
	c.items[ce.d] = c.segs[ce.seg].PushFront(ce)
	c.bytes[ce.seg] += ce.size
	c.cur += ce.size
	scanMax := c.scanMax()
	for c.bytes[segScan] > scanMax && c.segs[segScan].Len() > 1 {
		c.evict(c.segs[segScan].Back())
	}
	reserve := min(scanMax, c.max/2)
	for c.cur > c.max {
		if c.bytes[segScan] > reserve {
			if v := c.victim(segScan, ce); v != nil {
				c.evict(v)
				continue
			}
		}
		v := c.victim(segProbation, ce)
		if v == nil {
			v = c.victim(segProtected, ce)
		}
		if v == nil {
			v = c.victim(segScan, ce)
		}
		if v == nil {
			v = c.items[ce.d] // nothing else is left
		}
		c.evict(v)
	}
}

// scanMax is the bound of the scan segment. c.mu is held.
func (c *chunkCache) scanMax() int64 {
	return max(int64(float64(c.max)*scanShare), minScanBytes, c.minScan)
}

// victim returns the entry segment seg gives up first, other than keep
// (the entry being added), or nil if it has none. c.mu is held.
func (c *chunkCache) victim(seg int, keep *cacheEntry) *list.Element {
	for el := c.segs[seg].Back(); el != nil; el = el.Prev() {
		if el.Value.(*cacheEntry) != keep {
			return el
		}
	}
	return nil
}

// evict removes entry el; its buffer is freed now or at its last
// release. c.mu is held.
func (c *chunkCache) evict(el *list.Element) {
	e := el.Value.(*cacheEntry)
	c.segs[e.seg].Remove(el)
	delete(c.items, e.d)
	c.cur -= e.size
	c.bytes[e.seg] -= e.size
	e.gone = true
	c.stats.Evictions++
	if e.refs == 0 {
		c.mem.put(e.buf)
	}
}

// clear evicts everything (Store.Close).
func (c *chunkCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, seg := range c.segs {
		for seg.Len() > 0 {
			c.evict(seg.Back())
		}
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
