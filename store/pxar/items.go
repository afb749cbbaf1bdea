package pxar

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// window is an io.ReaderAt over the metadata stream that serves small reads
// from one cached block. It is not safe for concurrent use; random-access
// operations each make their own.
type window struct {
	r    io.ReaderAt
	size int64
	buf  []byte
	off  int64 // stream position of buf[0]
	n    int   // valid bytes in buf
}

func newWindow(r io.ReaderAt, size int64, block int) *window {
	return &window{r: r, size: size, buf: make([]byte, block), off: -1}
}

// readFull reads exactly len(p) bytes at off, failing with ErrCorrupt when
// the range passes the end of the stream.
func (w *window) readFull(p []byte, off int64) error {
	if off < 0 || int64(len(p)) > w.size-off {
		return fmt.Errorf("read of %d bytes at offset %d past end %d: %w", len(p), off, w.size, ErrCorrupt)
	}
	if w.off >= 0 && off >= w.off && off+int64(len(p)) <= w.off+int64(w.n) {
		copy(p, w.buf[off-w.off:])
		return nil
	}
	if len(p) >= len(w.buf)/2 {
		return readAtFull(w.r, p, off)
	}
	n := int64(len(w.buf))
	if rest := w.size - off; rest < n {
		n = rest
	}
	w.off = -1
	if err := readAtFull(w.r, w.buf[:n], off); err != nil {
		// The read-ahead may reach into damaged bytes (a missing chunk)
		// that p does not need: read just p.
		return readAtFull(w.r, p, off)
	}
	w.off, w.n = off, int(n)
	copy(p, w.buf[:n])
	return nil
}

// readAtFull is io.ReadFull for an io.ReaderAt. A short stream is ErrCorrupt.
func readAtFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("short read at offset %d: %w", off, ErrCorrupt)
	}
	return fmt.Errorf("read at offset %d: %w", off, err)
}

// header is a 16-byte item header with its position.
type header struct {
	pos   int64
	htype uint64
	full  int64 // full_size, including the header
}

func (h header) contentSize() int64 { return h.full - headerSize }
func (h header) end() int64         { return h.pos + h.full }

// readHeader reads and checks the item header at pos: full_size >= 16 and
// the item ends within the stream.
func (w *window) readHeader(pos int64) (header, error) {
	var b [headerSize]byte
	if err := w.readFull(b[:], pos); err != nil {
		return header{}, err
	}
	h := header{pos: pos, htype: binary.LittleEndian.Uint64(b[0:]), full: 0}
	full := binary.LittleEndian.Uint64(b[8:])
	if full < headerSize {
		return h, fmt.Errorf("item at offset %d: full size %d below header size: %w", pos, full, ErrCorrupt)
	}
	if full > uint64(w.size-pos) {
		return h, fmt.Errorf("item at offset %d: full size %d passes end of archive %d: %w", pos, full, w.size, ErrCorrupt)
	}
	h.full = int64(full)
	return h, nil
}

// readContent reads the content of h, which must be at most max bytes
// (and exactly max when exact is set).
func (w *window) readContent(h header, max int64, exact bool, what string) ([]byte, error) {
	n := h.contentSize()
	if exact && n != max {
		return nil, fmt.Errorf("%s at offset %d: content size %d, want %d: %w", what, h.pos, n, max, ErrCorrupt)
	}
	if n > max {
		return nil, fmt.Errorf("%s at offset %d: content size %d above %d: %w", what, h.pos, n, max, ErrTooLarge)
	}
	b := make([]byte, n)
	if err := w.readFull(b, h.pos+headerSize); err != nil {
		return nil, fmt.Errorf("%s at offset %d: %w", what, h.pos, err)
	}
	return b, nil
}

// checkName applies the file name rules of spec §5.7.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > maxNameLen {
		return fmt.Errorf("invalid file name %q: %w", name, ErrCorrupt)
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return fmt.Errorf("invalid file name %q: %w", name, ErrCorrupt)
		}
	}
	return nil
}

