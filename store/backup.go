package store

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pbsfs/pbsfs/store/catalog"
	"github.com/pbsfs/pbsfs/store/crypto"
	"github.com/pbsfs/pbsfs/store/lock"
	"github.com/pbsfs/pbsfs/store/pxar"
)

// DefaultOwner is the owner written for new groups.
const DefaultOwner = "root@pam"

// BackupOptions configure a backup session.
type BackupOptions struct {
	// Owner is the Authid recorded for a new group (DefaultOwner if empty).
	Owner string
	// Workers is the number of goroutines hashing, compressing and
	// storing chunks. The default, four per CPU, keeps the CPUs busy while
	// some workers wait for fsync.
	Workers int
	// Key, when set, encrypts every chunk and blob and signs the manifest
	// (crypt mode encrypt, crypto.md §3.5); with SignOnly the data stays
	// plain and only the manifest is signed (crypt mode sign-only).
	Key      *crypto.Key
	SignOnly bool
	// MemoryBudget bounds the bytes of chunk data and encoded chunks in
	// flight between the chunker and the chunk store (DefaultMemoryBudget
	// if 0). A chunk waits for room before it is queued, so a backup's
	// memory does not grow with the number of workers or the input.
	MemoryBudget int64
	// ChunkSync is how new chunks are made durable in batches (SyncFS:
	// one syncfs per batch; see ChunkBatch). BatchBytes is the batch size
	// (DefaultBatchBytes if 0).
	ChunkSync  SyncMode
	BatchBytes int64

	batchHook func(BatchEvent) error // ChunkBatch.Hook (tests)
}

// DefaultMemoryBudget is the default BackupOptions.MemoryBudget: room for
// a few average chunks per CPU of this size of machine, in buffers and
// encoded blobs, while some wait for fsync.
const DefaultMemoryBudget = 48 << 20

// cryptMode returns the crypt mode the options give every archive.
func (o BackupOptions) cryptMode() string {
	switch {
	case o.Key == nil:
		return CryptNone
	case o.SignOnly:
		return CryptSignOnly
	}
	return CryptEncrypt
}

// BackupStats counts the work of a backup session. It is updated while the
// session runs and may be read concurrently.
type BackupStats struct {
	BytesRead    atomic.Int64 // archive bytes read from the source
	NewChunks    atomic.Int64 // chunks written to the store
	ReusedChunks atomic.Int64 // chunks already present (touched, not written)
	BytesWritten atomic.Int64 // encoded bytes written: chunks, indexes, blobs
	ChunkBytes   atomic.Int64 // plain bytes of new chunks
	// InjectedChunks and InjectedBytes count the chunks of the previous
	// snapshot's payload stream reused by reference (metadata change
	// detection): neither read from the source nor hashed.
	InjectedChunks atomic.Int64
	InjectedBytes  atomic.Int64
}

// Backup is a running backup session: one new snapshot of one group
// (§5.4). It holds the group lock, an exclusive lock on the new snapshot,
// a shared lock on the previous finished snapshot (the base) and the
// shared process lock until Finish or Abort.
type Backup struct {
	s       *Store
	ref     SnapshotRef
	opts    BackupOptions
	base    *SnapshotInfo
	files   []FileInfo
	started time.Time
	Stats   BackupStats

	mode    string         // crypt mode of every archive
	mem     *memBudget     // bytes of chunks in flight, shared by all streams
	batch   *ChunkBatch    // new chunks of a disk store, synced in batches (nil on S3)
	pool    *bufPool       // chunk buffers, with a batch (nil: heap buffers; see bufPool)
	dec     *ChunkDecoder  // names chunks: keyed digests when encrypting
	release []func() error // undone in reverse order
	done    bool
	// directReads counts the image chunks read with O_DIRECT (tests).
	directReads atomic.Int64

	catalog       *catalog.Writer // catalog of plain pxar archives, if any
	catalogStream *StreamWriter
}

// WritersDir is the directory where pbsfs writers register themselves for
// cross-process collectors (design/gc-safety.md, hazard 1).
func (s *Store) WritersDir() string {
	return filepath.Join(s.rtDir, "pbsfs", s.name, "writers")
}

// StartBackup begins a backup of group g at backup time t (whole seconds,
// later than every finished snapshot of the group).
func (s *Store) StartBackup(ctx context.Context, g GroupRef, t time.Time, opts BackupOptions) (*Backup, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	t = t.UTC().Truncate(time.Second)
	if t.Unix() < 1 {
		return nil, fmt.Errorf("backup time %v: %w", t, ErrInvalidName)
	}
	if opts.Owner == "" {
		opts.Owner = DefaultOwner
	}
	if opts.Workers <= 0 {
		opts.Workers = 4 * runtime.GOMAXPROCS(0)
	}
	if opts.MemoryBudget <= 0 {
		opts.MemoryBudget = DefaultMemoryBudget
	}
	if opts.SignOnly && opts.Key == nil {
		return nil, errors.New("sign-only backup without a key")
	}
	b := &Backup{s: s, ref: SnapshotRef{Group: g, Time: t}, opts: opts, started: time.Now(), mode: opts.cryptMode(), dec: s.plain,
		mem: newMemBudget(opts.MemoryBudget)}
	if b.mode == CryptEncrypt {
		b.dec = s.EncryptedDecoder(opts.Key)
	}
	if fc, ok := s.backend.(*FileChunkStore); ok && fc == s.chunks {
		b.batch = fc.NewBatch(opts.BatchBytes, 0, opts.ChunkSync)
		b.batch.Hook = opts.batchHook
		// A ChunkBatch has written a blob when Insert returns, so its
		// buffer can go back to the pool then (a remote backend's HTTP
		// transport may read a body after its request returned).
		b.pool = &s.pool
		b.pool.acquire()
		b.release = append(b.release, func() error { b.pool.release(); return nil })
	}
	if err := b.start(ctx); err != nil {
		b.unlock()
		return nil, err
	}
	return b, nil
}

