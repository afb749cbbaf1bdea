package pxar

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
)

// LinkOffset identifies a file written by a Writer, for later hardlinks to
// it: the position of its FILENAME header.
type LinkOffset int64

// countWriter is a buffered writer that counts its position.
type countWriter struct {
	w     *bufio.Writer
	under io.Writer
	pos   int64
	lr    io.LimitedReader
}

// copyN copies n bytes of r, handing r to the writer below the buffer
// when that writer reads for itself (io.ReaderFrom: the store's stream
// writer reads files straight into its chunk buffers), else through buf.
func (c *countWriter) copyN(r io.Reader, n int64, buf []byte) (int64, error) {
	c.lr = io.LimitedReader{R: r, N: n}
	defer func() { c.lr.R = nil }()
	var m int64
	var err error
	if rf, ok := c.under.(io.ReaderFrom); ok {
		if err := c.w.Flush(); err != nil {
			return 0, err
		}
		m, err = rf.ReadFrom(&c.lr)
		c.pos += m
	} else {
		m, err = io.CopyBuffer(c, &c.lr, buf)
	}
	if err == nil && m < n {
		err = io.ErrUnexpectedEOF
	}
	return m, err
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.pos += int64(n)
	return n, err
}

// openDirW is a directory being written.
type openDirW struct {
	start int64 // ENTRY position (0 for the root)
	fpos  int64 // FILENAME position in the parent, -1 for the root
	name  string
	items []gbItem // offset holds the child's FILENAME position until the table is written
}

// A Writer writes an archive item by item, like archive/tar.Writer: a
// root directory (BeginDir with an empty name), its children in the order
// given, EndDir for each directory, then Close. With a payload writer it
// writes a split (v2) archive: the metadata to meta, file contents to
// payload. The caller sorts children (CreateFromDir does it the way the
// PBS client does).
type Writer struct {
	meta    *countWriter
	payload *countWriter
	sink    PayloadSink // payload as a PayloadSink, if it is one
	prelude []byte
	started bool
	done    bool
	stack   []*openDirW
	buf     []byte
	copyBuf []byte // file contents on their way to a writer that does not read for itself
	err     error  // sticky
}

// NewWriter returns a Writer writing the metadata stream to meta and, if
// payload is not nil, the payload stream of a split archive to payload.
// A payload writer that is a PayloadSink is told where each file's
// payload starts and can take earlier payload chunks by reference
// (InjectPayload).
func NewWriter(meta io.Writer, payload io.Writer) *Writer {
	w := &Writer{meta: &countWriter{w: bufio.NewWriterSize(meta, 64<<10), under: meta}}
	if payload != nil {
		w.payload = &countWriter{w: bufio.NewWriterSize(payload, 64<<10), under: payload}
		w.sink, _ = payload.(PayloadSink)
	}
	return w
}

// A PayloadSink is a payload stream writer that cuts the stream into
// chunks (the store's stream writer).
type PayloadSink interface {
	io.Writer
	// SuggestBoundary says that a file's payload starts at the current
	// position: a chunker may cut there, so that unchanged files keep
	// whole chunks of their own for a later backup to reuse.
	SuggestBoundary()
}

// PayloadPosition returns the current position in the payload stream of a
// split archive.
func (w *Writer) PayloadPosition() uint64 {
	if w.payload == nil {
		return 0
	}
	return uint64(w.payload.pos)
}

// InjectPayload adds n bytes to the payload stream that the caller
// supplies itself through inject (chunks of an earlier payload stream,
// taken by reference): the buffered payload is written out first, then
// inject runs, then the position moves on by n. If inject fails it must
// have written nothing; the Writer stays usable. Payload references into
// the injected bytes are written with AddPayloadRef.
func (w *Writer) InjectPayload(n uint64, inject func() error) error {
	if err := w.check(); err != nil {
		return err
	}
	if w.payload == nil || !w.started {
		return w.fail(fmt.Errorf("payload injection needs a started split archive: %w", ErrWriter))
	}
	if err := w.payload.w.Flush(); err != nil {
		return w.fail(fmt.Errorf("pxar: flush payload: %w", err))
	}
	if err := inject(); err != nil {
		// inject changes nothing when it fails (ErrChunkUnavailable):
		// the archive can go on with the files read instead.
		return err
	}
	w.payload.pos += int64(n)
	return nil
}

