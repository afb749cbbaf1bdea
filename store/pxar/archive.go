package pxar

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// accessBlock is the read-ahead of one random-access operation.
const accessBlock = 4 << 10

// goodbyeBatch is how many goodbye items a DirReader reads at once.
const goodbyeBatch = 512

// An Archive gives random access to an archive through its goodbye tables
// (spec §7). It is safe for concurrent use if its readers are. Entries it
// returns stay valid for the life of the Archive; directory and file
// entries passed back to its methods must come from the same Archive.
type Archive struct {
	meta    io.ReaderAt
	size    int64
	payload io.ReaderAt
	version int
	prelude []byte
	root    *Entry
}

// gbItem is one goodbye table item.
type gbItem struct {
	hash, offset, size uint64
}

// dirTable locates a directory's goodbye table.
type dirTable struct {
	gbPos int64 // GOODBYE header position
	n     int64 // child items, tail excluded
	first int64 // position where the children start (after the dir's attrs)
}

// Open opens the archive whose metadata stream is meta, of size metaSize.
// payload is the payload stream of a split archive; nil for plain
// archives, or to browse a split archive's metadata only.
func Open(meta io.ReaderAt, metaSize int64, payload io.ReaderAt) (*Archive, error) {
	if metaSize < minArchiveSize {
		return nil, fmt.Errorf("archive of %d bytes: %w", metaSize, ErrCorrupt)
	}
	a := &Archive{meta: meta, size: metaSize, payload: payload}
	w := a.window()
	v, prelude, pos, err := w.readVersion()
	if err != nil {
		return nil, err
	}
	a.version, a.prelude = v, prelude
	root := &Entry{Path: "/", FilenameOffset: -1, End: metaSize, goodbyeEnd: metaSize}
	next, err := w.readEntry(pos, root, a.Split())
	if err != nil {
		return nil, err
	}
	if root.Kind != KindDir {
		return nil, fmt.Errorf("root entry at offset %d is a %v: %w", pos, root.Kind, ErrCorrupt)
	}
	root.Offset = 0
	root.attrEnd = next
	if _, err := a.table(w, root); err != nil {
		return nil, err
	}
	a.root = root
	return a, nil
}

func (a *Archive) window() *window { return newWindow(a.meta, a.size, accessBlock) }

// Version returns the format version: 1 plain, 2 split.
func (a *Archive) Version() int { return a.version }

// Split reports whether a is a split archive (metadata + payload streams).
func (a *Archive) Split() bool { return a.version == 2 }

// Prelude returns the PRELUDE content of a v2 archive, nil if absent.
func (a *Archive) Prelude() []byte { return a.prelude }

// Root returns the root directory entry.
func (a *Archive) Root() *Entry { return a.root }

