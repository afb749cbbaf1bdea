package pxar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// SourceInfo describes one entry of a tree to archive.
type SourceInfo struct {
	Metadata
	Kind               Kind   // KindDir, KindFile, KindSymlink, KindCharDev, KindBlockDev, KindFifo or KindSocket
	Size               uint64 // regular files
	LinkTarget         string // symlinks
	DevMajor, DevMinor uint64 // devices
	// Dev, Ino and Nlink identify a regular file for hardlink detection:
	// a file with Nlink > 1 seen again under the same (Dev, Ino) is
	// written as a HARDLINK to its first path.
	Dev, Ino, Nlink uint64
}

// A Source supplies a tree to Create. Paths are relative to the tree's
// root, "/"-separated, "" for the root itself. DirSource reads the live
// file system; tests use in-memory trees.
type Source interface {
	// Lstat describes the entry at path without following symlinks.
	Lstat(path string) (*SourceInfo, error)
	// ReadDirNames lists directory path in any order.
	ReadDirNames(path string) ([]string, error)
	// Open opens regular file path for reading.
	Open(path string) (io.ReadCloser, error)
}

// CatalogWriter receives the archived tree as it is written, the way the
// PBS client feeds a catalog beside a plain archive. *catalog.Writer
// satisfies it. Create reports the root's children; the caller starts and
// ends the archive's own directory (StartDirectory("root.pxar.didx") ...
// EndDirectory()).
type CatalogWriter interface {
	StartDirectory(name string) error
	EndDirectory() error
	AddFile(name string, size uint64, mtime int64) error
	AddSymlink(name string) error
	AddHardlink(name string) error
	AddBlockDevice(name string) error
	AddCharDevice(name string) error
	AddFifo(name string) error
	AddSocket(name string) error
}

// CreateOptions controls Create.
type CreateOptions struct {
	// OnError is called for an entry that cannot be read (stat, list or
	// open failure, or a file that shrank or failed while being read). If
	// it returns nil the entry is skipped (a short file is padded with
	// zeros) and the backup continues; a non-nil error aborts Create. A
	// nil OnError aborts on the first such error.
	OnError func(path string, err error) error
	// Catalog, if not nil, is fed every archived entry.
	Catalog CatalogWriter
	// Prelude is written as the PRELUDE of a split archive.
	Prelude []byte
}

// Create archives the tree of src into w, then closes w. Each directory's
// names are written byte-sorted; regular files with several links become
// HARDLINK items after their first path.
func Create(ctx context.Context, src Source, w *Writer, opts CreateOptions) error {
	c := &creator{ctx: ctx, src: src, w: w, opts: opts, links: map[[2]uint64]hardlinkTarget{}}
	if opts.Prelude != nil {
		if err := w.SetPrelude(opts.Prelude); err != nil {
			return err
		}
	}
	info, err := src.Lstat("")
	if err != nil {
		return fmt.Errorf("pxar: root: %w", err)
	}
	if info.Kind != KindDir {
		return fmt.Errorf("pxar: root is a %v: %w", info.Kind, ErrNotDir)
	}
	names, err := src.ReadDirNames("")
	if err != nil {
		return fmt.Errorf("pxar: root: %w", err)
	}
	if err := w.BeginDir("", &info.Metadata); err != nil {
		return err
	}
	if err := c.dir("", names); err != nil {
		return err
	}
	if err := w.EndDir(); err != nil {
		return err
	}
	return w.Close()
}

// hardlinkTarget is the first path of a multiply linked file.
type hardlinkTarget struct {
	path string
	off  LinkOffset
}

type creator struct {
	ctx   context.Context
	src   Source
	w     *Writer
	opts  CreateOptions
	links map[[2]uint64]hardlinkTarget
}

