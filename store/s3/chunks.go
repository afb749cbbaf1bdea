package s3

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/pbsfs/pbsfs/store"
)

// ErrUnavailable reports a chunk object that could not be fetched (the
// server did not answer, or kept failing after the retries).
var ErrUnavailable = errors.New("s3: chunk object unavailable")

// maxChunkObject is the largest chunk object accepted: the blob payload
// limit plus the largest header.
const maxChunkObject = store.MaxBlobSize + 64

// Chunks is the chunk store of an S3 datastore: the objects
// `<store>/.chunks/<4hex>/<64hex>` with a local chunk directory in front
// (a PBS cache directory, or pbsfs's own). A non-empty local file is the
// chunk; an empty one is a marker saying the object exists (pbs4.md
// §A.4); a missing one says nothing. It implements store.ChunkStore.
type Chunks struct {
	c     *Client
	local *store.FileChunkStore
}

// NewChunks returns the chunk store of client c's datastore with local as
// its chunk directory.
func NewChunks(c *Client, local *store.FileChunkStore) *Chunks {
	return &Chunks{c: c, local: local}
}

var _ store.ChunkStore = (*Chunks)(nil)

// Client returns the bucket client.
func (s *Chunks) Client() *Client { return s.c }

// Local returns the local chunk directory.
func (s *Chunks) Local() *store.FileChunkStore { return s.local }

// ObjectRel returns the key of chunk file name (a digest, or one with a
// .N.bad suffix) relative to the datastore: ".chunks/<4hex>/<name>".
func ObjectRel(name string) string { return ".chunks/" + name[:4] + "/" + name }

// Get returns the chunk's local copy when the cache holds one, else the
// object. A missing object is store.ErrChunkMissing.
func (s *Chunks) Get(ctx context.Context, d store.Digest) ([]byte, error) {
	b, err := s.local.Get(ctx, d)
	if err == nil && len(b) > 0 {
		return b, nil
	}
	if err != nil && !errors.Is(err, store.ErrChunkMissing) {
		return nil, err
	}
	return s.Fetch(ctx, d)
}

// Fetch returns the chunk's object, whatever the local directory holds.
func (s *Chunks) Fetch(ctx context.Context, d store.Digest) ([]byte, error) {
	var b []byte
	err := s.FetchInto(ctx, d, func(n int64) ([][]byte, error) {
		b = make([]byte, n)
		return [][]byte{b}, nil
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// FetchInto reads the chunk's object, whatever the local directory holds,
// into the buffers bufs returns for its size (store.ChunkFetcher). A
// missing object is store.ErrChunkMissing; one of the wrong size, or
// empty, store.ErrCorrupt; a server that does not answer ErrUnavailable.
func (s *Chunks) FetchInto(ctx context.Context, d store.Digest, bufs func(n int64) ([][]byte, error)) error {
	var bufErr error
	_, err := s.c.GetInto(ctx, ObjectRel(d.String()), maxChunkObject, func(n int64) ([][]byte, error) {
		if n == 0 {
			bufErr = fmt.Errorf("chunk %s: empty object: %w", d, store.ErrCorrupt)
			return nil, bufErr
		}
		bs, err := bufs(n)
		bufErr = err
		return bs, err
	})
	switch {
	case err == nil:
		return nil
	case bufErr != nil:
		return bufErr
	case errors.Is(err, ErrNotFound):
		return fmt.Errorf("chunk %s: not in bucket %s: %w", d, s.c.cfg.Bucket, store.ErrChunkMissing)
	case errors.Is(err, ErrTooLarge), errors.Is(err, ErrSizeMismatch):
		return fmt.Errorf("chunk %s: %v: %w", d, err, store.ErrCorrupt)
	case ctx.Err() != nil:
		return ctx.Err()
	}
	// Not %w: a transport errno (ECONNREFUSED) must not reach the mount
	// as the file's errno; the chunk is unavailable (EIO).
	return fmt.Errorf("chunk %s: %v: %w", d, err, ErrUnavailable)
}

var _ store.ChunkFetcher = (*Chunks)(nil)

// Insert stores chunk d as PBS 4 does (spec A.3, A.8): under the prefix
// lock (shared), a local file of it (marker or chunk) is touched and
// counts as a duplicate; otherwise the object is put with If-None-Match: *
// (412, already there, is a duplicate too) and then the 0-byte marker is
// made, so that the collector sees the chunk from the moment it exists.
func (s *Chunks) Insert(ctx context.Context, d store.Digest, blob []byte) (bool, error) {
	if _, err := store.BlobKindOf(blob); err != nil {
		return false, fmt.Errorf("insert chunk %s: %w", d, err)
	}
	unlock, err := s.lock(d)
	if err != nil {
		return false, err
	}
	defer unlock()
	if ok, err := s.local.TouchMarker(ctx, d); ok || err != nil {
		return ok, err
	}
	existed, err := s.c.Put(ctx, ObjectRel(d.String()), blob, true)
	if err != nil {
		return false, fmt.Errorf("insert chunk %s: %w", d, err)
	}
	if err := s.local.WriteMarker(ctx, d); err != nil {
		return false, fmt.Errorf("insert chunk %s: %w", d, err)
	}
	return existed, nil
}

// RenameBad moves corrupt chunk d aside as PBS 4's verify does
// (rename_corrupt_chunk, pbs4.md §A.3): the object becomes
// `.chunks/<4hex>/<digest>.<n>.bad` and the local file (marker or chunk),
// if there is one, `<digest>.<n>.bad`, with n the first of 0..9 taken
// neither locally nor in the bucket (9 is overwritten when all are; PBS
// looks at the local files only, which a bucket opened alone does not
// have). It returns the new name. All of it happens under the prefix
// lock held exclusively, so no writer reuses the chunk meanwhile; the
// object is copied first, then the local file renamed (a writer then
// uploads the chunk again), then the object deleted, so a failure leaves
// nothing that claims a chunk the bucket does not have.
func (s *Chunks) RenameBad(ctx context.Context, d store.Digest) (string, error) {
	if s.local.PrefixLock != nil {
		unlock, err := s.local.PrefixLock(uint16(d[0])<<8|uint16(d[1]), true)
		if err != nil {
			return "", fmt.Errorf("chunk %s: %w", d, err)
		}
		defer unlock()
	}
	p := s.local.Path(d)
	var name string
	for n := range 10 {
		name = fmt.Sprintf("%s.%d.bad", d, n)
		if _, err := os.Lstat(p + name[64:]); err == nil {
			continue
		}
		_, err := s.c.Stat(ctx, ObjectRel(name))
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("chunk %s: %w", d, err)
		}
	}
	if err := s.c.Copy(ctx, ObjectRel(d.String()), ObjectRel(name)); err != nil {
		return "", fmt.Errorf("chunk %s: %w", d, err)
	}
	if err := os.Rename(p, p+name[64:]); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("chunk %s: %w", d, err)
	}
	if err := s.c.Remove(ctx, []string{ObjectRel(d.String())}); err != nil {
		return "", fmt.Errorf("chunk %s: copied to %s, but the corrupt object stays: %w", d, name, err)
	}
	return name, nil
}

// TouchIfPresent touches chunk d's local file (marker or chunk) and
// reports whether there is one: a writer then reuses the chunk.
func (s *Chunks) TouchIfPresent(ctx context.Context, d store.Digest) (bool, error) {
	unlock, err := s.lock(d)
	if err != nil {
		return false, err
	}
	defer unlock()
	return s.local.TouchMarker(ctx, d)
}

func (s *Chunks) lock(d store.Digest) (func(), error) {
	if s.local.PrefixLock == nil {
		return func() {}, nil
	}
	unlock, err := s.local.PrefixLock(uint16(d[0])<<8|uint16(d[1]), false)
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", d, err)
	}
	return unlock, nil
}

