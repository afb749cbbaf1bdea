package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/pbsfs/pbsfs/store/crypto"
)

// A manifest that names no key (no unprotected.key-fingerprint: written
// by an old client, or the field stripped) is read as the PBS client
// reads it: with the key it was given (check_fingerprint passes when the
// manifest has none, and a signed manifest's HMAC is checked with that
// key). pbsfs may hold several keys, so it finds the one that
// authenticates something of the snapshot: the HMAC of a signed
// manifest; for an unsigned one, the AES-GCM tag of an encrypted blob or
// of an encrypted archive's first chunk. A key that authenticates nothing
// is never used: a wrong key is an error, never garbage.

// errNoKeyMatch marks the errors of a manifest naming no key that none of
// the given keys authenticates: the snapshot needs a key not at hand,
// which verify (like a manifest naming a key not given) does not count
// as a problem.
var errNoKeyMatch = noKeyMatch{}

type noKeyMatch struct{}

func (noKeyMatch) Error() string { return "" }

// keyMatch is the key found for a manifest naming none, computed once per
// loaded manifest.
type keyMatch struct {
	once sync.Once
	key  *crypto.Key
	err  error
}

// matchKey returns the key of the store's keys that authenticates the
// snapshot of m, a manifest naming no key, and logs which one it is.
func (s *Store) matchKey(m *Manifest) (*crypto.Key, error) {
	if m.match == nil {
		return s.findKey(m)
	}
	m.match.once.Do(func() { m.match.key, m.match.err = s.findKey(m) })
	return m.match.key, m.match.err
}

// findKey is matchKey without the cache.
func (s *Store) findKey(m *Manifest) (*crypto.Key, error) {
	keys := s.keys.Keys()
	what := m.BackupType + "/" + m.BackupID
	if m.ref != nil {
		what = m.ref.String()
	}
	if m.Signature != "" {
		var errs []string
		for _, k := range keys {
			err := m.CheckSignature(k)
			if err == nil {
				s.log.Info("manifest names no key; its signature verifies with a given key",
					"snapshot", what, "key", k.Fingerprint().Short())
				return k, nil
			}
			if !errors.Is(err, ErrBadSignature) {
				return nil, err
			}
			errs = append(errs, k.Fingerprint().Short())
		}
		return nil, fmt.Errorf("wrong signature in manifest without key-fingerprint: none of the provided keys %s signed it: %w%w",
			strings.Join(errs, ", "), ErrBadSignature, errNoKeyMatch)
	}
	if m.ref == nil {
		return nil, fmt.Errorf("encrypted snapshot without key-fingerprint in its manifest: %w", ErrEncrypted)
	}
	// Unsigned: decrypt a sample with each key; the first readable
	// sample decides.
	var readErrs []error
	for _, f := range m.Files {
		if f.CryptMode != CryptEncrypt {
			continue
		}
		k, file, err := s.trySample(*m.ref, f.Filename, keys)
		if err != nil {
			readErrs = append(readErrs, err)
			continue
		}
		if k == nil {
			var tried []string
			for _, k := range keys {
				tried = append(tried, k.Fingerprint().Short())
			}
			return nil, fmt.Errorf("wrong key - manifest names no key, and none of the provided keys %s decrypts %s: %w%w",
				strings.Join(tried, ", "), file, ErrEncrypted, errNoKeyMatch)
		}
		s.log.Info("manifest names no key; a given key decrypts its archives",
			"snapshot", what, "key", k.Fingerprint().Short(), "sample", file)
		return k, nil
	}
	if len(readErrs) > 0 && len(keys) == 1 {
		// As the PBS client: its one key is used, and every chunk read
		// authenticates it.
		s.log.Warn("manifest names no key and no encrypted data could be read to check the given key; using it",
			"snapshot", what, "key", keys[0].Fingerprint().Short(), "err", errors.Join(readErrs...))
		return keys[0], nil
	}
	if len(readErrs) > 0 {
		return nil, fmt.Errorf("manifest names no key, and no encrypted data could be read to find it: %w", errors.Join(readErrs...))
	}
	return nil, fmt.Errorf("encrypted snapshot without key-fingerprint in its manifest: %w", ErrEncrypted)
}

// trySample decrypts something of encrypted archive file of snapshot ref
// with each of keys: a blob, or the first chunk of an index. It returns
// the key whose tag verifies (nil if none does) and what was decrypted,
// or an error if nothing could be read.
func (s *Store) trySample(ref SnapshotRef, file string, keys []*crypto.Key) (*crypto.Key, string, error) {
	var blob []byte
	var digest Digest
	sample := ref.String() + "/" + file
	if KindOf(file) == KindBlob {
		b, err := os.ReadFile(s.Path(path.Join(ref.Dir(), file)))
		if err != nil {
			return nil, "", err
		}
		if kind, err := BlobKindOf(b); err != nil || !kind.Encrypted() {
			return nil, "", fmt.Errorf("%s: not an encrypted blob", sample)
		}
		blob = b
	} else {
		idx, err := s.OpenIndex(ref, file)
		if err != nil {
			return nil, "", err
		}
		if idx.Len() == 0 {
			return nil, "", fmt.Errorf("%s: no chunks", sample)
		}
		digest, _, _ = idx.Chunk(0)
		if blob, err = s.chunks.Get(context.Background(), digest); err != nil {
			return nil, "", err
		}
		sample = fmt.Sprintf("%s chunk %s", sample, digest)
	}
	for _, k := range keys {
		var err error
		if KindOf(file) == KindBlob {
			_, err = s.codec.AppendDecodeWith(nil, blob, k)
		} else {
			_, err = s.EncryptedDecoder(k).Decode(nil, blob, digest)
		}
		if err == nil {
			return k, sample, nil
		}
	}
	return nil, sample, nil
}