// skip reports an unreadable entry through OnError.
func (c *creator) skip(path string, err error) error {
	if c.opts.OnError == nil {
		return fmt.Errorf("pxar: %s: %w", path, err)
	}
	return c.opts.OnError(path, err)
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// dir writes the children names of directory path.
func (c *creator) dir(path string, names []string) error {
	slices.Sort(names) // Go compares strings bytewise, as the PBS client does
	for _, name := range names {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		if err := c.child(join(path, name), name); err != nil {
			return err
		}
	}
	return nil
}

func (c *creator) child(path, name string) error {
	info, err := c.src.Lstat(path)
	if err != nil {
		return c.skip(path, err)
	}
	cat := c.opts.Catalog
	catErr := func(err error) error {
		if err != nil {
			return fmt.Errorf("pxar: catalog: %s: %w", path, err)
		}
		return nil
	}
	switch info.Kind {
	case KindDir:
		names, err := c.src.ReadDirNames(path)
		if err != nil {
			return c.skip(path, err)
		}
		if err := c.w.BeginDir(name, &info.Metadata); err != nil {
			return err
		}
		if cat != nil {
			if err := catErr(cat.StartDirectory(name)); err != nil {
				return err
			}
		}
		if err := c.dir(path, names); err != nil {
			return err
		}
		if cat != nil {
			if err := catErr(cat.EndDirectory()); err != nil {
				return err
			}
		}
		return c.w.EndDir()
	case KindFile:
		key := [2]uint64{info.Dev, info.Ino}
		if info.Nlink > 1 {
			if t, ok := c.links[key]; ok {
				if err := c.w.AddHardlink(name, t.path, t.off); err != nil {
					return err
				}
				if cat != nil {
					return catErr(cat.AddHardlink(name))
				}
				return nil
			}
		}
		f, err := c.src.Open(path)
		if err != nil {
			return c.skip(path, err)
		}
		r := &exactReader{r: f, left: int64(info.Size)}
		off, err := c.w.AddFile(name, &info.Metadata, info.Size, r)
		f.Close()
		if err != nil {
			return err
		}
		if r.err != nil {
			if err := c.skip(path, r.err); err != nil {
				return err
			}
		}
		if info.Nlink > 1 {
			c.links[key] = hardlinkTarget{path: path, off: off}
		}
		if cat != nil {
			return catErr(cat.AddFile(name, info.Size, info.Mtime.Secs))
		}
		return nil
	case KindSymlink:
		if err := c.w.AddSymlink(name, &info.Metadata, info.LinkTarget); err != nil {
			return err
		}
		if cat != nil {
			return catErr(cat.AddSymlink(name))
		}
		return nil
	case KindCharDev, KindBlockDev:
		if err := c.w.AddDevice(name, &info.Metadata, info.DevMajor, info.DevMinor); err != nil {
			return err
		}
		if cat != nil {
			if info.Kind == KindBlockDev {
				return catErr(cat.AddBlockDevice(name))
			}
			return catErr(cat.AddCharDevice(name))
		}
		return nil
	case KindFifo, KindSocket:
		if err := c.w.AddSpecial(name, &info.Metadata); err != nil {
			return err
		}
		if cat != nil {
			if info.Kind == KindFifo {
				return catErr(cat.AddFifo(name))
			}
			return catErr(cat.AddSocket(name))
		}
		return nil
	}
	return c.skip(path, fmt.Errorf("unsupported kind %v", info.Kind))
}

// errShortFile reports a file that ended before its stat size.
var errShortFile = errors.New("file shrank while being archived; padded with zeros")

// exactReader yields exactly left bytes: it pads a short or failing file
// with zeros and remembers why.
type exactReader struct {
	r    io.Reader
	left int64
	err  error
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	if e.err == nil {
		n, err := e.r.Read(p)
		e.left -= int64(n)
		if err == io.EOF && e.left > 0 {
			e.err = errShortFile
		} else if err != nil && err != io.EOF {
			e.err = err
		}
		if n > 0 || e.err == nil {
			return n, nil
		}
	}
	clear(p)
	e.left -= int64(len(p))
	return len(p), nil
}

// trimSlash removes leading slashes of a path.
func trimSlash(p string) string { return strings.TrimLeft(p, "/") }
