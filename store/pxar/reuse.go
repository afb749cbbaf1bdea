package pxar

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"

	"github.com/pbsfs/pbsfs/store/exclude"
)

// Metadata change detection (the PBS client's --change-detection-mode
// metadata): a regular file whose metadata equals its entry in the
// previous snapshot's split archive keeps its payload. Its bytes are not
// read; whole chunks of the previous payload stream holding it are put
// into the new payload stream by reference, and its PAYLOAD_REF points
// into them. Runs of such files that lie back to back in the previous
// payload stream are gathered first (in a bounded list of pending
// entries), then reused together if the chunks covering the run waste at
// most ReusePaddingThreshold of their bytes on data the run does not
// need, or else encoded afresh (their bytes read from the previous
// payload stream where Previous.Payload allows, see prevReadMax).
//
// The rule is the PBS client's (pbs-client/src/pxar/create.rs,
// flush_cached_reusing_if_below_threshold, and look_ahead_cache.rs): it
// applies to each cached range on its own, never to the archive's total.
// A range is the payload of unchanged files lying back to back in the
// previous payload stream; it ends at a changed or new regular file (the
// range is decided without keeping its last chunk), at a file that does
// not follow on (a hole: the last chunk is kept for the next range), when
// the cache is full (last chunk kept), and at the end of the archive.
// padding = bytes of the first chunk before the range + bytes of the last
// chunk after it, minus the bytes of a kept-back chunk the range before
// used when the range starts in it; the files are re-encoded when
// padding / (range length + padding) > 0.1. The client's cache holds up
// to its RLIMIT_NOFILE hard limit minus half the soft limit of entries
// (proxmox-backup-client/src/main.rs; 512 when unset); maxPending plays
// its part here. So a changed file every few small files makes the client
// read the unchanged ones around it again, and pbsfs does the same by
// default (MaxPadding relaxes it), taking the small ones' bytes from the
// previous payload stream instead of the source (prevReadMax); lookAhead
// makes the reading of the others start early.

// ReusePaddingThreshold is the largest share of the reused chunks' bytes
// that may belong to no reused file (the PBS client's
// CHUNK_PADDING_THRESHOLD). Above it, a run of unchanged files is
// encoded afresh rather than reusing mostly foreign chunks.
const ReusePaddingThreshold = 0.1

// prevReadMax is the largest unchanged file of a run encoded afresh
// that is read from the previous payload stream (Previous.Payload)
// instead of the source.
//
// Why: the padding rule makes the client read the unchanged files around
// changed ones again; where a few percent of many small files changed,
// that is most of the tree, each file an open, a stat, two reads and a
// close (and, on a cold page cache, a disk request of its own). Their
// metadata equals the previous entry's, the premise on which metadata mode
// reuses any payload, so their bytes are those the previous payload
// stream holds for them: a few chunks, read once and verified by digest,
// give them all, and the archive written is the one the client writes
// for files that hold what their metadata says. A file is held in
// memory before it is written (a chunk that cannot be read then leaves
// nothing half written, and the file is read from the source instead),
// so only small files are taken this way; the padding rule rarely
// re-reads a large one, whose own bytes outweigh the padding.
const prevReadMax = 1 << 20

// maxPending bounds the entries gathered before a run of unchanged files
// is decided (the PBS client's lookahead cache).
const maxPending = 16384

// PayloadChunk is one chunk of a previous payload stream: its byte range
// [Start, End) in that stream and its digest.
type PayloadChunk struct {
	Start, End uint64
	Digest     [32]byte
}

// ErrChunkUnavailable is returned by a Previous.Inject that cannot supply
// a chunk; the files are then encoded afresh.
var ErrChunkUnavailable = errors.New("previous payload chunk unavailable")

// Previous is the split archive of the previous snapshot that metadata
// change detection compares with.
type Previous struct {
	// Archive is the previous metadata stream (.mpxar) for random access;
	// its payload stream is not read.
	Archive *Archive
	// Chunks are the previous payload stream's chunks, in stream order.
	Chunks []PayloadChunk
	// Inject appends chunks to the new payload stream by reference, at a
	// chunk boundary. It must check that every chunk is available before
	// it changes anything, and fail with ErrChunkUnavailable otherwise.
	Inject func(chunks []PayloadChunk) error
	// Check makes sure chunks are available (and stay so: a chunk store
	// touches them), or fails with ErrChunkUnavailable.
	Check func(chunks []PayloadChunk) error
	// Payload, if not nil, reads the previous payload stream: the
	// unchanged files of a run the padding rule encodes afresh are read
	// from it rather than from the source, where they can be (see
	// prevReadMax).
	Payload io.ReaderAt
	// MaxPadding is the largest share (0 to 1) of a reused run's chunk
	// bytes that no reused file needs; 0 means ReusePaddingThreshold, the
	// PBS client's. 1 reuses every unchanged file whatever its chunks
	// hold besides: no unchanged file is read, at the price of payload
	// streams that keep more old bytes alive.
	MaxPadding float64
}

