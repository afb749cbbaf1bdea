package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBlobVectors(t *testing.T) {
	c := NewCodec()
	hello := unhex(t, "42ab3807be8370a186a6103668656c6c6f")
	for _, compress := range []bool{false, true} {
		got, err := c.Encode([]byte("hello"), compress)
		if err != nil || !bytes.Equal(got, hello) {
			t.Fatalf("Encode(hello, %v) = %x, %v; want %x", compress, got, err, hello)
		}
	}
	if sum := sha256.Sum256(hello); hexs(sum[:]) != "9c5944aba3379b450612203cafb5bf60c2358103550b7f799d197f4668f169d5" {
		t.Errorf("sha256(hello blob) = %x", sum)
	}
	if d := DigestOf([]byte("hello")); d.String() != "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" {
		t.Errorf("digest %s", d)
	}
	compressed := unhex(t, "31b958426fb6a37fd3b9d7f328b52ffd60e8024d00001061610100e32b8005")
	data, err := c.Decode(compressed)
	if err != nil || !bytes.Equal(data, bytes.Repeat([]byte("a"), 1000)) {
		t.Fatalf("Decode(compressed vector) = %d bytes, %v", len(data), err)
	}
	enc := unhex(t, "7b6785be222d4cf0784eea93000102030405060708090a0b0c0d0e0f0c84c431837297c0b19e77e5608162ea0f09cc1a56")
	if _, err := c.Decode(enc); !errors.Is(err, ErrEncrypted) {
		t.Errorf("Decode(encrypted) error %v, want ErrEncrypted", err)
	}
	if k, err := VerifyBlobCRC(enc); err != nil || k != BlobEncrypted {
		t.Errorf("VerifyBlobCRC(encrypted) = %v, %v", k, err)
	}
}

func TestBlobRoundTripAndCorruption(t *testing.T) {
	c := NewCodec()
	inputs := [][]byte{nil, []byte("x"), bytes.Repeat([]byte("abc"), 100000), xorshiftBytes(1, 1<<20)}
	for _, in := range inputs {
		for _, compress := range []bool{false, true} {
			b, err := c.Encode(in, compress)
			if err != nil {
				t.Fatal(err)
			}
			out, err := c.Decode(b)
			if err != nil || !bytes.Equal(out, in) {
				t.Fatalf("round trip of %d bytes (compress %v): %v", len(in), compress, err)
			}
			if compress && len(in) == 300000 {
				if k, _ := BlobKindOf(b); k != BlobCompressed {
					t.Errorf("repetitive data stored %v", k)
				}
			}
			if compress && len(in) == 1<<20 {
				if k, _ := BlobKindOf(b); k != BlobUncompressed {
					t.Errorf("random data stored %v, want uncompressed", k)
				}
			}
			if len(b) > blobHeaderSize {
				bad := bytes.Clone(b)
				bad[len(bad)-1] ^= 1
				if _, err := c.Decode(bad); !errors.Is(err, ErrCorrupt) {
					t.Errorf("flipped payload bit: %v, want ErrCorrupt", err)
				}
			}
		}
	}
	bad := [][]byte{nil, []byte("short"), make([]byte, 12), unhex(t, "7b6785be222d4cf0784eea93")}
	for _, b := range bad {
		if _, err := c.Decode(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Decode(%x) error %v, want ErrCorrupt", b, err)
		}
	}
	// A compressed blob with garbage where the zstd frame should be.
	garbage, _ := c.Encode(nil, false)
	copy(garbage, magicCompressed[:])
	garbage = append(garbage, 1, 2, 3)
	fixCRC(garbage)
	if _, err := c.Decode(garbage); !errors.Is(err, ErrCorrupt) {
		t.Errorf("garbage zstd: %v, want ErrCorrupt", err)
	}
}

func TestFixedIndexVector(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "drive.img.fidx")
	w, err := CreateFixedIndex(path, 6<<20, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	w.hdr.UUID = [16]byte(unhex(t, "00112233445566778899aabbccddeeff"))
	w.hdr.CTime = time.Unix(1718000000, 0)
	d0 := DigestOf(make([]byte, 4<<20))
	d1 := DigestOf(make([]byte, 2<<20))
	// Out of order, as chunks arrive.
	if err := w.Add(6<<20, 2<<20, d1); err != nil {
		t.Fatal(err)
	}
	if err := w.Add(4<<20, 4<<20, d0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("final name exists before Close: %v", err)
	}
	csum, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if hexs(csum[:]) != "4c038ad982f42733f8cf5de38af46a51c822e758fd72497bc1187040bb42f5ca" {
		t.Errorf("csum %x", csum)
	}
	b, _ := os.ReadFile(path)
	if sum := sha256.Sum256(b); len(b) != 4160 || hexs(sum[:]) != "ee4ffcb4e945a23e667a732e222fb52f50b8e0afbac185838993a2f71847c342" {
		t.Fatalf("file %d bytes sha256 %x", len(b), sum)
	}
	if _, err := os.Stat(tmpIndexName(path)); !os.IsNotExist(err) {
		t.Errorf("tmp file left: %v", err)
	}
	idx, err := OpenIndex(path)
	if err != nil {
		t.Fatal(err)
	}
	i, in, err := idx.Locate(5000000)
	_, start, end := idx.Chunk(i)
	if err != nil || i != 1 || in != 805696 || end-start != 2097152 {
		t.Errorf("Locate(5000000) = %d, %d, %v (len %d)", i, in, err, end-start)
	}
	if _, _, err := idx.Locate(6 << 20); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("Locate(size) error %v", err)
	}
	if idx.Checksum() != csum || idx.Header().Csum != csum || idx.Size() != 6<<20 {
		t.Errorf("reopened index checksum/size mismatch")
	}
}

