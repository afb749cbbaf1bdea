package store

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// FixedIndex is a parsed fixed index (.fidx, §3.1): equally sized chunks
// of a disk image, found by division.
type FixedIndex struct {
	hdr       IndexHeader
	size      uint64
	chunkSize uint64
	digests   []Digest
}

var _ Index = (*FixedIndex)(nil)

// ParseFixedIndex parses the bytes of a .fidx file. It checks the magic,
// that the chunk size is a power of two and that the body holds exactly
// ceil(size/chunk_size) digests. An empty image (size 0) is valid.
func ParseFixedIndex(b []byte) (*FixedIndex, error) {
	if len(b) < indexHeaderSize {
		return nil, fmt.Errorf("fixed index of %d bytes, shorter than its %d-byte header: %w", len(b), indexHeaderSize, ErrCorrupt)
	}
	if [8]byte(b[:8]) != magicFixedIndex {
		return nil, fmt.Errorf("fixed index magic %x, want %x: %w", b[:8], magicFixedIndex[:], ErrCorrupt)
	}
	x := &FixedIndex{
		hdr:       readIndexHeader(b),
		size:      binary.LittleEndian.Uint64(b[64:]),
		chunkSize: binary.LittleEndian.Uint64(b[72:]),
	}
	cs := x.chunkSize
	if cs == 0 || cs&(cs-1) != 0 || cs > maxChunkSize {
		return nil, fmt.Errorf("fixed index chunk size %d: not a power of two up to %d: %w", cs, maxChunkSize, ErrCorrupt)
	}
	n := x.size / cs
	if x.size%cs != 0 {
		n++
	}
	body := uint64(len(b) - indexHeaderSize)
	if body%32 != 0 || body/32 != n {
		return nil, fmt.Errorf("fixed index body of %d bytes, want %d digests for size %d: %w", body, n, x.size, ErrCorrupt)
	}
	x.digests = make([]Digest, n)
	for i := range x.digests {
		copy(x.digests[i][:], b[indexHeaderSize+32*i:])
	}
	return x, nil
}

func readIndexHeader(b []byte) IndexHeader {
	var h IndexHeader
	copy(h.UUID[:], b[8:24])
	h.CTime = time.Unix(int64(binary.LittleEndian.Uint64(b[24:])), 0).UTC()
	copy(h.Csum[:], b[32:64])
	return h
}

func putIndexHeader(b []byte, magic [8]byte, h IndexHeader) {
	copy(b[0:8], magic[:])
	copy(b[8:24], h.UUID[:])
	binary.LittleEndian.PutUint64(b[24:], uint64(h.CTime.Unix()))
	copy(b[32:64], h.Csum[:])
}

// Size returns the image size in bytes.
func (x *FixedIndex) Size() uint64 { return x.size }

// ChunkSize returns the size of every chunk but the last.
func (x *FixedIndex) ChunkSize() uint64 { return x.chunkSize }

// Len returns the number of chunks.
func (x *FixedIndex) Len() int { return len(x.digests) }

// Header returns the header fields.
func (x *FixedIndex) Header() IndexHeader { return x.hdr }

// Chunk returns chunk i and its byte range.
func (x *FixedIndex) Chunk(i int) (Digest, uint64, uint64) {
	start := uint64(i) * x.chunkSize
	return x.digests[i], start, min(start+x.chunkSize, x.size)
}

// Locate maps an image offset to (chunk, offset in chunk) by division.
func (x *FixedIndex) Locate(off uint64) (int, uint64, error) {
	if off >= x.size {
		return 0, 0, fmt.Errorf("offset %d of %d-byte image: %w", off, x.size, ErrOutOfRange)
	}
	return int(off / x.chunkSize), off & (x.chunkSize - 1), nil
}

// Checksum returns SHA256 over all digests (§3.3).
func (x *FixedIndex) Checksum() [32]byte {
	h := sha256.New()
	for i := range x.digests {
		h.Write(x.digests[i][:])
	}
	return [32]byte(h.Sum(nil))
}

// FixedIndexWriter writes a .fidx file. Chunks may arrive in any order;
// the file appears under its final name only when Close succeeds.
type FixedIndexWriter struct {
	path      string
	tmp       *os.File
	hdr       IndexHeader
	size      uint64
	chunkSize uint64
	digests   []Digest
	set       []bool
	missing   int
}