// table reads and checks the goodbye tail of directory dir (spec §7 step 1).
func (a *Archive) table(w *window, dir *Entry) (dirTable, error) {
	if dir.Kind != KindDir {
		return dirTable{}, fmt.Errorf("%q: %w", dir.Path, ErrNotDir)
	}
	end := dir.goodbyeEnd
	if end < goodbyeItemSize+headerSize || end > a.size {
		return dirTable{}, fmt.Errorf("directory %q: end %d out of range: %w", dir.Path, end, ErrCorrupt)
	}
	var b [goodbyeItemSize]byte
	if err := w.readFull(b[:], end-goodbyeItemSize); err != nil {
		return dirTable{}, fmt.Errorf("directory %q: goodbye tail: %w", dir.Path, err)
	}
	tail := decodeItem(b[:])
	bad := func(why string) (dirTable, error) {
		return dirTable{}, fmt.Errorf("directory %q: goodbye tail at offset %d: %s: %w", dir.Path, end-goodbyeItemSize, why, ErrCorrupt)
	}
	if tail.hash != goodbyeTailMarker {
		return bad("no tail marker")
	}
	if tail.size < headerSize+goodbyeItemSize || tail.size > uint64(end) || (tail.size-headerSize)%goodbyeItemSize != 0 {
		return bad(fmt.Sprintf("bad table size %d", tail.size))
	}
	gbPos := end - int64(tail.size)
	if tail.offset > uint64(gbPos) || int64(tail.offset) != gbPos-dir.Offset {
		return bad(fmt.Sprintf("start offset %d does not lead to the directory at %d", tail.offset, dir.Offset))
	}
	n := int64(tail.size-headerSize)/goodbyeItemSize - 1
	if n > maxGoodbyeItems {
		return dirTable{}, fmt.Errorf("directory %q: %d children: %w", dir.Path, n, ErrTooLarge)
	}
	h, err := w.readHeader(gbPos)
	if err != nil {
		return dirTable{}, fmt.Errorf("directory %q: %w", dir.Path, err)
	}
	if h.htype != typeGoodbye || h.full != int64(tail.size) {
		return bad(fmt.Sprintf("no GOODBYE item of size %d at %d", tail.size, gbPos))
	}
	first := dir.attrEnd
	if first < 0 {
		// Not known (an entry made elsewhere): decode again. The entry is
		// not written to, so that an Archive stays safe for concurrent use.
		e := Entry{}
		pos := dir.Offset
		if dir.FilenameOffset < 0 {
			_, _, pos, err = w.readVersion()
			if err != nil {
				return dirTable{}, err
			}
		}
		first, err = w.readEntry(pos, &e, a.Split())
		if err != nil {
			return dirTable{}, err
		}
	}
	if first > gbPos {
		return bad(fmt.Sprintf("attributes end at %d after the table at %d", first, gbPos))
	}
	return dirTable{gbPos: gbPos, n: n, first: first}, nil
}

func decodeItem(b []byte) gbItem {
	le := binary.LittleEndian
	return gbItem{hash: le.Uint64(b), offset: le.Uint64(b[8:]), size: le.Uint64(b[16:])}
}

// item reads child item i of table t.
func (a *Archive) item(w *window, t dirTable, i int64) (gbItem, error) {
	var b [goodbyeItemSize]byte
	if err := w.readFull(b[:], t.gbPos+headerSize+i*goodbyeItemSize); err != nil {
		return gbItem{}, err
	}
	return decodeItem(b[:]), nil
}

// child decodes the child of dir described by goodbye item it. If name is
// not nil, the child's name must equal *name; a mismatch returns nil, nil.
// Errors are *ChildError, naming the child if its FILENAME could be read.
func (a *Archive) child(w *window, dir *Entry, t dirTable, it gbItem, name *string) (*Entry, error) {
	if it.offset == 0 || it.offset > uint64(t.gbPos-t.first) {
		return nil, &ChildError{Dir: dir.Path, FilenameOffset: -1, Items: 1,
			Err: fmt.Errorf("goodbye item offset %d outside the directory: %w", it.offset, ErrCorrupt)}
	}
	fpos := t.gbPos - int64(it.offset)
	got, fh, err := w.readFilename(fpos)
	if err != nil {
		return nil, &ChildError{Dir: dir.Path, FilenameOffset: -1, Items: 1, Err: err}
	}
	if name != nil && got != *name {
		return nil, nil
	}
	path := dir.Path + "/" + got
	if dir.Path == "/" {
		path = "/" + got
	}
	if len(path) > maxPathLen {
		return nil, fmt.Errorf("path under %q: %w", dir.Path, ErrTooLarge)
	}
	e, err := a.childEntry(w, t, it, fpos, fh, path)
	if err != nil {
		return nil, &ChildError{Dir: dir.Path, Name: got, FilenameOffset: fpos, Err: err}
	}
	return e, nil
}

// childEntry decodes the entry whose FILENAME fh at fpos was read.
func (a *Archive) childEntry(w *window, t dirTable, it gbItem, fpos int64, fh header, path string) (*Entry, error) {
	e := &Entry{Path: path, FilenameOffset: fpos, attrEnd: -1}
	if it.size > 1<<62 {
		return nil, fmt.Errorf("goodbye size %d: %w", it.size, ErrCorrupt)
	}
	e.End = fpos + int64(it.size)
	h, err := w.readHeader(fh.end())
	if err != nil {
		return nil, err
	}
	if h.htype == typeHardlink {
		if err := w.readHardlink(h, fpos, e); err != nil {
			return nil, err
		}
		return e, nil
	}
	next, err := w.readEntry(h.pos, e, a.Split())
	if err != nil {
		return nil, err
	}
	if e.Kind == KindDir {
		// A directory lies strictly inside its parent, before the parent's
		// goodbye table: this bounds every descent.
		if e.End > t.gbPos || next > e.End {
			return nil, fmt.Errorf("directory range [%d,%d) outside its parent: %w", fpos, e.End, ErrCorrupt)
		}
		e.attrEnd = next
		e.goodbyeEnd = e.End
	}
	return e, nil
}

