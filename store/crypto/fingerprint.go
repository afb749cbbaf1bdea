package crypto

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// Fingerprint identifies a key: SHA256(fingerprintInput || id_key) (§1).
// It is not secret.
type Fingerprint [32]byte

// String returns the full colon-hex form, as key files and manifests store
// it: "0e:ab:d4:…:9b".
func (f Fingerprint) String() string { return colonHex(f[:]) }

// Short returns the short form shown in messages: the first 8 bytes.
func (f Fingerprint) Short() string { return colonHex(f[:8]) }

// IsZero reports whether f is all zero bytes (never a real key's).
func (f Fingerprint) IsZero() bool { return f == Fingerprint{} }

func colonHex(b []byte) string {
	var sb strings.Builder
	sb.Grow(3 * len(b))
	for i, c := range b {
		if i > 0 {
			sb.WriteByte(':')
		}
		sb.WriteString(hex.EncodeToString([]byte{c}))
	}
	return sb.String()
}

// ParseFingerprint parses a fingerprint as PBS does: every ':' is dropped,
// and exactly 64 hex digits of either case must remain (§2.1).
func ParseFingerprint(s string) (Fingerprint, error) {
	var f Fingerprint
	h := strings.ReplaceAll(s, ":", "")
	if len(h) != 64 {
		return f, fmt.Errorf("fingerprint %q: want 32 bytes in hex: %w", s, ErrFormat)
	}
	if _, err := hex.Decode(f[:], []byte(h)); err != nil {
		return f, fmt.Errorf("fingerprint %q: %v: %w", s, err, ErrFormat)
	}
	return f, nil
}
