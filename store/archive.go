package store

import (
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
	m.ref, m.match = &ref, &keyMatch{}
	return m, nil
}

// readBlobFile reads the blob file at rel (a manifest) whose content may
// not exceed MaxManifestSize: neither the file nor its decompression may
// cost more memory than that bound allows.
func (s *Store) readBlobFile(rel string) ([]byte, error) {
	f, err := os.Open(s.Path(rel))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", s.Path(rel), ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxManifestSize+blobHeaderSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxManifestSize+blobHeaderSize {
		return nil, fmt.Errorf("%s: file over %d bytes: %w", s.Path(rel), MaxManifestSize+blobHeaderSize, ErrTooLarge)
	}
	data, err := s.codec.DecodeLimit(b, MaxManifestSize)
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