// ReuseStats counts the work of a metadata-mode backup.
type ReuseStats struct {
	FilesRead       int64  // regular files whose contents were read
	FilesReused     int64  // regular files whose payload was reused
	BytesReused     uint64 // their payload bytes (headers included)
	ChunksInjected  int64  // previous payload chunks reused by reference
	BytesInjected   uint64 // their bytes
	PartialChunks   int64  // reused chunks also holding bytes no file needs
	RunsReencoded   int64  // runs of unchanged files encoded afresh (padding)
	FilesReencoded  int64  // unchanged files among them
	FilesFromPrev   int64  // of those, files read from the previous payload stream
	PrevUnreadable  int64  // files read from the source because their previous payload was not
	ChunksUnusable  int64  // runs encoded afresh because a chunk was missing
	PreviousEntries int64  // previous directory entries compared with
}

// MetadataEqual reports whether a file's metadata a allows reusing the
// payload stored with metadata b: every field the archive stores must be
// equal (the PBS client compares pxar's Metadata as a whole): the full
// mode (type and permission bits), the chattr/FAT flags, uid, gid, mtime
// (seconds and nanoseconds), the xattrs in order, every ACL entry, the
// file capabilities and the quota project id.
func MetadataEqual(a, b *Metadata) bool {
	if a.Mode != b.Mode || a.Flags != b.Flags || a.UID != b.UID || a.GID != b.GID || a.Mtime != b.Mtime {
		return false
	}
	if !slices.EqualFunc(a.Xattrs, b.Xattrs, func(x, y Xattr) bool { return x.Name == y.Name && bytes.Equal(x.Value, y.Value) }) {
		return false
	}
	if !bytes.Equal(a.FCaps, b.FCaps) || (a.FCaps == nil) != (b.FCaps == nil) {
		return false
	}
	if !eqPtr(a.QuotaProjID, b.QuotaProjID) {
		return false
	}
	x, y := &a.ACL, &b.ACL
	return slices.Equal(x.Users, y.Users) && slices.Equal(x.Groups, y.Groups) && eqPtr(x.GroupObj, y.GroupObj) &&
		eqPtr(x.Default, y.Default) && slices.Equal(x.DefaultUsers, y.DefaultUsers) && slices.Equal(x.DefaultGroups, y.DefaultGroups)
}

func eqPtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// reusable returns the payload range [start, end) of the previous entry
// prev (headers included) if a file described by info may reuse it: prev
// is a regular file of the split archive (not a hardlink) with equal
// metadata and, beyond the PBS client's rule, the same size (a file
// rewritten within one mtime tick to another size must not point at the
// old bytes with its new size).
func reusable(prev *Entry, info *SourceInfo) (uint64, uint64, bool) {
	if prev == nil || prev.Kind != KindFile || prev.PayloadOffset < 0 || prev.Size != info.Size {
		return 0, 0, false
	}
	if !MetadataEqual(&prev.Metadata, &info.Metadata) {
		return 0, 0, false
	}
	start := uint64(prev.PayloadOffset)
	return start, start + headerSize + prev.Size, true
}

// pendingOp is what a pending entry does when it is written.
type pendingOp int

const (
	opFile pendingOp = iota
	opBeginDir
	opEndDir
	opOther
)

// pending is an entry gathered while a run of unchanged files is open.
type pending struct {
	op       pendingOp
	path     string
	name     string
	info     *SourceInfo
	reusable bool
	rel      uint64 // payload header offset relative to the run's start
}

// heldChunk is the last chunk of a reused run, kept back because the next
// run may start inside it; it is injected before any other payload.
type heldChunk struct {
	idx    int
	used   uint64 // bytes of it the earlier runs use
	runEnd uint64 // where the earlier run ended in the previous stream
}

