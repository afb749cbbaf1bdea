package store

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"sync"

	"github.com/pbsfs/pbsfs/store/crypto"
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

// openChunk opens the file of chunk d for reading and returns its size:
// a regular file no larger than any blob can be.
func (p *plainDecoder) openChunk(d Digest) (*os.File, int64, error) {
	// O_NONBLOCK: a chunk replaced by a FIFO must not block the open; the
	// file type is checked below.
	f, err := os.OpenFile(p.s.chunks.Path(d), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("chunk %s: %w", d, ErrChunkMissing)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("chunk %s: %w", d, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("chunk %s: %w", d, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, 0, fmt.Errorf("chunk %s: not a regular file: %w", d, ErrCorrupt)
	}
	if st.Size > MaxBlobSize+encryptedBlobHeaderSize {
		f.Close()
		return nil, 0, fmt.Errorf("chunk %s: file of %d bytes: %w", d, st.Size, ErrCorrupt)
	}
	return f, st.Size, nil
}

// readFull fills the buffers from f at offset 0 in one system call where
// it can; a file shorter than they are is corrupt (it changed size).
func readFull(d Digest, f *os.File, bufs ...[]byte) error {
	fd := int(f.Fd())
	var off int64
	for len(bufs) > 0 {
		n, err := unix.Preadv(fd, bufs, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("chunk %s: %w", d, err)
		}
		if n == 0 {
			return fmt.Errorf("chunk %s: %v: %w", d, io.ErrUnexpectedEOF, ErrCorrupt)
		}
		off += int64(n)
		for n > 0 {
			k := min(n, len(bufs[0]))
			bufs[0] = bufs[0][k:]
			n -= k
			if len(bufs[0]) == 0 {
				bufs = bufs[1:]
			}
		}
		for len(bufs) > 0 && len(bufs[0]) == 0 {
			bufs = bufs[1:]
		}
	}
	return nil
}

// open starts a load of chunk d: the chunk file and its size, or remote
// true when the chunk is to be fetched from the store's backend instead
// (not in an S3 datastore's cache, or evicted from it to 0 bytes).
func (p *plainDecoder) open(ctx context.Context, d Digest) (f *os.File, n int64, remote bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, false, err
	}
	if p.onLoad != nil {
		p.onLoad(d)
	}
	f, n, err = p.openChunk(d)
	if p.s.remote && (errors.Is(err, ErrChunkMissing) || err == nil && n == 0) {
		if f != nil {
			f.Close()
		}
		return nil, 0, true, nil
	}
	return f, n, false, err
}

// decodeWhole has dec decode the whole encoded chunk blob and checks its
// length against size (^0: not checked).
func decodeWhole(dec *ChunkDecoder, blob []byte, d Digest, size uint64) ([]byte, *memBuf, error) {
	data, err := dec.Decode(nil, blob, d)
	if err == nil && size != ^uint64(0) && uint64(len(data)) != size {
		err = fmt.Errorf("chunk %s: %d bytes, index says %d: %w", d, len(data), size, ErrCorrupt)
	}
	return data, nil, err
}

// DecodeChunk reads chunk d, checks its CRC, decompresses it and checks
// that its SHA-256 is d and its length size (size ^0: not checked). It
// returns the data and the buffer of p.s.mem holding it (nil if the data
// is in Go memory).
func (p *plainDecoder) DecodeChunk(ctx context.Context, d Digest, size uint64) (data []byte, buf *memBuf, err error) {
	f, n, remote, err := p.open(ctx, d)
	if remote {
		return p.decodeRemote(ctx, d, size)
	}
	if err != nil {
		return nil, nil, err
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
		}
	}()
	if n < blobHeaderSize {
		return nil, nil, fmt.Errorf("chunk %s: blob of %d bytes, shorter than its header: %w", d, n, ErrCorrupt)
	}
	// The header apart, the payload into a buffer of its own: an
	// uncompressed payload is the chunk, kept as read.
	var hdr [blobHeaderSize]byte
	raw := p.s.mem.get(int(n - blobHeaderSize))
	if err := readFull(d, f, hdr[:], raw.mem[:n-blobHeaderSize]); err != nil {
		p.s.mem.put(raw)
		return nil, nil, err
	}
	data, buf, uncompressed, err := p.decodePayload(d, hdr, raw, int(n-blobHeaderSize), size)
	if err == nil && uncompressed {
		keep = p.verified.add(d, f, uint64(n-blobHeaderSize))
	}
	return data, buf, err
}