// A TableError reports a directory whose goodbye table cannot be read
// (its bytes missing or corrupt): no child of it can be found or listed.
// It wraps the cause.
type TableError struct {
	Dir string // path of the directory
	Err error
}

func (e *TableError) Error() string { return e.Err.Error() }
func (e *TableError) Unwrap() error { return e.Err }

// A ChildError reports a child of a directory that cannot be decoded:
// its bytes are missing or corrupt. DirReader.Next returns it for that
// child alone and goes on with the next child when called again, since
// the goodbye table locates every child independently (spec §7).
type ChildError struct {
	Dir string // path of the directory
	// Name is the child's name and FilenameOffset the position of its
	// FILENAME, when they could be read; "" and -1 otherwise (then
	// Items, if not zero, counts the goodbye items that were unreadable).
	Name           string
	FilenameOffset int64
	Items          int64
	Err            error
}

// Path returns the child's path, or the directory's when the name is
// not known.
func (e *ChildError) Path() string {
	if e.Name == "" {
		return e.Dir
	}
	if e.Dir == "/" {
		return "/" + e.Name
	}
	return e.Dir + "/" + e.Name
}

func (e *ChildError) Error() string {
	switch {
	case e.Name != "":
		return fmt.Sprintf("pxar: %q unreadable: %v", e.Path(), e.Err)
	case e.Items > 1:
		return fmt.Sprintf("pxar: %d entries of directory %q unreadable: %v", e.Items, e.Dir, e.Err)
	}
	return fmt.Sprintf("pxar: an entry of directory %q unreadable: %v", e.Dir, e.Err)
}

func (e *ChildError) Unwrap() error { return e.Err }

// LookupChild returns the child of dir called name, found through the
// goodbye table: a binary search by hash, each candidate confirmed by its
// FILENAME (spec §6.4). It returns an error wrapping fs.ErrNotExist if
// there is none.
func (a *Archive) LookupChild(dir *Entry, name string) (*Entry, error) {
	w := a.window()
	t, err := a.table(w, dir)
	if err != nil {
		return nil, &TableError{Dir: dir.Path, Err: err}
	}
	e, err := a.search(w, dir, t, hashName(name), name, 0, 0)
	if err != nil {
		return nil, err
	}
	if e == nil {
		return nil, fmt.Errorf("%q in %q: %w", name, dir.Path, fs.ErrNotExist)
	}
	return e, nil
}

// search looks for name below tree index i. Hash collisions send it into
// both subtrees of a non-matching candidate.
func (a *Archive) search(w *window, dir *Entry, t dirTable, h uint64, name string, i int64, depth int) (*Entry, error) {
	for i < t.n {
		if depth > 64 {
			return nil, fmt.Errorf("directory %q: goodbye tree too deep: %w", dir.Path, ErrCorrupt)
		}
		it, err := a.item(w, t, i)
		if err != nil {
			if canceled(err) {
				return nil, err
			}
			// A damaged item: its hash is unknown, so the name may be
			// in either subtree (each searched as usual), or be this
			// item's own, which cannot be read.
			err = fmt.Errorf("directory %q: %w", dir.Path, &itemError{i: i, err: err})
			for _, sub := range []int64{2*i + 1, 2*i + 2} {
				e, serr := a.search(w, dir, t, h, name, sub, depth+1)
				var ie *itemError
				if e != nil || (serr != nil && !errors.As(serr, &ie)) {
					return e, serr
				}
			}
			return nil, err
		}
		switch {
		case h < it.hash:
			i = 2*i + 1
		case h > it.hash:
			i = 2*i + 2
		default:
			e, err := a.child(w, dir, t, it, &name)
			if e != nil || err != nil {
				return e, err
			}
			e, err = a.search(w, dir, t, h, name, 2*i+1, depth+1)
			if e != nil || err != nil {
				return e, err
			}
			i = 2*i + 2
		}
		depth++
	}
	return nil, nil
}

