package store

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"os"
	"sort"
	"time"
)

// DynamicIndex is a parsed dynamic index (.didx, §3.2): variable-sized
// chunks of a stream, each entry holding the chunk's exclusive end offset.
type DynamicIndex struct {
	hdr     IndexHeader
	ends    []uint64
	digests []Digest
}

var _ Index = (*DynamicIndex)(nil)

// ParseDynamicIndex parses the bytes of a .didx file. It checks the magic,
// that the body is a whole number of 40-byte entries and that the end
// offsets increase strictly. An empty index is valid.
func ParseDynamicIndex(b []byte) (*DynamicIndex, error) {
	if len(b) < indexHeaderSize {
		return nil, fmt.Errorf("dynamic index of %d bytes, shorter than its %d-byte header: %w", len(b), indexHeaderSize, ErrCorrupt)
	}
	if [8]byte(b[:8]) != magicDynamicIndex {
		return nil, fmt.Errorf("dynamic index magic %x, want %x: %w", b[:8], magicDynamicIndex[:], ErrCorrupt)
	}
	body := b[indexHeaderSize:]
	if len(body)%dynamicEntrySize != 0 {
		return nil, fmt.Errorf("dynamic index body of %d bytes is not a multiple of %d: %w", len(body), dynamicEntrySize, ErrCorrupt)
	}
	n := len(body) / dynamicEntrySize
	x := &DynamicIndex{hdr: readIndexHeader(b), ends: make([]uint64, n), digests: make([]Digest, n)}
	var prev uint64
	for i := range n {
		e := body[i*dynamicEntrySize:]
		end := binary.LittleEndian.Uint64(e)
		if end <= prev || end-prev > maxChunkSize {
			return nil, fmt.Errorf("dynamic index entry %d: end %d after %d (ends must increase, chunks at most %d bytes): %w", i, end, prev, maxChunkSize, ErrCorrupt)
		}
		x.ends[i] = end
		copy(x.digests[i][:], e[8:40])
		prev = end
	}
	return x, nil
}

// Size returns the stream size: the last end offset, 0 when empty.
func (x *DynamicIndex) Size() uint64 {
	if len(x.ends) == 0 {
		return 0
	}
	return x.ends[len(x.ends)-1]
}

// Len returns the number of chunks.
func (x *DynamicIndex) Len() int { return len(x.ends) }

// Header returns the header fields.
func (x *DynamicIndex) Header() IndexHeader { return x.hdr }

// Chunk returns chunk i and its byte range.
func (x *DynamicIndex) Chunk(i int) (Digest, uint64, uint64) {
	var start uint64
	if i > 0 {
		start = x.ends[i-1]
	}
	return x.digests[i], start, x.ends[i]
}

// Locate finds, by binary search, the first chunk whose end is past off.
func (x *DynamicIndex) Locate(off uint64) (int, uint64, error) {
	if off >= x.Size() {
		return 0, 0, fmt.Errorf("offset %d of %d-byte stream: %w", off, x.Size(), ErrOutOfRange)
	}
	i := sort.Search(len(x.ends), func(i int) bool { return x.ends[i] > off })
	_, start, _ := x.Chunk(i)
	return i, off - start, nil
}

// Checksum returns SHA256 over all 40-byte entries (§3.3).
func (x *DynamicIndex) Checksum() [32]byte {
	h := sha256.New()
	var e [dynamicEntrySize]byte
	for i := range x.ends {
		binary.LittleEndian.PutUint64(e[:], x.ends[i])
		copy(e[8:], x.digests[i][:])
		h.Write(e[:])
	}
	return [32]byte(h.Sum(nil))
}

// MarshalBinary returns the .didx file bytes.
func (x *DynamicIndex) MarshalBinary() []byte {
	b := make([]byte, indexHeaderSize+dynamicEntrySize*len(x.ends))
	putIndexHeader(b, magicDynamicIndex, x.hdr)
	for i := range x.ends {
		e := b[indexHeaderSize+dynamicEntrySize*i:]
		binary.LittleEndian.PutUint64(e, x.ends[i])
		copy(e[8:], x.digests[i][:])
	}
	return b
}

// DynamicIndexWriter appends entries to a .didx file as chunks arrive.
// The file appears under its final name only when Close succeeds.
type DynamicIndexWriter struct {
	path string
	tmp  *os.File
	buf  *bufio.Writer
	sum  hash.Hash
	hdr  IndexHeader
	last uint64
	n    int
}

// CreateDynamicIndex starts writing the dynamic index path, under a
// temporary name (extension tmp_didx) until Close.
func CreateDynamicIndex(path string) (*DynamicIndexWriter, error) {
	f, err := os.OpenFile(tmpIndexName(path), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("dynamic index: %w", err)
	}
	w := &DynamicIndexWriter{path: path, tmp: f, sum: sha256.New(),
		hdr: IndexHeader{UUID: newUUID(), CTime: time.Now()}}
	w.buf = bufio.NewWriterSize(f, 64<<10)
	if _, err := w.buf.Write(make([]byte, indexHeaderSize)); err != nil {
		w.Abort()
		return nil, fmt.Errorf("dynamic index %s: %w", path, err)
	}
	return w, nil
}

// Append records the next chunk, which ends at stream offset end.
func (w *DynamicIndexWriter) Append(end uint64, d Digest) error {
	if w.tmp == nil {
		return fmt.Errorf("dynamic index %s: closed", w.path)
	}
	if end <= w.last {
		return fmt.Errorf("dynamic index %s: chunk end %d not after %d", w.path, end, w.last)
	}
	var e [dynamicEntrySize]byte
	binary.LittleEndian.PutUint64(e[:], end)
	copy(e[8:], d[:])
	w.sum.Write(e[:])
	if _, err := w.buf.Write(e[:]); err != nil {
		return fmt.Errorf("dynamic index %s: %w", w.path, err)
	}
	w.last = end
	w.n++
	return nil
}

// Size returns the stream size recorded so far.
func (w *DynamicIndexWriter) Size() uint64 { return w.last }

// Close writes the checksum into the header, fsyncs and renames the file
// to its final name, and returns the checksum.
func (w *DynamicIndexWriter) Close() ([32]byte, error) {
	if w.tmp == nil {
		return [32]byte{}, fmt.Errorf("dynamic index %s: already closed", w.path)
	}
	w.hdr.Csum = [32]byte(w.sum.Sum(nil))
	hdr := make([]byte, 64)
	putIndexHeader(hdr, magicDynamicIndex, w.hdr)
	err := w.buf.Flush()
	if err == nil {
		_, err = w.tmp.WriteAt(hdr, 0)
	}
	f := w.tmp
	w.tmp = nil
	if err := finishFile(f, w.path, err); err != nil {
		return [32]byte{}, fmt.Errorf("dynamic index %s: %w", w.path, err)
	}
	return w.hdr.Csum, nil
}

// Abort removes the temporary file of an unfinished index.
func (w *DynamicIndexWriter) Abort() {
	if w.tmp != nil {
		w.tmp.Close()
		os.Remove(w.tmp.Name())
		w.tmp = nil
	}
}
