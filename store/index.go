package store

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Index is an index file opened for reading: the list of chunks making up
// one archive. Both formats start with a 4096-byte header (§3).
type Index interface {
	// Size is the logical archive size in bytes.
	Size() uint64
	// Len is the number of chunks.
	Len() int
	// Chunk returns chunk i: its digest and byte range [start, end) in the archive.
	Chunk(i int) (d Digest, start, end uint64)
	// Locate returns the chunk holding archive offset off and the offset
	// within it, or an ErrOutOfRange error.
	Locate(off uint64) (i int, inChunk uint64, err error)
	// Checksum computes the index checksum the manifest records (§3.3).
	Checksum() [32]byte
	// Header returns the header fields common to both formats.
	Header() IndexHeader
}

// IndexHeader holds the header fields both index formats share.
type IndexHeader struct {
	UUID  [16]byte
	CTime time.Time
	// Csum is the index checksum stored in the header.
	Csum [32]byte
}

// IndexKind tells the format of an index file from its name.
type IndexKind int

// Archive kinds, by file name suffix (§1.4).
const (
	KindUnknown IndexKind = iota
	KindFixed             // .fidx
	KindDynamic           // .didx
	KindBlob              // .blob
)

// KindOf returns the kind of archive file name.
func KindOf(name string) IndexKind {
	switch {
	case strings.HasSuffix(name, ".fidx"):
		return KindFixed
	case strings.HasSuffix(name, ".didx"):
		return KindDynamic
	case strings.HasSuffix(name, ".blob"):
		return KindBlob
	}
	return KindUnknown
}

// OpenIndex reads and parses the fixed or dynamic index at path, chosen by
// its extension. Errors name the file.
func OpenIndex(path string) (Index, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var idx Index
	switch KindOf(path) {
	case KindFixed:
		idx, err = ParseFixedIndex(b)
	case KindDynamic:
		idx, err = ParseDynamicIndex(b)
	default:
		return nil, fmt.Errorf("%s: not an index file name: %w", path, ErrInvalidName)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return idx, nil
}

// newUUID returns a random (version 4) UUID as PBS stores it: 16 raw bytes.
func newUUID() [16]byte {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// tmpIndexName returns the name an index is written under until it is
// closed: the extension is replaced by tmp_fidx or tmp_didx (§3.1).
func tmpIndexName(path string) string {
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + ".tmp_" + strings.TrimPrefix(ext, ".")
}

// syncDir fsyncs a directory so a rename in it is durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
