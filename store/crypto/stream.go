package crypto

import (
	"crypto/cipher"
	"encoding/binary"
	"fmt"
)

// BlobStream decrypts any range of the ciphertext of one encrypted blob
// (MagicEncrypted: the plaintext is the data) without the rest of it.
// AES-GCM encrypts with AES in counter mode: byte i of the ciphertext is
// byte i of the plaintext XOR byte i%16 of AES(J0 + 1 + i/16), the
// counter block J0 derived from the IV and the +1's adding to its low 32
// bits only, modulo 2^32 (inc32, NIST SP 800-38D §6.5 and §7.1).
//
// A BlobStream does not authenticate anything: the tag covers the whole
// ciphertext, so a range cannot be checked alone. It is for reading
// again the ciphertext of a blob whose whole open succeeded, from the
// same bytes (see store's reread of verified chunks): it serves bytes
// that were authenticated, never bytes that were not.
type BlobStream struct {
	block cipher.Block
	ctr   [16]byte // AES input of the ciphertext's first block: inc32(J0)
}

// BlobStream returns the key stream of the encrypted blob with header hdr
// (HeaderSize bytes: magic, CRC, IV, tag), encrypted with k.
func (k *Key) BlobStream(hdr []byte) (*BlobStream, error) {
	if len(hdr) != HeaderSize {
		return nil, fmt.Errorf("encrypted blob header of %d bytes: %w", len(hdr), ErrFormat)
	}
	if _, err := magicKind(hdr); err != nil {
		return nil, err
	}
	// With a 16-byte IV, J0 is a GHASH of the IV (SP 800-38D §7.1, step
	// 2). Rather than GHASH it again, take it from the cipher: the first
	// key stream block of this IV, AES(inc32(J0)), is what a seal of 16
	// zero bytes yields, and AES decryption of it gives inc32(J0).
	var zero [16]byte
	ks := k.aead.Seal(nil, hdr[12:28], zero[:], nil)
	s := &BlobStream{block: k.block}
	k.block.Decrypt(s.ctr[:], ks[:16])
	return s, nil
}

// XORKeyStreamAt sets dst to src XOR the key stream from byte off of the
// blob's ciphertext on (dst and src may be the same slice): given the
// ciphertext at off, it yields the plaintext at off.
func (s *BlobStream) XORKeyStreamAt(dst, src []byte, off uint64) {
	dst = dst[:len(src)]
	for len(src) > 0 {
		// The counter block of the block holding off, the low 32 bits
		// wrapping as inc32 does; cipher.NewCTR carries into all 128
		// bits, so a run never crosses a wrap of the low 32.
		blk := off / 16
		ctr := s.ctr
		low := binary.BigEndian.Uint32(ctr[12:]) + uint32(blk)
		binary.BigEndian.PutUint32(ctr[12:], low)
		n := len(src)
		if left := (uint64(1<<32) - uint64(low)) * 16; uint64(n)+off%16 > left {
			n = int(left - off%16)
		}
		st := cipher.NewCTR(s.block, ctr[:])
		if skip := int(off % 16); skip > 0 {
			var scratch [16]byte
			st.XORKeyStream(scratch[:skip], scratch[:skip])
		}
		st.XORKeyStream(dst[:n], src[:n])
		dst, src, off = dst[n:], src[n:], off+uint64(n)
	}
}