// reuser is the metadata-mode state of a creator.
type reuser struct {
	prev       *Previous
	dirs       []map[string]*Entry // previous entries of the open directories (nil: none)
	pending    []pending
	files      int // reusable files in pending
	start, end uint64
	held       *heldChunk
	seen       map[[2]uint64]bool // hardlinked inodes met while pending
	continued  bool               // the run is cut short by a full pending list
	ahead      map[string]bool    // files lookAhead started reading, by path
	buf        []byte             // a file's previous payload item (encodePrev)
}

// prevDir returns the previous entries of the directory name in the
// current previous directory (nil if it has none). The root is "".
func (c *creator) prevDir(name string) map[string]*Entry {
	r := c.reuse
	var top map[string]*Entry
	if name != "" {
		top = r.dirs[len(r.dirs)-1]
	}
	m := r.prevEntries(top, name)
	c.opts.Stats.PreviousEntries += int64(len(m))
	return m
}

// prevEntries returns the previous entries of the directory name among
// the previous entries parent (nil if it has none). The root is "". It
// reads only the previous archive, which is safe for concurrent use, so
// the walker may call it.
func (r *reuser) prevEntries(parent map[string]*Entry, name string) map[string]*Entry {
	var dir *Entry
	if name == "" {
		dir = r.prev.Archive.Root()
	} else {
		if parent == nil || parent[name] == nil || parent[name].Kind != KindDir {
			return nil
		}
		dir = parent[name]
	}
	dr, err := r.prev.Archive.OpenDir(dir)
	if err != nil {
		return nil
	}
	m := make(map[string]*Entry, dr.Len())
	for {
		e, err := dr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		var ce *ChildError
		if errors.As(err, &ce) {
			continue // an unreadable previous entry is simply not reused
		}
		if err != nil {
			return nil
		}
		name := e.Path[len(dir.Path):]
		if dir.Path != "/" {
			name = name[1:]
		} else {
			name = e.Path[1:]
		}
		m[name] = e
	}
	return m
}

// lookAhead stats the entries of directory path (names sorted) before
// they are archived, as the PBS client lists and stats a directory's
// entries first, and starts reading the files aheadFiles names. The
// stats returned (nil where Lstat failed) are those archived.
func (c *creator) lookAhead(path string, names []string) []*SourceInfo {
	r := c.reuse
	infos := make([]*SourceInfo, len(names))
	for i, name := range names {
		if path == "" && name == excludeCLIName {
			continue
		}
		if info, err := c.src.Lstat(join(path, name)); err == nil {
			infos[i] = info
		}
	}
	prev := r.dirs[len(r.dirs)-1]
	if c.pf == nil || prev == nil {
		return infos
	}
	for _, p := range r.aheadFiles(path, names, infos, prev, c.patterns) {
		r.markAhead(p)
		c.pf.add(p, true)
	}
	return infos
}

// markAhead records that the contents of file p are being read ahead.
func (r *reuser) markAhead(p string) {
	if r.ahead == nil {
		r.ahead = map[string]bool{}
	}
	r.ahead[p] = true
}

// aheadFiles returns the paths of the regular files of directory path
// (names sorted, infos their stats, prev the previous snapshot's entries
// of the directory) whose contents will be read from the source all the
// same (not from the previous payload stream, see fromPrev): a run of
// unchanged files that lies between two changed files of the directory,
// whose chunks would be mostly padding (the rule of flush). Without it such a run's
// files are prefetched only when the run ends, just before they are read,
// and a cold backup waits on their reads one run at a time. A run that
// may go on past the directory's subdirectories or ends is left to flush:
// whether it is reused depends on entries not seen yet. It reads only
// what does not change during a backup (the previous archive's chunk
// list and padding limit).
func (r *reuser) aheadFiles(path string, names []string, infos []*SourceInfo, prev map[string]*Entry, patterns exclude.List) []string {
	var out []string
	limit := r.paddingLimit()
	// The run being followed: names[first:] from payload offset start to
	// end; closed says it began after a changed file, so that flush will
	// decide it on its own bytes.
	first, open, closed := 0, false, false
	var start, end uint64
	finish := func(last int) {
		if !open || !closed {
			return
		}
		open = false
		_, _, startPad, endPad, err := r.chunksFor(start, end)
		if err != nil || float64(startPad+endPad) <= limit*float64(end-start+startPad+endPad) {
			return
		}
		for k := first; k < last; k++ {
			if infos[k] != nil && infos[k].Kind == KindFile && !r.fromPrev(infos[k].Size) {
				out = append(out, join(path, names[k]))
			}
		}
	}
	for i, name := range names {
		info := infos[i]
		switch {
		case info == nil || info.Kind == KindDir || info.Kind == KindFile && info.Nlink > 1:
			// Unknown, or the run may go on through a subdirectory or
			// a hardlink: leave it to flush.
			open, closed = false, false
			continue
		case info.Kind != KindFile:
			continue // no payload: the run goes on
		case len(patterns) > 0 && patterns.Excluded(join(path, name), false):
			continue
		}
		s, e, ok := reusable(prev[name], info)
		switch {
		case !ok:
			finish(i)
			open, closed = false, true
		case open && s != end:
			// A hole: flush keeps the last chunk for the next run,
			// which may share it; its rule is no longer known here.
			finish(i)
			first, closed, start, end = i, false, s, e
		case open:
			end = e
		default:
			first, open, start, end = i, true, s, e
		}
	}
	return out
}

