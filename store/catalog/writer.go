package catalog

import (
	"encoding/binary"
	"fmt"
	"io"
)

// dirEntry is one entry of a directory being written.
type dirEntry struct {
	typ   byte
	name  string
	size  uint64
	mtime int64
	start int64 // block start of a subdirectory
}

// openDir is a directory whose block is not written yet.
type openDir struct {
	entries []dirEntry
}

// A Writer writes a catalog the way the PBS client does: entries in the
// order they are added, a directory's block when it ends. The top level is
// the snapshot root, whose entries are one directory per archive. A Writer
// is fed by the pxar encoder (pxar.CreateOptions.Catalog).
type Writer struct {
	w     io.Writer
	pos   int64
	stack []openDir
	buf   []byte
	err   error
}

// NewWriter writes the magic to w and returns a Writer positioned at the
// snapshot root.
func NewWriter(w io.Writer) (*Writer, error) {
	cw := &Writer{w: w, stack: []openDir{{}}}
	if err := cw.write([]byte(Magic)); err != nil {
		return nil, err
	}
	return cw, nil
}

func (w *Writer) write(b []byte) error {
	if w.err != nil {
		return w.err
	}
	n, err := w.w.Write(b)
	w.pos += int64(n)
	if err != nil {
		w.err = fmt.Errorf("catalog: write: %w", err)
	}
	return w.err
}

func (w *Writer) add(e dirEntry) error {
	if w.err != nil {
		return w.err
	}
	if len(e.name) == 0 || len(e.name) > maxNameLen {
		return fmt.Errorf("catalog: name of %d bytes: %w", len(e.name), ErrWriter)
	}
	top := &w.stack[len(w.stack)-1]
	top.entries = append(top.entries, e)
	return nil
}

// StartDirectory adds directory name to the current directory and enters it.
func (w *Writer) StartDirectory(name string) error {
	if err := w.add(dirEntry{typ: TypeDir, name: name}); err != nil {
		return err
	}
	w.stack = append(w.stack, openDir{})
	return nil
}

// EndDirectory writes the current directory's block and returns to its parent.
func (w *Writer) EndDirectory() error {
	if len(w.stack) < 2 {
		return fmt.Errorf("catalog: EndDirectory at the top level: %w", ErrWriter)
	}
	start := w.pos
	if err := w.writeBlock(w.stack[len(w.stack)-1]); err != nil {
		return err
	}
	w.stack = w.stack[:len(w.stack)-1]
	parent := &w.stack[len(w.stack)-1]
	parent.entries[len(parent.entries)-1].start = start
	return nil
}

// writeBlock writes one directory block at w.pos.
func (w *Writer) writeBlock(d openDir) error {
	start := w.pos
	t := appendU64(w.buf[:0], uint64(len(d.entries)))
	for _, e := range d.entries {
		t = append(t, e.typ)
		t = appendU64(t, uint64(len(e.name)))
		t = append(t, e.name...)
		switch e.typ {
		case TypeDir:
			t = appendU64(t, uint64(start-e.start))
		case TypeFile:
			t = appendU64(t, e.size)
			t = appendI64(t, e.mtime)
		}
	}
	w.buf = t
	var l [maxVarintLen]byte
	if err := w.write(appendU64(l[:0], uint64(len(t)))); err != nil {
		return err
	}
	return w.write(t)
}

// AddFile adds a regular file with its size and mtime (seconds).
func (w *Writer) AddFile(name string, size uint64, mtime int64) error {
	return w.add(dirEntry{typ: TypeFile, name: name, size: size, mtime: mtime})
}

// AddSymlink adds a symlink.
func (w *Writer) AddSymlink(name string) error { return w.add(dirEntry{typ: TypeSymlink, name: name}) }

// AddHardlink adds a hardlink (its target is not recorded).
func (w *Writer) AddHardlink(name string) error {
	return w.add(dirEntry{typ: TypeHardlink, name: name})
}

// AddBlockDevice adds a block device.
func (w *Writer) AddBlockDevice(name string) error {
	return w.add(dirEntry{typ: TypeBlockDev, name: name})
}

// AddCharDevice adds a character device.
func (w *Writer) AddCharDevice(name string) error {
	return w.add(dirEntry{typ: TypeCharDev, name: name})
}

// AddFifo adds a FIFO.
func (w *Writer) AddFifo(name string) error { return w.add(dirEntry{typ: TypeFifo, name: name}) }

// AddSocket adds a socket.
func (w *Writer) AddSocket(name string) error { return w.add(dirEntry{typ: TypeSocket, name: name}) }

// Finish writes the root block and the root offset. All directories must
// have ended.
func (w *Writer) Finish() error {
	if len(w.stack) != 1 {
		return fmt.Errorf("catalog: Finish with %d open directories: %w", len(w.stack)-1, ErrWriter)
	}
	start := w.pos
	if err := w.writeBlock(w.stack[0]); err != nil {
		return err
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(start))
	if err := w.write(b[:]); err != nil {
		return err
	}
	w.stack = nil
	w.err = fmt.Errorf("catalog: finished: %w", ErrWriter)
	return nil
}
