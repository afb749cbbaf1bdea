package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// ChunkStore holds encoded chunks (DataBlobs) by digest. Callers depend on
// this interface, not on the directory layout, so a second backend (object
// storage) can come later.
type ChunkStore interface {
	// Get returns the encoded blob of chunk d, or an ErrChunkMissing error.
	Get(ctx context.Context, d Digest) ([]byte, error)
	// Insert stores the encoded blob of chunk d. A chunk already present
	// is touched instead of rewritten, and dup reports that (§2.8).
	Insert(ctx context.Context, d Digest, blob []byte) (dup bool, err error)
	// Touch sets the chunk's access time to now (the GC mark, §6.2), or
	// returns an ErrChunkMissing error.
	Touch(ctx context.Context, d Digest) error
	// Stat returns the chunk's size and times, or an ErrChunkMissing error.
	Stat(ctx context.Context, d Digest) (ChunkInfo, error)
	// ListPrefix lists the chunk files (and their .bad copies) whose digest
	// starts with the two bytes of prefix, in no particular order.
	ListPrefix(ctx context.Context, prefix uint16) ([]ChunkInfo, error)
	// Remove deletes the chunk file named name (a digest in hex, or a
	// digest with a .N.bad suffix).
	Remove(ctx context.Context, name string) error
}

// ChunkInfo describes one chunk file.
type ChunkInfo struct {
	// Name is the file name: 64 hex digits, or that plus ".N.bad".
	Name  string
	Size  int64
	Atime time.Time
	Mtime time.Time
}

// Bad reports whether the file is a corrupt copy kept by verify (§1.2).
func (c ChunkInfo) Bad() bool { return len(c.Name) == 70 }

// FileChunkStore is the PBS chunk directory `.chunks/XXXX/<digest>` (§1.2).
// It is safe for concurrent use by goroutines and processes.
type FileChunkStore struct {
	dir string // <root>/.chunks
	// SyncWrites fsyncs every new chunk and its directory before Insert
	// returns. It is on by default.
	SyncWrites bool
	// PrefixLock, when set, is held around every insert into a prefix
	// directory (shared) so a sweep holding it exclusively never races an
	// insert of the same chunk (gc-safety.md, hazard 2).
	PrefixLock func(prefix uint16, exclusive bool) (unlock func(), err error)

	owner fileOwner
	// noDirect is set once the file system refused O_DIRECT (ChunkBatch).
	noDirect atomic.Bool
}

// NewFileChunkStore returns the chunk store in dir (the `.chunks` directory).
func NewFileChunkStore(dir string) *FileChunkStore {
	return &FileChunkStore{dir: dir, SyncWrites: true, owner: noOwner}
}

// Dir returns the `.chunks` directory.
func (s *FileChunkStore) Dir() string { return s.dir }

// PrefixDir returns the directory holding chunks whose digest starts with prefix.
func (s *FileChunkStore) PrefixDir(prefix uint16) string {
	return filepath.Join(s.dir, fmt.Sprintf("%04x", prefix))
}

// Path returns the file of chunk d.
func (s *FileChunkStore) Path(d Digest) string {
	h := d.String()
	return filepath.Join(s.dir, h[:4], h)
}

func prefixOf(d Digest) uint16 { return uint16(d[0])<<8 | uint16(d[1]) }

// Get reads the encoded chunk. Anything but a regular file in its place
// (a directory, a FIFO, a device) is ErrCorrupt, as is a file larger than
// any blob can be; opening does not block on a FIFO.
func (s *FileChunkStore) Get(ctx context.Context, d Digest) ([]byte, error) {
	f, err := os.OpenFile(s.Path(d), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("chunk %s: %w", d, ErrChunkMissing)
	}
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", d, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", d, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("chunk %s: not a regular file (%s): %w", d, fi.Mode().Type(), ErrCorrupt)
	}
	const limit = MaxBlobSize + 64 // the payload limit plus the largest header
	if fi.Size() > limit {
		return nil, fmt.Errorf("chunk %s: file of %d bytes: %w", d, fi.Size(), ErrCorrupt)
	}
	b := make([]byte, 0, fi.Size()+1)
	for {
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, fmt.Errorf("chunk %s: %w", d, err)
		}
		if len(b) > limit {
			return nil, fmt.Errorf("chunk %s: grew past %d bytes while read: %w", d, limit, ErrCorrupt)
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

// touchPath sets atime to now and leaves mtime alone (§6.2).
func touchPath(path string) error {
	ts := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}}
	return unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// Touch marks chunk d as used now.
