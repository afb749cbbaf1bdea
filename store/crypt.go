package store

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/pbsfs/pbsfs/store/crypto"
)

// This file joins the store to package crypto: encrypted blobs, keyed
// chunk digests, signed manifests, and the choice of key for a snapshot
// (crypto.md §3).

// AppendDecodeWith is AppendDecode that also decodes encrypted blobs with
// key: the whole payload is authenticated before any of it is used, then
// decompressed (crypto.md §4). Without a key an encrypted blob is an
// ErrEncrypted error; a tag failure is an ErrCorrupt one.
func (c *Codec) AppendDecodeWith(dst, b []byte, key *crypto.Key) ([]byte, error) {
	kind, err := BlobKindOf(b)
	if err != nil {
		return nil, err
	}
	if !kind.Encrypted() {
		return c.AppendDecode(dst, b)
	}
	if key == nil {
		return nil, fmt.Errorf("%s blob without a key: %w", kind, ErrEncrypted)
	}
	if kind == BlobEncrypted {
		plain, _, err := key.OpenBlob(dst, b)
		if err != nil {
			return nil, cryptErr(err, key)
		}
		return plain, nil
	}
	// ENCR_COMPR: the plaintext is zstd data; decrypt it into scratch
	// space, then decompress into dst.
	frame, _, err := key.OpenBlob(nil, b)
	if err != nil {
		return nil, cryptErr(err, key)
	}
	out, err := c.dec.DecodeAll(frame, dst)
	if err != nil {
		return nil, fmt.Errorf("zstd payload of an authenticated encrypted blob: %v: %w", err, ErrCorrupt)
	}
	return out, nil
}

// cryptErr turns a crypto error into a store one: every failure of an
// encrypted blob is corrupt data (a key the manifest does not name is
// never used, so a tag failure means damage).
func cryptErr(err error, key *crypto.Key) error {
	if errors.Is(err, crypto.ErrAuth) {
		return fmt.Errorf("decryption with key %s failed (wrong key or corrupted data): %w", key.Fingerprint().Short(), ErrCorrupt)
	}
	return fmt.Errorf("%v: %w", err, ErrCorrupt)
}

// AppendEncodeEncrypted appends data encrypted with key as a DataBlob:
// compressed first when compress is set and the zstd form is strictly
// shorter (datastore.md §2.4), under a fresh random IV.
func (c *Codec) AppendEncodeEncrypted(dst, data []byte, key *crypto.Key, compress bool) ([]byte, error) {
	if len(data) > MaxBlobSize {
		return nil, fmt.Errorf("blob of %d bytes: %w", len(data), ErrTooLarge)
	}
	// Build the payload behind room for the header, then encrypt it in
	// place: no scratch buffer per chunk.
	start := len(dst)
	dst = append(dst, make([]byte, crypto.HeaderSize)...)
	if compress {
		dst = c.enc.EncodeAll(data, dst)
		if len(dst)-start-crypto.HeaderSize < len(data) {
			return key.SealBlobInPlace(dst, start, true), nil
		}
		dst = dst[:start+crypto.HeaderSize]
	}
	dst = append(dst, data...)
	return key.SealBlobInPlace(dst, start, false), nil
}

// ChunkDecoder turns the stored blobs of one archive's chunks into
// verified plaintext: it knows whether the manifest says the archive's
// chunks are encrypted and, if so, the key. Decode checks the blob's kind
// against that mode, authenticates and decrypts, decompresses, and checks
// the digest (keyed for encrypted chunks). A ChunkDecoder is safe for
// concurrent use.
type ChunkDecoder struct {
	codec     *Codec
	key       *crypto.Key
	encrypted bool
}

// Encrypted reports whether the archive's chunks are encrypted.
func (d *ChunkDecoder) Encrypted() bool { return d.encrypted }

// Key returns the key of an encrypted archive's decoder, or nil.
func (d *ChunkDecoder) Key() *crypto.Key { return d.key }

// Digest returns the digest naming a chunk with plaintext data in this
// archive: keyed for encrypted archives, plain SHA-256 otherwise.
func (d *ChunkDecoder) Digest(data []byte) Digest {
	if d.encrypted {
		return d.key.Digest(data)
	}
	return DigestOf(data)
}

