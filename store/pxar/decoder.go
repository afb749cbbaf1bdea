package pxar

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// decoderBlock is the read-ahead of a sequential Decoder.
const decoderBlock = 64 << 10

// A Decoder reads an archive sequentially, in stored order, like
// archive/tar.Reader. After Next returns a regular file, the Decoder is an
// io.Reader for its contents.
type Decoder struct {
	w       *window
	payload io.ReaderAt

	started  bool
	version  int
	prelude  []byte
	split    bool
	pos      int64
	stack    []string // names of the open directories below the root
	consumed int64    // payload stream position already passed (split)
	cur      *Entry
	content  *io.SectionReader
	err      error // sticky
}

// NewDecoder returns a Decoder for the metadata stream meta of size
// metaSize. payload is the payload stream of a split archive; it may be nil
// for plain archives, or to read only the metadata of a split archive (file
// reads then fail with ErrNoPayload).
func NewDecoder(meta io.ReaderAt, metaSize int64, payload io.ReaderAt) *Decoder {
	return &Decoder{w: newWindow(meta, metaSize, decoderBlock), payload: payload}
}

// Version returns the archive's format version (1 plain, 2 split). It is
// valid after the first call to Next.
func (d *Decoder) Version() int { return d.version }

// Prelude returns the PRELUDE content of a v2 archive, nil if there is none.
// It is valid after the first call to Next.
func (d *Decoder) Prelude() []byte { return d.prelude }

// Next advances to the next entry and returns it. The first entry is the
// root directory. At the end of the archive Next returns io.EOF. Errors are
// sticky.
func (d *Decoder) Next() (*Entry, error) {
	if d.err != nil {
		return nil, d.err
	}
	e, err := d.next()
	if err != nil {
		d.err = err
		d.content, d.cur = nil, nil
		return nil, err
	}
	d.cur = e
	return e, nil
}

func (d *Decoder) next() (*Entry, error) {
	d.content = nil
	if !d.started {
		d.started = true
		if d.w.size < minArchiveSize {
			return nil, fmt.Errorf("archive of %d bytes: %w", d.w.size, ErrCorrupt)
		}
		v, prelude, pos, err := d.w.readVersion()
		if err != nil {
			return nil, err
		}
		d.version, d.prelude, d.split = v, prelude, v == 2
		e := &Entry{Path: "/", FilenameOffset: -1}
		next, err := d.w.readEntry(pos, e, d.split)
		if err != nil {
			return nil, err
		}
		if e.Kind != KindDir {
			return nil, fmt.Errorf("root entry at offset %d is a %v: %w", pos, e.Kind, ErrCorrupt)
		}
		e.Offset = 0 // the root's range starts at the archive start, as in Archive
		d.pos = next
		return e, nil
	}
	for {
		h, err := d.w.readHeader(d.pos)
		if err != nil {
			return nil, err
		}
		switch h.htype {
		case typeGoodbye:
			if h.contentSize()%goodbyeItemSize != 0 {
				return nil, fmt.Errorf("GOODBYE at offset %d: size %d not a multiple of %d: %w", h.pos, h.contentSize(), goodbyeItemSize, ErrCorrupt)
			}
			d.pos = h.end()
			if len(d.stack) == 0 {
				if d.pos != d.w.size {
					return nil, fmt.Errorf("root GOODBYE ends at %d, archive at %d: %w", d.pos, d.w.size, ErrCorrupt)
				}
				return nil, io.EOF
			}
			d.stack = d.stack[:len(d.stack)-1]
		case typeFilename:
			return d.child(h.pos)
		default:
			return nil, fmt.Errorf("offset %d: item %#x where FILENAME or GOODBYE expected: %w", h.pos, h.htype, ErrCorrupt)
		}
	}
}

// child decodes the child whose FILENAME is at fpos.
func (d *Decoder) child(fpos int64) (*Entry, error) {
	name, fh, err := d.w.readFilename(fpos)
	if err != nil {
		return nil, err
	}
	path, err := d.path(name)
	if err != nil {
		return nil, fmt.Errorf("FILENAME at offset %d: %w", fpos, err)
	}
	e := &Entry{Path: path, FilenameOffset: fpos}
	h, err := d.w.readHeader(fh.end())
	if err != nil {
		return nil, err
	}
	if h.htype == typeHardlink {
		if err := d.w.readHardlink(h, fpos, e); err != nil {
			return nil, err
		}
		d.pos = h.end()
		return e, nil
	}
	next, err := d.w.readEntry(h.pos, e, d.split)
	if err != nil {
		return nil, err
	}
	d.pos = next
	switch e.Kind {
	case KindDir:
		if len(d.stack) >= maxDepth {
			return nil, fmt.Errorf("directory at offset %d nested deeper than %d: %w", e.Offset, maxDepth, ErrTooLarge)
		}
		d.stack = append(d.stack, name)
	case KindFile:
		if err := d.openContent(e); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// path joins the open directories and name.
func (d *Decoder) path(name string) (string, error) {
	n := len(name) + 1
	for _, s := range d.stack {
		n += len(s) + 1
	}
	if n > maxPathLen {
		return "", fmt.Errorf("path of %d bytes: %w", n, ErrTooLarge)
	}
	b := make([]byte, 0, n)
	for _, s := range d.stack {
		b = append(b, '/')
		b = append(b, s...)
	}
	b = append(b, '/')
	b = append(b, name...)
	return string(b), nil
}

// openContent prepares the content reader of file e.
func (d *Decoder) openContent(e *Entry) error {
	if !d.split {
		d.content = io.NewSectionReader(d.w.r, e.ContentOffset, int64(e.Size))
		return nil
	}
	if e.PayloadOffset < d.consumed {
		return fmt.Errorf("PAYLOAD_REF at offset %d: payload offset %d below consumed payload %d: %w", e.ContentOffset-headerSize, e.PayloadOffset, d.consumed, ErrCorrupt)
	}
	d.consumed = e.PayloadOffset + headerSize + int64(e.Size)
	if d.payload == nil {
		return nil
	}
	if err := checkPayloadHeader(d.payload, e); err != nil {
		return err
	}
	d.content = io.NewSectionReader(d.payload, e.PayloadOffset+headerSize, int64(e.Size))
	return nil
}

// checkPayloadHeader checks that the payload stream has a PAYLOAD header of
// e's size at e.PayloadOffset (spec §5.12).
func checkPayloadHeader(payload io.ReaderAt, e *Entry) error {
	var b [headerSize]byte
	if err := readAtFull(payload, b[:], e.PayloadOffset); err != nil {
		return fmt.Errorf("payload of %q at payload offset %d: %w", e.Path, e.PayloadOffset, err)
	}
	if binary.LittleEndian.Uint64(b[:]) != typePayload || binary.LittleEndian.Uint64(b[8:]) != e.Size+headerSize {
		return fmt.Errorf("payload of %q at payload offset %d: no PAYLOAD header of size %d: %w", e.Path, e.PayloadOffset, e.Size, ErrCorrupt)
	}
	return nil
}

// Read reads the contents of the current regular file. It returns io.EOF at
// the end of the file, and 0, io.EOF for entries without contents.
func (d *Decoder) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if d.content == nil {
		if d.cur != nil && d.cur.Kind == KindFile && d.cur.Size > 0 && d.payload == nil {
			return 0, ErrNoPayload
		}
		return 0, io.EOF
	}
	n, err := d.content.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("pxar: file content: %w", err)
	}
	return n, err
}
