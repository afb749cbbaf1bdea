package crypto

import (
	"crypto/pbkdf2"
	"crypto/sha256"
	"fmt"
	"math/bits"

	"golang.org/x/crypto/scrypt"
)

// KDF names a key derivation function of a key file (§2.2).
type KDF string

// The KDFs, named as the PBS client's --kdf option names them.
const (
	KDFNone   KDF = "none"
	KDFScrypt KDF = "scrypt"
	KDFPBKDF2 KDF = "pbkdf2"
)

// ParseKDF parses a --kdf value.
func ParseKDF(s string) (KDF, error) {
	switch k := KDF(s); k {
	case KDFNone, KDFScrypt, KDFPBKDF2:
		return k, nil
	}
	return "", fmt.Errorf("kdf %q: want none, scrypt or pbkdf2", s)
}

// KDFParams are the parameters of a key file's KDF: N, R, P for scrypt,
// Iter for PBKDF2, and the salt of either.
type KDFParams struct {
	KDF     KDF
	N, R, P uint64
	Iter    uint64
	Salt    []byte
}

// Parameters PBS writes (§2.2).
const (
	scryptN       = 65536
	scryptR       = 8
	scryptP       = 1
	pbkdf2Iter    = 65535
	saltSize      = 32
	minPassphrase = 5
)

// Limits on parameters read from a key file: an untrusted file must not
// make pbsfs allocate gigabytes or spin for minutes (§7 P14). They admit
// 16 times the work of PBS's defaults, and the 1025 MiB memory bound
// PBS itself gives OpenSSL.
const (
	maxScryptMem  = 1025 << 20 // bytes, 128·r·N
	maxScryptWork = 1 << 23    // N·r·p, 16 × PBS's 65536·8·1
	maxPBKDF2Iter = 16 * pbkdf2Iter
	maxSaltSize   = 1024
)

// check validates the parameters against the format and the limits.
func (p *KDFParams) check() error {
	if len(p.Salt) > maxSaltSize {
		return fmt.Errorf("kdf salt of %d bytes: %w", len(p.Salt), ErrLimit)
	}
	switch p.KDF {
	case KDFScrypt:
		if p.N < 2 || bits.OnesCount64(p.N) != 1 || p.R == 0 || p.P == 0 {
			return fmt.Errorf("scrypt n=%d r=%d p=%d: n must be a power of two above 1, r and p positive: %w", p.N, p.R, p.P, ErrFormat)
		}
		hi, mem := bits.Mul64(128*p.R, p.N)
		if p.R > 1<<20 || hi != 0 || mem > maxScryptMem {
			return fmt.Errorf("scrypt n=%d r=%d needs more than %d MiB: %w", p.N, p.R, maxScryptMem>>20, ErrLimit)
		}
		hi, work := bits.Mul64(p.N*p.R, p.P)
		if p.P > 1<<20 || hi != 0 || work > maxScryptWork {
			return fmt.Errorf("scrypt n=%d r=%d p=%d is more work than pbsfs allows: %w", p.N, p.R, p.P, ErrLimit)
		}
	case KDFPBKDF2:
		if p.Iter == 0 {
			return fmt.Errorf("pbkdf2 with 0 iterations: %w", ErrFormat)
		}
		if p.Iter > maxPBKDF2Iter {
			return fmt.Errorf("pbkdf2 with %d iterations (at most %d allowed): %w", p.Iter, maxPBKDF2Iter, ErrLimit)
		}
	default:
		return fmt.Errorf("kdf %q: %w", p.KDF, ErrFormat)
	}
	return nil
}

// derive returns the 32-byte key derived from password.
func (p *KDFParams) derive(password []byte) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	switch p.KDF {
	case KDFScrypt:
		return scrypt.Key(password, p.Salt, int(p.N), int(p.R), int(p.P), KeySize)
	default:
		return pbkdf2.Key(sha256.New, string(password), p.Salt, int(p.Iter), KeySize)
	}
}
