package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/pbsfs/pbsfs/store/crypto"
	"github.com/pbsfs/pbsfs/store/lock"
)

// DefaultRuntimeDir is where PBS keeps its lock files (§1.5, §5.2).
const DefaultRuntimeDir = "/run/proxmox-backup"

// Options configure how a datastore is opened.
type Options struct {
	// Name is the PBS datastore name, used for lock file paths. It
	// defaults to the name DatastoreConfig gives the directory, so that
	// pbsfs and a PBS daemon on the same store share their locks, and
	// otherwise to a name unique to the path (base name and a hash of the
	// path), so that two stores never share lock files.
	Name string
	// DatastoreConfig is PBS's datastore.cfg; DefaultDatastoreConfig if
	// empty. Tests point it elsewhere.
	DatastoreConfig string
	// RuntimeDir is PBS's runtime directory; DefaultRuntimeDir if empty.
	// Tests point it at a temporary directory.
	RuntimeDir string
	// CacheBytes bounds the decoded-chunk cache (DefaultCacheBytes if 0).
	CacheBytes int64
	// SpillBytes bounds the scratch file of verified decoded chunks of
	// unencrypted archives that small random reads are served from once
	// the cache let them go (see spillTier); 0: none. SpillDir is where
	// the unnamed file is made (os.TempDir() if empty).
	SpillBytes int64
	SpillDir   string
	// OnChunkLoad, if set, is called with the digest of every chunk the
	// read engine loads from disk (tests count them).
	OnChunkLoad func(Digest)
	// Logger receives warnings; slog.Default() if nil.
	Logger *slog.Logger
	// Keys are the encryption keys available for reading encrypted
	// snapshots and checking signed manifests; each snapshot uses the key
	// whose fingerprint its manifest names.
	Keys *crypto.Keyring
	// LazyChunkDirs makes Create skip the 65536 prefix directories; they
	// are made when the first chunk lands in them. PBS creates them up
	// front (and its 2025+ checks expect them), so only tests and demos,
	// where creating them dominates the run time, should set this.
	LazyChunkDirs bool
	// Backend, if set, returns the chunk store the datastore's chunks are
	// read from and written to, given the chunk directory of root (an S3
	// datastore's local cache, see store/s3). Chunks whose file in that
	// directory is missing or empty are then loaded through it.
	Backend func(local *FileChunkStore) (ChunkStore, error)
	// Mirror, if set, receives every metadata write and removal (the
	// `.cnt/` objects of an S3 datastore, see store/s3).
	Mirror Mirror
	// ReadAheadSlots bounds the chunks loaded in the background ahead of
	// sequential readers; one per CPU if 0. Backends with network latency
	// want more.
	ReadAheadSlots int
	// ReadAheadBytes is how far ahead of a sequential reader chunks are
	// loaded (24 MiB if 0), at most a quarter of CacheBytes. A backend
	// with network latency wants more: a reader waiting on one slow
	// object keeps the others in flight.
	ReadAheadBytes int64
}

// Store is an open datastore. A process should open a datastore once and
// share the Store: it owns the process lock on `.lock` (§5.1).
type Store struct {
	root       string
	name       string
	nameSource string // NameFromOptions, NameFromConfig or NameFromPath
	rtDir      string
	chunks     *FileChunkStore
	// backend is where chunks live: chunks itself, or a remote store that
	// chunks is the local cache of (remote is then true).
	backend ChunkStore
	remote  bool
	mirror  Mirror
	codec   *Codec
	cache   *chunkCache
	mem     *chunkMem // buffers of the read engine (mem.go)
	keys    *crypto.Keyring
	plain   *ChunkDecoder // decoder of unencrypted archives
	files   *plainDecoder // the read engine's loader of unencrypted chunks
	zeros   zeroDigests
	// decodeSlots bounds the background chunk decodes (one per core).
	decodeSlots chan struct{}
	// readAheadBytes is Options.ReadAheadBytes.
	readAheadBytes int64
	// readAhead counts the background decodes run (ReadAheadChunks).
	readAhead atomic.Int64
	// spill holds verified decoded chunks that were stored compressed,
	// for reads that come back to them (nil: none).
	spill *spillTier
	// spilling counts the background writes to spill.
	spilling pending
	// prefetchJobs counts the read-ahead jobs queued (tests).
	prefetchJobs atomic.Int64

	zeroMu  sync.Mutex
	zeroBuf []byte
	plock   *lock.ProcessLocker
	locks   *lock.Locks
	log     *slog.Logger
	bufs    [chunkBufClasses]sync.Pool // heap chunk buffers of writers by size class, see getChunkBuf
	pool    bufPool                    // chunk buffers of backups into the chunk directory, see bufPool
	owner   fileOwner                  // owner of what pbsfs creates, see ownerOf

	// removeStep, when set (tests), is called after each step of a
	// snapshot removal (remove.go), so that a test can kill the process
	// there.
	removeStep func(step string)
}