func TestDynamicIndexVector(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hw.pxar.didx")
	w, err := CreateDynamicIndex(path)
	if err != nil {
		t.Fatal(err)
	}
	w.hdr.UUID = [16]byte(unhex(t, "00112233445566778899aabbccddeeff"))
	w.hdr.CTime = time.Unix(1718000000, 0)
	if err := w.Append(5, DigestOf([]byte("hello"))); err != nil {
		t.Fatal(err)
	}
	if err := w.Append(11, DigestOf([]byte(" world"))); err != nil {
		t.Fatal(err)
	}
	if err := w.Append(11, DigestOf(nil)); err == nil {
		t.Error("Append accepted a non-increasing end")
	}
	csum, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if hexs(csum[:]) != "9b2fd908141c00eaabcc62853152a71a5db06f0b722ff557a0a50352eb6c22cd" {
		t.Errorf("csum %x", csum)
	}
	b, _ := os.ReadFile(path)
	if sum := sha256.Sum256(b); len(b) != 4176 || hexs(sum[:]) != "8afdd5137dfc946c6ba5ffb3a6e46e3cd2ab8a80d4a46aba2088e024df875f75" {
		t.Fatalf("file %d bytes sha256 %x", len(b), sum)
	}
	idx, err := OpenIndex(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		off     uint64
		i       int
		in      uint64
		wantErr error
	}{{4, 0, 4, nil}, {5, 1, 0, nil}, {10, 1, 5, nil}, {11, 0, 0, ErrOutOfRange}} {
		i, in, err := idx.Locate(tc.off)
		if !errors.Is(err, tc.wantErr) || (err == nil && (i != tc.i || in != tc.in)) {
			t.Errorf("Locate(%d) = %d, %d, %v", tc.off, i, in, err)
		}
	}
}

func TestRealPBSDynamicIndex(t *testing.T) {
	path := "testdata/pbs-client/backup-client-pxar-data.ppxar.didx"
	idx, err := OpenIndex(path)
	if err != nil {
		t.Fatal(err)
	}
	if idx.Len() == 0 || idx.Checksum() != idx.Header().Csum {
		t.Fatalf("%d chunks, checksum %x, header %x", idx.Len(), idx.Checksum(), idx.Header().Csum)
	}
	t.Logf("%d chunks, %d bytes, ctime %v", idx.Len(), idx.Size(), idx.Header().CTime)
}

func TestEmptyIndexes(t *testing.T) {
	dir := t.TempDir()
	fw, _ := CreateFixedIndex(filepath.Join(dir, "e.img.fidx"), 0, 4<<20)
	if _, err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	dw, _ := CreateDynamicIndex(filepath.Join(dir, "e.pxar.didx"))
	if _, err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"e.img.fidx", "e.pxar.didx"} {
		idx, err := OpenIndex(filepath.Join(dir, name))
		if err != nil || idx.Len() != 0 || idx.Size() != 0 {
			t.Fatalf("%s: %v", name, err)
		}
		if _, _, err := idx.Locate(0); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("%s: Locate(0) error %v", name, err)
		}
	}
}

func TestCorruptIndexes(t *testing.T) {
	good := (&FixedIndex{size: 6 << 20, chunkSize: 4 << 20, digests: make([]Digest, 2)}).MarshalBinary()
	dgood := (&DynamicIndex{ends: []uint64{5, 11}, digests: make([]Digest, 2)}).MarshalBinary()
	mutate := func(b []byte, fn func([]byte) []byte) []byte { return fn(bytes.Clone(b)) }
	tests := []struct {
		name  string
		fixed bool
		b     []byte
	}{
		{"fixed/empty file", true, nil},
		{"fixed/short header", true, good[:100]},
		{"fixed/wrong magic", true, mutate(good, func(b []byte) []byte { b[0] ^= 1; return b })},
		{"fixed/dynamic magic", true, mutate(good, func(b []byte) []byte { copy(b, magicDynamicIndex[:]); return b })},
		{"fixed/truncated body", true, good[:len(good)-1]},
		{"fixed/extra digest", true, append(bytes.Clone(good), make([]byte, 32)...)},
		{"fixed/chunk size 3MiB", true, mutate(good, func(b []byte) []byte { b[72+2] = 0x30; return b })},
		{"fixed/chunk size 0", true, mutate(good, func(b []byte) []byte { clear(b[72:80]); return b })},
		{"fixed/huge size", true, mutate(good, func(b []byte) []byte { b[71] = 0xff; return b })},
		{"dynamic/short", false, dgood[:4095]},
		{"dynamic/wrong magic", false, mutate(dgood, func(b []byte) []byte { b[7] ^= 1; return b })},
		{"dynamic/partial entry", false, dgood[:len(dgood)-1]},
		{"dynamic/non-monotonic", false, mutate(dgood, func(b []byte) []byte { b[4096+40] = 5; return b })},
		{"dynamic/zero first end", false, mutate(dgood, func(b []byte) []byte { b[4096] = 0; return b })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.fixed {
				_, err = ParseFixedIndex(tc.b)
			} else {
				_, err = ParseDynamicIndex(tc.b)
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v, want ErrCorrupt", err)
			}
		})
	}
	// OpenIndex names the file.
	path := filepath.Join(t.TempDir(), "bad.img.fidx")
	os.WriteFile(path, good[:10], 0o644)
	if _, err := OpenIndex(path); err == nil || !bytes.Contains([]byte(err.Error()), []byte(path)) {
		t.Errorf("OpenIndex error %v does not name the file", err)
	}
}
