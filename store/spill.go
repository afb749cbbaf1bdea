package store

import (
	"bytes"
	"container/list"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// spillTier keeps verified decoded chunks that were stored compressed in
// a private scratch file, so that reads of them, once the decoded-chunk
// cache let them go, are a pread of the range instead of a decode of the
// whole chunk (a 4 MiB zstd chunk costs ~6 ms to decompress and hash
// here; a pread from the page cache ~20 µs, a 4 MiB one from disk ~3
// ms).
//
// Only chunks of unencrypted archives go there (the plaintext of an
// encrypted archive never touches the disk), only after their digest was
// checked: those loaded by random reads at once, and those of sequential
// scans in the background, so that a second cat of a file (after the
// page cache let it go, or a cold rerun of a grep) is a read of the
// decoded bytes, not a second decompression and SHA-256 of every chunk.
// In a store whose chunks come from a bucket, a scan spills a chunk only
// when it fetches it a second time (admitScan): a first pass reads most
// chunks once.
// Runs of zeros are not written but punched out as holes (a sparse
// file's 16 MiB chunks are mostly zeros): they cost neither a write nor
// a disk read. The file is made with O_TMPFILE|O_EXCL: it never has a
// name, cannot be given one, and only this process holds it; what is
// read back is what was written from verified memory (see the safety
// argument in fs/doc.go).
//
// The file is a ring of at most max bytes: chunks are appended, and
// those the write position comes over again are dropped. A chunk
// being read is never overwritten: a write that would overwrite one is
// skipped.
type spillTier struct {
	mu   sync.Mutex
	f    *os.File
	max  int64
	head int64 // where the next chunk is written
	size int64 // the file's length
	// direct is the file opened with O_DIRECT (nil: the file system
	// does not do it).
	direct *os.File
	ring   *list.List // of *spillEntry
	items  map[Digest]*list.Element
	// seen holds the digests of chunks that sequential scans fetched
	// from a bucket without spilling them (see admitScan): seenRing in
	// the order they came, at most as many as admitScan says, oldest out
	// first.
	seen     map[Digest]struct{}
	seenRing []Digest
	seenNext int
	// stats
	writes, reads, loads int64
	grows                int64 // truncates that grew the file
}

// minSeen is the least number of digests admitScan remembers; it
// remembers as many as the file holds chunks of FixedChunkSize if that
// is more.
const minSeen = 256

// admitScan reports whether chunk d, which a sequential scan just
// fetched from a bucket (a remote store), is to be spilled: only when a
// scan fetched it before, within the last chunks remembered so (minSeen,
// or as many as the file holds chunks of FixedChunkSize). The first
// fetch is remembered and not written.
//
// Why: a first sequential read through a bucket (a restore, a copy of an
// image) mostly reads each chunk once, and writing every chunk it
// fetched to the spill file cost the mount ~10 % of its CPU in a cat of
// a 1 GiB image (4 MiB O_DIRECT writes, each a blocking system call that
// also cost the Go scheduler a thread handoff), and cycled the ring
// through chunks that were never read again, pushing out those random
// readers spilled. A chunk fetched a second time is being read again
// (a second cat after the cache let it go): that fetch spills it, and
// reads after it come from the spill file.
func (t *spillTier) admitScan(d Digest) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.seen[d]; ok {
		return true
	}
	n := max(minSeen, int(t.max/FixedChunkSize))
	if t.seen == nil {
		t.seen = make(map[Digest]struct{})
	}
	if len(t.seenRing) < n {
		t.seenRing = append(t.seenRing, d)
	} else {
		delete(t.seen, t.seenRing[t.seenNext])
		t.seenRing[t.seenNext] = d
		t.seenNext = (t.seenNext + 1) % n
	}
	t.seen[d] = struct{}{}
	return false
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
	t := &spillTier{f: os.NewFile(uintptr(fd), fmt.Sprintf("%s/(spill)", dir)), max: max, ring: list.New(), items: map[Digest]*list.Element{}}
	// A second descriptor of the file for writes that bypass the page
	// cache (see put); the file has no name, but its descriptor's does.
	if dfd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0); err == nil {
		t.direct = os.NewFile(uintptr(dfd), t.f.Name())
	}
	return t
}

// spillGrow is how much the file grows at a time (sparse: what is not
// written takes no disk).
const spillGrow = 64 << 20

// spillAlign is the alignment of chunks in the file, of the memory and
// the lengths written with O_DIRECT.
const spillAlign = 4 << 10

