package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
)

// VerifyReport is the outcome of checking one snapshot.
type VerifyReport struct {
	Ref SnapshotRef
	// Files and Chunks count what was checked; chunks already checked
	// earlier in the same run (through the shared set) are not counted.
	Files, Chunks int
	// Problems lists every failed check, each naming its file or digest.
	Problems []error
}

// OK reports whether every check passed.
func (r *VerifyReport) OK() bool { return len(r.Problems) == 0 }

// VerifySnapshot checks snapshot ref as PBS's verify does (§9.2): each
// blob's size, SHA-256 and CRC; each index's checksum and size against the
// manifest; and each distinct chunk's CRC, decoded digest and length.
// checked carries the digests already verified in this run (may be nil).
func (s *Store) VerifySnapshot(ctx context.Context, ref SnapshotRef, checked map[Digest]error) (*VerifyReport, error) {
	r := &VerifyReport{Ref: ref}
	m, err := s.LoadManifest(ref)
	if err != nil {
		r.Problems = append(r.Problems, err)
		return r, nil
	}
	if checked == nil {
		checked = map[Digest]error{}
	}
	for _, f := range m.Files {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		r.Files++
		p := s.Path(path.Join(ref.Dir(), f.Filename))
		switch KindOf(f.Filename) {
		case KindBlob:
			if err := s.verifyBlobFile(p, f); err != nil {
				r.Problems = append(r.Problems, err)
			}
		case KindFixed, KindDynamic:
			idx, err := OpenIndex(p)
			if err != nil {
				r.Problems = append(r.Problems, err)
				continue
			}
			csum := idx.Checksum()
			if hex.EncodeToString(csum[:]) != f.Csum || idx.Size() != f.Size {
				r.Problems = append(r.Problems, fmt.Errorf("%s: checksum %x size %d, manifest says %s size %d: %w", p, csum, idx.Size(), f.Csum, f.Size, ErrCorrupt))
			}
			for i := range idx.Len() {
				d, start, end := idx.Chunk(i)
				err, seen := checked[d]
				if !seen {
					err = s.verifyChunk(ctx, d, end-start, f.CryptMode == CryptEncrypt)
					checked[d] = err
					r.Chunks++
				}
				if err != nil && !seen {
					r.Problems = append(r.Problems, fmt.Errorf("%s: %w", p, err))
				}
			}
		}
	}
	return r, nil
}

func (s *Store) verifyBlobFile(p string, f FileInfo) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	if uint64(len(b)) != f.Size || hex.EncodeToString(sum[:]) != f.Csum {
		return fmt.Errorf("%s: size %d sha256 %x, manifest says size %d %s: %w", p, len(b), sum, f.Size, f.Csum, ErrCorrupt)
	}
	if f.CryptMode == CryptEncrypt {
		_, err = VerifyBlobCRC(b)
	} else {
		_, err = s.codec.Decode(b)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// verifyChunk loads chunk d without the cache and checks it.
func (s *Store) verifyChunk(ctx context.Context, d Digest, length uint64, encrypted bool) error {
	blob, err := s.chunks.Get(ctx, d)
	if err != nil {
		return err
	}
	kind, err := VerifyBlobCRC(blob)
	if err != nil {
		return fmt.Errorf("chunk %s: %w", d, err)
	}
	if kind.Encrypted() != encrypted {
		return fmt.Errorf("chunk %s: %s blob in a %v archive: %w", d, kind, map[bool]string{true: "encrypted", false: "plain"}[encrypted], ErrCorrupt)
	}
	if encrypted {
		return nil
	}
	data, err := s.codec.Decode(blob)
	if err != nil {
		return fmt.Errorf("chunk %s: %w", d, err)
	}
	if DigestOf(data) != d || uint64(len(data)) != length {
		return fmt.Errorf("chunk %s: content digest %s, %d bytes (index says %d): %w", d, DigestOf(data), len(data), length, ErrCorrupt)
	}
	return nil
}

// IsMissing reports whether err is a missing chunk.
func IsMissing(err error) bool { return errors.Is(err, ErrChunkMissing) }
