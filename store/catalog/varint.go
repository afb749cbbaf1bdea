package catalog

import (
	"fmt"
)

// appendU64 appends the u64 varint of v (§10.2).
func appendU64(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// appendI64 appends the i64 varint of v: a negative value is its
// magnitude with the last byte's high bit set, then a 00 terminator.
func appendI64(b []byte, v int64) []byte {
	if v >= 0 {
		return appendU64(b, uint64(v))
	}
	m := uint64(-v) // i64 min: -v overflows to itself, whose uint64 is 2^63
	for m >= 0x80 {
		b = append(b, byte(m)|0x80)
		m >>= 7
	}
	return append(b, byte(m)|0x80, 0)
}

// readU64 decodes a u64 varint from b, returning the value and its length.
func readU64(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(b) && i < maxVarintLen; i++ {
		c := b[i]
		if i == maxVarintLen-1 && c > 1 {
			return 0, 0, fmt.Errorf("varint overflows u64: %w", ErrCorrupt)
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, i + 1, nil
		}
	}
	return 0, 0, fmt.Errorf("truncated or overlong varint: %w", ErrCorrupt)
}

// readI64 decodes an i64 varint from b.
func readI64(b []byte) (int64, int, error) {
	var m uint64
	for i := 0; i < len(b) && i < maxIVarintLen; i++ {
		c := b[i]
		switch {
		case c == 0:
			if i == 0 {
				return 0, 1, nil
			}
			if m > 1<<63 {
				return 0, 0, fmt.Errorf("negative varint overflows i64: %w", ErrCorrupt)
			}
			return -int64(m), i + 1, nil
		case c < 0x80:
			if i >= maxVarintLen-1 && c > 1 {
				return 0, 0, fmt.Errorf("varint overflows i64: %w", ErrCorrupt)
			}
			m |= uint64(c) << (7 * i)
			if m > 1<<63-1 {
				return 0, 0, fmt.Errorf("varint overflows i64: %w", ErrCorrupt)
			}
			return int64(m), i + 1, nil
		default:
			if i >= maxVarintLen {
				return 0, 0, fmt.Errorf("varint too long: %w", ErrCorrupt)
			}
			if i == maxVarintLen-1 && c&0x7f > 1 {
				return 0, 0, fmt.Errorf("varint overflows i64: %w", ErrCorrupt)
			}
			m |= uint64(c&0x7f) << (7 * i)
		}
	}
	return 0, 0, fmt.Errorf("truncated varint: %w", ErrCorrupt)
}
