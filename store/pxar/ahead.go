package pxar

import (
	"context"
	"fmt"
	"io"
	"runtime/trace"
	"slices"
	"strings"
	"sync"

	"github.com/pbsfs/pbsfs/store/exclude"
)

// The walker lists and stats the tree ahead of the encoder, on a
// goroutine of its own with a DirSource of its own, in the encoder's
// order (depth first, names byte-sorted, the same exclusions), and hands
// each directory's names, stats and previous entries to the encoder,
// which then only opens and reads the files it must read.
//
// Why: the encoder is one goroutine, and everything on it is on the
// backup's critical path. Without the walker it listed each directory,
// stat'ed its entries (a stat, an open, the xattrs and flags of every
// file), read the previous archive's entries and only then started the
// reads of the files it would need, one directory at a time: on a cold
// page cache it waited for the disk at every directory, and while it
// chunked one large file nothing else of the tree was looked at. The
// walker runs that work on the other cores and as far ahead as its
// bounds allow, and asks the kernel to read ahead the contents of the
// files the encoder will read (every file without metadata change
// detection; with it the changed and new files and the unchanged ones
// the padding rule will read again from the source, see
// reuser.aheadFiles).
//
// The stats the encoder archives are the walker's, taken earlier than
// without it. A file changed in place afterwards is archived with the
// walker's stat (its size: exactReader pads or cuts, and reports), as a
// file changed between the encoder's stat and its read always was; a
// file replaced by another (a rename over it) is noticed when the encoder
// opens it (another inode) and stat'ed again then, so its metadata and
// contents match (creator.openChecked).

// Bounds of the walker's lead: directory entries listed and stat'ed but
// not yet taken by the encoder, and bytes of file contents asked to be
// read ahead of the encoder's position.
const (
	aheadEntries = 8192
	aheadBytes   = 64 << 20
)

// aheadDir is one directory as the walker found it.
type aheadDir struct {
	path  string
	names []string      // byte-sorted
	infos []*SourceInfo // stats of names; nil where the walker's Lstat failed
	// prev are the previous snapshot's entries of the directory (metadata
	// mode; nil if none), prevN how many (-1: the walker could not list
	// the directory).
	prev  map[string]*Entry
	prevN int64
}

// aheadFile is a file whose contents the walker asked to be read ahead.
type aheadFile struct {
	path  string
	bytes int64
}

// walker is the goroutine listing the tree ahead of the encoder.
type walker struct {
	ctx   context.Context
	src   *DirSource
	pf    *prefetcher
	reuse *reuser // metadata mode: only its read-only parts are used
	excl  exclude.List
	run   aheadRun
	links map[[2]uint64]bool // hardlinked inodes met
	// hook, when set, is told ("dir", path) after each directory was
	// listed and stat'ed, before the encoder may take it, and ("fetch",
	// path) for each file read ahead (tests).
	hook func(event, path string)

	items chan *aheadDir
	next  *aheadDir // received by take, not yet asked for (encoder's goroutine)
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once

	mu      sync.Mutex
	cond    *sync.Cond
	entries int         // listed, not taken
	bytes   int64       // of files read ahead the encoder has not passed
	fetched []aheadFile // those files, in walk order
	queued  map[string]bool
	stopped bool
}

// newWalker starts a walker over the tree of src (a DirSource only: its
// listing and stats are the live tree's, whatever goroutine asks) and
// returns it, or nil when src is another Source.
func (c *creator) newWalker(src Source) *walker {
	ds, ok := src.(*DirSource)
	if !ok || c.pf == nil {
		return nil
	}
	w := &walker{
		ctx:    c.ctx,
		src:    &DirSource{Root: ds.Root, SkipXattrs: ds.SkipXattrs, SkipFlags: ds.SkipFlags, OneFileSystem: ds.OneFileSystem},
		pf:     c.pf,
		reuse:  c.reuse,
		excl:   slices.Clone(c.opts.Exclude),
		hook:   c.opts.aheadHook,
		items:  make(chan *aheadDir, 1024),
		stop:   make(chan struct{}),
		queued: map[string]bool{},
		links:  map[[2]uint64]bool{},
	}
	w.cond = sync.NewCond(&w.mu)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer close(w.items)
		defer w.src.Close()
		var prev map[string]*Entry
		if w.reuse != nil {
			prev = w.reuse.prevEntries(nil, "")
		}
		w.walk("", prev, len(prev))
		if w.reuse != nil {
			w.flushRun(false)
		}
		trace.Log(w.ctx, "pxar", "walker done")
	}()
	return w
}