// readFilename reads the FILENAME item at pos.
func (w *window) readFilename(pos int64) (string, header, error) {
	h, err := w.readHeader(pos)
	if err != nil {
		return "", h, err
	}
	if h.htype != typeFilename {
		return "", h, fmt.Errorf("offset %d: item %#x is not a FILENAME: %w", pos, h.htype, ErrCorrupt)
	}
	b, err := w.readContent(h, maxFilenameLen, false, "FILENAME")
	if err != nil {
		return "", h, err
	}
	if len(b) == 0 || b[len(b)-1] != 0 {
		return "", h, fmt.Errorf("FILENAME at offset %d: missing NUL: %w", pos, ErrCorrupt)
	}
	name := string(b[:len(b)-1])
	if err := checkName(name); err != nil {
		return "", h, fmt.Errorf("FILENAME at offset %d: %w", pos, err)
	}
	return name, h, nil
}

// readEntry decodes, at pos, an ENTRY (or ENTRY_V1) item, its attribute
// items and the item that ends it, filling e. It returns the position after
// the last item it consumed: for directories, FIFOs and sockets the position
// of the following FILENAME or GOODBYE, which it does not consume. A
// PAYLOAD's content is skipped.
func (w *window) readEntry(pos int64, e *Entry, split bool) (int64, error) {
	h, err := w.readHeader(pos)
	if err != nil {
		return 0, err
	}
	e.Offset = pos
	e.PayloadOffset = -1
	switch h.htype {
	case typeEntry:
		b, err := w.readContent(h, statSize, true, "ENTRY")
		if err != nil {
			return 0, err
		}
		le := binary.LittleEndian
		e.Mode = le.Uint64(b[0:])
		e.Flags = le.Uint64(b[8:])
		e.UID = le.Uint32(b[16:])
		e.GID = le.Uint32(b[20:])
		e.Mtime = Timestamp{Secs: int64(le.Uint64(b[24:])), Nanos: le.Uint32(b[32:])}
		if e.Mtime.Nanos >= 1e9 {
			return 0, fmt.Errorf("ENTRY at offset %d: nanoseconds %d out of range: %w", pos, e.Mtime.Nanos, ErrCorrupt)
		}
	case typeEntryV1:
		b, err := w.readContent(h, statV1Size, true, "ENTRY_V1")
		if err != nil {
			return 0, err
		}
		le := binary.LittleEndian
		e.Mode = le.Uint64(b[0:])
		e.Flags = le.Uint64(b[8:])
		e.UID = le.Uint32(b[16:])
		e.GID = le.Uint32(b[20:])
		ns := le.Uint64(b[24:])
		e.Mtime = Timestamp{Secs: int64(ns / 1e9), Nanos: uint32(ns % 1e9)}
	default:
		return 0, fmt.Errorf("offset %d: item %#x is not an ENTRY: %w", pos, h.htype, ErrCorrupt)
	}
	pos = h.end()
	for items := 0; ; items++ {
		if items > maxAttrItems {
			return 0, fmt.Errorf("entry at offset %d: more than %d attribute items: %w", e.Offset, maxAttrItems, ErrTooLarge)
		}
		h, err := w.readHeader(pos)
		if err != nil {
			return 0, fmt.Errorf("entry at offset %d: %w", e.Offset, err)
		}
		done, err := w.readAttr(h, e, split)
		if err != nil {
			return 0, err
		}
		switch done {
		case attrMore:
			pos = h.end()
		case attrEndConsumed:
			return h.end(), nil
		case attrEndBefore:
			return pos, nil
		}
	}
}

type attrResult int

const (
	attrMore        attrResult = iota // an attribute; keep reading
	attrEndConsumed                   // the item ended the entry and belongs to it
	attrEndBefore                     // the entry ended before this item
)

