package pxar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/pbsfs/pbsfs/store/exclude"
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
	// Warn, if not nil, is told of a file that changed while it was read
	// but is still archived (it grew: the archive has its first stat
	// size bytes).
	Warn func(path string, err error)
	// Previous, for a split archive, turns on metadata change detection
	// against the previous snapshot's archive (see Previous). Catalog
	// must be nil then.
	Previous *Previous
	// Stats, if not nil, receives the counts of the work done.
	Stats *ReuseStats
	// Exclude lists the patterns given for the whole tree (--exclude).
	// Each directory's .pxarexclude file adds patterns for its subtree
	// (see package exclude). A plain archive with Exclude patterns gets a
	// last root entry .pxarexclude-cli holding them, as the PBS client
	// writes it; a split archive carries them in its prelude instead (the
	// caller's Prelude).
	Exclude exclude.List

	// aheadHook is the walker's test hook (walker.hook); the encoder
	// tells it ("read", path) for each file it reads.
	aheadHook func(event, path string)
}

// maxExcludeFile bounds the .pxarexclude files read.
const maxExcludeFile = 1 << 20

// Create archives the tree of src into w, then closes w. Each directory's
// names are written byte-sorted; regular files with several links become
// HARDLINK items after their first path.
func Create(ctx context.Context, src Source, w *Writer, opts CreateOptions) error {
	if opts.Stats == nil {
		opts.Stats = &ReuseStats{}
	}
	c := &creator{ctx: ctx, src: src, w: w, opts: opts, links: map[[2]uint64]hardlinkTarget{}, patterns: slices.Clone(opts.Exclude)}
	c.pf = newPrefetcher(ctx, src)
	defer c.pf.stop()
	if p := opts.Previous; p != nil {
		if !w.Split() || opts.Catalog != nil || p.Archive == nil || p.Inject == nil || p.Check == nil {
			return fmt.Errorf("pxar: metadata change detection needs a split archive, no catalog and a complete Previous: %w", ErrWriter)
		}
		c.reuse = &reuser{prev: p, seen: map[[2]uint64]bool{}}
		if p.Archive.Split() {
			c.reuse.dirs = append(c.reuse.dirs, c.prevDir(""))
		} else {
			c.reuse.dirs = append(c.reuse.dirs, nil)
		}
	}
	c.walk = c.newWalker(src)
	defer c.walk.close()
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
	if d := c.walk.take(""); d != nil {
		names = d.names // the root's previous entries are counted above
		err = c.dir("", names, d)
	} else {
		err = c.dir("", names, nil)
	}
	if err != nil {
		return err
	}
	if err := c.flush(false); err != nil {
		return err
	}
	if err := c.injectHeld(); err != nil {
		return err
	}
	if len(opts.Exclude) > 0 && !w.Split() {
		if err := c.excludeCLI(); err != nil {
			return err
		}
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
	reuse *reuser     // metadata change detection, nil otherwise
	pf    *prefetcher // reads files ahead (nil if the source cannot)
	walk  *walker     // lists and stats the tree ahead (nil: the encoder does)
	// patterns are the exclusion patterns in force: the caller's, then
	// those of the .pxarexclude files of the open directories.
	patterns exclude.List
}

// excludeCLIName is the synthetic file of a plain archive that records
// the --exclude patterns.
const excludeCLIName = ".pxarexclude-cli"

// excludeCLI writes .pxarexclude-cli as the root's last entry: mode 0600,
// the process's uid and gid, mtime 0 (as the PBS client does).
func (c *creator) excludeCLI() error {
	data := c.opts.Exclude.CLIFile()
	md := Metadata{Mode: modeIFREG | 0o600, UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	if _, err := c.w.AddFile(excludeCLIName, &md, uint64(len(data)), bytes.NewReader(data)); err != nil {
		return err
	}
	return c.catalog(excludeCLIName, func(cat CatalogWriter) error { return cat.AddFile(excludeCLIName, uint64(len(data)), 0) })
}

// readExcludes adds the patterns of directory path's .pxarexclude file.
func (c *creator) readExcludes(path string) {
	p := join(path, ".pxarexclude")
	l, bad, err := readExcludeFile(c.src, path)
	if err != nil {
		c.warn(p, fmt.Errorf("ignored: %w", err))
		return
	}
	for _, err := range bad {
		c.warn(p, fmt.Errorf("bad pattern: %w", err))
	}
	c.patterns = append(c.patterns, l...)
}

func (c *creator) warn(path string, err error) {
	if c.opts.Warn != nil {
		c.opts.Warn(path, err)
	}
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

// dir writes the children names of directory path; d is the walker's
// listing of it (nil: none).
func (c *creator) dir(path string, names []string, d *aheadDir) error {
	slices.Sort(names) // Go compares strings bytewise, as the PBS client does
	if _, ok := slices.BinarySearch(names, ".pxarexclude"); ok {
		n := len(c.patterns)
		defer func() { c.patterns = c.patterns[:n] }()
		c.readExcludes(path)
	}
	var infos []*SourceInfo
	switch {
	case d != nil:
		infos = d.infos
		if c.reuse != nil {
			defer c.reuse.forgetAhead(path, names)
		}
	case c.reuse != nil:
		// Metadata mode reads the inodes ahead (the files it decides to
		// read are prefetched then).
		for _, name := range names {
			c.pf.add(join(path, name), false)
		}
		infos = c.lookAhead(path, names)
		defer c.reuse.forgetAhead(path, names)
	default:
		// Every file is read: start reading this directory's files.
		for _, name := range names {
			c.pf.add(join(path, name), true)
		}
	}
	for i, name := range names {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		if path == "" && name == excludeCLIName {
			continue
		}
		var info *SourceInfo
		if infos != nil {
			info = infos[i]
		}
		if err := c.child(join(path, name), name, info); err != nil {
			return err
		}
	}
	return nil
}

// aheadTaken counts the previous entries the walker read for a
// directory.
func (c *creator) aheadTaken(d *aheadDir) {
	if c.reuse != nil {
		c.opts.Stats.PreviousEntries += d.prevN
	}
}

// child archives entry path; info is its stat if the caller has it.
func (c *creator) child(path, name string, info *SourceInfo) error {
	if info == nil {
		var err error
		if info, err = c.src.Lstat(path); err != nil {
			return c.skip(path, err)
		}
	}
	if len(c.patterns) > 0 && c.patterns.Excluded(path, info.Kind == KindDir) {
		return nil
	}
	switch info.Kind {
	case KindDir:
		return c.childDir(path, name, info)
	case KindFile:
		if c.reuse != nil {
			return c.fileMeta(path, name, info)
		}
		key := [2]uint64{info.Dev, info.Ino}
		if info.Nlink > 1 {
			if t, ok := c.links[key]; ok {
				if err := c.w.AddHardlink(name, t.path, t.off); err != nil {
					return err
				}
				return c.catalog(path, func(cat CatalogWriter) error { return cat.AddHardlink(name) })
			}
		}
		off, ok, err := c.encodeFile(path, name, info)
		if err != nil || !ok {
			return err
		}
		if info.Nlink > 1 {
			c.links[key] = hardlinkTarget{path: path, off: off}
		}
		return nil
	}
	if c.reuse != nil {
		return c.emit(pending{op: opOther, path: path, name: name, info: info})
	}
	return c.writeOther(path, name, info)
}

// catalog feeds the catalog, if there is one.
func (c *creator) catalog(path string, f func(CatalogWriter) error) error {
	if c.opts.Catalog == nil {
		return nil
	}
	if err := f(c.opts.Catalog); err != nil {
		return fmt.Errorf("pxar: catalog: %s: %w", path, err)
	}
	return nil
}

// childDir archives directory path and its tree.
func (c *creator) childDir(path, name string, info *SourceInfo) error {
	var names []string
	d := c.walk.take(path)
	if d != nil {
		names = d.names
		c.aheadTaken(d)
	} else {
		var err error
		if names, err = c.src.ReadDirNames(path); err != nil {
			return c.skip(path, err)
		}
	}
	if r := c.reuse; r != nil {
		if d != nil {
			r.dirs = append(r.dirs, d.prev)
		} else {
			r.dirs = append(r.dirs, c.prevDir(name))
		}
		defer func() { r.dirs = r.dirs[:len(r.dirs)-1] }()
		if err := c.emit(pending{op: opBeginDir, path: path, name: name, info: info}); err != nil {
			return err
		}
		if err := c.dir(path, names, d); err != nil {
			return err
		}
		return c.emit(pending{op: opEndDir, path: path})
	}
	if err := c.w.BeginDir(name, &info.Metadata); err != nil {
		return err
	}
	if err := c.catalog(path, func(cat CatalogWriter) error { return cat.StartDirectory(name) }); err != nil {
		return err
	}
	if err := c.dir(path, names, d); err != nil {
		return err
	}
	if err := c.catalog(path, func(cat CatalogWriter) error { return cat.EndDirectory() }); err != nil {
		return err
	}
	return c.w.EndDir()
}

// encodeFile reads regular file path and writes it with its contents. It
// reports false if the file could not be opened (and was skipped).
func (c *creator) encodeFile(path, name string, info *SourceInfo) (LinkOffset, bool, error) {
	f, err := c.openChecked(path, info)
	if err != nil {
		return 0, false, c.skip(path, err)
	}
	defer f.Close()
	c.walk.passed(path)
	if c.opts.aheadHook != nil {
		c.opts.aheadHook("read", path)
	}
	c.opts.Stats.FilesRead++
	r := &exactReader{r: f, left: int64(info.Size)}
	off, err := c.w.AddFile(name, &info.Metadata, info.Size, r)
	if err != nil {
		return 0, false, err
	}
	if r.err != nil {
		if err := c.skip(path, r.err); err != nil {
			return 0, false, err
		}
	} else if c.opts.Warn != nil {
		var probe [1]byte
		if n, _ := f.Read(probe[:]); n > 0 {
			c.opts.Warn(path, errGrewFile)
		}
	}
	return off, true, c.catalog(path, func(cat CatalogWriter) error { return cat.AddFile(name, info.Size, info.Mtime.Secs) })
}

// errReplaced reports a regular file that became something else between
// its stat and its read.
var errReplaced = errors.New("file replaced while being read")

// openChecked opens regular file path, whose stat is info. With a walker
// that stat is older than the open: if path is another file now (a rename
// replaced it), it is stat'ed again and info updated, so that the
// archived metadata is that of the contents read.
func (c *creator) openChecked(path string, info *SourceInfo) (io.ReadCloser, error) {
	f, err := c.src.Open(path)
	if err != nil || c.walk == nil {
		return f, err
	}
	if fd, ok := f.(*fdFile); ok && !fd.sameFile(info) {
		f.Close()
		fresh, err := c.src.Lstat(path)
		if err != nil {
			return nil, err
		}
		if fresh.Kind != KindFile {
			return nil, errReplaced
		}
		*info = *fresh
		return c.src.Open(path)
	}
	return f, nil
}

// writeOther writes a symlink, device, FIFO or socket.
func (c *creator) writeOther(path, name string, info *SourceInfo) error {
	switch info.Kind {
	case KindSymlink:
		if err := c.w.AddSymlink(name, &info.Metadata, info.LinkTarget); err != nil {
			return err
		}
		return c.catalog(path, func(cat CatalogWriter) error { return cat.AddSymlink(name) })
	case KindCharDev, KindBlockDev:
		if err := c.w.AddDevice(name, &info.Metadata, info.DevMajor, info.DevMinor); err != nil {
			return err
		}
		if info.Kind == KindBlockDev {
			return c.catalog(path, func(cat CatalogWriter) error { return cat.AddBlockDevice(name) })
		}
		return c.catalog(path, func(cat CatalogWriter) error { return cat.AddCharDevice(name) })
	case KindFifo, KindSocket:
		if err := c.w.AddSpecial(name, &info.Metadata); err != nil {
			return err
		}
		if info.Kind == KindFifo {
			return c.catalog(path, func(cat CatalogWriter) error { return cat.AddFifo(name) })
		}
		return c.catalog(path, func(cat CatalogWriter) error { return cat.AddSocket(name) })
	}
	return c.skip(path, fmt.Errorf("unsupported kind %v", info.Kind))
}

// errGrewFile reports a file that was longer than its stat size when read.
var errGrewFile = errors.New("file grew while being archived; archived its first stat size bytes")

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