func (s *FileChunkStore) Touch(ctx context.Context, d Digest) error {
	if err := touchPath(s.Path(d)); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("chunk %s: %w", d, ErrChunkMissing)
		}
		return fmt.Errorf("touch chunk %s: %w", d, err)
	}
	return nil
}

// TouchPath marks the chunk file at path (a chunk or a .bad copy) as used
// now; ENOENT is reported as fs.ErrNotExist.
func TouchPath(path string) error { return touchPath(path) }

// Stat returns size and times of chunk d.
func (s *FileChunkStore) Stat(ctx context.Context, d Digest) (ChunkInfo, error) {
	var st unix.Stat_t
	if err := unix.Lstat(s.Path(d), &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return ChunkInfo{}, fmt.Errorf("chunk %s: %w", d, ErrChunkMissing)
		}
		return ChunkInfo{}, fmt.Errorf("chunk %s: %w", d, err)
	}
	return chunkInfo(d.String(), &st), nil
}

func chunkInfo(name string, st *unix.Stat_t) ChunkInfo {
	return ChunkInfo{Name: name, Size: st.Size,
		Atime: time.Unix(st.Atim.Unix()), Mtime: time.Unix(st.Mtim.Unix())}
}

// IsChunkName reports whether name is a chunk file name the GC considers:
// 64 hex digits, or that followed by ".N.bad" (§1.2).
func IsChunkName(name string) bool {
	if len(name) != 64 && !(len(name) == 70 && name[64] == '.' && name[65] >= '0' && name[65] <= '9' && name[66:] == ".bad") {
		return false
	}
	for i := range 64 {
		c := name[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// ListPrefix lists the chunk files of one prefix directory. A missing
// directory lists as empty; entries that are not regular files, or whose
// name is not a chunk name (temp files among them), are left out.
func (s *FileChunkStore) ListPrefix(ctx context.Context, prefix uint16) ([]ChunkInfo, error) {
	dir := s.PrefixDir(prefix)
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	var out []ChunkInfo
	for _, name := range names {
		if !IsChunkName(name) {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(int(f.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue // vanished meanwhile
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		out = append(out, chunkInfo(name, &st))
	}
	return out, ctx.Err()
}

// Remove unlinks one chunk file.
func (s *FileChunkStore) Remove(ctx context.Context, name string) error {
	if !IsChunkName(name) {
		return fmt.Errorf("remove %q: %w", name, ErrInvalidName)
	}
	path := filepath.Join(s.dir, name[:4], name)
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove chunk: %w", err)
	}
	return nil
}

// Insert stores chunk d following PBS's insert rules (§2.8): an existing
// chunk of the same size, or an existing unencrypted chunk no bigger than
// the new one, is touched and kept; an empty or bigger one is replaced.
func (s *FileChunkStore) Insert(ctx context.Context, d Digest, blob []byte) (bool, error) {
	kind, err := BlobKindOf(blob)
	if err != nil {
		return false, fmt.Errorf("insert chunk %s: %w", d, err)
	}
	if s.PrefixLock != nil {
		unlock, err := s.PrefixLock(prefixOf(d), false)
		if err != nil {
			return false, fmt.Errorf("insert chunk %s: %w", d, err)
		}
		defer unlock()
	}
	path := s.Path(d)
	var st unix.Stat_t
	switch err := unix.Lstat(path, &st); {
	case err == nil:
		keep, err := keepExisting(path, &st, kind, int64(len(blob)))
		if err != nil {
			return false, fmt.Errorf("insert chunk %s: %w", d, err)
		}
		if keep {
			if err := touchPath(path); err == nil {
				return true, nil
			} else if !errors.Is(err, unix.ENOENT) {
				return false, fmt.Errorf("touch chunk %s: %w", d, err)
			}
			// Swept between stat and touch: write it again.
		}
	case !errors.Is(err, unix.ENOENT):
		return false, fmt.Errorf("insert chunk %s: %w", d, err)
	}
	if err := s.write(path, blob); err != nil {
		return false, fmt.Errorf("insert chunk %s: %w", d, err)
	}
	return false, nil
}

// keepExisting decides, for an existing chunk file, whether it is kept
// (and touched) rather than replaced by a new blob of kind and size.
func keepExisting(path string, st *unix.Stat_t, kind BlobKind, size int64) (bool, error) {
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Size == size {
		return true, nil
	}
	if st.Size == 0 {
		return false, nil
	}
	if kind.Encrypted() {
		old := make([]byte, blobHeaderSize)
		f, err := os.Open(path)
		if err != nil {
			return false, err
		}
		_, err = f.ReadAt(old, 0)
		f.Close()
		if err != nil {
			return false, err
		}
		oldKind, err := BlobKindOf(old)
		if err != nil || !oldKind.Encrypted() {
			return false, fmt.Errorf("refusing to replace unencrypted chunk %s with an encrypted one", path)
		}
		if oldKind == BlobEncrypted && kind == BlobEncrypted {
			return false, fmt.Errorf("encrypted chunk %s exists with another size", path)
		}
		return true, nil
	}
	return st.Size < size, nil
}

// makePrefixDir makes a prefix directory that is missing (a store created
// with LazyChunkDirs, or one removed by hand) on demand.
func (s *FileChunkStore) makePrefixDir(dir string) error {
	err := os.Mkdir(dir, 0o750)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.owner.chown(dir)
}

// write stores blob at path through a temporary file in the same directory.
func (s *FileChunkStore) write(path string, blob []byte) error {
	dir, name := filepath.Split(path)
	f, err := os.CreateTemp(dir, name+".tmp_")
	if errors.Is(err, fs.ErrNotExist) {
		if err = s.makePrefixDir(dir); err == nil {
			f, err = os.CreateTemp(dir, name+".tmp_")
		}
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(blob); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Chmod(0o644); err == nil {
		err = s.owner.chownFile(f)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if !s.SyncWrites {
		err := f.Close()
		if err == nil {
			err = os.Rename(f.Name(), path)
		}
		if err != nil {
			os.Remove(f.Name())
		}
		return err
	}
	return finishFile(f, path, nil)
}

// TouchIfPresent touches chunk d when a non-empty file of it exists and
// reports whether it did. Writers use it to reuse a chunk without
// rewriting it; the touch keeps the chunk from a concurrent sweep.
func (s *FileChunkStore) TouchIfPresent(ctx context.Context, d Digest) (bool, error) {
	if s.PrefixLock != nil {
		unlock, err := s.PrefixLock(prefixOf(d), false)
		if err != nil {
			return false, fmt.Errorf("chunk %s: %w", d, err)
		}
		defer unlock()
	}
	path := s.Path(d)
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("chunk %s: %w", d, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size == 0 {
		return false, nil
	}
	if err := touchPath(path); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("touch chunk %s: %w", d, err)
	}
	return true, nil
}

// TouchMarker touches the file of chunk d whatever its size and reports
// whether one exists: on an S3 datastore a 0-byte file is a marker that
// the chunk is in the bucket (pbs4.md §A.4), so any file counts.
func (s *FileChunkStore) TouchMarker(ctx context.Context, d Digest) (bool, error) {
	if err := touchPath(s.Path(d)); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("touch chunk %s: %w", d, err)
	}
	return true, nil
}

// WriteMarker makes the 0-byte marker file of chunk d (pbs4.md §A.4)
// unless a file of it exists, which is touched instead. The caller holds
// the prefix lock shared when it must not race a sweep.
func (s *FileChunkStore) WriteMarker(ctx context.Context, d Digest) error {
	if ok, err := s.TouchMarker(ctx, d); ok || err != nil {
		return err
	}
	if err := s.write(s.Path(d), nil); err != nil {
		return fmt.Errorf("chunk marker %s: %w", d, err)
	}
	return nil
}
