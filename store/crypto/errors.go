package crypto

import "errors"

// Sentinel errors; the wrapping error names the file, blob or key.
var (
	// ErrFormat reports a key file, blob header or fingerprint that does
	// not follow its format.
	ErrFormat = errors.New("crypto: malformed data")
	// ErrAuth reports an AES-GCM tag that does not verify: a wrong key or
	// password, or corrupted data.
	ErrAuth = errors.New("crypto: authentication failed (wrong key or corrupted data)")
	// ErrWrongPassword reports a key file whose key does not decrypt with
	// the password given. It wraps ErrAuth.
	ErrWrongPassword = errors.New("wrong password")
	// ErrFingerprint reports a key whose fingerprint differs from the one
	// a key file or a manifest records.
	ErrFingerprint = errors.New("crypto: fingerprint mismatch")
	// ErrSignature reports a manifest whose HMAC does not verify.
	ErrSignature = errors.New("crypto: wrong signature")
	// ErrLimit reports KDF parameters beyond what pbsfs accepts from a
	// file (they would take too much memory or time).
	ErrLimit = errors.New("crypto: parameters beyond limits")
	// ErrNoPassword reports that no password source was available.
	ErrNoPassword = errors.New("no password given")
)
