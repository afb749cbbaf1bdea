package store

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// Digest is the SHA-256 that names a chunk (§2.6).
type Digest [32]byte

// String returns the digest as 64 lowercase hex characters.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// ParseDigest parses 64 hex characters.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) != 64 {
		return d, fmt.Errorf("digest %q: want 64 hex characters: %w", s, ErrInvalidName)
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, fmt.Errorf("digest %q: %v: %w", s, err, ErrInvalidName)
	}
	return d, nil
}

// DigestOf returns the digest of unencrypted chunk data.
func DigestOf(data []byte) Digest { return sha256.Sum256(data) }