// Create makes a new datastore at root (§1.1): the directory, `.chunks`
// with all 65536 prefix directories, and the empty `.lock`. It refuses a
// directory that already holds a `.chunks` directory or other files.
func Create(root string, opts Options) (*Store, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("create datastore: %w", err)
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("create datastore: %w", err)
	}
	for _, e := range ents {
		if e.Name() != "lost+found" {
			return nil, fmt.Errorf("create datastore %s: directory not empty (%s): %w", root, e.Name(), ErrExists)
		}
	}
	chunks := filepath.Join(root, ".chunks")
	if err := os.Mkdir(chunks, 0o750); err != nil {
		return nil, fmt.Errorf("create datastore: %w", err)
	}
	for i := 0; i <= 0xffff && !opts.LazyChunkDirs; i++ {
		if err := os.Mkdir(filepath.Join(chunks, fmt.Sprintf("%04x", i)), 0o750); err != nil {
			return nil, fmt.Errorf("create datastore: %w", err)
		}
	}
	f, err := os.OpenFile(filepath.Join(root, ".lock"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create datastore: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := syncDir(root); err != nil {
		return nil, err
	}
	return Open(root, opts)
}

// Open opens the datastore at root.
func Open(root string, opts Options) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(filepath.Join(abs, ".chunks")); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("open datastore %s: no .chunks directory: %w", root, ErrNotFound)
	}
	nameSource := NameFromOptions
	if opts.Name == "" {
		cfg := opts.DatastoreConfig
		if cfg == "" {
			cfg = DefaultDatastoreConfig
		}
		if opts.Name, nameSource, err = defaultName(abs, cfg); err != nil {
			return nil, fmt.Errorf("open datastore %s: %w", root, err)
		}
	}
	if opts.RuntimeDir == "" {
		opts.RuntimeDir = DefaultRuntimeDir
	}
	if opts.CacheBytes == 0 {
		opts.CacheBytes = DefaultCacheBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	plock, err := lock.OpenProcessLocker(filepath.Join(abs, ".lock"))
	if err != nil {
		return nil, fmt.Errorf("open datastore %s: %w", root, err)
	}
	owner := ownerOf(abs)
	chunks := NewFileChunkStore(filepath.Join(abs, ".chunks"))
	chunks.owner = owner
	chunks.PrefixLock = func(prefix uint16, exclusive bool) (func(), error) {
		dir := chunks.PrefixDir(prefix)
		l, err := lock.LockPrefixDir(dir, exclusive)
		if errors.Is(err, fs.ErrNotExist) {
			if err = chunks.makePrefixDir(dir); err == nil {
				l, err = lock.LockPrefixDir(dir, exclusive)
			}
		}
		if err != nil {
			return nil, err
		}
		return func() { l.Unlock() }, nil
	}
	var backend ChunkStore = chunks
	if opts.Backend != nil {
		if backend, err = opts.Backend(chunks); err != nil {
			plock.Close()
			return nil, fmt.Errorf("open datastore %s: %w", root, err)
		}
	}
	slots := opts.ReadAheadSlots
	if slots <= 0 {
		slots = runtime.GOMAXPROCS(0)
	}
	readAhead := opts.ReadAheadBytes
	if readAhead <= 0 {
		readAhead = readAheadBytes
	}
	readAhead = min(readAhead, max(opts.CacheBytes/4, readAheadBytes))
	codec := NewCodec()
	mem := newChunkMem()
	st := &Store{
		keys:       opts.Keys,
		plain:      &ChunkDecoder{codec: codec},
		root:       abs,
		name:       opts.Name,
		nameSource: nameSource,
		rtDir:      opts.RuntimeDir,
		chunks:     chunks,
		backend:    backend,
		remote:     opts.Backend != nil,
		mirror:     opts.Mirror,
		codec:      codec,
		cache:      newChunkCache(opts.CacheBytes, mem),
		spill:      newSpillTier(opts.SpillDir, opts.SpillBytes),
		mem:        mem,
		plock:      plock,
		locks:      newLocks(opts.RuntimeDir, opts.Name, abs, owner),
		log:        opts.Logger,
		owner:      owner,

		decodeSlots:    make(chan struct{}, slots),
		readAheadBytes: readAhead,
	}
	// The scan segment holds the read-ahead of two readers and the
	// chunks they read.
	st.cache.minScan = 2 * (readAhead + FixedChunkSize)
	st.files = &plainDecoder{s: st, verified: newFileTable(verifiedFileLimit()), onLoad: opts.OnChunkLoad}
	return st, nil
}