// CreateFixedIndex starts writing the fixed index path for an image of
// size bytes cut into chunkSize pieces (a power of two). The index is
// written to a temporary name (extension tmp_fidx) until Close.
func CreateFixedIndex(path string, size, chunkSize uint64) (*FixedIndexWriter, error) {
	if chunkSize == 0 || chunkSize&(chunkSize-1) != 0 || chunkSize > maxChunkSize {
		return nil, fmt.Errorf("fixed index %s: chunk size %d not a power of two", path, chunkSize)
	}
	n := size / chunkSize
	if size%chunkSize != 0 {
		n++
	}
	f, err := os.OpenFile(tmpIndexName(path), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("fixed index: %w", err)
	}
	return &FixedIndexWriter{
		path: path, tmp: f, size: size, chunkSize: chunkSize,
		hdr:     IndexHeader{UUID: newUUID(), CTime: time.Now()},
		digests: make([]Digest, n), set: make([]bool, n), missing: int(n),
	}, nil
}

// Add records the chunk of length bytes ending at image offset end.
// Only the last chunk may be shorter than the chunk size.
func (w *FixedIndexWriter) Add(end, length uint64, d Digest) error {
	if length == 0 || end < length || end > w.size || (end-length)%w.chunkSize != 0 {
		return fmt.Errorf("fixed index %s: chunk [%d-%d) not aligned to %d in %d bytes", w.path, end-length, end, w.chunkSize, w.size)
	}
	i := (end - length) / w.chunkSize
	if length != w.chunkSize && end != w.size || length > w.chunkSize {
		return fmt.Errorf("fixed index %s: chunk %d has %d bytes, want %d", w.path, i, length, w.chunkSize)
	}
	if !w.set[i] {
		w.set[i] = true
		w.missing--
	}
	w.digests[i] = d
	return nil
}

// Close computes the index checksum, writes the file, fsyncs it and
// renames it to its final name. It returns the checksum the manifest
// records. Every chunk must have been added.
func (w *FixedIndexWriter) Close() ([32]byte, error) {
	if w.tmp == nil {
		return [32]byte{}, fmt.Errorf("fixed index %s: already closed", w.path)
	}
	if w.missing > 0 {
		w.Abort()
		return [32]byte{}, fmt.Errorf("fixed index %s: %d chunks never written", w.path, w.missing)
	}
	x := &FixedIndex{hdr: w.hdr, size: w.size, chunkSize: w.chunkSize, digests: w.digests}
	x.hdr.Csum = x.Checksum()
	if err := commitFile(w.tmp, w.path, x.MarshalBinary()); err != nil {
		w.tmp = nil
		return [32]byte{}, fmt.Errorf("fixed index %s: %w", w.path, err)
	}
	w.tmp = nil
	return x.hdr.Csum, nil
}

// Abort removes the temporary file of an unfinished index.
func (w *FixedIndexWriter) Abort() {
	if w.tmp != nil {
		w.tmp.Close()
		os.Remove(w.tmp.Name())
		w.tmp = nil
	}
}

// MarshalBinary returns the .fidx file bytes.
func (x *FixedIndex) MarshalBinary() []byte {
	b := make([]byte, indexHeaderSize+32*len(x.digests))
	putIndexHeader(b, magicFixedIndex, x.hdr)
	binary.LittleEndian.PutUint64(b[64:], x.size)
	binary.LittleEndian.PutUint64(b[72:], x.chunkSize)
	for i, d := range x.digests {
		copy(b[indexHeaderSize+32*i:], d[:])
	}
	return b
}

// commitFile writes data to the open temporary file f, fsyncs and closes
// it, renames it to path and fsyncs the directory. On error the
// temporary file is removed.
func commitFile(f *os.File, path string, data []byte) error {
	_, err := f.WriteAt(data, 0)
	if err == nil {
		err = f.Truncate(int64(len(data)))
	}
	return finishFile(f, path, err)
}

// finishFile fsyncs, closes and renames f over path unless err is set;
// on any error the temporary file is removed.
func finishFile(f *os.File, path string, err error) error {
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	return syncDir(filepath.Dir(path))
}
