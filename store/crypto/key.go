package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
)

// KeySize is the size of an encryption key (enc_key) and of id_key.
const KeySize = 32

// fingerprintInput is SHA256("Proxmox Backup Encryption Key Fingerprint"),
// the prefix hashed with id_key into the fingerprint (datastore.md §2.5).
var fingerprintInput = [32]byte{
	0x6e, 0xd0, 0xef, 0x77, 0x47, 0x1f, 0xff, 0x4d, 0x55, 0xc7, 0xa8, 0xfe, 0x4a, 0x9d, 0xb6, 0x21,
	0x61, 0x40, 0x7f, 0x13, 0x4c, 0x72, 0x5d, 0xdf, 0x30, 0x99, 0x2d, 0x25, 0xec, 0x45, 0xed, 0x26,
}

// Key is an encryption key with what PBS derives from it (CryptConfig
// upstream): the AES-256-GCM cipher for blobs, id_key for keyed chunk
// digests and manifest signatures, and the fingerprint. A Key is safe for
// concurrent use.
type Key struct {
	aead  cipher.AEAD
	block cipher.Block // AES-256 of enc_key, for BlobStream
	id    [32]byte
	fp    Fingerprint
}

// NewKey returns the Key of the 32 secret bytes enc.
func NewKey(enc [KeySize]byte) *Key {
	block, err := aes.NewCipher(enc[:])
	if err != nil {
		panic(err) // 32 bytes is always a valid AES key size
	}
	aead, err := cipher.NewGCMWithNonceSize(block, ivSize) // §7 P1: 16-byte IV
	if err != nil {
		panic(err)
	}
	k := &Key{aead: aead, block: block}
	// id_key = PBKDF2-HMAC-SHA256(enc_key, "_id_key", 10 rounds) (§1, P2).
	id, err := pbkdf2.Key(sha256.New, string(enc[:]), []byte("_id_key"), 10, KeySize)
	if err != nil {
		panic(err) // only fails in FIPS-only mode, where PBS keys cannot work (P13)
	}
	copy(k.id[:], id)
	h := sha256.New()
	h.Write(fingerprintInput[:])
	h.Write(k.id[:])
	h.Sum(k.fp[:0])
	return k
}

// Fingerprint returns the key's fingerprint.
func (k *Key) Fingerprint() Fingerprint { return k.fp }

