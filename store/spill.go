package store

import (
	"container/list"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// spillTier keeps verified decoded chunks that were stored compressed in
// a private scratch file, so that small random reads of them, once the
// decoded-chunk cache let them go, are a pread of the range instead of a
// decode of the whole chunk (a 4 MiB zstd chunk costs ~6 ms to
// decompress and hash here; a pread from the page cache ~20 µs).
//
// Only chunks of unencrypted archives go there (the plaintext of an
// encrypted archive never touches the disk), only after their digest was
// checked, and only those loaded by random reads (a sequential scan does
// not reread). The file is made with O_TMPFILE|O_EXCL: it never has a
// name, cannot be given one, and only this process holds it; what is
// read back is what was written from verified memory (see the safety
// argument in fs/doc.go).
//
// The file is a ring of at most max bytes: chunks are appended, and
// those the write position comes over again are dropped. A chunk
// being read is never overwritten: a write that would overwrite one is
// skipped.
type spillTier struct {
	mu    sync.Mutex
	f     *os.File
	max   int64
	head  int64      // where the next chunk is written
	ring  *list.List // of *spillEntry
	items map[Digest]*list.Element
	// stats
	writes, reads int64
}

type spillEntry struct {
	d      Digest
	off, n int64
	refs   int  // readers and the writer using its range
	ready  bool // written: readable
}

// spillFreeShare is the largest share of the free space of the spill
// file's file system, at mount start, the file may take: a browse of a
// backup must not fill a small /var/tmp.
const spillFreeShare = 4 // a quarter

// newSpillTier makes a spill file of at most max bytes, and at most a
// quarter of the space free in dir's file system then, in dir; nil when
// either is 0 or the file system cannot make an unnamed file.
func newSpillTier(dir string, max int64) *spillTier {
	if max <= 0 {
		return nil
	}
	if dir == "" {
		dir = os.TempDir()
	}
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil
	}
	var sf unix.Statfs_t
	if unix.Fstatfs(fd, &sf) == nil {
		max = min(max, int64(sf.Bavail)*sf.Bsize/spillFreeShare)
	}
	if max <= 0 {
		unix.Close(fd)
		return nil
	}
	return &spillTier{f: os.NewFile(uintptr(fd), fmt.Sprintf("%s/(spill)", dir)), max: max, ring: list.New(), items: map[Digest]*list.Element{}}
}

// put writes the verified decoded chunk d to the file, unless it is
// there already, does not fit, or would overwrite a chunk being read,
// and reports whether the file holds it now.
func (t *spillTier) put(d Digest, data []byte) bool {
	n := int64(len(data))
	t.mu.Lock()
	if _, ok := t.items[d]; ok || n == 0 || n > t.max {
		t.mu.Unlock()
		return ok
	}
	if t.head+n > t.max {
		t.head = 0
	}
	// Drop the chunks in [head, head+n), unless one is being read.
	var drop []*list.Element
	for el := t.ring.Front(); el != nil; el = el.Next() {
		e := el.Value.(*spillEntry)
		if e.off+e.n <= t.head || e.off >= t.head+n {
			continue
		}
		if e.refs > 0 {
			t.mu.Unlock()
			return false // being read (or written): skip this chunk
		}
		drop = append(drop, el)
	}
	for _, el := range drop {
		t.ring.Remove(el)
		delete(t.items, el.Value.(*spillEntry).d)
	}
	e := &spillEntry{d: d, off: t.head, n: n, refs: 1}
	t.items[d] = t.ring.PushBack(e)
	t.head += n
	t.mu.Unlock()

	_, err := t.f.WriteAt(data, e.off)
	t.mu.Lock()
	defer t.mu.Unlock()
	e.refs--
	if err != nil {
		// A full disk, say: forget it.
		if el, ok := t.items[d]; ok && el.Value == e {
			t.ring.Remove(el)
			delete(t.items, d)
		}
		return false
	}
	e.ready = true
	t.writes++
	return true
}

// read fills p from offset off of chunk d if the file holds it, and
// reports whether it did.
func (t *spillTier) read(d Digest, p []byte, off uint64) bool {
	t.mu.Lock()
	el, ok := t.items[d]
	if !ok {
		t.mu.Unlock()
		return false
	}
	e := el.Value.(*spillEntry)
	if !e.ready || int64(off)+int64(len(p)) > e.n {
		t.mu.Unlock()
		return false
	}
	e.refs++
	t.mu.Unlock()
	k, _ := t.f.ReadAt(p, e.off+int64(off))
	t.mu.Lock()
	e.refs--
	if k == len(p) {
		t.reads++
	}
	t.mu.Unlock()
	return k == len(p)
}

// has reports whether chunk d is in the file.
func (t *spillTier) has(d Digest) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.items[d]
	return ok
}

func (t *spillTier) close() {
	if t != nil {
		t.f.Close()
	}
}