// Decode appends the verified plaintext of chunk digest, stored as blob,
// to dst.
func (d *ChunkDecoder) Decode(dst, blob []byte, digest Digest) ([]byte, error) {
	kind, err := BlobKindOf(blob)
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", digest, err)
	}
	if kind.Encrypted() != d.encrypted {
		mode := CryptNone
		if d.encrypted {
			mode = CryptEncrypt
		}
		return nil, fmt.Errorf("chunk %s: %s blob in an archive of crypt mode %s: %w", digest, kind, mode, ErrCorrupt)
	}
	start := len(dst)
	data, err := d.codec.AppendDecodeWith(dst, blob, d.key)
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", digest, err)
	}
	if got := d.Digest(data[start:]); got != digest {
		return nil, fmt.Errorf("chunk %s: content digest differs (%s): %w", digest, got, ErrCorrupt)
	}
	return data, nil
}

// PlainDecoder returns the decoder of unencrypted archives.
func (s *Store) PlainDecoder() *ChunkDecoder { return s.plain }

// EncryptedDecoder returns the decoder of archives encrypted with key.
func (s *Store) EncryptedDecoder(key *crypto.Key) *ChunkDecoder {
	return &ChunkDecoder{codec: s.codec, key: key, encrypted: true}
}

// Keys returns the keys the store was opened with.
func (s *Store) Keys() *crypto.Keyring { return s.keys }

// KeyFingerprint returns the key fingerprint a manifest records in
// unprotected.key-fingerprint, if any.
func (m *Manifest) KeyFingerprint() (crypto.Fingerprint, bool, error) {
	var s *string
	ok, err := m.UnprotectedValue("key-fingerprint", &s)
	if err != nil || !ok || s == nil {
		if err != nil {
			err = fmt.Errorf("manifest key-fingerprint: %v: %w", err, ErrCorrupt)
		}
		return crypto.Fingerprint{}, false, err
	}
	fp, err := crypto.ParseFingerprint(*s)
	if err != nil {
		return fp, false, fmt.Errorf("manifest key-fingerprint: %v: %w", err, ErrCorrupt)
	}
	return fp, true, nil
}

// Encrypted reports whether any archive of the manifest has encrypted chunks.
func (m *Manifest) Encrypted() bool {
	for _, f := range m.Files {
		if f.CryptMode == CryptEncrypt {
			return true
		}
	}
	return false
}

// signedForms returns the texts a signature may cover: the JSON as read
// (pbs-old), then the struct form with unknown keys dropped (pbs-new)
// when that differs (crypto.md §3.4).
func (m *Manifest) signedForms() ([][]byte, error) {
	var forms [][]byte
	if m.raw != nil {
		c, err := crypto.CanonicalJSON(m.raw, "unprotected", "signature")
		if err == nil {
			forms = append(forms, c)
		}
	}
	c, err := m.canonical()
	if err != nil {
		return nil, err
	}
	if len(forms) == 0 || string(forms[0]) != string(c) {
		forms = append(forms, c)
	}
	return forms, nil
}

// canonical returns the canonical JSON of the manifest's signed part as
// the PBS client signs it: type, id, time and files only.
func (m *Manifest) canonical() ([]byte, error) {
	files := m.Files
	if files == nil {
		files = []FileInfo{}
	}
	doc, err := json.Marshal(map[string]any{
		"backup-type": m.BackupType, "backup-id": m.BackupID, "backup-time": m.BackupTime, "files": files,
	})
	if err != nil {
		return nil, err
	}
	return crypto.CanonicalJSON(doc)
}

// CheckSignature verifies the manifest's signature with key: the
// fingerprint the manifest records, if any, must be key's, and the HMAC
// must match (crypto.md §3.3). An unsigned manifest passes.
func (m *Manifest) CheckSignature(key *crypto.Key) error {
	if fp, ok, err := m.KeyFingerprint(); err != nil {
		return err
	} else if ok && fp != key.Fingerprint() {
		return fmt.Errorf("wrong key - unable to verify signature since manifest's key %s does not match provided key %s: %w",
			fp.Short(), key.Fingerprint().Short(), ErrEncrypted)
	}
	if m.Signature == "" {
		return nil
	}
	sig, err := hex.DecodeString(m.Signature)
	if err != nil || len(sig) != 32 {
		return fmt.Errorf("manifest signature %q is not 64 hex digits: %w", m.Signature, ErrCorrupt)
	}
	forms, err := m.signedForms()
	if err != nil {
		return fmt.Errorf("manifest: %v: %w", err, ErrCorrupt)
	}
	for _, f := range forms {
		if key.VerifySignature(f, sig) {
			return nil
		}
	}
	return fmt.Errorf("wrong signature in manifest (key %s): %w", key.Fingerprint().Short(), ErrBadSignature)
}

