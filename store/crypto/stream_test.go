package crypto

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// TestBlobStreamDecryptsAnyRange: for blobs sealed under random IVs, the
// plaintext of every range (any offset, any length, across 16-byte
// blocks) decrypted alone from the ciphertext is the range of the whole
// blob's plaintext OpenBlob gives.
func TestBlobStreamDecryptsAnyRange(t *testing.T) {
	k := testKey()
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		plain := make([]byte, 1+r.IntN(70000))
		for i := range plain {
			plain[i] = byte(r.Uint32())
		}
		blob := k.SealBlob(nil, plain, false)
		if got, _, err := k.OpenBlob(nil, blob); err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("OpenBlob: %v", err)
		}
		s, err := k.BlobStream(blob[:HeaderSize])
		if err != nil {
			t.Fatal(err)
		}
		ct := blob[HeaderSize:]
		for range 50 {
			off := r.IntN(len(plain))
			n := r.IntN(len(plain) - off + 1)
			got := make([]byte, n)
			s.XORKeyStreamAt(got, ct[off:off+n], uint64(off))
			if !bytes.Equal(got, plain[off:off+n]) {
				t.Fatalf("range [%d,%d) of %d bytes differs", off, off+n, len(plain))
			}
		}
		// In place, the whole blob.
		all := bytes.Clone(ct)
		s.XORKeyStreamAt(all, all, 0)
		if !bytes.Equal(all, plain) {
			t.Fatal("whole blob in place differs")
		}
	}
	if _, err := k.BlobStream(make([]byte, HeaderSize)); err == nil {
		t.Error("BlobStream of a header without an encrypted magic: no error")
	}
}

// TestBlobStreamCounterWraps: the counter's low 32 bits wrap to zero
// without a carry into the other 96 (GCM's inc32), also inside one
// range. The reference computes each block's counter one by one.
func TestBlobStreamCounterWraps(t *testing.T) {
	k := testKey()
	for _, low := range []uint32{0xffffffff, 0xfffffffe, 0xfffffff0, 0x7fffffff} {
		s := &BlobStream{block: k.block}
		copy(s.ctr[:], seq(0x40, 12))
		binary.BigEndian.PutUint32(s.ctr[12:], low)
		const n = 40 * 16
		want := make([]byte, n)
		for b := range n / 16 {
			ctr := s.ctr
			binary.BigEndian.PutUint32(ctr[12:], low+uint32(b))
			k.block.Encrypt(want[b*16:], ctr[:])
		}
		for _, r := range [][2]int{{0, n}, {5, n}, {17, 300}, {31, 33}, {16 * 15, 16 * 17}, {3, 4}} { // [from, to)
			got := make([]byte, r[1]-r[0])
			s.XORKeyStreamAt(got, got, uint64(r[0]))
			if !bytes.Equal(got, want[r[0]:r[1]]) {
				t.Errorf("low %#x: key stream [%d,%d) differs from inc32's", low, r[0], r[1])
			}
		}
	}
}