func (b *Backup) start(ctx context.Context) error {
	s, g, ns := b.s, b.ref.Group, b.ref.Group.NS.Components()
	if err := s.mkdirAll(g.Dir(), 0o755); err != nil {
		return fmt.Errorf("backup %s: %w", b.ref, err)
	}
	gl, err := s.locks.LockGroup(ns, g.Type, g.ID, true)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	b.release = append(b.release, gl.Unlock)
	if err := s.ensureOwner(ctx, g, b.opts.Owner); err != nil {
		return err
	}
	base, ok, err := s.LastFinished(g)
	if err != nil {
		return err
	}
	if ok {
		if !base.Ref.Time.Before(b.ref.Time) {
			return fmt.Errorf("backup time %s is not after the last snapshot %s: %w", b.ref.TimeString(), base.Ref.TimeString(), ErrExists)
		}
		if m, err := s.LoadManifest(base.Ref); err == nil {
			if v, ok := m.Verify(); (!ok || v.State != "failed") && b.sameKey(m) {
				bl, err := s.locks.LockSnapshot(ns, g.Type, g.ID, base.Ref.TimeString(), false)
				if err != nil {
					return fmt.Errorf("base: %w", err)
				}
				b.release = append(b.release, bl.Unlock)
				b.base = &base
			}
		}
	}
	reg, err := lock.RegisterWriter(s.WritersDir())
	if err != nil {
		return fmt.Errorf("register writer: %w", err)
	}
	b.release = append(b.release, reg.Release)
	// A collector outside the initial pid namespace upgrades its lock
	// for an instant to prove nobody else holds one (lock.OtherHolders);
	// a short retry rides that out, a PBS garbage collection does not.
	guard, err := s.plock.Shared()
	for i := 0; i < 10 && errors.Is(err, ErrLocked); i++ {
		time.Sleep(10 * time.Millisecond)
		guard, err = s.plock.Shared()
	}
	if err != nil {
		return fmt.Errorf("datastore %s: %w", s.root, err)
	}
	b.release = append(b.release, guard.Release)
	sl, err := s.locks.LockSnapshot(ns, g.Type, g.ID, b.ref.TimeString(), true)
	if err != nil {
		return err
	}
	b.release = append(b.release, sl.Unlock)
	if err := os.Mkdir(s.Path(b.ref.Dir()), 0o755); err != nil {
		if os.IsExist(err) {
			return fmt.Errorf("snapshot %s: %w", b.ref, ErrExists)
		}
		return fmt.Errorf("snapshot %s: %w", b.ref, err)
	}
	if err := s.owner.chown(s.Path(b.ref.Dir())); err != nil {
		return fmt.Errorf("snapshot %s: %w", b.ref, err)
	}
	return nil
}

// sameKey reports whether the previous snapshot whose manifest is m was
// written with the session's key (or both without one): only then is it
// a base (crypto.md §3.3: another key's snapshot is not reused).
func (b *Backup) sameKey(m *Manifest) bool {
	fp, ok, err := m.KeyFingerprint()
	if err != nil {
		return false
	}
	if b.opts.Key == nil {
		return !ok && !m.Encrypted()
	}
	return ok && fp == b.opts.Key.Fingerprint()
}

// ensureOwner writes the owner file of a new group (create-new).
func (s *Store) ensureOwner(ctx context.Context, g GroupRef, owner string) error {
	p := s.Path(path.Join(g.Dir(), OwnerName))
	if ok, err := exists(p); err != nil || ok {
		return err
	}
	return s.writeFile(ctx, p, []byte(owner+"\n"))
}

func (b *Backup) unlock() {
	for i := len(b.release) - 1; i >= 0; i-- {
		if err := b.release[i](); err != nil {
			b.s.log.Warn("release lock", "snapshot", b.ref.String(), "err", err)
		}
	}
	b.release = nil
}

// Ref returns the snapshot being written.
func (b *Backup) Ref() SnapshotRef { return b.ref }

// Base returns the previous finished snapshot the session holds, if any.
func (b *Backup) Base() (SnapshotInfo, bool) {
	if b.base == nil {
		return SnapshotInfo{}, false
	}
	return *b.base, true
}

func (b *Backup) archivePath(file string) (string, error) {
	if err := validArchiveName(file); err != nil {
		return "", err
	}
	if file == ManifestName || file == ClientLogName {
		return "", fmt.Errorf("archive name %q is reserved: %w", file, ErrInvalidName)
	}
	for _, f := range b.files {
		if f.Filename == file {
			return "", fmt.Errorf("archive %s written twice: %w", file, ErrExists)
		}
	}
	return b.s.Path(path.Join(b.ref.Dir(), file)), nil
}

// AddBlob stores data as blob archive name (".blob" is appended), e.g.
// "qemu-server.conf". ctx ends the upload of a store in a bucket; once
// it is done, nothing is written.
func (b *Backup) AddBlob(ctx context.Context, name string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	file := name + ".blob"
	p, err := b.archivePath(file)
	if err != nil {
		return err
	}
	var blob []byte
	if b.mode == CryptEncrypt {
		blob, err = b.s.codec.AppendEncodeEncrypted(nil, data, b.opts.Key, true)
	} else {
		blob, err = b.s.codec.Encode(data, true)
	}
	if err != nil {
		return fmt.Errorf("blob %s: %w", name, err)
	}
	if err := b.s.writeFile(ctx, p, blob); err != nil {
		return err
	}
	sum := sha256.Sum256(blob)
	b.files = append(b.files, FileInfo{Filename: file, CryptMode: b.mode, Size: uint64(len(blob)), Csum: hex.EncodeToString(sum[:])})
	b.Stats.BytesRead.Add(int64(len(data)))
	b.Stats.BytesWritten.Add(int64(len(blob)))
	return nil
}

// AddImage stores the size bytes read from r as fixed-index archive name
// (".fidx" is appended), e.g. "drive-scsi0.img", in 4 MiB chunks.
func (b *Backup) AddImage(ctx context.Context, name string, r io.Reader, size uint64) error {
	file := name + ".fidx"
	p, err := b.archivePath(file)
	if err != nil {
		return err
	}
	w, err := CreateFixedIndex(p, size, FixedChunkSize)
	if err != nil {
		return err
	}
	if err := b.s.owner.chownFile(w.tmp); err != nil {
		w.Abort()
		return err
	}
	record := func(c chunkRef) error { return w.Add(c.end, c.length, c.digest) }
	if src, base, ok := positioned(r); ok {
		err = b.readImageAt(ctx, src, base, size, record)
	} else {
		err = b.readImage(ctx, r, size, record)
	}
	if err != nil {
		w.Abort()
		return fmt.Errorf("image %s: %w", name, err)
	}
	if err := b.flushChunks(ctx); err != nil {
		w.Abort()
		return fmt.Errorf("image %s: %w", name, err)
	}
	csum, err := w.Close()
	if err == nil {
		err = b.s.mirrorFile(ctx, p)
	}
	if err != nil {
		return err
	}
	b.Stats.BytesWritten.Add(int64(indexHeaderSize + 32*len(w.digests)))
	b.files = append(b.files, FileInfo{Filename: file, CryptMode: b.mode, Size: size, Csum: hex.EncodeToString(csum[:])})
	return nil
}