// Split reports whether w writes a split archive.
func (w *Writer) Split() bool { return w.payload != nil }

// SetPrelude sets the PRELUDE of a split archive. It must be called before
// the root directory is begun.
func (w *Writer) SetPrelude(p []byte) error {
	if w.payload == nil || w.started {
		return w.fail(fmt.Errorf("prelude needs a split archive before the root: %w", ErrWriter))
	}
	w.prelude = slices.Clone(p)
	return nil
}

func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return err
}

func (w *Writer) check() error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return w.fail(fmt.Errorf("write after the root directory ended: %w", ErrWriter))
	}
	return nil
}

// item writes one item: header and content.
func (w *Writer) item(cw *countWriter, htype uint64, content ...[]byte) error {
	n := uint64(headerSize)
	for _, c := range content {
		n += uint64(len(c))
	}
	var h [headerSize]byte
	binary.LittleEndian.PutUint64(h[:], htype)
	binary.LittleEndian.PutUint64(h[8:], n)
	if _, err := cw.Write(h[:]); err != nil {
		return w.fail(fmt.Errorf("pxar: write: %w", err))
	}
	for _, c := range content {
		if _, err := cw.Write(c); err != nil {
			return w.fail(fmt.Errorf("pxar: write: %w", err))
		}
	}
	return nil
}

func u64s(vs ...uint64) []byte {
	b := make([]byte, 8*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint64(b[8*i:], v)
	}
	return b
}

// start writes the FORMAT_VERSION and PRELUDE of a split archive.
func (w *Writer) start() error {
	w.started = true
	if w.payload == nil {
		return nil
	}
	if err := w.item(w.meta, typeFormatVersion, u64s(2)); err != nil {
		return err
	}
	if w.prelude != nil {
		if err := w.item(w.meta, typePrelude, w.prelude); err != nil {
			return err
		}
	}
	return w.item(w.payload, typePayloadStartMarker)
}

// beginChild writes a child's FILENAME and returns its position.
func (w *Writer) beginChild(name string) (int64, error) {
	if err := w.check(); err != nil {
		return 0, err
	}
	if len(w.stack) == 0 {
		return 0, w.fail(fmt.Errorf("child %q outside the root directory: %w", name, ErrWriter))
	}
	if err := checkName(name); err != nil {
		return 0, w.fail(fmt.Errorf("%w (%w)", err, ErrWriter))
	}
	fpos := w.meta.pos
	w.buf = append(append(w.buf[:0], name...), 0)
	return fpos, w.item(w.meta, typeFilename, w.buf)
}

// endChild records a child in the current directory's goodbye table.
func (w *Writer) endChild(name string, fpos int64, size uint64) {
	d := w.stack[len(w.stack)-1]
	d.items = append(d.items, gbItem{hash: hashName(name), offset: uint64(fpos), size: size})
}