// forgetAhead drops the look-ahead marks of directory path's entries.
func (r *reuser) forgetAhead(path string, names []string) {
	if len(r.ahead) == 0 {
		return
	}
	for _, name := range names {
		delete(r.ahead, join(path, name))
	}
}

// emit writes an entry now, or adds it to the pending run.
func (c *creator) emit(p pending) error {
	if c.reuse != nil && len(c.reuse.pending) > 0 {
		return c.addPending(p)
	}
	return c.write(p, 0, readFiles)
}

func (c *creator) addPending(p pending) error {
	r := c.reuse
	r.pending = append(r.pending, p)
	if len(r.pending) >= maxPending {
		return c.flushFull()
	}
	return nil
}

// fileMeta handles a regular file in metadata mode.
func (c *creator) fileMeta(path, name string, info *SourceInfo) error {
	r := c.reuse
	key := [2]uint64{info.Dev, info.Ino}
	p := pending{op: opFile, path: path, name: name, info: info}
	if info.Nlink > 1 {
		if _, ok := c.links[key]; ok || r.seen[key] {
			// A later path of a hardlinked file: written as a HARDLINK,
			// in order, whatever happens to the run.
			return c.emit(p)
		}
		if len(r.pending) > 0 {
			r.seen[key] = true
		}
	}
	var prev *Entry
	if top := r.dirs[len(r.dirs)-1]; top != nil {
		prev = top[name]
	}
	start, end, ok := reusable(prev, info)
	if !ok {
		if err := c.flush(false); err != nil {
			return err
		}
		return c.write(p, 0, readFiles)
	}
	if r.files > 0 && start != r.end {
		if err := c.flush(true); err != nil {
			return err
		}
	}
	if r.files == 0 {
		r.start, r.end = start, start
	}
	p.reusable, p.rel = true, start-r.start
	r.end = end
	r.files++
	if info.Nlink > 1 {
		r.seen[key] = true
	}
	return c.addPending(p)
}

// chunksFor returns the indexes [i, j) of the previous payload chunks
// covering [start, end) and the bytes of them before start and after end.
func (r *reuser) chunksFor(start, end uint64) (int, int, uint64, uint64, error) {
	ch := r.prev.Chunks
	i := sort.Search(len(ch), func(k int) bool { return ch[k].End > start })
	j := sort.Search(len(ch), func(k int) bool { return ch[k].End >= end })
	if i >= len(ch) || j >= len(ch) || ch[i].Start > start {
		return 0, 0, 0, 0, fmt.Errorf("payload range [%d,%d) outside the previous payload stream: %w", start, end, ErrCorrupt)
	}
	return i, j + 1, start - ch[i].Start, ch[j].End - end, nil
}

// injectHeld puts a kept-back chunk into the payload stream.
func (c *creator) injectHeld() error {
	r := c.reuse
	if r == nil || r.held == nil {
		return nil
	}
	h := r.held
	r.held = nil
	return c.inject(r.prev.Chunks[h.idx : h.idx+1])
}

func (c *creator) inject(chunks []PayloadChunk) error {
	if len(chunks) == 0 {
		return nil
	}
	var n uint64
	for _, ch := range chunks {
		n += ch.End - ch.Start
	}
	err := c.w.InjectPayload(n, func() error { return c.reuse.prev.Inject(chunks) })
	if err != nil {
		return err
	}
	st := c.opts.Stats
	st.ChunksInjected += int64(len(chunks))
	st.BytesInjected += n
	return nil
}