// Digest returns the keyed digest naming an encrypted chunk of plaintext
// data: SHA256(data || id_key) (datastore.md §2.6).
func (k *Key) Digest(data []byte) [32]byte {
	h := sha256.New()
	h.Write(data)
	h.Write(k.id[:])
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// Sign returns HMAC-SHA256(id_key, data), the manifest signature over its
// canonical JSON (datastore.md §4).
func (k *Key) Sign(data []byte) [32]byte {
	m := hmac.New(sha256.New, k.id[:])
	m.Write(data)
	var s [32]byte
	m.Sum(s[:0])
	return s
}

// VerifySignature reports whether sig is the signature of data, in
// constant time.
func (k *Key) VerifySignature(data []byte, sig []byte) bool {
	want := k.Sign(data)
	return len(sig) == len(want) && subtle.ConstantTimeCompare(want[:], sig) == 1
}

// Layout of an encrypted DataBlob (datastore.md §2.2): magic, CRC-32 of
// the ciphertext, IV, GCM tag, ciphertext.
const (
	ivSize  = 16
	tagSize = 16
	// HeaderSize is the header of an encrypted blob.
	HeaderSize = 8 + 4 + ivSize + tagSize
)

// Magic numbers of encrypted blobs (datastore.md §2.1).
var (
	// MagicEncrypted starts a blob whose plaintext is the data itself.
	MagicEncrypted = [8]byte{123, 103, 133, 190, 34, 45, 76, 240}
	// MagicEncryptedCompressed starts a blob whose plaintext is zstd data.
	MagicEncryptedCompressed = [8]byte{230, 89, 27, 191, 11, 191, 216, 11}
)

// SealBlob appends to dst the encrypted blob of payload under a fresh
// random IV. compressed tells that payload is zstd data; it selects the
// magic. The payload is not copied before encryption, so dst must not
// overlap it.
func (k *Key) SealBlob(dst, payload []byte, compressed bool) []byte {
	var iv [ivSize]byte
	if _, err := rand.Read(iv[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return k.sealBlobIV(dst, payload, compressed, iv)
}

// SealBlobInPlace encrypts, in place, the blob being built in b: b[start:
// start+HeaderSize] is room for the header and b[start+HeaderSize:] the
// payload. It fills the header under a fresh random IV and returns the
// blob, which is b unless b lacked room for the 16-byte tag.
func (k *Key) SealBlobInPlace(b []byte, start int, compressed bool) []byte {
	var iv [ivSize]byte
	if _, err := rand.Read(iv[:]); err != nil {
		panic(err)
	}
	b = slices.Grow(b, tagSize)
	magic := MagicEncrypted
	if compressed {
		magic = MagicEncryptedCompressed
	}
	copy(b[start:], magic[:])
	copy(b[start+12:], iv[:])
	payload := b[start+HeaderSize:]
	sealed := k.aead.Seal(payload[:0], iv[:], payload, nil)
	end := start + HeaderSize + len(payload)
	copy(b[start+28:start+HeaderSize], sealed[len(payload):])
	binary.LittleEndian.PutUint32(b[start+8:], crc32.ChecksumIEEE(b[start+HeaderSize:end]))
	return b[:end]
}

// sealBlobIV is SealBlob with a given IV; tests use it for fixed vectors.
func (k *Key) sealBlobIV(dst, payload []byte, compressed bool, iv [ivSize]byte) []byte {
	start := len(dst)
	magic := MagicEncrypted
	if compressed {
		magic = MagicEncryptedCompressed
	}
	dst = append(dst, magic[:]...)
	dst = append(dst, 0, 0, 0, 0)
	dst = append(dst, iv[:]...)
	dst = append(dst, make([]byte, tagSize)...)
	// Seal appends ciphertext||tag; move the tag into the header.
	dst = k.aead.Seal(dst, iv[:], payload, nil)
	end := len(dst) - tagSize
	copy(dst[start+28:start+HeaderSize], dst[end:])
	dst = dst[:end]
	binary.LittleEndian.PutUint32(dst[start+8:], crc32.ChecksumIEEE(dst[start+HeaderSize:]))
	return dst
}

// OpenBlob checks the magic and CRC of the encrypted blob b, authenticates
// it and appends its plaintext to dst. Nothing is appended unless the tag
// verifies. compressed tells that the plaintext is zstd data to be
// decompressed (the ENCR_COMPR magic).
func (k *Key) OpenBlob(dst, b []byte) (plain []byte, compressed bool, err error) {
	compressed, err = CheckBlob(b)
	if err != nil {
		return nil, false, err
	}
	ct := b[HeaderSize:]
	start := len(dst)
	// Open wants ciphertext||tag; build it in dst (one allocation at
	// most) and open it in place.
	dst = slices.Grow(dst, len(ct)+tagSize)
	dst = append(dst, ct...)
	dst = append(dst, b[28:HeaderSize]...)
	out, err := k.aead.Open(dst[start:start], b[12:28], dst[start:], nil)
	if err != nil {
		clear(dst[start:])
		return nil, false, fmt.Errorf("encrypted blob: %w", ErrAuth)
	}
	return dst[:start+len(out)], compressed, nil
}

// TagSize is the room OpenInPlace needs after the ciphertext.
const TagSize = tagSize

// OpenInPlace is OpenBlob for a blob read in two parts: its header hdr
// (HeaderSize bytes) and its ciphertext ct, which must have room for the
// tag after it (cap(ct) >= len(ct)+TagSize). It checks the magic and the
// CRC of ct, authenticates and decrypts ct in place, and returns the
// plaintext (ct's memory), nothing unless the tag verifies.
func (k *Key) OpenInPlace(hdr, ct []byte) (plain []byte, compressed bool, err error) {
	if len(hdr) == HeaderSize {
		want := binary.LittleEndian.Uint32(hdr[8:12])
		if got := crc32.ChecksumIEEE(ct); got != want {
			if _, err := magicKind(hdr); err != nil {
				return nil, false, err
			}
			return nil, false, fmt.Errorf("encrypted blob crc %08x, header says %08x: %w", got, want, ErrFormat)
		}
	}
	return k.OpenInPlaceAuth(hdr, ct)
}

// OpenInPlaceAuth is OpenInPlace without the CRC check: the tag
// authenticates every byte the CRC covers, so a reader with the key
// loses no check (the CRC is for those without one, see CheckBlob) and
// saves a pass over the chunk. A damaged blob fails with ErrAuth, as
// with another key; the caller tells the two apart with CheckBlob on a
// fresh copy of the blob (the failed open cleared ct).
func (k *Key) OpenInPlaceAuth(hdr, ct []byte) (plain []byte, compressed bool, err error) {
	if len(hdr) != HeaderSize || cap(ct)-len(ct) < tagSize {
		return nil, false, fmt.Errorf("encrypted blob: header of %d bytes, %d bytes of room: %w", len(hdr), cap(ct)-len(ct), ErrFormat)
	}
	if compressed, err = magicKind(hdr); err != nil {
		return nil, false, err
	}
	sealed := append(ct, hdr[28:HeaderSize]...) // ciphertext||tag, in place
	out, err := k.aead.Open(ct[:0], hdr[12:28], sealed, nil)
	if err != nil {
		clear(sealed)
		return nil, false, fmt.Errorf("encrypted blob: %w", ErrAuth)
	}
	return out, compressed, nil
}

// magicKind checks the magic of an encrypted blob's header and reports
// whether its plaintext is compressed.
func magicKind(hdr []byte) (compressed bool, err error) {
	switch [8]byte(hdr[:8]) {
	case MagicEncrypted:
		return false, nil
	case MagicEncryptedCompressed:
		return true, nil
	}
	return false, fmt.Errorf("blob magic %x is not an encrypted one: %w", hdr[:8], ErrFormat)
}

// CheckBlob checks what can be checked of an encrypted blob without the
// key: its length, magic and the CRC of its ciphertext. It reports whether
// the plaintext is compressed.
func CheckBlob(b []byte) (compressed bool, err error) {
	if len(b) < HeaderSize {
		return false, fmt.Errorf("encrypted blob of %d bytes, shorter than its %d-byte header: %w", len(b), HeaderSize, ErrFormat)
	}
	switch [8]byte(b[:8]) {
	case MagicEncrypted:
	case MagicEncryptedCompressed:
		compressed = true
	default:
		return false, fmt.Errorf("blob magic %x is not an encrypted one: %w", b[:8], ErrFormat)
	}
	want := binary.LittleEndian.Uint32(b[8:12])
	if got := crc32.ChecksumIEEE(b[HeaderSize:]); got != want {
		return false, fmt.Errorf("encrypted blob crc %08x, header says %08x: %w", got, want, ErrFormat)
	}
	return compressed, nil
}