// readAttr applies one item following an ENTRY.
func (w *window) readAttr(h header, e *Entry, split bool) (attrResult, error) {
	le := binary.LittleEndian
	pair := func(what string) (ACLEntry, error) {
		b, err := w.readContent(h, 16, true, what)
		if err != nil {
			return ACLEntry{}, err
		}
		return ACLEntry{ID: le.Uint64(b), Perms: le.Uint64(b[8:])}, nil
	}
	dup := func(what string) error {
		return fmt.Errorf("%s at offset %d: duplicate: %w", what, h.pos, ErrCorrupt)
	}
	switch h.htype {
	case typeXattr:
		b, err := w.readContent(h, maxXattrLen, false, "XATTR")
		if err != nil {
			return 0, err
		}
		i := indexNUL(b)
		if i < 0 {
			return 0, fmt.Errorf("XATTR at offset %d: no NUL after name: %w", h.pos, ErrCorrupt)
		}
		e.Xattrs = append(e.Xattrs, Xattr{Name: string(b[:i]), Value: b[i+1:]})
	case typeACLUser:
		a, err := pair("ACL_USER")
		if err != nil {
			return 0, err
		}
		e.ACL.Users = append(e.ACL.Users, a)
	case typeACLGroup:
		a, err := pair("ACL_GROUP")
		if err != nil {
			return 0, err
		}
		e.ACL.Groups = append(e.ACL.Groups, a)
	case typeACLGroupObj:
		if e.ACL.GroupObj != nil {
			return 0, dup("ACL_GROUP_OBJ")
		}
		b, err := w.readContent(h, 8, true, "ACL_GROUP_OBJ")
		if err != nil {
			return 0, err
		}
		v := le.Uint64(b)
		e.ACL.GroupObj = &v
	case typeACLDefault:
		if e.ACL.Default != nil {
			return 0, dup("ACL_DEFAULT")
		}
		b, err := w.readContent(h, 32, true, "ACL_DEFAULT")
		if err != nil {
			return 0, err
		}
		e.ACL.Default = &ACLDefault{UserObj: le.Uint64(b), GroupObj: le.Uint64(b[8:]), Other: le.Uint64(b[16:]), Mask: le.Uint64(b[24:])}
	case typeACLDefaultUser:
		a, err := pair("ACL_DEFAULT_USER")
		if err != nil {
			return 0, err
		}
		e.ACL.DefaultUsers = append(e.ACL.DefaultUsers, a)
	case typeACLDefaultGroup:
		a, err := pair("ACL_DEFAULT_GROUP")
		if err != nil {
			return 0, err
		}
		e.ACL.DefaultGroups = append(e.ACL.DefaultGroups, a)
	case typeFCaps:
		if e.FCaps != nil {
			return 0, dup("FCAPS")
		}
		b, err := w.readContent(h, maxXattrLen, false, "FCAPS")
		if err != nil {
			return 0, err
		}
		e.FCaps = b
	case typeQuotaProjID:
		if e.QuotaProjID != nil {
			return 0, dup("QUOTA_PROJID")
		}
		b, err := w.readContent(h, 8, true, "QUOTA_PROJID")
		if err != nil {
			return 0, err
		}
		v := le.Uint64(b)
		e.QuotaProjID = &v
	case typePayload:
		if split {
			return 0, fmt.Errorf("PAYLOAD at offset %d in a split archive's metadata: %w", h.pos, ErrCorrupt)
		}
		e.Kind = KindFile
		e.Size = uint64(h.contentSize())
		e.ContentOffset = h.pos + headerSize
		return attrEndConsumed, nil
	case typePayloadRef:
		if !split {
			return 0, fmt.Errorf("PAYLOAD_REF at offset %d in a plain archive: %w", h.pos, ErrCorrupt)
		}
		b, err := w.readContent(h, 16, true, "PAYLOAD_REF")
		if err != nil {
			return 0, err
		}
		off, size := le.Uint64(b), le.Uint64(b[8:])
		if off > 1<<62 || size > 1<<62 {
			return 0, fmt.Errorf("PAYLOAD_REF at offset %d: offset %d size %d out of range: %w", h.pos, off, size, ErrCorrupt)
		}
		e.Kind = KindFile
		e.Size = size
		e.PayloadOffset = int64(off)
		e.ContentOffset = h.pos + headerSize
		return attrEndConsumed, nil
	case typeSymlink:
		b, err := w.readContent(h, maxSymlinkLen, false, "SYMLINK")
		if err != nil {
			return 0, err
		}
		if len(b) == 0 || b[len(b)-1] != 0 {
			return 0, fmt.Errorf("SYMLINK at offset %d: missing NUL: %w", h.pos, ErrCorrupt)
		}
		e.Kind = KindSymlink
		e.LinkTarget = string(b[:len(b)-1])
		return attrEndConsumed, nil
	case typeDevice:
		b, err := w.readContent(h, 16, true, "DEVICE")
		if err != nil {
			return 0, err
		}
		e.DevMajor, e.DevMinor = le.Uint64(b), le.Uint64(b[8:])
		if e.Mode&modeIFMT == modeIFBLK {
			e.Kind = KindBlockDev
		} else {
			e.Kind = KindCharDev
		}
		return attrEndConsumed, nil
	case typeFilename, typeGoodbye:
		e.Kind = kindFromMode(e.Mode)
		return attrEndBefore, nil
	default:
		return 0, fmt.Errorf("offset %d: unexpected item %#x in entry at offset %d: %w", h.pos, h.htype, e.Offset, ErrCorrupt)
	}
	return attrMore, nil
}

