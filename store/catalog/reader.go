package catalog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// Entry is one catalog entry.
type Entry struct {
	Name  string // raw bytes
	Type  byte   // TypeDir, TypeFile, ...
	Size  uint64 // files only
	Mtime int64  // files only: seconds since the epoch
	// Block is the block start of a directory's table.
	Block int64
}

// IsDir reports whether e is a directory.
func (e Entry) IsDir() bool { return e.Type == TypeDir }

// A Reader reads a catalog from an io.ReaderAt. It is safe for concurrent
// use if its io.ReaderAt is.
type Reader struct {
	r    io.ReaderAt
	size int64
	root int64
}

// NewReader checks the magic and the root offset of the catalog r of size
// size.
func NewReader(r io.ReaderAt, size int64) (*Reader, error) {
	if size < int64(minCatalogSize) {
		return nil, fmt.Errorf("catalog of %d bytes: %w", size, ErrCorrupt)
	}
	var m [8]byte
	if err := readFull(r, m[:], 0); err != nil {
		return nil, err
	}
	if string(m[:]) != Magic {
		return nil, fmt.Errorf("bad magic %x: %w", m, ErrCorrupt)
	}
	var b [8]byte
	if err := readFull(r, b[:], size-8); err != nil {
		return nil, err
	}
	root := binary.LittleEndian.Uint64(b[:])
	if root < uint64(len(Magic)) || root >= uint64(size-8) {
		return nil, fmt.Errorf("root block offset %d outside the catalog: %w", root, ErrCorrupt)
	}
	return &Reader{r: r, size: size, root: int64(root)}, nil
}

func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		return fmt.Errorf("short read at offset %d: %w", off, ErrCorrupt)
	}
	return fmt.Errorf("catalog: read at offset %d: %w", off, err)
}

// RootBlock returns the offset of the root block.
func (r *Reader) RootBlock() int64 { return r.root }

// Root returns the snapshot root as a directory entry named "/".
func (r *Reader) Root() Entry { return Entry{Name: "/", Type: TypeDir, Block: r.root} }

// ReadDir returns the entries of directory dir in stored order.
func (r *Reader) ReadDir(dir Entry) ([]Entry, error) {
	if dir.Type != TypeDir {
		return nil, fmt.Errorf("%q: %w", dir.Name, ErrNotDir)
	}
	start := dir.Block
	end := r.size - 8
	if start < int64(len(Magic)) || start >= end {
		return nil, fmt.Errorf("block offset %d outside the catalog: %w", start, ErrCorrupt)
	}
	var lb [maxVarintLen]byte
	n := min(int64(len(lb)), end-start)
	if err := readFull(r.r, lb[:n], start); err != nil {
		return nil, err
	}
	tlen, ll, err := readU64(lb[:n])
	if err != nil {
		return nil, fmt.Errorf("block at %d: length: %w", start, err)
	}
	if tlen > maxBlockLen || tlen > uint64(end-start-int64(ll)) {
		return nil, fmt.Errorf("block at %d: table length %d past the end: %w", start, tlen, ErrCorrupt)
	}
	t := make([]byte, tlen)
	if err := readFull(r.r, t, start+int64(ll)); err != nil {
		return nil, err
	}
	list, err := parseBlock(t, start)
	if err != nil {
		return nil, fmt.Errorf("block at %d: %w", start, err)
	}
	return list, nil
}

// parseBlock decodes a directory table that starts at block offset start.
func parseBlock(t []byte, start int64) ([]Entry, error) {
	count, n, err := readU64(t)
	if err != nil {
		return nil, err
	}
	t = t[n:]
	if count > uint64(len(t))/2 {
		return nil, fmt.Errorf("%d entries in %d bytes: %w", count, len(t), ErrCorrupt)
	}
	list := make([]Entry, 0, count)
	for i := uint64(0); i < count; i++ {
		if len(t) < 1 {
			return nil, fmt.Errorf("entry %d: truncated: %w", i, ErrCorrupt)
		}
		e := Entry{Type: t[0]}
		t = t[1:]
		nl, n, err := readU64(t)
		if err != nil {
			return nil, fmt.Errorf("entry %d: name length: %w", i, err)
		}
		t = t[n:]
		if nl > maxNameLen || nl > uint64(len(t)) {
			return nil, fmt.Errorf("entry %d: name length %d: %w", i, nl, ErrCorrupt)
		}
		e.Name = string(t[:nl])
		t = t[nl:]
		switch e.Type {
		case TypeDir:
			delta, n, err := readU64(t)
			if err != nil {
				return nil, fmt.Errorf("entry %d: %w", i, err)
			}
			t = t[n:]
			if delta == 0 || delta > uint64(start) {
				return nil, fmt.Errorf("entry %d %q: block delta %d does not point backwards from %d: %w", i, e.Name, delta, start, ErrCorrupt)
			}
			e.Block = start - int64(delta)
		case TypeFile:
			size, n, err := readU64(t)
			if err != nil {
				return nil, fmt.Errorf("entry %d: size: %w", i, err)
			}
			t = t[n:]
			mtime, n, err := readI64(t)
			if err != nil {
				return nil, fmt.Errorf("entry %d: mtime: %w", i, err)
			}
			t = t[n:]
			e.Size, e.Mtime = size, mtime
		case TypeSymlink, TypeHardlink, TypeBlockDev, TypeCharDev, TypeFifo, TypeSocket:
		default:
			return nil, fmt.Errorf("entry %d: unknown type %#x: %w", i, e.Type, ErrCorrupt)
		}
		list = append(list, e)
	}
	if len(t) != 0 {
		return nil, fmt.Errorf("%d bytes left after the entries: %w", len(t), ErrCorrupt)
	}
	return list, nil
}

// Lookup returns the entry at a slash-separated path from the snapshot
// root, e.g. "/root.pxar.didx/etc/hosts". A missing entry yields an error
// wrapping fs.ErrNotExist.
func (r *Reader) Lookup(path string) (Entry, error) {
	e := r.Root()
	for _, c := range strings.Split(path, "/") {
		if c == "" || c == "." {
			continue
		}
		list, err := r.ReadDir(e)
		if err != nil {
			return Entry{}, fmt.Errorf("lookup %q: %w", path, err)
		}
		found := false
		for _, x := range list {
			if x.Name == c {
				e, found = x, true
				break
			}
		}
		if !found {
			return Entry{}, fmt.Errorf("lookup %q: %w", path, fs.ErrNotExist)
		}
	}
	return e, nil
}

// Walk calls fn for every entry below dir in depth-first stored order, with
// its path from dir. Directory blocks strictly precede their parents and a
// block may be reached only once, so the walk ends even on corrupt input.
func (r *Reader) Walk(dir Entry, fn func(path string, e Entry) error) error {
	return r.walk(dir, "", fn, 0, map[int64]bool{})
}

func (r *Reader) walk(dir Entry, prefix string, fn func(string, Entry) error, depth int, seen map[int64]bool) error {
	if depth > 4096 {
		return fmt.Errorf("catalog nested deeper than 4096: %w", ErrCorrupt)
	}
	if seen[dir.Block] {
		return fmt.Errorf("block at %d referenced twice: %w", dir.Block, ErrCorrupt)
	}
	seen[dir.Block] = true
	list, err := r.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range list {
		var b bytes.Buffer
		b.WriteString(prefix)
		b.WriteByte('/')
		b.WriteString(e.Name)
		p := b.String()
		if err := fn(p, e); err != nil {
			return err
		}
		if e.Type == TypeDir {
			if err := r.walk(e, p, fn, depth+1, seen); err != nil {
				return err
			}
		}
	}
	return nil
}
