package store

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// plainDecoder loads and decodes unencrypted chunks of the file chunk
// store for the read engine. It keeps an open descriptor of each chunk
// file it verified that is stored uncompressed (random data, most of a
// disk image), up to a bound, and serves ranges of those by pread (see
// ReadChunkRange).
type plainDecoder struct {
	s        *Store
	verified *fileTable
	// onLoad, if set, is called with each chunk read from disk (tests).
	onLoad func(Digest)
}

// DecodeChunk reads chunk d, checks its CRC, decompresses it and checks
// that its SHA-256 is d and its length size (size ^0: not checked).
func (p *plainDecoder) DecodeChunk(ctx context.Context, d Digest, size uint64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if p.onLoad != nil {
		p.onLoad(d)
	}
	// O_NONBLOCK: a chunk replaced by a FIFO must not block the open; the
	// file type is checked below.
	f, err := os.OpenFile(p.s.chunks.Path(d), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if p.s.remote {
			return p.decodeRemote(ctx, d, size)
		}
		return nil, fmt.Errorf("chunk %s: %w", d, ErrChunkMissing)
	}
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", d, err)
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
		}
	}()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("chunk %s: %w", d, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("chunk %s: not a regular file: %w", d, ErrCorrupt)
	}
	if st.Size == 0 && p.s.remote {
		// An evicted chunk of an S3 datastore's cache: fetch it.
		return p.decodeRemote(ctx, d, size)
	}
	if st.Size > MaxBlobSize+encryptedBlobHeaderSize {
		return nil, fmt.Errorf("chunk %s: file of %d bytes: %w", d, st.Size, ErrCorrupt)
	}
	blob := make([]byte, st.Size)
	if _, err := io.ReadFull(f, blob); err != nil {
		return nil, fmt.Errorf("chunk %s: %v: %w", d, err, ErrCorrupt)
	}
	data, kind, err := p.decode(d, blob, size)
	if err != nil {
		return nil, err
	}
	if kind == BlobUncompressed {
		keep = p.verified.add(d, f)
	}
	return data, nil
}

// decodeRemote loads chunk d from the store's backend (an S3 datastore's
// bucket) and decodes it; nothing is kept open for range reads.
func (p *plainDecoder) decodeRemote(ctx context.Context, d Digest, size uint64) ([]byte, error) {
	blob, err := p.s.backend.Get(ctx, d)
	if err != nil {
		return nil, err
	}
	data, _, err := p.decode(d, blob, size)
	return data, err
}

// decode checks the CRC of chunk d's blob, decompresses it and checks its
// digest and length.
func (p *plainDecoder) decode(d Digest, blob []byte, size uint64) ([]byte, BlobKind, error) {
	kind, err := VerifyBlobCRC(blob)
	if err != nil {
		return nil, kind, fmt.Errorf("chunk %s: %w", d, err)
	}
	var data []byte
	switch kind {
	case BlobUncompressed:
		data = blob[blobHeaderSize:] // no copy
	case BlobCompressed:
		if data, err = p.s.codec.dec.DecodeAll(blob[blobHeaderSize:], nil); err != nil {
			return nil, kind, fmt.Errorf("chunk %s: zstd payload: %v: %w", d, err, ErrCorrupt)
		}
	default:
		// An encrypted blob in an unencrypted archive: the plain
		// decoder names the mismatch.
		data, err := p.s.plain.Decode(nil, blob, d)
		return data, kind, err
	}
	if size != ^uint64(0) && uint64(len(data)) != size {
		return nil, kind, fmt.Errorf("chunk %s: %d bytes, index says %d: %w", d, len(data), size, ErrCorrupt)
	}
	if DigestOf(data) != d {
		return nil, kind, fmt.Errorf("chunk %s: content digest differs: %w", d, ErrCorrupt)
	}
	return data, kind, nil
}

// ReadChunkRange serves p from offset off of chunk d when d is stored
// uncompressed and this decoder verified the whole file before: it reads
// from the descriptor it opened then, so the bytes come from the very
// file whose content matched d (see the safety argument in fs/doc.go).
// It reports false when it cannot (the chunk was never verified here);
// the engine then decodes the chunk.
func (p *plainDecoder) ReadChunkRange(d Digest, b []byte, off uint64) bool {
	v := p.verified.acquire(d)
	if v == nil {
		return false
	}
	defer p.verified.release(v)
	if n, _ := v.f.ReadAt(b, blobHeaderSize+int64(off)); n == len(b) {
		return true
	}
	// The file changed size after it was verified: nothing writes chunk
	// files in place, so it is damaged. Forget it and decode afresh.
	p.verified.drop(d)
	return false
}