// Touch marks chunk d's local file as used now.
func (s *Chunks) Touch(ctx context.Context, d store.Digest) error { return s.local.Touch(ctx, d) }

// Stat returns the local file's size and times.
func (s *Chunks) Stat(ctx context.Context, d store.Digest) (store.ChunkInfo, error) {
	return s.local.Stat(ctx, d)
}

// ListPrefix lists the local files of a prefix directory.
func (s *Chunks) ListPrefix(ctx context.Context, prefix uint16) ([]store.ChunkInfo, error) {
	return s.local.ListPrefix(ctx, prefix)
}

// Remove deletes the object of chunk file name, then its local file.
func (s *Chunks) Remove(ctx context.Context, name string) error {
	if !store.IsChunkName(name) {
		return fmt.Errorf("remove %q: %w", name, store.ErrInvalidName)
	}
	if err := s.c.Remove(ctx, []string{ObjectRel(name)}); err != nil {
		return err
	}
	if err := s.local.Remove(ctx, name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// ChunkName returns the chunk file name of an object key relative to the
// datastore (".chunks/<4hex>/<name>"), or "" when it is not one the
// collector considers (64 hex digits, optionally .N.bad, in the right
// prefix directory).
func ChunkName(rel string) string {
	rest, ok := strings.CutPrefix(rel, ".chunks/")
	if !ok || len(rest) < 5 || rest[4] != '/' {
		return ""
	}
	name := rest[5:]
	if !store.IsChunkName(name) || name[:4] != rest[:4] || strings.ToLower(name) != name {
		return ""
	}
	return name
}

// InUse returns the host the bucket's `.in-use` marker names.
func (s *Chunks) InUse(ctx context.Context) (string, error) { return s.c.InUse(ctx) }

// ListObjects calls fn for every chunk object of the datastore in key
// order, with its chunk file name; other keys below `.chunks/` are
// skipped.
func (s *Chunks) ListObjects(ctx context.Context, fn func(name string, size int64, mtime time.Time) error) error {
	return s.c.List(ctx, ".chunks/", func(o ObjectInfo) error {
		name := ChunkName(o.Rel)
		if name == "" {
			return nil
		}
		return fn(name, o.Size, o.LastModified)
	})
}

// RemoveObjects deletes the objects of the chunk file names given, in
// one DeleteObjects request per 1000.
func (s *Chunks) RemoveObjects(ctx context.Context, names []string) error {
	rels := make([]string, len(names))
	for i, n := range names {
		rels[i] = ObjectRel(n)
	}
	for i := 0; i < len(rels); i += 1000 {
		if err := s.c.Remove(ctx, rels[i:min(i+1000, len(rels))]); err != nil {
			return err
		}
	}
	return nil
}

// Location names the bucket and datastore.
func (s *Chunks) Location() string { return s.c.cfg.URL() }

// Requests summarises the requests the client sent.
func (s *Chunks) Requests() string { return s.c.counts.String() }