// readImage stores the size bytes read from r in fixed chunks: this
// goroutine reads each into a buffer and hands it to the uploader's
// workers.
func (b *Backup) readImage(ctx context.Context, r io.Reader, size uint64, record func(chunkRef) error) error {
	up := b.newUploader(ctx, record)
	var off uint64
	for off < size {
		n := min(uint64(FixedChunkSize), size-off)
		buf := b.getBuf(chunkHeadroom + int(n))
		if _, err := io.ReadFull(r, buf[chunkHeadroom:]); err != nil {
			b.putBuf(buf)
			up.abort(err)
			break
		}
		off += n
		b.Stats.BytesRead.Add(int64(n))
		if !up.submit(buf, off) {
			break
		}
	}
	if err := up.wait(); err != nil {
		return err
	}
	var extra [1]byte
	if n, _ := r.Read(extra[:]); n > 0 {
		return fmt.Errorf("source is longer than %d bytes", size)
	}
	return nil
}

// readerAtSeeker is a source that can be read at any offset.
type readerAtSeeker interface {
	io.ReaderAt
	io.Seeker
}

// positioned returns r as a source readable at offsets, and its current
// offset, when it is one (a file or block device: not a pipe).
func positioned(r io.Reader) (readerAtSeeker, int64, bool) {
	src, ok := r.(readerAtSeeker)
	if !ok {
		return nil, 0, false
	}
	base, err := src.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, 0, false
	}
	return src, base, true
}

// readImageAt stores the size bytes of src from offset base in fixed
// chunks, as readImage does, except that every worker reads its own
// chunks (with O_DIRECT when src allows, see openDirect; else pread
// through the page cache) and hashes each right after reading it: no
// handoff of buffers between goroutines. On success src's offset is left
// after the bytes read, as a sequential read would.
func (b *Backup) readImageAt(ctx context.Context, src readerAtSeeker, base int64, size uint64, record func(chunkRef) error) error {
	u := b.uploaderOnly(ctx, record)
	u.compute = make(chan struct{}, runtime.GOMAXPROCS(0))
	if d := openDirect(src, base); d != nil {
		defer d.Close()
		u.direct = d
	}
	chunks := (size + FixedChunkSize - 1) / FixedChunkSize
	var next atomic.Uint64
	for range b.opts.Workers {
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			for i := next.Add(1) - 1; i < chunks; i = next.Add(1) - 1 {
				err := u.ctx.Err()
				if err == nil {
					err = u.readChunkAt(src, base, i, size)
				}
				if err != nil {
					u.abort(err)
					return
				}
			}
		}()
	}
	if err := u.wait(); err != nil {
		return err
	}
	var extra [1]byte
	if n, _ := src.ReadAt(extra[:], base+int64(size)); n > 0 {
		return fmt.Errorf("source is longer than %d bytes", size)
	}
	if _, err := src.Seek(base+int64(size), io.SeekStart); err != nil {
		return err
	}
	return nil
}

// readChunkAt reads chunk i of the image at base in src (with O_DIRECT
// when the uploader has a direct source), hashes it right after
// (unencrypted archives), and stores it.
func (u *uploader) readChunkAt(src io.ReaderAt, base int64, i, size uint64) error {
	off := i * FixedChunkSize
	n := int(min(uint64(FixedChunkSize), size-off))
	at := base + int64(off)
	job := upJob{end: off + uint64(n), blob: int64(blobBound(n))}
	direct := u.direct != nil && !u.noDirect.Load()
	if direct {
		job.held = u.b.bufHeld(directAlign + alignUp(n))
	} else {
		job.held = u.b.bufHeld(chunkHeadroom + n)
	}
	if err := u.b.mem.acquire(u.ctx, job.held+job.blob); err != nil {
		return err
	}
	if u.compute != nil {
		select {
		case u.compute <- struct{}{}:
			job.compute = true
		case <-u.ctx.Done():
			u.discard(&job)
			return u.ctx.Err()
		}
	}
	if direct {
		var err error
		if direct, err = u.readDirect(&job, at, n); err != nil {
			u.discard(&job)
			return err
		}
	}
	if !direct {
		job.buf = u.b.getBuf(chunkHeadroom + n)
		job.data = job.buf[chunkHeadroom:]
		// One read of the whole chunk: pieceSum hashes it 32 KiB at a
		// time and computes the CRC of each piece right after, while it
		// is in the first-level cache, so reading it in smaller pieces
		// spares nothing but costs a system call each (and, for each
		// read the scheduler sees blocking, a handoff of the worker's P).
		if _, err := src.ReadAt(job.data, at); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			u.discard(&job)
			return fmt.Errorf("read at %d: %w", at, err)
		}
	}
	u.b.Stats.BytesRead.Add(int64(n))
	return u.store(job)
}

// discard gives back what a job not handed to store holds: its buffer,
// its budget and its compute token.
func (u *uploader) discard(job *upJob) {
	if job.buf != nil {
		u.b.putBuf(job.buf)
		job.buf, job.data = nil, nil
	}
	u.b.mem.release(job.held + job.blob)
	u.endCompute(job)
}

// cachePiece is how many bytes pieceSum hashes before it computes their
// CRC32: few enough that the CRC reads them from the CPU's first-level
// cache.
const cachePiece = 32 << 10