// Sign signs the manifest with key as the PBS client does: the HMAC over
// the canonical JSON, and unprotected.key-fingerprint.
func (m *Manifest) Sign(key *crypto.Key) error {
	if err := m.SetUnprotected("key-fingerprint", key.Fingerprint().String()); err != nil {
		return err
	}
	c, err := m.canonical()
	if err != nil {
		return err
	}
	sig := key.Sign(c)
	m.Signature = hex.EncodeToString(sig[:])
	return nil
}

// SnapshotKey returns the key to read a snapshot whose manifest is m: the
// store's key whose fingerprint the manifest records, after checking the
// signature with it. It returns nil when the manifest names one the store
// does not have, or names none and is neither signed nor encrypted. A
// manifest naming no key that is signed or lists encrypted archives gets
// the given key that authenticates it (keymatch.go), or an error.
func (s *Store) SnapshotKey(m *Manifest) (*crypto.Key, error) {
	fp, ok, err := m.KeyFingerprint()
	if err != nil {
		return nil, err
	}
	if !ok {
		if s.keys.Len() == 0 || (m.Signature == "" && !m.Encrypted()) {
			return nil, nil
		}
		return s.matchKey(m)
	}
	key, ok := s.keys.Lookup(fp)
	if !ok {
		return nil, nil
	}
	if err := m.CheckSignature(key); err != nil {
		return nil, err
	}
	return key, nil
}

// missingKeyError explains, as the PBS client does, that a manifest needs
// a key the store was not given.
func (s *Store) missingKeyError(m *Manifest) error {
	fp, ok, err := m.KeyFingerprint()
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("encrypted snapshot without key-fingerprint in its manifest: %w", ErrEncrypted)
	}
	switch keys := s.keys.Keys(); len(keys) {
	case 0:
		return fmt.Errorf("missing key - manifest was created with key %s: %w", fp.Short(), ErrEncrypted)
	case 1:
		return fmt.Errorf("wrong key - manifest's key %s does not match provided key %s: %w", fp.Short(), keys[0].Fingerprint().Short(), ErrEncrypted)
	default:
		var have []string
		for _, k := range keys {
			have = append(have, k.Fingerprint().Short())
		}
		return fmt.Errorf("wrong key - manifest's key %s matches none of the provided keys %s: %w", fp.Short(), strings.Join(have, ", "), ErrEncrypted)
	}
}

// Decoder returns the chunk decoder of archive file of the snapshot whose
// manifest is m. An encrypted archive needs the key the manifest names
// (ErrEncrypted otherwise); a signed manifest's signature is checked
// whenever that key is at hand.
func (s *Store) Decoder(m *Manifest, file string) (*ChunkDecoder, error) {
	f, ok := m.File(file)
	if !ok {
		return nil, fmt.Errorf("manifest has no archive %s: %w", file, ErrNotFound)
	}
	key, err := s.SnapshotKey(m)
	if err != nil {
		return nil, err
	}
	if f.CryptMode != CryptEncrypt {
		return s.plain, nil
	}
	if key == nil {
		return nil, s.missingKeyError(m)
	}
	return s.EncryptedDecoder(key), nil
}

// blobKey returns the key to decode a blob of snapshot ref, checking the
// manifest's signature when the key is at hand; a missing key is an
// error only for an encrypted blob.
func (s *Store) blobKey(ref SnapshotRef, encrypted bool) (*crypto.Key, error) {
	m, err := s.LoadManifest(ref)
	if err != nil {
		return nil, err
	}
	key, err := s.SnapshotKey(m)
	if err != nil {
		return nil, err
	}
	if key == nil && encrypted {
		return nil, s.missingKeyError(m)
	}
	return key, nil
}

// BlobEncrypted reports whether blob file name of snapshot ref is
// encrypted, by its magic: a plain blob (rsa-encrypted.key.blob) may be
// listed with crypt mode encrypt (crypto.md §2.7, P7).
func (s *Store) BlobEncrypted(ref SnapshotRef, name string) (bool, error) {
	f, err := os.Open(s.Path(path.Join(ref.Dir(), name)))
	if err != nil {
		return false, err
	}
	defer f.Close()
	hdr := make([]byte, encryptedBlobHeaderSize)
	n, _ := io.ReadFull(f, hdr)
	kind, err := BlobKindOf(hdr[:n])
	if err != nil {
		return false, err
	}
	return kind.Encrypted(), nil
}