// decodePayload checks and decodes unencrypted chunk d, read as its blob
// header hdr and n payload bytes at the start of raw: the
// decompression, the length (size ^0: not checked) and the SHA-256. It
// returns the data and the buffer holding it (raw itself for a payload
// stored uncompressed, which uncompressed reports), and gives raw back
// to p.s.mem when it does not hold the data.
func (p *plainDecoder) decodePayload(d Digest, hdr [blobHeaderSize]byte, raw *memBuf, n int, size uint64) (data []byte, buf *memBuf, uncompressed bool, err error) {
	mem := p.s.mem
	defer func() {
		if raw != buf {
			mem.put(raw)
		}
	}()
	payload := raw.mem[:n]
	var kind BlobKind
	switch [8]byte(hdr[:8]) {
	case magicUncompressed:
		kind = BlobUncompressed
	case magicCompressed:
		kind = BlobCompressed
	default:
		// An encrypted blob in an unencrypted archive, or no blob: the
		// plain decoder names the mismatch.
		blob := append(hdr[:], payload...)
		data, err := p.s.plain.Decode(nil, blob, d)
		return data, nil, false, err
	}
	// No CRC pass: the SHA-256 of the content (checkChunk) proves the
	// payload whole, and a damaged compressed payload either fails to
	// decompress or fails that check. Verify still checks the CRC, as
	// PBS's verification does, so a damaged header field is reported
	// there while reads serve the proven content. A failure computes the
	// CRC to name damage to the stored bytes as such.
	var out *memBuf
	if kind == BlobUncompressed {
		data, out = payload, raw // no copy
	} else if data, out, err = p.decompress(d, payload, size); err != nil {
		return nil, nil, false, crcOr(d, hdr, payload, err)
	}
	if err := checkChunk(d, data, size); err != nil {
		if out != raw {
			mem.put(out)
		}
		return nil, nil, false, crcOr(d, hdr, payload, err)
	}
	return data, out, kind == BlobUncompressed, nil
}

// crcOr returns a CRC error for chunk d if its payload does not match
// the CRC in its blob header hdr, and err otherwise: a decode that failed
// names damage to the stored bytes as PBS would.
func crcOr(d Digest, hdr [blobHeaderSize]byte, payload []byte, err error) error {
	if got, want := crc32.ChecksumIEEE(payload), binary.LittleEndian.Uint32(hdr[8:]); got != want {
		return fmt.Errorf("chunk %s: blob crc %08x, header says %08x: %w", d, got, want, ErrCorrupt)
	}
	return err
}

// checkChunk checks the length (size ^0: not checked) and SHA-256 of
// unencrypted chunk d.
func checkChunk(d Digest, data []byte, size uint64) error {
	if size != ^uint64(0) && uint64(len(data)) != size {
		return fmt.Errorf("chunk %s: %d bytes, index says %d: %w", d, len(data), size, ErrCorrupt)
	}
	if DigestOf(data) != d {
		return fmt.Errorf("chunk %s: content digest differs: %w", d, ErrCorrupt)
	}
	return nil
}

// ChunkFetcher is implemented by a backend (Options.Backend) that reads
// chunks over the network: the read engine has it read a chunk into
// buffers of its own, used again for chunk after chunk, rather than into
// fresh memory per chunk (whose page faults cost more than the transfer
// on some machines).
type ChunkFetcher interface {
	// FetchInto reads the encoded blob of chunk d from the backend, not
	// from the local directory: once its length n is known it calls
	// bufs(n), which returns buffers whose lengths add up to n, and fills
	// them in order. A chunk the backend does not have is an
	// ErrChunkMissing error.
	FetchInto(ctx context.Context, d Digest, bufs func(n int64) ([][]byte, error)) error
}

// fetchInto reads chunk d from the store's backend as ChunkFetcher
// describes, also from backends that only implement Get.
func (p *plainDecoder) fetchInto(ctx context.Context, d Digest, bufs func(n int64) ([][]byte, error)) error {
	if f, ok := p.s.backend.(ChunkFetcher); ok {
		return f.FetchInto(ctx, d, bufs)
	}
	blob, err := p.s.backend.Get(ctx, d)
	if err != nil {
		return err
	}
	bs, err := bufs(int64(len(blob)))
	for _, b := range bs {
		blob = blob[copy(b, blob):]
	}
	return err
}

