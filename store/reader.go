package store

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// This file is the read engine: every reader of archive bytes (the
// mount's images and files in pxar archives, cat, restore) goes through
// an Archive and its Readers.
//
//   - Chunks are decoded by the archive's ChunkDecoder and kept in the
//     store's decoded-chunk cache (Options.CacheBytes), which a sequential
//     scan cannot flush (see chunkCache).
//   - A Reader detects sequential access and keeps the next chunks
//     decoding in the background, at most one per core at a time across
//     the store (Store.prefetch), and at most readAheadBytes ahead of
//     each reader: the memory bound is the cache plus one chunk per core
//     (plus at most maxFreeMem of free buffers, see chunkMem).
//   - Chunk memory is mapped outside the Go heap and used again (chunkMem);
//     bytes handed out are references (Data) released by their user. A
//     sequential reader marks the chunks it has gone past (markPassed):
//     their buffers serve the next chunks loaded before fresh memory
//     does, once no one holds them (chunkCache.reclaim).
//   - A request inside one chunk is served as a slice of the cached chunk
//     (no copy); any request of a chunk stored uncompressed and verified
//     before (sequential or random) is served by pread of the range from
//     the verified file (ReadChunkRange) without a decode (a chunk of an
//     encrypted archive: that range of the ciphertext, decrypted), and its
//     read-ahead is just the kernel's (FADV_WILLNEED); so is any request
//     of a compressed chunk of an unencrypted archive decoded before, once
//     it left the cache, from the spill file (spillTier), which takes the
//     chunks of random reads at once and those of sequential scans in the
//     background (a second cat of a file reads the decoded bytes back,
//     each chunk whole into the cache without the page cache, instead of
//     decoding every chunk again; chunks fetched from a bucket, from the
//     second scan that fetches them on); a chunk whose digest is that of all
//     zeros (a hole) is never read at all.

// Archive gives random access to the decoded bytes of an index archive.
// It is safe for concurrent use.
type Archive struct {
	s     *Store
	idx   Index
	ctx   context.Context
	dec   *ChunkDecoder
	holes []atomic.Uint32 // per chunk: 0 unknown, 1 data, 2 hole
	own   *Reader         // the reader behind ReadAt
}

// NewArchive returns random access over the unencrypted archive idx
// describes. ctx bounds the chunk loads of the ReadAt method and of
// read-ahead.
func (s *Store) NewArchive(ctx context.Context, idx Index) *Archive {
	return s.NewArchiveWith(ctx, idx, s.plain)
}

// NewArchiveWith returns random access over the archive idx describes,
// its chunks decoded by dec (see Store.Decoder): the key of an encrypted
// archive comes with its decoder.
func (s *Store) NewArchiveWith(ctx context.Context, idx Index, dec *ChunkDecoder) *Archive {
	a := &Archive{s: s, idx: idx, ctx: ctx, dec: dec, holes: make([]atomic.Uint32, idx.Len())}
	// The shared reader does not mark what it passes: its users (the
	// pxar decoder listing directories, entry by entry) come back to the
	// same chunks (find, then du, then tar of one tree).
	a.own = &Reader{a: a, next: -1}
	return a
}

// OpenArchive opens index archive name of snapshot ref for reading, with
// the decoder its manifest entry asks for: an encrypted archive needs the
// key the manifest names.
func (s *Store) OpenArchive(ctx context.Context, ref SnapshotRef, name string) (*Archive, error) {
	m, err := s.LoadManifest(ref)
	if err != nil {
		return nil, err
	}
	dec, err := s.Decoder(m, name)
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", ref, name, err)
	}
	idx, err := s.OpenIndex(ref, name)
	if err != nil {
		return nil, err
	}
	return s.NewArchiveWith(ctx, idx, dec), nil
}

// Decoder returns the archive's chunk decoder.
func (a *Archive) Decoder() *ChunkDecoder { return a.dec }

// Index returns the archive's index.
func (a *Archive) Index() Index { return a.idx }