// paddingLimit returns the largest share of a reused run's chunk bytes
// that may be padding (Previous.MaxPadding, by default
// ReusePaddingThreshold).
func (r *reuser) paddingLimit() float64 {
	if r.prev.MaxPadding > 0 {
		return r.prev.MaxPadding
	}
	return ReusePaddingThreshold
}

// runDecision is the padding rule's verdict on a run of unchanged files.
type runDecision struct {
	i, j             int    // the run's chunks of the previous archive, [i, j)
	startPad, endPad uint64 // bytes of the first chunk before the run, of the last after it
	sameFirst        bool   // the run starts in held, after the run that kept it
	reread           bool   // mostly padding: the files are read again
}

// decideRun applies the padding rule to the run of unchanged files at
// payload offsets [start, end) of the previous archive: its chunks are
// reused unless padding, the bytes of them no file of the run needs, is
// more than paddingLimit of their bytes. held is the chunk kept back
// from the run before; continued says the run goes on past a full
// pending list (its last chunk's bytes after it are not counted).
func (r *reuser) decideRun(start, end uint64, held *heldChunk, continued bool) (runDecision, error) {
	var d runDecision
	var err error
	d.i, d.j, d.startPad, d.endPad, err = r.chunksFor(start, end)
	if err != nil {
		return d, err
	}
	padding := d.startPad + d.endPad
	total := end - start + padding
	if continued {
		padding -= d.endPad
	}
	// A run starting in the chunk kept back from the run before, after
	// that run's end, shares it: the bytes the earlier run used are not
	// waste, and the chunk is put in once. (A run starting before that
	// end would make payload offsets go backwards, which sequential
	// readers refuse; it gets the chunk again.)
	d.sameFirst = held != nil && held.idx == d.i && start >= held.runEnd
	if d.sameFirst {
		padding -= min(padding, held.used)
	}
	d.reread = float64(padding) > r.paddingLimit()*float64(total)
	return d, nil
}

// flushFull decides a run cut short because the pending list is full:
// the run very likely goes on in its last chunk, which is kept back, so
// that chunk's bytes after the run are not counted as waste (they are if
// the next run does not use them: the PBS client counts them here, and
// with its smaller lookahead cache re-reads unchanged files for it).
func (c *creator) flushFull() error {
	c.reuse.continued = true
	defer func() { c.reuse.continued = false }()
	return c.flush(true)
}

// flush decides the pending run: reuse its chunks if they waste little,
// else encode its files afresh, and writes every pending entry. With
// keepLast, the run's last chunk is kept back for a next run starting in
// it.
func (c *creator) flush(keepLast bool) error {
	r := c.reuse
	if r == nil {
		return nil
	}
	entries := r.pending
	r.pending, r.seen = nil, map[[2]uint64]bool{}
	files, start, end := r.files, r.start, r.end
	r.files = 0
	if files == 0 {
		if len(entries) == 0 {
			return nil
		}
		return c.writeAll(entries, 0, readFiles)
	}
	run, err := r.decideRun(start, end, r.held, r.continued)
	if err != nil {
		return err
	}
	i, j, startPad, endPad := run.i, run.j, run.startPad, run.endPad
	oldHeld, sameFirst := r.held, run.sameFirst
	st := c.opts.Stats
	if run.reread {
		st.RunsReencoded++
		st.FilesReencoded += int64(files)
		c.prefetch(entries, true)
		return c.writeAll(entries, start, reencodeRun)
	}
	if !sameFirst {
		if err := c.injectHeld(); err != nil {
			return err
		}
	}
	base := c.w.PayloadPosition() + startPad
	chunks := r.prev.Chunks[i:j]
	var held *heldChunk
	if keepLast {
		last := chunks[len(chunks)-1]
		err := r.prev.Check(chunks[len(chunks)-1:])
		switch {
		case err == nil:
			held = &heldChunk{idx: j - 1, used: (last.End - last.Start) - endPad, runEnd: end}
			chunks = chunks[:len(chunks)-1]
		case !errors.Is(err, ErrChunkUnavailable):
			return err
		}
	}
	r.held = nil
	if err := c.inject(chunks); err != nil {
		if !errors.Is(err, ErrChunkUnavailable) {
			return err
		}
		// Nothing was injected: read the files instead. A kept-back
		// chunk still completes the run before.
		st.ChunksUnusable++
		if sameFirst {
			r.held = oldHeld
		}
		c.prefetch(entries, false)
		return c.writeAll(entries, 0, readFiles)
	}
	if startPad > 0 {
		st.PartialChunks++
	}
	if endPad > 0 && (j-1 != i || startPad == 0) {
		st.PartialChunks++
	}
	r.held = held
	return c.writeAll(entries, base, reuseRun)
}

