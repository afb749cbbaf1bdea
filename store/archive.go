package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/pbsfs/pbsfs/store/crypto"
)

// LoadManifest reads and parses the manifest of snapshot ref. Errors name
// the file.
func (s *Store) LoadManifest(ref SnapshotRef) (*Manifest, error) {
	p := path.Join(ref.Dir(), ManifestName)
	data, err := s.readBlobFile(p)
	if err != nil {
		return nil, err
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Path(p), err)
	}
	return m, nil
}

func (s *Store) readBlobFile(rel string) ([]byte, error) {
	b, err := os.ReadFile(s.Path(rel))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", s.Path(rel), ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	data, err := s.codec.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Path(rel), err)
	}
	return data, nil
}

// ReadBlob returns the decoded content of blob archive name (with its
// .blob suffix) of snapshot ref. An encrypted blob (judged by its magic,
// crypto.md P7) is decrypted with the key the snapshot's manifest names.
func (s *Store) ReadBlob(ref SnapshotRef, name string) ([]byte, error) {
	if KindOf(name) != KindBlob {
		return nil, fmt.Errorf("%s: not a blob: %w", name, ErrInvalidName)
	}
	rel := path.Join(ref.Dir(), name)
	b, err := os.ReadFile(s.Path(rel))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", s.Path(rel), ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	// Encrypted or not is the blob's magic (crypto.md P7); with keys at
	// hand a signed manifest's signature is checked first.
	var key *crypto.Key
	if kind, err := BlobKindOf(b); err == nil && (kind.Encrypted() || s.keys.Len() > 0) {
		if key, err = s.blobKey(ref, kind.Encrypted()); err != nil {
			return nil, fmt.Errorf("%s/%s: %w", ref, name, err)
		}
	}
	data, err := s.codec.AppendDecodeWith(nil, b, key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Path(rel), err)
	}
	return data, nil
}

// OpenIndex opens index archive name (with its .fidx or .didx suffix) of
// snapshot ref.
func (s *Store) OpenIndex(ref SnapshotRef, name string) (Index, error) {
	if err := validArchiveName(name); err != nil {
		return nil, err
	}
	idx, err := OpenIndex(s.Path(path.Join(ref.Dir(), name)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s/%s: %w", ref, name, ErrNotFound)
	}
	return idx, err
}

// ResolveArchive maps a user's archive name to a file of the snapshot: an
// exact file name, or a name without its .fidx/.didx/.blob suffix
// ("drive-scsi0.img", "root.pxar", "qemu-server.conf").
func (s *Store) ResolveArchive(si SnapshotInfo, name string) (string, error) {
	if si.HasFile(name) {
		return name, nil
	}
	for _, ext := range []string{".fidx", ".didx", ".blob"} {
		if si.HasFile(name + ext) {
			return name + ext, nil
		}
	}
	return "", fmt.Errorf("snapshot %s has no archive %q (has %s): %w", si.Ref, name, strings.Join(si.Files, ", "), ErrNotFound)
}

// Archive gives random access to the decoded bytes of an index archive.
// It is safe for concurrent use.
type Archive struct {
	s   *Store
	idx Index
	dec *ChunkDecoder
	ctx context.Context
}

// NewArchive returns random access over the unencrypted archive idx
// describes. ctx bounds the chunk loads of the ReadAt method.
func (s *Store) NewArchive(ctx context.Context, idx Index) *Archive {
	return s.NewArchiveWith(ctx, idx, s.plain)
}

// NewArchiveWith returns random access over the archive idx describes,
// its chunks decoded by dec (see Store.Decoder).
func (s *Store) NewArchiveWith(ctx context.Context, idx Index, dec *ChunkDecoder) *Archive {
	return &Archive{s: s, idx: idx, dec: dec, ctx: ctx}
}

// OpenArchive opens index archive name of snapshot ref for reading, with
// the decoder its manifest entry asks for: an encrypted archive needs the
// key the manifest names.
func (s *Store) OpenArchive(ctx context.Context, ref SnapshotRef, name string) (*Archive, error) {
	m, err := s.LoadManifest(ref)
	if err != nil {
		return nil, err
	}
	dec, err := s.Decoder(m, name)
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", ref, name, err)
	}
	idx, err := s.OpenIndex(ref, name)
	if err != nil {
		return nil, err
	}
	return s.NewArchiveWith(ctx, idx, dec), nil
}

// Decoder returns the archive's chunk decoder.
func (a *Archive) Decoder() *ChunkDecoder { return a.dec }

// Index returns the archive's index.
func (a *Archive) Index() Index { return a.idx }

// Size returns the archive size.
func (a *Archive) Size() int64 { return int64(a.idx.Size()) }

// ReadAt reads decoded archive bytes at off, loading chunks through the
// store's cache. A missing or corrupt chunk is an error naming its digest.
func (a *Archive) ReadAt(p []byte, off int64) (int, error) {
	return a.ReadAtContext(a.ctx, p, off)
}

// ReadAtContext is ReadAt with its own context.
func (a *Archive) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	size := a.idx.Size()
	n := 0
	for n < len(p) {
		pos := uint64(off) + uint64(n)
		if pos >= size {
			return n, io.EOF
		}
		data, in, err := a.ChunkAt(ctx, pos)
		if err != nil {
			return n, err
		}
		n += copy(p[n:], data[in:])
	}
	return n, nil
}

// Reader returns an io.ReadSeeker over the whole archive.
func (a *Archive) Reader() *io.SectionReader { return io.NewSectionReader(a, 0, a.Size()) }

// WriteTo streams the whole archive to w, chunk by chunk.
func (a *Archive) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for i := range a.idx.Len() {
		data, err := a.chunk(a.ctx, i)
		if err != nil {
			return total, err
		}
		n, err := w.Write(data)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// ChunkAt returns the decoded chunk holding archive offset off and the
// position of off in it. The slice is shared with the store's chunk
// cache: callers must not modify it.
func (a *Archive) ChunkAt(ctx context.Context, off uint64) ([]byte, uint64, error) {
	i, in, err := a.idx.Locate(off)
	if err != nil {
		return nil, 0, err
	}
	data, err := a.chunk(ctx, i)
	return data, in, err
}

// chunk returns the decoded chunk i, checked against the length the
// index gives it.
func (a *Archive) chunk(ctx context.Context, i int) ([]byte, error) {
	d, start, end := a.idx.Chunk(i)
	data, err := a.s.ReadChunkWith(ctx, d, a.dec)
	if err != nil {
		return nil, err
	}
	if uint64(len(data)) != end-start {
		return nil, fmt.Errorf("chunk %s: %d bytes, index says %d: %w", d, len(data), end-start, ErrCorrupt)
	}
	return data, nil
}