// decodeRemote loads chunk d from the store's backend (an S3 datastore's
// bucket) into a buffer of p.s.mem and decodes it; nothing is kept open
// for range reads.
func (p *plainDecoder) decodeRemote(ctx context.Context, d Digest, size uint64) ([]byte, *memBuf, error) {
	var hdr [blobHeaderSize]byte
	var raw *memBuf
	var n int
	err := p.fetchInto(ctx, d, func(size int64) ([][]byte, error) {
		if size < blobHeaderSize || size > MaxBlobSize+blobHeaderSize {
			return nil, fmt.Errorf("chunk %s: blob of %d bytes: %w", d, size, ErrCorrupt)
		}
		n = int(size - blobHeaderSize)
		raw = p.s.mem.get(n)
		return [][]byte{hdr[:], raw.mem[:n]}, nil
	})
	if err != nil {
		p.s.mem.put(raw)
		return nil, nil, err
	}
	data, buf, _, err := p.decodePayload(d, hdr, raw, n, size)
	return data, buf, err
}

// decompress decodes the zstd payload of chunk d into a buffer of p.s.mem
// sized as the index says (size), or into Go memory when size is not
// known.
func (p *plainDecoder) decompress(d Digest, payload []byte, size uint64) ([]byte, *memBuf, error) {
	var out *memBuf
	var dst []byte
	if size != ^uint64(0) && size <= MaxBlobSize {
		out = p.s.mem.get(int(size))
		dst = out.mem[:0:size]
	}
	data, err := p.s.codec.dec.DecodeAll(payload, dst)
	if err != nil {
		p.s.mem.put(out)
		return nil, nil, fmt.Errorf("chunk %s: zstd payload: %v: %w", d, err, ErrCorrupt)
	}
	if out != nil && (len(data) == 0 || &data[0] != &out.mem[0]) {
		// Longer than the index says: the decoder moved it (the size
		// check fails next).
		p.s.mem.put(out)
		out = nil
	}
	return data, out, nil
}

// DecodeEncrypted reads chunk d of an encrypted archive and has dec
// authenticate, decrypt, decompress and check it (size as DecodeChunk).
func (p *plainDecoder) DecodeEncrypted(ctx context.Context, d Digest, size uint64, dec *ChunkDecoder) (data []byte, buf *memBuf, err error) {
	f, n, remote, err := p.open(ctx, d)
	if remote {
		blob, err := p.s.backend.Get(ctx, d)
		if err != nil {
			return nil, nil, err
		}
		return decodeWhole(dec, blob, d, size)
	}
	if err != nil {
		return nil, nil, err
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
		}
	}()
	mem := p.s.mem
	if n < encryptedBlobHeaderSize || size == ^uint64(0) || size > MaxBlobSize {
		// Too short for an encrypted blob, or of unknown size: the
		// decoder reads it whole and names what is wrong.
		blob := make([]byte, n)
		if err := readFull(d, f, blob); err != nil {
			return nil, nil, err
		}
		return decodeWhole(dec, blob, d, size)
	}
	// The header apart, the ciphertext into a buffer with room for the
	// tag behind it: it is authenticated and decrypted in place.
	var hdr [encryptedBlobHeaderSize]byte
	ctLen := int(n - encryptedBlobHeaderSize)
	raw := mem.get(ctLen + crypto.TagSize)
	if err := readFull(d, f, hdr[:], raw.mem[:ctLen]); err != nil {
		mem.put(raw)
		return nil, nil, err
	}
	if m := [8]byte(hdr[:8]); m != magicEncrypted && m != magicEncrCompr {
		// Not an encrypted blob: the decoder names the mismatch.
		blob := append(hdr[:], raw.mem[:ctLen]...)
		mem.put(raw)
		data, err := dec.Decode(nil, blob, d)
		return data, nil, err
	}
	// Authenticated without the CRC pass (the tag covers what it covers);
	// a failure reads the blob again to tell damage (a bad CRC) from
	// another key.
	plain, compressed, err := dec.key.OpenInPlaceAuth(hdr[:], raw.mem[:ctLen])
	if err != nil {
		mem.put(raw)
		if errors.Is(err, crypto.ErrAuth) {
			blob := make([]byte, n)
			if rerr := readFull(d, f, blob); rerr == nil {
				if _, cerr := crypto.CheckBlob(blob); cerr != nil {
					err = cerr
				}
			}
		}
		return nil, nil, fmt.Errorf("chunk %s: %w", d, cryptErr(err, dec.key))
	}
	data, buf = plain, raw
	if compressed {
		// An authenticated zstd frame: decompress it.
		data, buf, err = p.decompress(d, plain, size)
		mem.put(raw)
		if err != nil {
			return nil, nil, err
		}
	}
	if uint64(len(data)) != size {
		err = fmt.Errorf("chunk %s: %d bytes, index says %d: %w", d, len(data), size, ErrCorrupt)
	} else if got := dec.Digest(data); got != d {
		err = fmt.Errorf("chunk %s: content digest differs (%s): %w", d, got, ErrCorrupt)
	}
	if err != nil {
		mem.put(buf)
		return nil, nil, err
	}
	if !compressed {
		// Authenticated and verified whole: later reads of ranges of it
		// decrypt just those from this descriptor (ReadChunkRange).
		if st, err := dec.key.BlobStream(hdr[:]); err == nil {
			keep = p.verified.addEncrypted(d, f, uint64(ctLen), dec.key, st)
		}
	}
	return data, buf, nil
}