// DefaultCacheBytes is the default bound of the decoded-chunk cache.
const DefaultCacheBytes = 256 << 20

// DefaultSpillBytes and DefaultSpillDir are the mount's default bound and
// directory of the spill file (Options.SpillBytes): the decoded
// compressed chunks of 2 GiB of archives, on disk (/tmp may be tmpfs,
// which would make it memory).
const (
	DefaultSpillBytes = 2 << 30
	DefaultSpillDir   = "/var/tmp"
)

// CacheStats returns the decoded-chunk cache's counters.
func (s *Store) CacheStats() CacheStats { return s.cache.Stats() }

// ReadAheadChunks counts the chunks decoded in the background ahead of
// sequential readers.
func (s *Store) ReadAheadChunks() int64 { return s.readAhead.Load() }

// Close releases the store's process lock reference and the chunk files
// the read engine holds open.
func (s *Store) Close() error {
	s.files.verified.closeAll()
	s.spilling.wait()
	s.spill.close()
	s.cache.clear()
	s.mem.release()
	s.pool.close()
	return s.plock.Close()
}

// Root returns the datastore directory.
func (s *Store) Root() string { return s.root }

// Name returns the PBS datastore name used for lock paths.
func (s *Store) Name() string { return s.name }

// NameSource tells where Name came from: NameFromOptions, NameFromConfig
// (PBS's datastore.cfg names this path) or NameFromPath.
func (s *Store) NameSource() string { return s.nameSource }

// RuntimeDir returns the runtime directory holding lock files.
func (s *Store) RuntimeDir() string { return s.rtDir }

// Chunks returns the chunk directory: the chunk store, or for a remote
// backend its local cache (see Options.Backend).
func (s *Store) Chunks() *FileChunkStore { return s.chunks }

// ChunkStore returns where the chunks live: Chunks(), or the backend
// Options.Backend gave.
func (s *Store) ChunkStore() ChunkStore { return s.backend }

// Remote reports whether chunks live in a backend other than the chunk
// directory (an S3 datastore).
func (s *Store) Remote() bool { return s.remote }

// Codec returns the blob codec shared by users of the store.
func (s *Store) Codec() *Codec { return s.codec }

// ProcessLocker returns the store's process lock on `.lock`.
func (s *Store) ProcessLocker() *lock.ProcessLocker { return s.plock }

// Locks returns the group, snapshot and manifest locks of the store.
func (s *Store) Locks() *lock.Locks { return s.locks }

// Logger returns the store's logger.
func (s *Store) Logger() *slog.Logger { return s.log }

// Path returns rel (slash-separated, relative to the root) as a file path.
func (s *Store) Path(rel string) string { return filepath.Join(s.root, filepath.FromSlash(rel)) }

// ReadChunk returns the decoded content of unencrypted chunk d, checking
// its CRC and that its SHA-256 is d. Decoded chunks are cached.
func (s *Store) ReadChunk(ctx context.Context, d Digest) ([]byte, error) {
	return s.ReadChunkWith(ctx, d, s.plain)
}

// ReadChunkWith returns the plaintext of chunk d as dec decodes and
// verifies it. Decoded chunks are cached per key: a chunk decoded with
// one key is never served to a decoder of another (or of none).
func (s *Store) ReadChunkWith(ctx context.Context, d Digest, dec *ChunkDecoder) ([]byte, error) {
	data, err := s.loadChunk(ctx, d, ^uint64(0), dec, false)
	if err != nil {
		return nil, err
	}
	defer data.Release()
	return bytes.Clone(data.Bytes()), nil
}

// exists reports whether path exists, turning ENOENT into false.
func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, err
}

// ErrLocked reports a lock held by another backup, prune, verify or
// reader; it is the lock package's sentinel.
var ErrLocked = lock.ErrLocked