// close stops the walker and waits for it.
func (w *walker) close() {
	if w == nil {
		return
	}
	w.once.Do(func() {
		close(w.stop)
		w.mu.Lock()
		w.stopped = true
		w.cond.Broadcast()
		w.mu.Unlock()
		for range w.items {
		}
		w.wg.Wait()
	})
}

func (w *walker) done() bool {
	select {
	case <-w.stop:
		return true
	default:
		return w.ctx.Err() != nil
	}
}

// walk lists and stats directory path and its subtree (prev: its
// previous entries, n of them), handing each directory to the encoder
// before it goes through the entries in order, as the encoder will.
func (w *walker) walk(path string, prev map[string]*Entry, n int) {
	if w.done() {
		return
	}
	names, err := w.src.ReadDirNames(path)
	if err != nil {
		// The encoder lists it again and reports the error.
		w.send(&aheadDir{path: path, prevN: -1})
		return
	}
	slices.Sort(names)
	if _, ok := slices.BinarySearch(names, ".pxarexclude"); ok {
		k := len(w.excl)
		defer func() { w.excl = w.excl[:k] }()
		l, _, _ := readExcludeFile(w.src, path)
		w.excl = append(w.excl, l...)
	}
	// The inodes first, in parallel: the stats below then find them
	// cached on a cold page cache.
	for _, name := range names {
		w.pf.wait(join(path, name), false, w.stop)
	}
	infos := make([]*SourceInfo, len(names))
	for i, name := range names {
		if path == "" && name == excludeCLIName {
			continue
		}
		if info, err := w.src.Lstat(join(path, name)); err == nil {
			infos[i] = info
		}
	}
	w.src.dropPending()
	if w.hook != nil {
		w.hook("dir", path)
	}
	if path != "" && !strings.Contains(path, "/") {
		trace.Log(w.ctx, "pxar", "walker at "+path)
	}
	if !w.acquire(len(names)) || !w.send(&aheadDir{path: path, names: names, infos: infos, prev: prev, prevN: int64(n)}) {
		return
	}
	for i, name := range names {
		info, p := infos[i], join(path, name)
		if info == nil || w.excluded(p, info.Kind == KindDir) {
			continue
		}
		switch {
		case info.Kind == KindDir:
			var sub map[string]*Entry
			if w.reuse != nil {
				sub = w.reuse.prevEntries(prev, name)
			}
			w.walk(p, sub, len(sub))
		case info.Kind != KindFile:
		case info.Nlink > 1 && w.linkSeen(info):
			// A later path of a hardlinked file: a HARDLINK, never read.
		case w.reuse == nil:
			w.fetch(p, info.Size)
		default:
			w.file(p, info, prev[name])
		}
		if w.done() {
			return
		}
	}
}

func (w *walker) excluded(path string, dir bool) bool {
	return len(w.excl) > 0 && w.excl.Excluded(path, dir)
}

// linkSeen reports whether the hardlinked file info was met before, and
// remembers it.
func (w *walker) linkSeen(info *SourceInfo) bool {
	key := [2]uint64{info.Dev, info.Ino}
	if w.links[key] {
		return true
	}
	w.links[key] = true
	return false
}

// aheadRun follows the runs of unchanged files as the encoder will form
// them (creator.fileMeta and flush), across directories, so that the
// walker can tell which files the padding rule will have read again.
type aheadRun struct {
	files      []aheadFile
	start, end uint64
	held       *heldChunk
}

// file follows regular file path (stat info, previous entry prev) in
// metadata mode: a changed or new file is read, an unchanged one joins
// the run.
func (w *walker) file(path string, info *SourceInfo, prev *Entry) {
	r := &w.run
	start, end, ok := reusable(prev, info)
	if !ok {
		w.flushRun(false)
		r.held = nil // the file read puts a kept-back chunk in first
		w.fetch(path, info.Size)
		return
	}
	if len(r.files) > 0 && start != r.end {
		w.flushRun(true)
	}
	if len(r.files) == 0 {
		r.start = start
	}
	r.end = end
	r.files = append(r.files, aheadFile{path, int64(info.Size)})
}

