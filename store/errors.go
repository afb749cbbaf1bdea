package store

import "errors"

// Sentinel errors. A sentinel names the condition; the wrapping error names
// the subject (file, digest, snapshot).
var (
	// ErrCorrupt reports data that does not match its format or checksum.
	ErrCorrupt = errors.New("store: corrupt data")
	// ErrEncrypted reports an encrypted blob or chunk read without a key.
	ErrEncrypted = errors.New("store: encrypted, key needed")
	// ErrChunkMissing reports a chunk an index refers to that is not in the store.
	ErrChunkMissing = errors.New("store: chunk missing")
	// ErrOutOfRange reports an offset at or past the end of an archive.
	ErrOutOfRange = errors.New("store: offset out of range")
	// ErrInvalidName reports a namespace, group, snapshot or archive name
	// that does not follow the datastore's naming rules.
	ErrInvalidName = errors.New("store: invalid name")
	// ErrNotFound reports a namespace, group, snapshot or archive that does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrExists reports an object that already exists.
	ErrExists = errors.New("store: already exists")
	// ErrProtected reports an operation refused because a snapshot is protected.
	ErrProtected = errors.New("store: snapshot is protected")
	// ErrBadSignature reports a signed manifest whose HMAC does not
	// verify with the key its fingerprint names.
	ErrBadSignature = errors.New("store: bad manifest signature")
	// ErrTooLarge reports data above a format limit.
	ErrTooLarge = errors.New("store: too large")
)