// willNeed asks the kernel to start reading the file of chunk d into the
// page cache (read-ahead of a sequential reader), without waiting. A
// chunk that is not on disk (remote, missing) is left alone: its load
// reports it.
func (p *plainDecoder) willNeed(d Digest) {
	fd, err := unix.Open(p.s.chunks.Path(d), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	unix.Fadvise(fd, 0, 0, unix.FADV_WILLNEED)
	unix.Close(fd)
}

// ReadChunkRange serves p from offset off of chunk d when d is stored
// uncompressed and this decoder verified the whole file before: it reads
// from the descriptor it opened then, so the bytes come from the very
// file whose content matched d (see the safety argument in fs/doc.go).
// A chunk of an encrypted archive (key not nil) is one stored
// MagicEncrypted whose tag and keyed digest passed with key: the range
// of its ciphertext is read and decrypted alone. It reports false when
// it cannot (the chunk was never verified here, or with another key);
// the engine then decodes the chunk.
func (p *plainDecoder) ReadChunkRange(d Digest, key *crypto.Key, b []byte, off uint64) bool {
	v := p.verified.acquire(d)
	if v == nil {
		return false
	}
	defer p.verified.release(v)
	if v.key != key || off > v.n || uint64(len(b)) > v.n-off {
		return false
	}
	hdr := int64(blobHeaderSize)
	if key != nil {
		hdr = encryptedBlobHeaderSize
	}
	if n, _ := v.f.ReadAt(b, hdr+int64(off)); n == len(b) {
		if v.stream != nil {
			v.stream.XORKeyStreamAt(b, b, off)
		}
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
	n    uint64 // the chunk's length (of its plaintext)
	refs int
	gone bool
	// key and stream: the chunk of an encrypted archive, verified with
	// key, and the key stream of its ciphertext; nil for plain chunks.
	key    *crypto.Key
	stream *crypto.BlobStream
}

func newFileTable(max int) *fileTable {
	return &fileTable{max: max, lru: list.New(), items: map[Digest]*list.Element{}}
}

// add keeps f as the verified file of d, a chunk of n bytes, reporting
// whether it did.
func (t *fileTable) add(d Digest, f *os.File, n uint64) bool {
	return t.insert(&vfile{d: d, f: f, n: n})
}

// addEncrypted keeps f as the file of encrypted chunk d of n bytes,
// verified with key, whose ciphertext st decrypts, reporting whether it
// did.
func (t *fileTable) addEncrypted(d Digest, f *os.File, n uint64, key *crypto.Key, st *crypto.BlobStream) bool {
	return t.insert(&vfile{d: d, f: f, n: n, key: key, stream: st})
}

func (t *fileTable) insert(v *vfile) bool {
	if t.max <= 0 {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.items[v.d]; ok {
		return false
	}
	t.items[v.d] = t.lru.PushFront(v)
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

// has reports whether d's verified file is open.
func (t *fileTable) has(d Digest) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.items[d]
	return ok
}

// size returns the length of chunk d if its verified file is open.
func (t *fileTable) size(d Digest) (uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.items[d]; ok {
		return e.Value.(*vfile).n, true
	}
	return 0, false
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