// put writes the verified decoded chunk d to the file, unless it is
// there already, does not fit, or would overwrite a chunk being read,
// and reports whether the file holds it now. With direct, the write
// bypasses the page cache where it can (O_DIRECT): a background write
// of a sequential scan's chunks, which a later reread reads from the
// disk anyway, then costs no copy and no fresh page-cache pages (on
// this VM, a buffered write of 256 MiB took ~4x the CPU of a direct
// one, which slowed the scan itself).
func (t *spillTier) put(d Digest, data []byte, direct bool) bool {
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
	t.head += (n + spillAlign - 1) &^ (spillAlign - 1)
	var err error
	if end := e.off + n; end > t.size {
		// The holes of the chunk's end must read as zeros, not as the
		// end of the file. The file grows spillGrow at a time, not
		// chunk by chunk: a truncate costs ~0.1 ms here (a journal
		// update), and the first stream through a mount made one per
		// chunk.
		size := max(end, min(t.size+spillGrow, t.max))
		if err = t.f.Truncate(size); err == nil {
			t.size = size
			t.grows++
		}
	}
	t.mu.Unlock()

	if err == nil {
		err = t.write(data, e.off, direct)
	}
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

// spillBlock is the unit in which runs of zeros are found: a zero block
// is punched out instead of written.
const spillBlock = 64 << 10

// write writes data at off, its blocks of zeros as holes (written as
// zeros where the file system cannot punch holes), with direct what it
// can with O_DIRECT.
func (t *spillTier) write(data []byte, off int64, direct bool) error {
	for i := 0; i < len(data); {
		zero := isZeros(data[i:min(i+spillBlock, len(data))])
		j := i + spillBlock
		for j < len(data) && isZeros(data[j:min(j+spillBlock, len(data))]) == zero {
			j += spillBlock
		}
		j = min(j, len(data))
		if zero {
			var err error = unix.ENOTSUP
			t.control(func(fd int) {
				err = unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off+int64(i), int64(j-i))
			})
			if err == nil {
				i = j
				continue
			}
		}
		if direct && t.direct != nil && aligned(data[i:]) {
			// The whole blocks; the tail of a chunk not a multiple of
			// spillAlign long goes through the page cache.
			if k := i + (j-i)&^(spillAlign-1); k > i {
				if _, err := t.direct.WriteAt(data[i:k], off+int64(i)); err == nil {
					i = k
				}
			}
		}
		if _, err := t.f.WriteAt(data[i:j], off+int64(i)); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// control runs fn with the file's descriptor, unless it is closed (a
// read-ahead job may outlive the store).
func (t *spillTier) control(fn func(fd int)) {
	if rc, err := t.f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { fn(int(fd)) })
	}
}

// aligned reports whether b starts at a multiple of spillAlign in memory.
func aligned(b []byte) bool {
	return len(b) > 0 && uintptr(unsafe.Pointer(&b[0]))%spillAlign == 0
}

// isZeros reports whether b (at most spillBlock bytes) is all zeros.
func isZeros(b []byte) bool { return bytes.Equal(b, zeroBlock[:len(b)]) }

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

// load reads chunk d, size bytes long (^0: any), whole into a buffer of
// mem, if the file holds it, with O_DIRECT where it can: a sequential
// reader's read-ahead loads spilled chunks into the cache this way,
// without the page cache (whose fresh pages cost more than the disk
// read on this VM) and without a copy by the CPU.
func (t *spillTier) load(d Digest, size uint64, mem *chunkMem) ([]byte, *memBuf, bool) {
	t.mu.Lock()
	el, ok := t.items[d]
	var e *spillEntry
	if ok {
		e = el.Value.(*spillEntry)
		ok = e.ready && (size == ^uint64(0) || uint64(e.n) == size)
	}
	if !ok {
		t.mu.Unlock()
		return nil, nil, false
	}
	e.refs++
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		e.refs--
		t.mu.Unlock()
	}()
	n := int(e.n)
	whole := (n + spillAlign - 1) &^ (spillAlign - 1)
	buf := mem.get(whole)
	data := buf.mem[:n]
	got := 0
	if t.direct != nil && aligned(buf.mem) && len(buf.mem) >= whole {
		// The file ends at the end of its last chunk: a read of the
		// whole last block stops there.
		got, _ = t.direct.ReadAt(buf.mem[:whole], e.off)
	}
	if got < n {
		k, _ := t.f.ReadAt(data[got:], e.off+int64(got))
		got += k
	}
	if got < n {
		mem.put(buf)
		return nil, nil, false
	}
	t.mu.Lock()
	t.reads++
	t.loads++
	t.mu.Unlock()
	return data, buf, true
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
		if t.direct != nil {
			t.direct.Close()
		}
	}
}

// pending counts background work that can be waited for, and may be
// added to at any time (unlike a sync.WaitGroup, whose Add must not race
// with a Wait at zero: read-ahead jobs may outlive a scan).
type pending struct {
	mu   sync.Mutex
	cond *sync.Cond
	n    int
}

// tryAdd adds one unless limit are pending, and reports whether it did.
func (p *pending) tryAdd(limit int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n >= limit {
		return false
	}
	p.n++
	return true
}

func (p *pending) done() {
	p.mu.Lock()
	p.n--
	if p.n == 0 && p.cond != nil {
		p.cond.Broadcast()
	}
	p.mu.Unlock()
}

// wait returns once nothing is pending.
func (p *pending) wait() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cond == nil {
		p.cond = sync.NewCond(&p.mu)
	}
	for p.n > 0 {
		p.cond.Wait()
	}
}