// itemError reports a goodbye item that could not be read.
type itemError struct {
	i   int64
	err error
}

func (e *itemError) Error() string { return fmt.Sprintf("goodbye item %d: %v", e.i, e.err) }
func (e *itemError) Unwrap() error { return e.err }

// Lookup returns the entry at path, a slash-separated path from the root
// ("", ".", "/" and "/etc/hosts" and "etc/hosts" are accepted). Symlinks
// and hardlinks on the way are not followed; a hardlink is returned as
// such (see Resolve). A missing entry yields an error wrapping
// fs.ErrNotExist; a non-directory in the middle of the path, ErrNotDir.
func (a *Archive) Lookup(path string) (*Entry, error) {
	e := a.root
	for _, c := range strings.Split(path, "/") {
		if c == "" || c == "." {
			continue
		}
		if c == ".." {
			return nil, fmt.Errorf("lookup %q: %w", path, fs.ErrNotExist)
		}
		if e.Kind != KindDir {
			return nil, fmt.Errorf("lookup %q: %q: %w", path, e.Path, ErrNotDir)
		}
		next, err := a.LookupChild(e, c)
		if err != nil {
			return nil, fmt.Errorf("lookup %q: %w", path, err)
		}
		e = next
	}
	return e, nil
}

// Resolve returns the file a hardlink entry points to (spec §7 step 7),
// or e itself for every other kind. The target must be a regular file,
// so there are no chains to follow.
func (a *Archive) Resolve(e *Entry) (*Entry, error) {
	if e.Kind != KindHardlink {
		return e, nil
	}
	w := a.window()
	fpos := e.HardlinkOffset
	if fpos < 0 || fpos >= e.FilenameOffset {
		return nil, fmt.Errorf("hardlink %q: target offset %d not before the link: %w", e.Path, fpos, ErrCorrupt)
	}
	_, fh, err := w.readFilename(fpos)
	if err != nil {
		return nil, fmt.Errorf("hardlink %q: target: %w", e.Path, err)
	}
	t := &Entry{Path: "/" + e.LinkTarget, FilenameOffset: fpos, attrEnd: -1}
	end, err := w.readEntry(fh.end(), t, a.Split())
	if err != nil {
		return nil, fmt.Errorf("hardlink %q: target: %w", e.Path, err)
	}
	if t.Kind != KindFile {
		return nil, fmt.Errorf("hardlink %q: target at offset %d is a %v: %w", e.Path, fpos, t.Kind, ErrCorrupt)
	}
	t.End = end
	return t, nil
}

// Content returns the contents of regular file e (or of a hardlink's
// target) as a section of the metadata stream (plain archives) or of the
// payload stream (split archives).
func (a *Archive) Content(e *Entry) (*io.SectionReader, error) {
	e, err := a.Resolve(e)
	if err != nil {
		return nil, err
	}
	if e.Kind != KindFile {
		return nil, fmt.Errorf("%q: %w", e.Path, ErrNotFile)
	}
	if !a.Split() {
		return io.NewSectionReader(a.meta, e.ContentOffset, int64(e.Size)), nil
	}
	if a.payload == nil {
		return nil, fmt.Errorf("%q: %w", e.Path, ErrNoPayload)
	}
	if err := checkPayloadHeader(a.payload, e); err != nil {
		return nil, err
	}
	return io.NewSectionReader(a.payload, e.PayloadOffset+headerSize, int64(e.Size)), nil
}