// prefetch starts reading the regular files among entries, which are
// about to be read in order; with reencode, not those read from the
// previous payload stream.
func (c *creator) prefetch(entries []pending, reencode bool) {
	for _, p := range entries {
		if p.op == opFile && !(reencode && p.reusable && c.reuse.fromPrev(p.info.Size)) &&
			!c.reuse.ahead[p.path] && !c.walk.fetching(p.path) {
			c.pf.add(p.path, true)
		}
	}
}

// fromPrev reports whether an unchanged file of size bytes in a run
// encoded afresh is read from the previous payload stream.
func (r *reuser) fromPrev(size uint64) bool {
	return r != nil && r.prev.Payload != nil && size <= prevReadMax
}

// runWrite says how writeAll writes the files of a run.
type runWrite int

const (
	readFiles   runWrite = iota // every file read from the source
	reuseRun                    // unchanged files point into the injected chunks at base
	reencodeRun                 // unchanged files encoded afresh, from the previous payload stream at base where they can be
)

// writeAll writes pending entries in order, how says.
func (c *creator) writeAll(entries []pending, base uint64, how runWrite) error {
	for _, p := range entries {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		if err := c.write(p, base, how); err != nil {
			return err
		}
	}
	return nil
}

// write writes one entry; a regular file is a HARDLINK to an earlier
// path of it, a payload reference (reuseRun), or encoded with its
// contents, read from the previous payload stream (reencodeRun) or the
// source.
func (c *creator) write(p pending, base uint64, how runWrite) error {
	switch p.op {
	case opBeginDir:
		return c.w.BeginDir(p.name, &p.info.Metadata)
	case opEndDir:
		return c.w.EndDir()
	case opOther:
		return c.writeOther(p.path, p.name, p.info)
	}
	info := p.info
	key := [2]uint64{info.Dev, info.Ino}
	if info.Nlink > 1 {
		if t, ok := c.links[key]; ok {
			return c.w.AddHardlink(p.name, t.path, t.off)
		}
	}
	var off LinkOffset
	if how == reuseRun && p.reusable {
		var err error
		off, err = c.w.AddPayloadRef(p.name, &info.Metadata, info.Size, base+p.rel)
		if err != nil {
			return err
		}
		c.opts.Stats.FilesReused++
		c.opts.Stats.BytesReused += headerSize + info.Size
	} else {
		if err := c.injectHeld(); err != nil {
			return err
		}
		ok := false
		var err error
		if how == reencodeRun && p.reusable && c.reuse.fromPrev(info.Size) {
			off, ok, err = c.encodePrev(p, base+p.rel)
			if err != nil {
				return err
			}
		}
		if !ok {
			off, ok, err = c.encodeFile(p.path, p.name, info)
			if err != nil || !ok {
				return err
			}
		}
	}
	if info.Nlink > 1 {
		c.links[key] = hardlinkTarget{path: p.path, off: off}
	}
	return nil
}

// encodePrev writes the unchanged file of pending entry p with its
// contents read from the previous payload stream, where its PAYLOAD item
// starts at offset at (see prevReadMax). It reports false, having
// written nothing, if that item cannot be read or is not the file's
// (its size differs): the file is then read from the source.
func (c *creator) encodePrev(p pending, at uint64) (LinkOffset, bool, error) {
	r, info := c.reuse, p.info
	n := headerSize + info.Size
	r.buf = slices.Grow(r.buf[:0], int(n))[:n]
	if _, err := r.prev.Payload.ReadAt(r.buf, int64(at)); err != nil ||
		binary.LittleEndian.Uint64(r.buf) != typePayload || binary.LittleEndian.Uint64(r.buf[8:]) != n {
		c.opts.Stats.PrevUnreadable++
		return 0, false, nil
	}
	c.walk.passed(p.path)
	if c.opts.aheadHook != nil {
		c.opts.aheadHook("previous", p.path)
	}
	off, err := c.w.AddFile(p.name, &info.Metadata, info.Size, bytes.NewReader(r.buf[headerSize:]))
	if err != nil {
		return 0, false, err
	}
	c.opts.Stats.FilesFromPrev++
	return off, true, c.catalog(p.path, func(cat CatalogWriter) error { return cat.AddFile(p.name, info.Size, info.Mtime.Secs) })
}