// pieceSum computes a chunk's SHA-256 and, when the chunk is expected to
// be stored uncompressed, the CRC32 of its data (which is then the
// blob's CRC) in one pass, cachePiece bytes at a time: the CRC of a 4 MiB
// chunk read back from memory after hashing cost 0.05-0.08x its SHA-256
// on the test machine, of bytes still in the first-level cache next to
// nothing.
type pieceSum struct {
	h   hash.Hash
	crc uint32
	// withCRC: compute the CRC (the uploader's last chunk was stored
	// uncompressed, so this one likely is too).
	withCRC bool
}

// newPieceSum returns a pieceSum for the next chunk of an unencrypted
// archive.
func (u *uploader) newPieceSum() *pieceSum {
	return &pieceSum{h: sha256.New(), withCRC: !u.compressed.Load()}
}

// write adds data to the sums.
func (ps *pieceSum) write(data []byte) {
	for len(data) > 0 {
		piece := data[:min(cachePiece, len(data))]
		ps.h.Write(piece)
		if ps.withCRC {
			ps.crc = crc32.Update(ps.crc, crc32.IEEETable, piece)
		}
		data = data[len(piece):]
	}
}

// sums returns the digest and, when crcKnown, the CRC32 of the data.
func (ps *pieceSum) sums() (d Digest, crc uint32, crcKnown bool) {
	ps.h.Sum(d[:0])
	return d, ps.crc, ps.withCRC
}

// StreamWriter cuts a stream into content-defined chunks as it is written
// and records them in a dynamic index. Close finishes the archive.
type StreamWriter struct {
	ctx    context.Context // of CreateStream (the uploader's ends at Close)
	b      *Backup
	name   string
	file   string
	w      *DynamicIndexWriter
	ch     *Chunker
	up     *uploader
	buf    []byte // chunkHeadroom bytes, then the chunk being cut
	off    uint64
	done   []chunkRef // uploaded chunks, in completion order
	closed bool
}

// CreateStream starts dynamic-index archive name (".didx" is appended),
// e.g. "root.pxar", chunked with average chunk size avg.
func (b *Backup) CreateStream(ctx context.Context, name string, avg int) (*StreamWriter, error) {
	file := name + ".didx"
	p, err := b.archivePath(file)
	if err != nil {
		return nil, err
	}
	ch, err := NewChunker(avg)
	if err != nil {
		return nil, err
	}
	w, err := CreateDynamicIndex(p)
	if err != nil {
		return nil, err
	}
	if err := b.s.owner.chownFile(w.tmp); err != nil {
		w.Abort()
		return nil, err
	}
	sw := &StreamWriter{ctx: ctx, b: b, name: name, file: file, w: w, ch: ch}
	sw.buf = sw.newBuf(chunkHeadroom)
	// Workers finish in any order; the entries are written sorted at Close.
	sw.up = b.newUploader(ctx, func(c chunkRef) error {
		sw.done = append(sw.done, c)
		return nil
	})
	// Reserve the placeholder so the manifest lists it in write order.
	b.files = append(b.files, FileInfo{Filename: file, CryptMode: b.mode})
	return sw, nil
}

// Write feeds stream bytes to the chunker.
func (sw *StreamWriter) Write(p []byte) (int, error) {
	if sw.closed {
		return 0, fmt.Errorf("stream %s: write after close", sw.name)
	}
	total := len(p)
	for len(p) > 0 {
		n, cut := sw.ch.Scan(p)
		if len(sw.buf)+n > cap(sw.buf) {
			sw.buf = sw.b.growBuf(sw.buf, len(sw.buf)+n)
		}
		sw.buf = append(sw.buf, p[:n]...)
		p = p[n:]
		if cut {
			if err := sw.emit(); err != nil {
				return total - len(p), err
			}
		}
	}
	sw.b.Stats.BytesRead.Add(int64(total))
	return total, nil
}

func (sw *StreamWriter) emit() error {
	if len(sw.buf) <= chunkHeadroom+shortChunk {
		// A short chunk (cut by Inject or the stream's end) goes in a
		// buffer of its own size and the stream keeps its large one:
		// a metadata-mode backup cuts one before every run of reused
		// chunks, and a fresh pooled buffer for each (allocated and
		// zeroed whole when the pool was emptied, and reserving its
		// whole size in the budget) cost more than the chunk's own
		// work (a backup of /usr/share with 1 % of files touched:
		// 452 such chunks, 0.41 s of 5.5 s CPU in getChunkBuf).
		short := append(make([]byte, 0, len(sw.buf)), sw.buf...)
		next := sw.buf[:chunkHeadroom]
		sw.buf = short
		return sw.emitWith(next)
	}
	return sw.emitWith(sw.newBuf(chunkHeadroom))
}

// shortChunk is the largest chunk given a buffer of its own size rather
// than a pooled one (emit, blobBuf): the pools' buffers hold 4 MiB and
// more.
const shortChunk = 256 << 10

// newBuf returns a pooled chunk buffer of n bytes.
func (sw *StreamWriter) newBuf(n int) []byte {
	return sw.b.getBuf(n)
}

// emitWith submits the chunk in sw.buf and continues with next, a buffer
// of chunkHeadroom bytes.
func (sw *StreamWriter) emitWith(next []byte) error {
	buf := sw.buf
	sw.buf = next
	sw.off += uint64(len(buf) - chunkHeadroom)
	if !sw.up.submit(buf, sw.off) {
		return sw.up.wait()
	}
	return nil
}

// maxStreamRead is the most bytes ReadFrom asks of its reader at once:
// the bytes of a read after a cut are copied into the next chunk's
// buffer, on average half a read per chunk.
const maxStreamRead = 256 << 10