// ContentRange returns where the contents of regular file e lie: the
// stream (the metadata stream of a plain archive, the payload stream of
// a split one), the offset in it and the size. Unlike Content it reads
// nothing: a split archive's payload header is not checked, and a
// hardlink must be resolved first.
func (a *Archive) ContentRange(e *Entry) (io.ReaderAt, int64, int64, error) {
	if e.Kind != KindFile {
		return nil, 0, 0, fmt.Errorf("%q: %w", e.Path, ErrNotFile)
	}
	if !a.Split() {
		return a.meta, e.ContentOffset, int64(e.Size), nil
	}
	if a.payload == nil {
		return nil, 0, 0, fmt.Errorf("%q: %w", e.Path, ErrNoPayload)
	}
	return a.payload, e.PayloadOffset + headerSize, int64(e.Size), nil
}

// A DirReader lists a directory in goodbye-table order (hash order, not
// name order), reading the table in batches, so that huge directories
// stream in bounded memory.
type DirReader struct {
	a     *Archive
	dir   *Entry
	w     *window
	t     dirTable
	next  int64
	batch []gbSlot
	err   error
}

// gbSlot is a goodbye item read for a DirReader, or a run of n items that
// could not be read (err set).
type gbSlot struct {
	it  gbItem
	n   int64
	err error
}

// OpenDir returns a DirReader over directory dir.
func (a *Archive) OpenDir(dir *Entry) (*DirReader, error) {
	w := a.window()
	t, err := a.table(w, dir)
	if err != nil {
		return nil, &TableError{Dir: dir.Path, Err: err}
	}
	return &DirReader{a: a, dir: dir, w: w, t: t}, nil
}

// Len returns the number of children of the directory.
func (r *DirReader) Len() int { return int(r.t.n) }

// Next returns the next child, or io.EOF after the last one. Hardlinks
// are returned as such.
//
// A child that cannot be read (missing or corrupt bytes) yields a
// *ChildError; calling Next again goes on with the following children.
// Other errors (a canceled read) are sticky.
func (r *DirReader) Next() (*Entry, error) {
	if r.err != nil {
		return nil, r.err
	}
	if len(r.batch) == 0 {
		if r.next >= r.t.n {
			r.err = io.EOF
			return nil, io.EOF
		}
		n := min(r.t.n-r.next, goodbyeBatch)
		if err := r.readItems(r.next, n); err != nil {
			r.err = fmt.Errorf("directory %q: %w", r.dir.Path, err)
			return nil, r.err
		}
		r.next += n
	}
	s := r.batch[0]
	r.batch = r.batch[1:]
	if s.err != nil {
		return nil, &ChildError{Dir: r.dir.Path, FilenameOffset: -1, Items: s.n, Err: s.err}
	}
	e, err := r.a.child(r.w, r.dir, r.t, s.it, nil)
	if err != nil {
		if canceled(err) {
			r.err = err
			return nil, err
		}
		var ce *ChildError
		if !errors.As(err, &ce) {
			ce = &ChildError{Dir: r.dir.Path, FilenameOffset: -1, Items: 1, Err: err}
		}
		return nil, ce
	}
	return e, nil
}

// readItems appends goodbye items lo..lo+n-1 to the batch. A range that
// cannot be read is halved until the unreadable items are isolated, so
// that a damaged stretch of a large table costs only the children it
// holds; adjacent unreadable items form one slot.
func (r *DirReader) readItems(lo, n int64) error {
	b := make([]byte, n*goodbyeItemSize)
	err := r.w.readFull(b, r.t.gbPos+headerSize+lo*goodbyeItemSize)
	if err == nil {
		for i := int64(0); i < n; i++ {
			r.batch = append(r.batch, gbSlot{it: decodeItem(b[i*goodbyeItemSize:])})
		}
		return nil
	}
	if canceled(err) {
		return err
	}
	if n == 1 {
		err = fmt.Errorf("goodbye item %d: %w", lo, err)
		if k := len(r.batch) - 1; k >= 0 && r.batch[k].err != nil {
			r.batch[k].n++
			return nil
		}
		r.batch = append(r.batch, gbSlot{n: 1, err: err})
		return nil
	}
	h := n / 2
	if err := r.readItems(lo, h); err != nil {
		return err
	}
	return r.readItems(lo+h, n-h)
}

// canceled reports whether err comes from a canceled or timed-out read
// rather than from the archive's bytes.
func canceled(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