// flushRun decides the run as creator.flush will (without a full
// pending list's exception): if its chunks would be mostly padding its
// files are read again, and read ahead now.
func (w *walker) flushRun(keepLast bool) {
	r := &w.run
	files := r.files
	r.files = nil
	if len(files) == 0 {
		return
	}
	run, err := w.reuse.decideRun(r.start, r.end, r.held, false)
	r.held = nil
	if err != nil {
		return
	}
	if run.reread {
		for _, f := range files {
			if !w.reuse.fromPrev(uint64(f.bytes)) {
				w.fetch(f.path, uint64(f.bytes))
			}
		}
		return
	}
	if keepLast {
		last := w.reuse.prev.Chunks[run.j-1]
		r.held = &heldChunk{idx: run.j - 1, used: (last.End - last.Start) - run.endPad, runEnd: r.end}
	}
}

// fetch asks for the contents of file path (size bytes) to be read
// ahead, once the lead allows.
func (w *walker) fetch(path string, size uint64) {
	if size == 0 {
		return
	}
	n := int64(min(size, prefetchMax))
	w.mu.Lock()
	for !w.stopped && w.bytes > 0 && w.bytes+n > aheadBytes {
		w.cond.Wait()
	}
	w.bytes += n
	w.fetched = append(w.fetched, aheadFile{path, n})
	w.queued[path] = true
	w.mu.Unlock()
	if w.hook != nil {
		w.hook("fetch", path)
	}
	w.pf.wait(path, true, w.stop)
}

// passed tells the walker that the encoder is at path (preorder): the
// files read ahead before it no longer count against the lead.
func (w *walker) passed(path string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	k := 0
	for k < len(w.fetched) && !preorderLess(path, w.fetched[k].path) {
		w.bytes -= w.fetched[k].bytes
		delete(w.queued, w.fetched[k].path)
		k++
	}
	if k > 0 {
		w.fetched = w.fetched[k:]
		w.cond.Broadcast()
	}
	w.mu.Unlock()
}

// fetching reports whether the walker asked for file path to be read
// ahead and the encoder has not passed it.
func (w *walker) fetching(path string) bool {
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.queued[path]
}

// acquire waits until entries more fit in the walker's lead.
func (w *walker) acquire(entries int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for !w.stopped && w.entries > 0 && w.entries+entries > aheadEntries {
		w.cond.Wait()
	}
	w.entries += entries
	return !w.stopped
}

func (w *walker) send(d *aheadDir) bool {
	select {
	case w.items <- d:
		return true
	case <-w.stop:
		return false
	}
}

// take returns the walker's directory path, dropping the directories
// before it that the encoder did not ask for (excluded or skipped), or
// nil if the walker has none: it stopped, failed to list path, or never
// came to it (it saw no directory there), and then the directories after
// path stay for the encoder's next takes.
func (w *walker) take(path string) *aheadDir {
	if w == nil {
		return nil
	}
	w.passed(path)
	for {
		d := w.next
		if d == nil {
			var ok bool
			if d, ok = <-w.items; !ok {
				return nil
			}
		}
		if preorderLess(path, d.path) {
			w.next = d
			return nil
		}
		w.next = nil
		w.mu.Lock()
		w.entries -= len(d.names)
		w.cond.Broadcast()
		w.mu.Unlock()
		if d.path == path {
			if d.prevN < 0 {
				return nil
			}
			return d
		}
	}
}

// preorderLess reports whether path a comes before path b in a depth
// first walk with byte-sorted names: comparing them bytewise with '/'
// below every other byte (names hold neither '/' nor NUL), an ancestor
// being a prefix.
func preorderLess(a, b string) bool {
	for i := range min(len(a), len(b)) {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if x == '/' {
			x = 0
		}
		if y == '/' {
			y = 0
		}
		return x < y
	}
	return len(a) < len(b)
}

// readExcludeFile returns the patterns of directory path's .pxarexclude
// file; err says why the file could not be read, bad which of its
// patterns were wrong.
func readExcludeFile(src Source, path string) (l exclude.List, bad []error, err error) {
	f, err := src.Open(join(path, ".pxarexclude"))
	if err != nil {
		return nil, nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxExcludeFile+1))
	f.Close()
	if err == nil && len(data) > maxExcludeFile {
		err = fmt.Errorf("larger than %d bytes", maxExcludeFile)
	}
	if err != nil {
		return nil, nil, err
	}
	l, bad = exclude.ParseFile(data, path)
	return l, bad, nil
}