// ReadFrom feeds the chunker all of r's bytes, read straight into the
// chunk buffers (large reads, no copy but the rest of a read after a
// cut). The pxar writer gives it each file's contents.
func (sw *StreamWriter) ReadFrom(r io.Reader) (int64, error) {
	if sw.closed {
		return 0, fmt.Errorf("stream %s: write after close", sw.name)
	}
	var total int64
	defer func() { sw.b.Stats.BytesRead.Add(total) }()
	for {
		if len(sw.buf) == cap(sw.buf) {
			sw.buf = sw.b.growBuf(sw.buf, len(sw.buf)+1)
		}
		room := sw.buf[len(sw.buf):cap(sw.buf)]
		if len(room) > maxStreamRead {
			room = room[:maxStreamRead]
		}
		n, err := r.Read(room)
		total += int64(n)
		if n > 0 {
			if err := sw.accept(n); err != nil {
				return total, err
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// accept scans n bytes placed just past the end of sw.buf, cutting chunks
// where the chunker says; the bytes after a cut move to the next buffer.
func (sw *StreamWriter) accept(n int) error {
	for n > 0 {
		data := sw.buf[len(sw.buf) : len(sw.buf)+n]
		m, cut := sw.ch.Scan(data)
		sw.buf = sw.buf[:len(sw.buf)+m]
		n -= m
		if !cut {
			continue
		}
		next := sw.newBuf(chunkHeadroom + n)
		copy(next[chunkHeadroom:], data[m:])
		if err := sw.emitWith(next[:chunkHeadroom]); err != nil {
			return err
		}
	}
	return nil
}

// SuggestBoundary cuts the stream here if the current chunk has reached
// the chunker's minimum size. The pxar writer calls it where a file's
// payload starts, so that files keep chunks of their own for a later
// metadata-mode backup to reuse whole (pxar.PayloadSink).
func (sw *StreamWriter) SuggestBoundary() {
	if sw.closed || len(sw.buf)-chunkHeadroom < sw.ch.min {
		return
	}
	if err := sw.emit(); err == nil {
		sw.ch.Reset()
	}
}

// Inject appends existing chunks to the stream by reference, after cutting
// the chunk in progress: chunks of an earlier snapshot's stream, given
// with their byte ranges there. Every chunk is touched first (so a
// collector keeps it); if one is missing, Inject fails with
// pxar.ErrChunkUnavailable and the stream is unchanged.
func (sw *StreamWriter) Inject(chunks []pxar.PayloadChunk) error {
	if sw.closed {
		return fmt.Errorf("stream %s: inject after close", sw.name)
	}
	if err := sw.Check(chunks); err != nil {
		return err
	}
	if len(sw.buf) > chunkHeadroom {
		if err := sw.emit(); err != nil {
			return err
		}
	}
	sw.ch.Reset()
	var n uint64
	sw.up.mu.Lock()
	for _, c := range chunks {
		size := c.End - c.Start
		sw.off += size
		n += size
		sw.done = append(sw.done, chunkRef{end: sw.off, length: size, digest: Digest(c.Digest)})
	}
	sw.up.mu.Unlock()
	sw.b.Stats.InjectedChunks.Add(int64(len(chunks)))
	sw.b.Stats.InjectedBytes.Add(int64(n))
	return nil
}

// Check touches chunks of the store, failing with
// pxar.ErrChunkUnavailable if one is missing.
func (sw *StreamWriter) Check(chunks []pxar.PayloadChunk) error {
	for _, c := range chunks {
		ok, err := sw.b.reuseChunk(sw.up.ctx, Digest(c.Digest))
		if err != nil {
			return fmt.Errorf("stream %s: %w", sw.name, err)
		}
		if !ok {
			return fmt.Errorf("stream %s: chunk %s: %w", sw.name, Digest(c.Digest), pxar.ErrChunkUnavailable)
		}
	}
	return nil
}

// Close flushes the last chunk, waits for every upload and writes the
// index. It returns the archive size.
func (sw *StreamWriter) Close() (uint64, error) {
	if err := sw.finish(); err != nil {
		return 0, err
	}
	return sw.writeIndex()
}

// closeStreams closes streams together: their chunks are made durable by
// one flush of the session's batch (one wait for the disk) before any of
// their indexes is written. On an error every stream not yet written is
// dropped.
func closeStreams(streams ...*StreamWriter) error {
	var err error
	for _, sw := range streams {
		if e := sw.upload(); e != nil && err == nil {
			err = e
		}
	}
	if err == nil {
		err = streams[0].b.flushChunks(streams[0].ctx)
	}
	for _, sw := range streams {
		if err != nil {
			sw.drop(err)
			continue
		}
		if _, err = sw.writeIndex(); err != nil {
			sw.b.dropFile(sw.file)
		}
	}
	return err
}

// finish ends the stream's uploads and makes its chunks durable.
func (sw *StreamWriter) finish() error {
	err := sw.upload()
	if err == nil {
		err = sw.b.flushChunks(sw.ctx)
	}
	if err != nil {
		return sw.drop(err)
	}
	return nil
}

// upload flushes the last chunk, waits for every upload and lays out
// the index entries.
func (sw *StreamWriter) upload() error {
	if sw.closed {
		return fmt.Errorf("stream %s: closed twice", sw.name)
	}
	sw.closed = true
	if len(sw.buf) > chunkHeadroom {
		sw.emit()
	}
	sw.dropBuf()
	err := sw.up.wait()
	if err == nil {
		slices.SortFunc(sw.done, func(a, b chunkRef) int { return cmp.Compare(a.end, b.end) })
		for _, c := range sw.done {
			if err = sw.w.Append(c.end, c.digest); err != nil {
				break
			}
		}
	}
	return err
}

// drop removes the unwritten index after err.
func (sw *StreamWriter) drop(err error) error {
	sw.w.Abort()
	sw.b.dropFile(sw.file)
	return fmt.Errorf("stream %s: %w", sw.name, err)
}

// writeIndex writes the index of a stream whose chunks are durable.
func (sw *StreamWriter) writeIndex() (uint64, error) {
	csum, err := sw.w.Close()
	if err == nil {
		err = sw.b.s.mirrorFile(sw.ctx, sw.b.s.Path(path.Join(sw.b.ref.Dir(), sw.file)))
	}
	if err != nil {
		sw.b.dropFile(sw.file)
		return 0, err
	}
	sw.b.Stats.BytesWritten.Add(int64(indexHeaderSize + dynamicEntrySize*sw.w.n))
	for i := range sw.b.files {
		if sw.b.files[i].Filename == sw.file {
			sw.b.files[i].Size = sw.off
			sw.b.files[i].Csum = hex.EncodeToString(csum[:])
		}
	}
	return sw.off, nil
}

// dropBuf gives the buffer of the chunk in progress back to its pool
// once the stream is closed.
func (sw *StreamWriter) dropBuf() {
	if sw.buf != nil {
		sw.b.putBuf(sw.buf)
		sw.buf = nil
	}
}

// Abort drops the stream and its temporary index.
func (sw *StreamWriter) Abort() {
	if !sw.closed {
		sw.closed = true
		sw.up.abort(errors.New("aborted"))
		sw.dropBuf()
		sw.up.wait()
		sw.w.Abort()
		sw.b.dropFile(sw.file)
	}
}

func (b *Backup) dropFile(file string) {
	for i, f := range b.files {
		if f.Filename == file {
			b.files = append(b.files[:i], b.files[i+1:]...)
			return
		}
	}
}

// AddStream stores everything read from r as dynamic-index archive name.
func (b *Backup) AddStream(ctx context.Context, name string, r io.Reader, avg int) error {
	sw, err := b.CreateStream(ctx, name, avg)
	if err != nil {
		return err
	}
	if _, err := io.Copy(sw, r); err != nil {
		sw.Abort()
		return fmt.Errorf("stream %s: %w", name, err)
	}
	_, err = sw.Close()
	return err
}

// Finish writes the manifest, which marks the snapshot finished, and
// releases the session's locks. At least one archive must exist. ctx
// ends the wait for the chunks' sync and the manifest's upload; a Finish
// whose ctx is done (the user interrupted the backup) removes the
// snapshot as Abort does and returns ctx's error.
func (b *Backup) Finish(ctx context.Context) error {
	if b.done {
		return errors.New("backup already finished")
	}
	defer b.unlock()
	b.done = true
	if err := ctx.Err(); err != nil {
		if b.catalogStream != nil {
			b.catalogStream.Abort()
		}
		b.abortFiles()
		return err
	}
	if err := b.finishCatalog(); err != nil {
		b.abortFiles()
		return err
	}
	for _, f := range b.files {
		if f.Csum == "" {
			b.abortFiles()
			return fmt.Errorf("backup %s: archive %s was not closed", b.ref, f.Filename)
		}
	}
	if len(b.files) == 0 {
		b.abortFiles()
		return fmt.Errorf("backup %s: no archive written", b.ref)
	}
	if b.base != nil {
		if ok, _ := exists(b.s.Path(b.base.Ref.Dir())); !ok {
			b.abortFiles()
			return fmt.Errorf("backup %s: base snapshot %s vanished", b.ref, b.base.Ref)
		}
	}
	m := &Manifest{BackupType: b.ref.Group.Type, BackupID: b.ref.Group.ID, BackupTime: b.ref.Time.Unix(), Files: b.files}
	m.SetUnprotected("chunk_upload_stats", map[string]int64{
		"count":           b.Stats.NewChunks.Load(),
		"size":            b.Stats.ChunkBytes.Load(),
		"compressed_size": b.Stats.BytesWritten.Load(),
		"duplicates":      b.Stats.ReusedChunks.Load(),
	})
	if err := b.flushChunks(ctx); err != nil {
		b.abortFiles()
		return err
	}
	if b.opts.Key != nil {
		if err := m.Sign(b.opts.Key); err != nil {
			b.abortFiles()
			return err
		}
	}
	if err := b.s.writeManifest(ctx, b.ref, m); err != nil {
		b.abortFiles()
		return err
	}
	return nil
}

// writeManifest stores m as the snapshot's index.json.blob, atomically.
func (s *Store) writeManifest(ctx context.Context, ref SnapshotRef, m *Manifest) error {
	js, err := m.MarshalJSON()
	if err != nil {
		return err
	}
	blob, err := s.codec.Encode(js, true)
	if err != nil {
		return err
	}
	return s.writeFile(ctx, s.Path(path.Join(ref.Dir(), ManifestName)), blob)
}

// Abort removes the unfinished snapshot and releases the session's locks.
func (b *Backup) Abort() {
	if b.done {
		return
	}
	b.done = true
	if b.catalogStream != nil {
		b.catalogStream.Abort()
	}
	if b.batch != nil {
		b.batch.Abort()
	}
	b.abortFiles()
	b.unlock()
}

func (b *Backup) abortFiles() {
	if b.batch != nil {
		b.batch.Abort()
	}
	if err := b.s.mirrorRemoveSnapshot(context.Background(), b.ref); err != nil {
		b.s.log.Warn("remove aborted snapshot", "snapshot", b.ref.String(), "err", err)
	}
	if err := os.RemoveAll(b.s.Path(b.ref.Dir())); err != nil {
		b.s.log.Warn("remove aborted snapshot", "snapshot", b.ref.String(), "err", err)
	}
}

// reuseChunk touches chunk d and reports whether the store has it, or
// the session's batch holds it pending, so it need not be stored again.
func (b *Backup) reuseChunk(ctx context.Context, d Digest) (bool, error) {
	if b.batch != nil {
		return b.batch.Has(ctx, d)
	}
	return b.s.reuseChunk(ctx, d)
}

// insertChunk stores a new chunk: into the session's batch on a disk
// store, else into the store's backend directly.
func (b *Backup) insertChunk(ctx context.Context, d Digest, blob []byte) (bool, error) {
	if b.batch != nil {
		return b.batch.Insert(ctx, d, blob)
	}
	return b.s.insertChunk(ctx, d, blob)
}

// flushChunks makes every chunk the session stored so far durable under
// its name; it is called before an index naming them is written.
func (b *Backup) flushChunks(ctx context.Context) error {
	if b.batch == nil {
		return nil
	}
	if err := b.batch.Flush(ctx); err != nil {
		return fmt.Errorf("backup %s: store chunks: %w", b.ref, err)
	}
	return nil
}

// Syncs returns how many times the session synced new chunks to disk
// (ChunkBatch.Syncs).
func (b *Backup) Syncs() int64 {
	if b.batch == nil {
		return 0
	}
	return b.batch.Syncs()
}

// chunkRef is one chunk of an archive as the uploader reports it.
type chunkRef struct {
	end, length uint64
	digest      Digest
}

// memBudget is a byte-weighted semaphore bounding the memory of chunks in
// flight. A request bigger than the whole budget is granted when nothing
// else is held, so one huge chunk cannot wait forever.
type memBudget struct {
	mu    sync.Mutex
	used  int64
	limit int64
	peak  int64
	wake  chan struct{} // closed and replaced on every release
}

func newMemBudget(limit int64) *memBudget {
	return &memBudget{limit: limit, wake: make(chan struct{})}
}

// acquire waits until n bytes fit in the budget or ctx ends.
func (m *memBudget) acquire(ctx context.Context, n int64) error {
	for {
		m.mu.Lock()
		if m.used == 0 || m.used+n <= m.limit {
			m.used += n
			m.peak = max(m.peak, m.used)
			m.mu.Unlock()
			return nil
		}
		w := m.wake
		m.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (m *memBudget) release(n int64) {
	if n == 0 {
		return
	}
	m.mu.Lock()
	m.used -= n
	close(m.wake)
	m.wake = make(chan struct{})
	m.mu.Unlock()
}

// Peak returns the most bytes held at once.
func (m *memBudget) Peak() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peak
}

// PeakInFlight returns the most bytes of chunk buffers and encoded chunks
// the session held at once (bounded by BackupOptions.MemoryBudget).
func (b *Backup) PeakInFlight() int64 { return b.mem.Peak() }

// blobBound is the most bytes an encoded chunk of n plain bytes takes:
// the header, and zstd's raw-block overhead when the data does not
// compress (the uncompressed form is then kept, but is built after).
func blobBound(n int) int { return n + n>>10 + 256 }

// uploader hashes, compresses and stores chunks on a pool of goroutines.
// Chunks that are already present are touched, not rewritten. Every chunk
// reserves its buffer and the bound of its encoded form in the session's
// memory budget when it is queued; the buffer's share is returned once it
// is encoded, the rest once the chunk is stored.
type uploader struct {
	b      *Backup
	ctx    context.Context
	cancel context.CancelFunc
	jobs   chan upJob
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
	record func(chunkRef) error // called under mu, in any order
	seq    int
	// compute, when set, limits how many jobs read, hash and encode at
	// once (a token each, taken before the read and returned before the
	// chunk is written): one per CPU, while more workers wait for writes.
	compute chan struct{}
	// compressed tells whether the chunk stored last was compressed: the
	// next one likely is alike (an image's random or text regions span
	// many chunks), which decides whether its CRC is computed as it is
	// hashed (pieceSum).
	compressed atomic.Bool
	// direct, when set, is the image source opened with O_DIRECT
	// (openDirect) that readChunkAt reads from, until noDirect is set.
	direct   io.ReaderAt
	noDirect atomic.Bool
}

type upJob struct {
	seq  int
	buf  []byte // chunkHeadroom bytes, then data (directAlign bytes when read by readDirect, until inPlaceBlob moves it)
	data []byte
	end  uint64
	held int64 // budget reserved for data's buffer
	blob int64 // budget reserved for the encoded chunk
	// compute: the job holds a token of uploader.compute.
	compute bool
}

// getBuf returns a chunk buffer of n bytes, of undefined content: from
// the store's bufPool when the session uses it, else from its heap pool.
func (b *Backup) getBuf(n int) []byte {
	if b.pool != nil {
		if buf := b.pool.get(n); buf != nil {
			return buf
		}
	}
	return b.s.getChunkBuf(n)
}

// bufHeld is what a buffer getBuf(n) returns counts in the session's
// memory budget.
func (b *Backup) bufHeld(n int) int64 {
	if b.pool != nil && n <= poolBufCap {
		return b.pool.heldBytes(n)
	}
	return int64(chunkBufCap(n))
}

// heldBytes is what buf, from getBuf, counts in the session's memory
// budget.
func (b *Backup) heldBytes(buf []byte) int64 {
	if b.pool != nil && b.pool.owns(buf) {
		return b.pool.heldBytes(len(buf))
	}
	return int64(cap(buf))
}

// blobBuf returns an empty buffer with room for an encoded chunk of n
// bytes: pooled, or for a short chunk one of its own size.
func (b *Backup) blobBuf(n int) []byte {
	if n <= blobBound(shortChunk) {
		return make([]byte, 0, n)
	}
	return b.getBuf(n)[:0]
}

// putBuf returns a buffer getBuf or blobBuf handed out (or one an
// encoder grew from it, or a reslice of one from its start), once
// nothing refers to it; buf's length is how much of it was written.
func (b *Backup) putBuf(buf []byte) {
	if b.pool != nil && b.pool.owns(buf) {
		b.pool.put(buf)
		return
	}
	b.s.putChunkBuf(buf)
}

// growBuf returns a buffer holding buf's bytes with room for n in all:
// buf itself if it has the room (a bufPool buffer has room for the
// largest chunk of a stream of the default average size), else one from
// the heap pool's next large enough class, buf going back to its pool.
func (b *Backup) growBuf(buf []byte, n int) []byte {
	if n <= cap(buf) {
		return buf
	}
	nb := b.s.getChunkBuf(max(n, 2*cap(buf)))[:len(buf)]
	copy(nb, buf)
	b.putBuf(buf)
	return nb
}

// endCompute returns job's compute token, if it holds one.
func (u *uploader) endCompute(job *upJob) {
	if job.compute {
		job.compute = false
		<-u.compute
	}
}

func (b *Backup) newUploader(ctx context.Context, record func(chunkRef) error) *uploader {
	u := b.uploaderOnly(ctx, record)
	u.jobs = make(chan upJob)
	for range b.opts.Workers {
		u.wg.Add(1)
		go u.work(u.jobs)
	}
	return u
}

// uploaderOnly returns an uploader without workers: its caller runs
// store on goroutines of its own, counted in wg.
func (b *Backup) uploaderOnly(ctx context.Context, record func(chunkRef) error) *uploader {
	ctx, cancel := context.WithCancel(ctx)
	return &uploader{b: b, ctx: ctx, cancel: cancel, record: record}
}

// submit queues a chunk ending at archive offset end, once the memory
// budget has room for it; false means the upload failed and the caller
// should stop and wait. buf holds chunkHeadroom bytes, then the chunk's
// data. The uploader owns buf from here on.
func (u *uploader) submit(buf []byte, end uint64) bool {
	data := buf[chunkHeadroom:]
	job := upJob{seq: u.seq, buf: buf, data: data, end: end, held: u.b.heldBytes(buf), blob: int64(blobBound(len(data)))}
	if err := u.b.mem.acquire(u.ctx, job.held+job.blob); err != nil {
		u.b.putBuf(buf)
		u.abort(err)
		return false
	}
	select {
	case u.jobs <- job:
		u.seq++
		return true
	case <-u.ctx.Done():
		u.b.mem.release(job.held + job.blob)
		u.b.putBuf(buf)
		u.abort(u.ctx.Err())
		return false
	}
}

func (u *uploader) abort(err error) {
	u.mu.Lock()
	if u.err == nil {
		u.err = err
	}
	u.mu.Unlock()
	u.cancel()
}

// wait ends the upload and returns its first error.
func (u *uploader) wait() error {
	if u.jobs != nil {
		close(u.jobs)
		u.jobs = nil
	}
	u.wg.Wait()
	u.cancel()
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err
}

func (u *uploader) work(jobs <-chan upJob) {
	defer u.wg.Done()
	for job := range jobs {
		err := u.store(job)
		u.mu.Lock()
		if err != nil && u.err == nil {
			u.err = err
			u.cancel()
		}
		u.mu.Unlock()
	}
}

// store hashes, encodes and inserts one chunk and records it, releasing
// its buffers and budget as soon as each is no longer needed.
func (u *uploader) store(job upJob) error {
	s := u.b.s
	freeData := func() {
		if job.data != nil {
			u.b.putBuf(job.buf)
			job.data, job.buf = nil, nil
			u.b.mem.release(job.held)
		}
	}
	defer freeData()
	defer u.b.mem.release(job.blob)
	defer u.endCompute(&job)
	if err := u.ctx.Err(); err != nil {
		return err
	}
	var (
		d        Digest
		crc      uint32
		crcKnown bool // crc is data's (computed as it was hashed)
	)
	if u.b.mode == CryptEncrypt {
		d = u.b.dec.Digest(job.data)
	} else {
		sum := u.newPieceSum()
		sum.write(job.data)
		d, crc, crcKnown = sum.sums()
	}
	ref := chunkRef{end: job.end, length: uint64(len(job.data)), digest: d}
	reused, err := u.b.reuseChunk(u.ctx, d)
	if err == nil && !reused {
		var blob []byte
		compress := s.codec.worthCompressing(job.data)
		u.compressed.Store(compress)
		plain := len(job.data)
		inPlace := u.b.mode != CryptEncrypt && !compress
		switch {
		case inPlace:
			// The uncompressed blob is the header in the headroom
			// before the data: no copy, but the move of data read
			// with O_DIRECT to the headroom's end (inPlaceBlob).
			if !crcKnown {
				crc = crc32.ChecksumIEEE(job.data)
			}
			blob = inPlaceBlob(&job, crc)
		case u.b.mode == CryptEncrypt:
			blob, err = s.codec.AppendEncodeEncrypted(u.b.blobBuf(int(job.blob)), job.data, u.b.opts.Key, compress)
		default:
			blob, err = s.codec.AppendEncode(u.b.blobBuf(int(job.blob)), job.data, compress)
		}
		if !inPlace {
			freeData()
		}
		u.endCompute(&job)
		if err == nil {
			var dup bool
			dup, err = u.b.insertChunk(u.ctx, d, blob)
			reused = dup
			if !dup {
				u.b.Stats.NewChunks.Add(1)
				u.b.Stats.BytesWritten.Add(int64(len(blob)))
				u.b.Stats.ChunkBytes.Add(int64(plain))
			}
		}
		if !inPlace {
			u.b.putBuf(blob)
		}
	}
	if err != nil {
		return err
	}
	if reused {
		u.b.Stats.ReusedChunks.Add(1)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.record(ref)
}

// chunkHeadroom is the room writers leave before a chunk's data in its
// buffer: an uncompressed blob's header goes there, so storing the chunk
// uncompressed copies nothing.
const chunkHeadroom = blobHeaderSize

// putUncompressedHeader writes the header of an uncompressed blob (magic
// and crc, the CRC32 of the rest) into the first chunkHeadroom bytes of
// blob and returns blob.
func putUncompressedHeader(blob []byte, crc uint32) []byte {
	copy(blob, magicUncompressed[:])
	binary.LittleEndian.PutUint32(blob[8:], crc)
	return blob
}

// chunkBufSize is the capacity of the smallest pooled chunk buffers: a
// fixed-size chunk with its headroom, or its encoded bound, fits.
var chunkBufSize = blobBound(FixedChunkSize) + chunkHeadroom

// chunkBufClasses is the number of pooled buffer sizes: chunkBufSize, its
// double and its quadruple. A dynamic chunk may reach four times the
// chunker's average (16 MiB for pxar streams), so a stream's buffer grows
// by doubling into the next class (one copy of the bytes so far) instead
// of append's small steps, each a copy (about 45 MiB copied and zeroed
// for one 16 MiB chunk).
const chunkBufClasses = 3

// chunkBufClass returns the smallest class whose buffers hold n bytes, or
// -1 if none does.
func chunkBufClass(n int) int {
	for k := range chunkBufClasses {
		if n <= chunkBufSize<<k {
			return k
		}
	}
	return -1
}

// getChunkBuf returns a buffer of n bytes from the store's pool, sparing
// the allocation and zeroing of one per chunk. Its content is undefined
// and its capacity that of its size class. Large buffers start on a page
// boundary (the runtime allocates them in spans of their own), which
// O_DIRECT writes of their blobs need.
//
// The pool is a sync.Pool, which lets the collector have idle buffers:
// a pool keeping every buffer holds the peak use of each size class at
// once (a backup's peak RSS rose from about 100 to 155 MiB).
func (s *Store) getChunkBuf(n int) []byte {
	k := chunkBufClass(n)
	if k < 0 {
		return make([]byte, n)
	}
	if p, ok := s.bufs[k].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, chunkBufSize<<k)
}

// chunkBufCap returns the capacity of the buffer getChunkBuf(n) returns.
func chunkBufCap(n int) int {
	if k := chunkBufClass(n); k >= 0 {
		return chunkBufSize << k
	}
	return n
}

// putChunkBuf returns b to the pool of the largest class it holds, once
// nothing refers to it.
func (s *Store) putChunkBuf(b []byte) {
	for k := chunkBufClasses - 1; k >= 0; k-- {
		if cap(b) >= chunkBufSize<<k {
			s.bufs[k].Put(&b)
			return
		}
	}
}