// readHardlink decodes the HARDLINK item h of the child whose FILENAME is
// at fpos.
func (w *window) readHardlink(h header, fpos int64, e *Entry) error {
	b, err := w.readContent(h, maxHardlinkLen, false, "HARDLINK")
	if err != nil {
		return err
	}
	if len(b) <= 8 || b[len(b)-1] != 0 {
		return fmt.Errorf("HARDLINK at offset %d: malformed: %w", h.pos, ErrCorrupt)
	}
	off := binary.LittleEndian.Uint64(b)
	if off == 0 || off > uint64(fpos) {
		return fmt.Errorf("HARDLINK at offset %d: offset %d does not point backwards from %d: %w", h.pos, off, fpos, ErrCorrupt)
	}
	e.Kind = KindHardlink
	e.Offset = h.pos
	e.PayloadOffset = -1
	e.HardlinkOffset = fpos - int64(off)
	e.LinkTarget = string(b[8 : len(b)-1])
	return nil
}

func indexNUL(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

// readVersion reads the optional FORMAT_VERSION and PRELUDE at the start of
// the stream. It returns the version (1 if absent), the prelude (nil if
// absent) and the position of the root ENTRY.
func (w *window) readVersion() (version int, prelude []byte, pos int64, err error) {
	h, err := w.readHeader(0)
	if err != nil {
		return 0, nil, 0, err
	}
	if h.htype != typeFormatVersion {
		return 1, nil, 0, nil
	}
	b, err := w.readContent(h, 8, true, "FORMAT_VERSION")
	if err != nil {
		return 0, nil, 0, err
	}
	v := binary.LittleEndian.Uint64(b)
	if v != 1 && v != 2 {
		return 0, nil, 0, fmt.Errorf("FORMAT_VERSION %d: %w", v, ErrCorrupt)
	}
	pos = h.end()
	if v == 2 {
		h, err = w.readHeader(pos)
		if err != nil {
			return 0, nil, 0, err
		}
		if h.htype == typePrelude {
			prelude, err = w.readContent(h, maxPreludeLen, false, "PRELUDE")
			if err != nil {
				return 0, nil, 0, err
			}
			pos = h.end()
		}
	}
	return int(v), prelude, pos, nil
}