// entry writes an ENTRY and the attribute items of md.
func (w *Writer) entry(md *Metadata, wantType uint64) error {
	if md.Mode&modeIFMT != wantType {
		return w.fail(fmt.Errorf("mode %o does not match the entry type %o: %w", md.Mode, wantType, ErrWriter))
	}
	if md.Mtime.Nanos >= 1e9 {
		return w.fail(fmt.Errorf("mtime nanoseconds %d: %w", md.Mtime.Nanos, ErrWriter))
	}
	b := make([]byte, statSize)
	le := binary.LittleEndian
	le.PutUint64(b, md.Mode)
	le.PutUint64(b[8:], md.Flags)
	le.PutUint32(b[16:], md.UID)
	le.PutUint32(b[20:], md.GID)
	le.PutUint64(b[24:], uint64(md.Mtime.Secs))
	le.PutUint32(b[32:], md.Mtime.Nanos)
	if err := w.item(w.meta, typeEntry, b); err != nil {
		return err
	}
	for _, x := range md.Xattrs {
		if x.Name == "" || indexNUL([]byte(x.Name)) >= 0 || len(x.Name)+1+len(x.Value) > maxXattrLen {
			return w.fail(fmt.Errorf("xattr %q: invalid name or too large: %w", x.Name, ErrWriter))
		}
		if err := w.item(w.meta, typeXattr, []byte(x.Name), []byte{0}, x.Value); err != nil {
			return err
		}
	}
	a := &md.ACL
	pairs := func(htype uint64, l []ACLEntry) error {
		for _, e := range l {
			if err := w.item(w.meta, htype, u64s(e.ID, e.Perms)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := pairs(typeACLUser, a.Users); err != nil {
		return err
	}
	if err := pairs(typeACLGroup, a.Groups); err != nil {
		return err
	}
	if a.GroupObj != nil {
		if err := w.item(w.meta, typeACLGroupObj, u64s(*a.GroupObj)); err != nil {
			return err
		}
	}
	if d := a.Default; d != nil {
		if err := w.item(w.meta, typeACLDefault, u64s(d.UserObj, d.GroupObj, d.Other, d.Mask)); err != nil {
			return err
		}
	}
	if err := pairs(typeACLDefaultUser, a.DefaultUsers); err != nil {
		return err
	}
	if err := pairs(typeACLDefaultGroup, a.DefaultGroups); err != nil {
		return err
	}
	if md.FCaps != nil {
		if len(md.FCaps) > maxXattrLen {
			return w.fail(fmt.Errorf("fcaps of %d bytes: %w", len(md.FCaps), ErrWriter))
		}
		if err := w.item(w.meta, typeFCaps, md.FCaps); err != nil {
			return err
		}
	}
	if md.QuotaProjID != nil {
		if err := w.item(w.meta, typeQuotaProjID, u64s(*md.QuotaProjID)); err != nil {
			return err
		}
	}
	return nil
}

// BeginDir begins a directory: the root if name is empty (first call
// only), else a child of the current directory. Its children follow,
// then EndDir.
func (w *Writer) BeginDir(name string, md *Metadata) error {
	if err := w.check(); err != nil {
		return err
	}
	d := &openDirW{fpos: -1, name: name}
	if name == "" {
		if w.started {
			return w.fail(fmt.Errorf("second root directory: %w", ErrWriter))
		}
		if err := w.start(); err != nil {
			return err
		}
		d.start = 0
	} else {
		if len(w.stack) >= maxDepth {
			return w.fail(fmt.Errorf("directory %q nested deeper than %d: %w", name, maxDepth, ErrWriter))
		}
		fpos, err := w.beginChild(name)
		if err != nil {
			return err
		}
		d.fpos, d.start = fpos, w.meta.pos
	}
	if err := w.entry(md, modeIFDIR); err != nil {
		return err
	}
	w.stack = append(w.stack, d)
	return nil
}

// EndDir writes the current directory's goodbye table and returns to its
// parent. Ending the root ends the archive (see Close).
func (w *Writer) EndDir() error {
	if err := w.check(); err != nil {
		return err
	}
	if len(w.stack) == 0 {
		return w.fail(fmt.Errorf("EndDir without an open directory: %w", ErrWriter))
	}
	d := w.stack[len(w.stack)-1]
	w.stack = w.stack[:len(w.stack)-1]
	gbPos := w.meta.pos
	n := len(d.items)
	full := uint64(headerSize + goodbyeItemSize*(n+1))
	for i := range d.items {
		d.items[i].offset = uint64(gbPos) - d.items[i].offset
	}
	slices.SortFunc(d.items, func(x, y gbItem) int {
		switch {
		case x.hash < y.hash:
			return -1
		case x.hash > y.hash:
			return 1
		}
		return 0
	})
	b := make([]byte, 0, full-headerSize)
	for _, i := range bstOrder(n) {
		it := d.items[i]
		b = binary.LittleEndian.AppendUint64(b, it.hash)
		b = binary.LittleEndian.AppendUint64(b, it.offset)
		b = binary.LittleEndian.AppendUint64(b, it.size)
	}
	b = binary.LittleEndian.AppendUint64(b, goodbyeTailMarker)
	b = binary.LittleEndian.AppendUint64(b, uint64(gbPos-d.start))
	b = binary.LittleEndian.AppendUint64(b, full)
	if err := w.item(w.meta, typeGoodbye, b); err != nil {
		return err
	}
	if d.fpos < 0 {
		w.done = true
		return nil
	}
	w.endChild(d.name, d.fpos, uint64(w.meta.pos-d.fpos))
	return nil
}

// bstOrder returns, for each index of the goodbye table, the index of the
// hash-sorted item stored there: an in-order fill of the complete binary
// tree in heap layout (spec §6.4).
func bstOrder(n int) []int {
	p := make([]int, n)
	next := 0
	var visit func(i int)
	visit = func(i int) {
		if i >= n {
			return
		}
		visit(2*i + 1)
		p[i] = next
		next++
		visit(2*i + 2)
	}
	visit(0)
	return p
}

// AddFile writes a regular file of exactly size bytes read from r. Its
// LinkOffset identifies it for AddHardlink.
func (w *Writer) AddFile(name string, md *Metadata, size uint64, r io.Reader) (LinkOffset, error) {
	fpos, err := w.beginChild(name)
	if err != nil {
		return 0, err
	}
	if err := w.entry(md, modeIFREG); err != nil {
		return 0, err
	}
	dst := w.meta
	if w.payload != nil {
		if err := w.item(w.meta, typePayloadRef, u64s(uint64(w.payload.pos), size)); err != nil {
			return 0, err
		}
		dst = w.payload
		if w.sink != nil {
			if err := w.payload.w.Flush(); err != nil {
				return 0, w.fail(fmt.Errorf("pxar: flush payload: %w", err))
			}
			w.sink.SuggestBoundary()
		}
	}
	var h [headerSize]byte
	binary.LittleEndian.PutUint64(h[:], typePayload)
	binary.LittleEndian.PutUint64(h[8:], size+headerSize)
	if _, err := dst.Write(h[:]); err != nil {
		return 0, w.fail(fmt.Errorf("pxar: write: %w", err))
	}
	if w.copyBuf == nil {
		w.copyBuf = make([]byte, 256<<10)
	}
	n, err := dst.copyN(r, int64(size), w.copyBuf)
	if err != nil {
		return 0, w.fail(fmt.Errorf("pxar: file %q: copied %d of %d bytes: %w", name, n, size, err))
	}
	// For split archives the goodbye size counts the content too, as the
	// pxar encoder does (spec §6.2).
	gsize := uint64(w.meta.pos - fpos)
	if w.payload != nil {
		gsize += size
	}
	w.endChild(name, fpos, gsize)
	return LinkOffset(fpos), nil
}

// AddPayloadRef writes a regular file of a split archive whose content is
// already in the payload stream: a PAYLOAD header of size bytes at payload
// position offset, injected with InjectPayload (before or after this
// call). Its goodbye size is exact, as the pxar encoder's add_payload_ref
// makes it (spec §6.2).
func (w *Writer) AddPayloadRef(name string, md *Metadata, size, offset uint64) (LinkOffset, error) {
	if w.payload == nil {
		return 0, w.fail(fmt.Errorf("payload reference %q in a plain archive: %w", name, ErrWriter))
	}
	fpos, err := w.beginChild(name)
	if err != nil {
		return 0, err
	}
	if err := w.entry(md, modeIFREG); err != nil {
		return 0, err
	}
	if err := w.item(w.meta, typePayloadRef, u64s(offset, size)); err != nil {
		return 0, err
	}
	w.endChild(name, fpos, uint64(w.meta.pos-fpos))
	return LinkOffset(fpos), nil
}

// AddSymlink writes a symlink with the given target.
func (w *Writer) AddSymlink(name string, md *Metadata, target string) error {
	if target == "" || len(target) > maxNameLen || indexNUL([]byte(target)) >= 0 {
		return w.fail(fmt.Errorf("symlink %q: invalid target: %w", name, ErrWriter))
	}
	fpos, err := w.beginChild(name)
	if err != nil {
		return err
	}
	if err := w.entry(md, modeIFLNK); err != nil {
		return err
	}
	if err := w.item(w.meta, typeSymlink, []byte(target), []byte{0}); err != nil {
		return err
	}
	w.endChild(name, fpos, uint64(w.meta.pos-fpos))
	return nil
}

// AddDevice writes a character or block device (the type comes from md.Mode).
func (w *Writer) AddDevice(name string, md *Metadata, major, minor uint64) error {
	t := md.Mode & modeIFMT
	if t != modeIFCHR && t != modeIFBLK {
		return w.fail(fmt.Errorf("device %q: mode %o: %w", name, md.Mode, ErrWriter))
	}
	fpos, err := w.beginChild(name)
	if err != nil {
		return err
	}
	if err := w.entry(md, t); err != nil {
		return err
	}
	if err := w.item(w.meta, typeDevice, u64s(major, minor)); err != nil {
		return err
	}
	w.endChild(name, fpos, uint64(w.meta.pos-fpos))
	return nil
}

// AddSpecial writes a FIFO or a socket (the type comes from md.Mode).
func (w *Writer) AddSpecial(name string, md *Metadata) error {
	t := md.Mode & modeIFMT
	if t != modeIFIFO && t != modeIFSOCK {
		return w.fail(fmt.Errorf("special file %q: mode %o: %w", name, md.Mode, ErrWriter))
	}
	fpos, err := w.beginChild(name)
	if err != nil {
		return err
	}
	if err := w.entry(md, t); err != nil {
		return err
	}
	w.endChild(name, fpos, uint64(w.meta.pos-fpos))
	return nil
}

// AddHardlink writes a hardlink to the earlier file target, whose path
// from the root (no leading "/") is targetPath.
func (w *Writer) AddHardlink(name, targetPath string, target LinkOffset) error {
	if targetPath == "" || len(targetPath) > maxNameLen || indexNUL([]byte(targetPath)) >= 0 {
		return w.fail(fmt.Errorf("hardlink %q: invalid target path: %w", name, ErrWriter))
	}
	fpos, err := w.beginChild(name)
	if err != nil {
		return err
	}
	if int64(target) <= 0 || int64(target) >= fpos {
		return w.fail(fmt.Errorf("hardlink %q: target %d not before %d: %w", name, target, fpos, ErrWriter))
	}
	if err := w.item(w.meta, typeHardlink, u64s(uint64(fpos-int64(target))), []byte(targetPath), []byte{0}); err != nil {
		return err
	}
	w.endChild(name, fpos, uint64(w.meta.pos-fpos))
	return nil
}

// Close finishes the archive: the root directory must have ended. It
// writes the payload tail marker of a split archive and flushes both
// streams. It does not close the underlying writers.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if !w.done {
		return w.fail(fmt.Errorf("close with %d open directories: %w", len(w.stack), ErrWriter))
	}
	if w.payload != nil {
		if err := w.item(w.payload, typePayloadTailMarker); err != nil {
			return err
		}
		if err := w.payload.w.Flush(); err != nil {
			return w.fail(fmt.Errorf("pxar: flush payload: %w", err))
		}
	}
	if err := w.meta.w.Flush(); err != nil {
		return w.fail(fmt.Errorf("pxar: flush: %w", err))
	}
	w.err = fmt.Errorf("writer closed: %w", ErrWriter)
	return nil
}