// Size returns the archive size.
func (a *Archive) Size() int64 { return int64(a.idx.Size()) }

// ReadAt reads decoded archive bytes at off. Sequential use is detected
// as with a Reader (one shared by all callers of ReadAt). A missing or
// corrupt chunk is an error naming its digest.
func (a *Archive) ReadAt(p []byte, off int64) (int, error) {
	return a.own.ReadAt(p, off)
}

// ReadAtContext is ReadAt with its own context.
func (a *Archive) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return a.own.readAt(ctx, p, off)
}

// Reader returns an io.ReadSeeker over the whole archive.
func (a *Archive) Reader() *io.SectionReader { return io.NewSectionReader(a, 0, a.Size()) }

// WriteTo streams the whole archive to w, chunk by chunk, with read-ahead.
func (a *Archive) WriteTo(w io.Writer) (int64, error) {
	r := a.NewReader()
	r.seq = true
	var total int64
	for i := range a.idx.Len() {
		_, start, end := a.idx.Chunk(i)
		r.prefetch(int64(start), int64(end-start))
		d, err := a.chunk(a.ctx, i, true)
		if err != nil {
			return total, err
		}
		n, err := w.Write(d.Bytes())
		d.Release()
		a.pass(i) // no request comes out of order here
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Warm loads the chunk holding archive offset off into the cache, so
// that a read of it soon finds it decoded.
func (a *Archive) Warm(ctx context.Context, off uint64) error {
	i, _, err := a.idx.Locate(off)
	if err != nil {
		return err
	}
	d, err := a.chunk(ctx, i, false)
	if err != nil {
		return err
	}
	d.Release()
	return nil
}

// IsHole reports whether chunk i is all zeros by its digest.
func (a *Archive) IsHole(i int) bool {
	switch a.holes[i].Load() {
	case 1:
		return false
	case 2:
		return true
	}
	d, start, end := a.idx.Chunk(i)
	hole := a.s.IsZeroChunk(d, end-start)
	v := uint32(1)
	if hole {
		v = 2
	}
	a.holes[i].Store(v)
	return hole
}

// chunk returns the decoded chunk i through the cache; scan marks an
// access of a sequential reader. The caller releases it.
func (a *Archive) chunk(ctx context.Context, i int, scan bool) (Data, error) {
	d, start, end := a.idx.Chunk(i)
	if a.IsHole(i) {
		return Data{b: a.s.zeroChunk(end - start)}, nil
	}
	return a.s.loadChunk(ctx, d, end-start, a.dec, scan)
}

// Data is bytes returned by the read engine: a slice of a decoded chunk
// in the cache, of a hole's zeros, or of the caller's buffer. The bytes
// stay valid, and must not be modified, until Release, which must be
// called exactly once: the memory of a cached chunk is used again for
// other chunks once it left the cache and no Data refers to it.
type Data struct {
	b []byte
	e *cacheEntry
	c *chunkCache
}

// Bytes returns the bytes.
func (d Data) Bytes() []byte { return d.b }

// Release ends the use of the bytes.
func (d Data) Release() {
	if d.e != nil {
		d.c.release(d.e)
	}
}

// slice returns the part [from, to) of d, holding the same reference.
func (d Data) slice(from, to uint64) Data { return Data{b: d.b[from:to], e: d.e, c: d.c} }

// loadChunk returns the plaintext of chunk d, size bytes long as the
// index says (^0: not checked), through the decoded-chunk cache; dec
// decodes it on a miss. This is the one place where the read engine
// turns a digest into verified bytes: unencrypted chunks through the
// store's file loader (which keeps verified uncompressed chunk files
// open for range reads), others through dec with its key.
func (s *Store) loadChunk(ctx context.Context, d Digest, size uint64, dec *ChunkDecoder, scan bool) (Data, error) {
	spillLater := false
	e, err := s.cache.get(cacheKey{d, dec.key}, scan, func() ([]byte, *memBuf, bool, error) {
		if !dec.encrypted {
			if scan && s.spill != nil {
				// Spilled before: read back whole, without the page
				// cache, into the cache for the scan.
				if data, buf, ok := s.spill.load(d, size, s.mem); ok {
					return data, buf, false, nil
				}
			}
			data, buf, err := s.files.DecodeChunk(ctx, d, size)
			rereadable := err == nil && s.files.verified.has(d)
			if err == nil && !rereadable && s.spill != nil {
				if scan {
					// A compressed chunk of a sequential scan: spilled
					// in the background (below), so that the reader
					// does not wait for the write; in a store whose
					// chunks come from a bucket, only once a scan
					// fetches it a second time (admitScan).
					spillLater = !s.remote || s.spill.admitScan(d)
				} else {
					// A compressed chunk a random reader wanted: later
					// reads of it are preads of the spill file, so it
					// is cheap to read again without the cache.
					rereadable = s.spill.put(d, data, false)
				}
			}
			return data, buf, rereadable, err
		}
		if n, ok := s.files.verified.size(d); ok && n == size {
			// Verified before with this key and stored uncompressed:
			// its ciphertext decrypted again, no tag or digest to
			// compute (see ReadChunkRange).
			buf := s.mem.get(int(size))
			if s.files.ReadChunkRange(d, dec.key, buf.mem[:size], 0) {
				return buf.mem[:size], buf, true, nil
			}
			s.mem.put(buf)
		}
		data, buf, err := s.files.DecodeEncrypted(ctx, d, size, dec)
		return data, buf, err == nil && s.files.verified.has(d), err
	})
	if err != nil {
		return Data{}, err
	}
	if spillLater && s.spilling.tryAdd(maxSpilling) {
		s.cache.retain(e)
		go func() {
			defer s.spilling.done()
			s.spill.put(d, e.data, true)
			s.cache.release(e)
		}()
	}
	return Data{b: e.data, e: e, c: s.cache}, nil
}

// maxSpilling bounds the background writes of scanned chunks to the
// spill file: each holds its chunk's memory, which the cache cannot give
// to the next chunk until the write is done, so a disk slower than the
// decoding skips chunks rather than holding more memory than that.
const maxSpilling = 4

// DataBytes returns how many bytes of [off, off+n) lie in chunks that
// are not holes: what st_blocks counts.
func (a *Archive) DataBytes(off, n int64) int64 {
	end := min(off+n, a.Size())
	var total int64
	for off < end {
		i, _, err := a.idx.Locate(uint64(off))
		if err != nil {
			break
		}
		_, _, ce := a.idx.Chunk(i)
		next := min(int64(ce), end)
		if !a.IsHole(i) {
			total += next - off
		}
		off = next
	}
	return total
}

// SeekData returns the first offset at or after off, inside [start,
// end), that is not in a hole (SEEK_DATA), or -1 if there is none.
// With hole set it returns the first offset in a hole instead, end if
// there is none (SEEK_HOLE: the end of a file counts as a hole).
func (a *Archive) SeekData(start, end, off int64, hole bool) int64 {
	end = min(end, a.Size())
	for off < end {
		i, _, err := a.idx.Locate(uint64(off))
		if err != nil {
			break
		}
		if a.IsHole(i) == hole {
			return max(off, start)
		}
		_, _, ce := a.idx.Chunk(i)
		off = int64(ce)
	}
	if hole {
		return end
	}
	return -1
}

// zeroChunk returns n zero bytes, shared: callers must not modify them.
func (s *Store) zeroChunk(n uint64) []byte {
	s.zeroMu.Lock()
	defer s.zeroMu.Unlock()
	if uint64(len(s.zeroBuf)) < n {
		s.zeroBuf = make([]byte, n)
	}
	return s.zeroBuf[:n]
}

// A Reader reads an Archive for one user (one open file): it tells
// sequential from random access and reads ahead for the former.
// It is safe for concurrent use.
type Reader struct {
	a *Archive

	mu   sync.Mutex
	next int64 // where the last read ended
	seq  bool
	// near, far: how many requests in a row were near where the last
	// one ended, or far from it.
	near, far int
	// aheadChunk: read-ahead was started for the chunks before it (since
	// the last jump).
	aheadChunk int
	// passedTo: the chunks of this sequential run that end before it
	// were marked passed (see markPassed); where the run started, after
	// a jump.
	passedTo int64
	// marks: the reader marks the chunks it passes (one user's stream).
	marks bool
}

// NewReader returns a Reader of the archive for one stream (an open
// file): when it reads sequentially, the chunks it has gone past give
// their memory to the next chunks loaded (see markPassed).
func (a *Archive) NewReader() *Reader { return &Reader{a: a, next: -1, marks: true} }

// seqWindow is how far a read may start from where the previous one ended
// and still count as sequential: the kernel sends readahead requests in
// parallel, so they arrive a little out of order. A large request may
// start further away (nearWindow): the kernel sends a read-ahead window
// of several megabytes as 1 MiB requests at once, which arrive in any
// order, while random small reads keep the narrow window.
const seqWindow = 2 << 20

// nearWindow is how far from where the last read ended a read of n bytes
// may start and count as near: seqWindow, plus sixteen times its size up
// to 16 MiB. Large requests come from the kernel's read-ahead, which
// sends several at once, served on as many goroutines (traced, with a 4
// MiB read-ahead window: a 1 MiB request came in 11.5 MiB behind the
// end of the furthest one served).
func nearWindow(n int64) int64 { return seqWindow + min(16<<20, 16*n) }

// readAheadBytes is how far ahead of a sequential reader chunks are
// being decoded by default (Options.ReadAheadBytes): enough for a few chunks to decode at once on every core
// while the reader consumes the current one.
const readAheadBytes = 24 << 20

// minAheadChunks is how many chunks past the one a sequential request
// ends in are decoding ahead at least, when they are larger than
// readAheadBytes allows for: the chunks of a sparse file are 16 MiB (the
// chunker finds no boundary in zeros), and with one chunk ahead a core
// sat idle while the reader waited for the other to verify the next.
const minAheadChunks = 2

// note records a request and reports whether it is sequential. A
// reader turns sequential after two requests in a row near where the
// last one ended, and random again after two in a row far from it. One
// near request is not enough: random 4 KiB reads of a 256 MiB file land
// within seqWindow of the last one about once in 64, and each such false
// start read 24 MiB ahead (measured: 1,340 chunks decoded ahead, ~9 s of
// CPU, during 40,000 random reads of a text file). One far request is
// not enough either: on a loaded machine the kernel's parallel
// read-ahead requests arrive far out of order, and each straggler made
// the next chunks count as random accesses, which promoted them in the
// cache and filled it (RSS 390-464 MB in a cat of a 1 GiB image).
func (r *Reader) note(off, n int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := nearWindow(n)
	near := r.next >= 0 && off >= r.next-w && off <= r.next+w
	if near {
		r.far = 0
		r.near++
		if r.near >= 2 {
			r.seq = true
		}
	} else {
		r.near = 0
		r.far++
		if r.far >= 2 || r.next < 0 {
			r.seq = false
		}
	}
	if !r.seq {
		r.aheadChunk = 0 // a jump: read ahead from the new place
		r.passedTo = off // and mark only what is passed from here
	}
	switch end := off + n; {
	case near && end > r.next:
		r.next = end
	case !near && !r.seq:
		r.next = end
	}
	return r.seq
}

// prefetch starts background decodes of the chunks after [off, off+n)
// up to the store's read-ahead distance (Options.ReadAheadBytes) and at
// least minAheadChunks, each chunk once: a chunk already cached or
// being loaded is left alone.
func (r *Reader) prefetch(off, n int64) {
	a := r.a
	end := off + n
	if end >= a.Size() {
		return
	}
	i, _, err := a.idx.Locate(uint64(end))
	if err != nil {
		return
	}
	to := min(end+a.s.readAheadBytes, a.Size())
	last := i + minAheadChunks // at least these, whatever their size
	r.mu.Lock()
	i = max(i, r.aheadChunk)
	var jobs []int
	for ; i < a.idx.Len(); i++ {
		_, start, _ := a.idx.Chunk(i)
		if int64(start) >= to && i > last {
			break
		}
		jobs = append(jobs, i)
	}
	r.aheadChunk = max(r.aheadChunk, i)
	r.mu.Unlock()
	for _, j := range jobs {
		if a.IsHole(j) {
			continue
		}
		d, _, _ := a.idx.Chunk(j)
		key := cacheKey{d, a.dec.key}
		a.s.prefetch(a.ctx, func() bool {
			if a.s.cache.has(key) {
				return false
			}
			// A verified uncompressed chunk is read by pread (reread):
			// the disk reads just started are all it needs ahead. (A
			// spilled one is read whole into the cache, see loadChunk.)
			a.s.files.willNeed(d)
			return !a.s.files.verified.has(d)
		}, func(ctx context.Context) {
			if a.s.cache.has(key) {
				return
			}
			if d, err := a.chunk(ctx, j, true); err == nil {
				d.Release()
			} // errors show on the real read
		})
	}
}

// passMargin is how far behind a sequential request a chunk must end to
// count as passed by its reader: the kernel's read-ahead requests arrive
// out of order, as far behind as nearWindow allows a near one to be.
const passMargin = seqWindow + 16<<20

// markPassed marks the chunks this sequential run has gone past, from
// where it started (or the last chunk marked) to passMargin before off,
// as passed in the cache (chunkCache.pass): their buffers serve the next
// chunks loaded rather than fresh memory.
func (r *Reader) markPassed(off int64) {
	if !r.marks {
		return
	}
	a := r.a
	to := off - passMargin
	r.mu.Lock()
	from := r.passedTo
	if to <= from {
		r.mu.Unlock()
		return
	}
	i, _, err := a.idx.Locate(uint64(from))
	if err != nil {
		r.mu.Unlock()
		return
	}
	var passed []int
	for ; i < a.idx.Len(); i++ {
		_, _, end := a.idx.Chunk(i)
		if int64(end) > to {
			break
		}
		passed = append(passed, i)
		r.passedTo = int64(end)
	}
	r.mu.Unlock()
	for _, j := range passed {
		a.pass(j)
	}
}

// pass marks chunk i passed by a sequential reader (chunkCache.pass).
func (a *Archive) pass(i int) {
	if a.IsHole(i) {
		return
	}
	d, _, _ := a.idx.Chunk(i)
	a.s.cache.pass(cacheKey{d, a.dec.key})
}

// prefetch runs fn in the background, at most one per core at a time;
// jobs wait their turn in order. start runs first, before the wait for a
// turn (it starts the chunk file's disk reads, so that the disk works
// while the cores decode the chunks before), and may cancel the job.
func (s *Store) prefetch(ctx context.Context, start func() bool, fn func(context.Context)) {
	s.prefetchJobs.Add(1)
	go func() {
		if !start() {
			return
		}
		select {
		case s.decodeSlots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		defer func() { <-s.decodeSlots }()
		s.readAhead.Add(1)
		fn(ctx)
	}()
}

// ReadAt reads into p at off (io.ReaderAt).
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	return r.readAt(r.a.ctx, p, off)
}

func (r *Reader) readAt(ctx context.Context, p []byte, off int64) (int, error) {
	d, err := r.Read(ctx, p, off)
	b := d.Bytes()
	if len(b) > 0 && &b[0] != &p[0] {
		copy(p, b)
	}
	d.Release()
	if err == nil && len(b) < len(p) {
		err = io.EOF
	}
	return len(b), err
}

// Read returns the bytes at off, at most len(dest) of them, fewer only at
// the end of the archive. The result is either dest[:k] or, for a
// request inside one chunk, a slice of the cached chunk, shared: callers
// must not modify it, and must Release it. A request that touches a bad
// chunk fails whole.
func (r *Reader) Read(ctx context.Context, dest []byte, off int64) (Data, error) {
	parts, err := r.ReadParts(ctx, dest, off)
	if err != nil || len(parts) == 1 {
		return parts.first(), err
	}
	n := 0
	for _, p := range parts {
		if b := p.Bytes(); len(b) > 0 && &b[0] != &dest[n] {
			copy(dest[n:], b)
		}
		n += len(p.Bytes())
	}
	parts.Release()
	return Data{b: dest[:n]}, nil
}

// Parts is the answer to a request across chunks without a copy: a Data
// per chunk touched, in order (a FUSE reply writes them with writev).
type Parts []Data

// Len returns the number of bytes in all parts.
func (p Parts) Len() int {
	n := 0
	for _, d := range p {
		n += len(d.b)
	}
	return n
}

// Slices returns the bytes of each part.
func (p Parts) Slices() [][]byte {
	s := make([][]byte, len(p))
	for i, d := range p {
		s[i] = d.b
	}
	return s
}

// Release releases every part.
func (p Parts) Release() {
	for _, d := range p {
		d.Release()
	}
}

// first returns the only part, or no bytes.
func (p Parts) first() Data {
	if len(p) == 0 {
		return Data{}
	}
	return p[0]
}

// ReadParts is Read answering in parts: each chunk the request touches
// gives a slice of its cached bytes, of a hole's zeros, or of dest (a
// range read without a decode), so that a request across chunks is not
// copied together (a 1 MiB request crosses a boundary of 4 MiB chunks
// about one time in four). The caller releases the parts.
func (r *Reader) ReadParts(ctx context.Context, dest []byte, off int64) (Parts, error) {
	a := r.a
	if off < 0 {
		return nil, fmt.Errorf("negative offset %d", off)
	}
	if off >= a.Size() || len(dest) == 0 {
		return Parts{{b: dest[:0]}}, nil
	}
	if rem := a.Size() - off; int64(len(dest)) > rem {
		dest = dest[:rem]
	}
	seq := r.note(off, int64(len(dest)))
	if seq {
		r.prefetch(off, int64(len(dest)))
		r.markPassed(off)
	}
	var parts Parts
	n := 0
	for n < len(dest) {
		pos := uint64(off) + uint64(n)
		i, in, err := a.idx.Locate(pos)
		if err != nil {
			parts.Release()
			return nil, err
		}
		d, start, end := a.idx.Chunk(i)
		piece := dest[n:min(len(dest), n+int(end-start-in))]
		to := in + uint64(len(piece))
		n += len(piece)
		if a.IsHole(i) {
			parts = append(parts, Data{b: a.s.zeroChunk(end - start)[in:to]})
			continue
		}
		if e, ok := a.s.cache.peek(cacheKey{d, a.dec.key}, seq); ok {
			parts = append(parts, Data{b: e.data, e: e, c: a.s.cache}.slice(in, to))
			continue
		}
		if r.reread(d, piece, in, seq) {
			parts = append(parts, Data{b: piece})
			continue
		}
		data, err := a.chunk(ctx, i, seq)
		if err != nil {
			// All or nothing: a short read would look like the end of
			// the file. Requests of the bytes before the bad chunk alone
			// succeed.
			parts.Release()
			return nil, err
		}
		parts = append(parts, data.slice(in, to))
	}
	return parts, nil
}

// reread fills b from offset off of chunk d without decoding it, when
// the chunk was verified before and can be read again cheaply: a chunk
// stored uncompressed whose verified file is still open (of an encrypted
// archive: that range of its ciphertext, decrypted), or, for a random
// request, a compressed chunk in the spill file (a pread of the range
// costs a copy, a decode the whole chunk's decompression and SHA-256; a
// sequential reader has spilled chunks read whole into the cache
// instead, see loadChunk). See the safety argument in fs/doc.go.
func (r *Reader) reread(d Digest, b []byte, off uint64, seq bool) bool {
	a := r.a
	if a.s.files.ReadChunkRange(d, a.dec.key, b, off) {
		return true
	}
	return !seq && !a.dec.encrypted && a.s.spill != nil && a.s.spill.read(d, b, off)
}