// fileTable holds open descriptors of verified uncompressed chunk files,
// least recently used first out, closed once no reader uses them.
type fileTable struct {
	mu    sync.Mutex
	max   int
	lru   *list.List // of *vfile, most recent first
	items map[Digest]*list.Element
}

type vfile struct {
	d    Digest
	f    *os.File
	refs int
	gone bool
}

func newFileTable(max int) *fileTable {
	return &fileTable{max: max, lru: list.New(), items: map[Digest]*list.Element{}}
}

// add keeps f as the verified file of d, reporting whether it did.
func (t *fileTable) add(d Digest, f *os.File) bool {
	if t.max <= 0 {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.items[d]; ok {
		return false
	}
	t.items[d] = t.lru.PushFront(&vfile{d: d, f: f})
	for t.lru.Len() > t.max {
		t.remove(t.lru.Back())
	}
	return true
}

func (t *fileTable) remove(e *list.Element) {
	v := e.Value.(*vfile)
	t.lru.Remove(e)
	delete(t.items, v.d)
	v.gone = true
	if v.refs == 0 {
		v.f.Close()
	}
}

func (t *fileTable) drop(d Digest) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.items[d]; ok {
		t.remove(e)
	}
}

func (t *fileTable) acquire(d Digest) *vfile {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.items[d]
	if !ok {
		return nil
	}
	t.lru.MoveToFront(e)
	v := e.Value.(*vfile)
	v.refs++
	return v
}

func (t *fileTable) release(v *vfile) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v.refs--
	if v.gone && v.refs == 0 {
		v.f.Close()
	}
}

// closeAll closes every descriptor not in use.
func (t *fileTable) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.lru.Len() > 0 {
		t.remove(t.lru.Back())
	}
}

// maxVerifiedFiles bounds the descriptors of verified uncompressed chunks
// a store keeps: 4096 of 4 MiB chunks cover 16 GiB of images.
const maxVerifiedFiles = 4096

func verifiedFileLimit() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return int(min(maxVerifiedFiles, rl.Cur/4))
}

// zeroDigests computes the digest of an all-zero chunk of any length up
// to maxZeroChunk from SHA-256 states saved every zeroStep bytes, so that
// each length costs at most zeroStep bytes of hashing.
type zeroDigests struct {
	once   sync.Once
	states [][]byte // states[k]: after k*zeroStep zero bytes
	mu     sync.Mutex
	memo   map[uint64]Digest
}

const (
	zeroStep     = 64 << 10
	maxZeroChunk = 16 << 20 // PBS's largest dynamic chunk (4 x 4 MiB)
)

var zeroBlock [zeroStep]byte

// digest returns the digest of n zero bytes and true, or false when n is
// out of the range the table covers.
func (z *zeroDigests) digest(n uint64) (Digest, bool) {
	if n == 0 || n > maxZeroChunk {
		return Digest{}, false
	}
	z.mu.Lock()
	if d, ok := z.memo[n]; ok {
		z.mu.Unlock()
		return d, true
	}
	z.mu.Unlock()
	z.once.Do(func() {
		h := sha256.New()
		for k := 0; k <= maxZeroChunk/zeroStep; k++ {
			st, _ := h.(encoding.BinaryMarshaler).MarshalBinary()
			z.states = append(z.states, st)
			h.Write(zeroBlock[:])
		}
	})
	k := n / zeroStep
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(z.states[k]); err != nil {
		return Digest{}, false
	}
	h.Write(zeroBlock[:n-k*zeroStep])
	var d Digest
	h.Sum(d[:0])
	z.mu.Lock()
	if z.memo == nil {
		z.memo = map[uint64]Digest{}
	}
	z.memo[n] = d
	z.mu.Unlock()
	return d, true
}

// IsZeroChunk reports whether d is the digest of n zero bytes: such a
// chunk is a hole, and its content is known without reading it.
func (s *Store) IsZeroChunk(d Digest, n uint64) bool {
	z, ok := s.zeros.digest(n)
	return ok && z == d
}
