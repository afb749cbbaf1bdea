package crypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func seq(from byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = from + byte(i)
	}
	return b
}

// testKey is enc_key 00 01 … 1f of datastore.md §10.3 and crypto.md §5.
func testKey() *Key { return NewKey([32]byte(seq(0, 32))) }

const testFingerprint = "0e:ab:d4:46:0b:6e:b9:ca:34:50:23:de:e2:b7:78:c7:90:e5:4a:16:83:b9:65:9c:0a:57:ae:19:90:90:15:9b"

// datastore.md §10.3: id_key and fingerprint.
func TestKeyDerivationVector(t *testing.T) {
	k := testKey()
	if got := hex.EncodeToString(k.id[:]); got != "7c2c013efd07f3b25717a485263343cd4d292a4b65c200bb3b18ea227abe225c" {
		t.Errorf("id_key = %s", got)
	}
	if got := k.Fingerprint().String(); got != testFingerprint {
		t.Errorf("fingerprint = %s", got)
	}
	if got := k.Fingerprint().Short(); got != "0e:ab:d4:46:0b:6e:b9:ca" {
		t.Errorf("short fingerprint = %s", got)
	}
	fp, err := ParseFingerprint(strings.ToUpper(testFingerprint))
	if err != nil || fp != k.Fingerprint() {
		t.Errorf("ParseFingerprint(upper) = %v, %v", fp, err)
	}
	fp, err = ParseFingerprint(strings.ReplaceAll(testFingerprint, ":", ""))
	if err != nil || fp != k.Fingerprint() {
		t.Errorf("ParseFingerprint(no colons) = %v, %v", fp, err)
	}
	for _, bad := range []string{"", "0e:ab", testFingerprint + ":00", strings.Replace(testFingerprint, "0e", "0g", 1)} {
		if _, err := ParseFingerprint(bad); !errors.Is(err, ErrFormat) {
			t.Errorf("ParseFingerprint(%q) error %v", bad, err)
		}
	}
}

// crypto.md §5.4 = datastore.md §10.3: the encrypted chunk "hello".
func TestEncryptedChunkVector(t *testing.T) {
	k := testKey()
	d := k.Digest([]byte("hello"))
	if got := hex.EncodeToString(d[:]); got != "e34178a27b992c4a218599bf7f43ed50bc464a03d624d9092306fe2ed74d557e" {
		t.Errorf("keyed digest = %s", got)
	}
	want := unhex(t, "7b6785be222d4cf0 784eea93 000102030405060708090a0b0c0d0e0f 0c84c431837297c0b19e77e5608162ea 0f09cc1a56")
	got := k.sealBlobIV(nil, []byte("hello"), false, [16]byte(seq(0, 16)))
	if !bytes.Equal(got, want) {
		t.Fatalf("sealed hello = %x\nwant %x", got, want)
	}
	if crc := binary.LittleEndian.Uint32(got[8:]); crc != 0x93ea4e78 {
		t.Errorf("crc %08x", crc)
	}
	if sum := sha256.Sum256(got); hex.EncodeToString(sum[:]) != "8444a17423b9e62ab77eb23016c6dabd06f61d9090075508eaa2de75d9f162b7" {
		t.Errorf("sha256(blob) = %x", sum)
	}
	plain, compressed, err := k.OpenBlob([]byte("prefix:"), want)
	if err != nil || compressed || string(plain) != "prefix:hello" {
		t.Fatalf("OpenBlob = %q, %v, %v", plain, compressed, err)
	}
}

// crypto.md §5.5: ENCR_COMPR of the 19-byte zstd frame of 1000 × 'a'.
func TestEncryptedCompressedVector(t *testing.T) {
	k := testKey()
	frame := unhex(t, "28b52ffd60e8024d00001061610100e32b8005")
	want := unhex(t, "e6591bbf0bbfd80b3d49e64c101112131415161718191a1b1c1d1e1f129d700b60e1af59bec827a2458078caa2ef159d879939e26b0b8e08d6a111e29b0564")
	got := k.sealBlobIV(nil, frame, true, [16]byte(seq(0x10, 16)))
	if !bytes.Equal(got, want) {
		t.Fatalf("sealed = %x\nwant %x", got, want)
	}
	if crc := binary.LittleEndian.Uint32(got[8:]); crc != 0x4ce6493d {
		t.Errorf("crc %08x", crc)
	}
	plain, compressed, err := k.OpenBlob(nil, want)
	if err != nil || !compressed || !bytes.Equal(plain, frame) {
		t.Fatalf("OpenBlob = %x, %v, %v", plain, compressed, err)
	}
	d := k.Digest(bytes.Repeat([]byte("a"), 1000))
	if got := hex.EncodeToString(d[:]); got != "6e49a018cd6c9667b8e73f44e3b4061454b6904f0b56832c29549ee634289468" {
		t.Errorf("keyed digest = %s", got)
	}
}

func TestOpenBlobRejects(t *testing.T) {
	k := testKey()
	good := k.SealBlob(nil, []byte("some plaintext"), false)
	other := NewKey([32]byte(seq(1, 32)))
	if _, _, err := other.OpenBlob(nil, good); !errors.Is(err, ErrAuth) {
		t.Errorf("wrong key: %v", err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 1
		if i >= HeaderSize {
			binary.LittleEndian.PutUint32(b[8:], crc32.ChecksumIEEE(b[HeaderSize:]))
		}
		return b
	}
	if _, _, err := k.OpenBlob(nil, flip(HeaderSize+2)); !errors.Is(err, ErrAuth) {
		t.Errorf("ciphertext bit flipped (crc fixed): %v", err)
	}
	if _, _, err := k.OpenBlob(nil, flip(20)); !errors.Is(err, ErrAuth) {
		t.Errorf("iv bit flipped: %v", err)
	}
	if _, _, err := k.OpenBlob(nil, flip(30)); !errors.Is(err, ErrAuth) {
		t.Errorf("tag bit flipped: %v", err)
	}
	b := bytes.Clone(good)
	b[HeaderSize] ^= 1 // crc no longer matches
	if _, _, err := k.OpenBlob(nil, b); !errors.Is(err, ErrFormat) {
		t.Errorf("crc mismatch: %v", err)
	}
	if _, _, err := k.OpenBlob(nil, good[:HeaderSize-1]); !errors.Is(err, ErrFormat) {
		t.Errorf("short: %v", err)
	}
	if _, _, err := k.OpenBlob(nil, append([]byte{0x42, 0xab, 0x38, 0x07, 0xbe, 0x83, 0x70, 0xa1}, good[8:]...)); !errors.Is(err, ErrFormat) {
		t.Errorf("plain magic: %v", err)
	}
	// A swapped magic (ENCRYPTED <-> ENCR_COMPR) is covered by neither CRC
	// nor tag (P10): OpenBlob succeeds and reports the other kind; the
	// keyed digest check after decoding catches it.
	sw := bytes.Clone(good)
	copy(sw, MagicEncryptedCompressed[:])
	if _, compressed, err := k.OpenBlob(nil, sw); err != nil || !compressed {
		t.Errorf("swapped magic: %v %v", compressed, err)
	}
	// Fresh IVs: the same plaintext never encrypts to the same blob (P15).
	if again := k.SealBlob(nil, []byte("some plaintext"), false); bytes.Equal(again, good) {
		t.Error("two encryptions gave the same blob")
	}
}

// datastore.md §10.4: the upstream manifest signature test.
func TestManifestSignatureVector(t *testing.T) {
	kp := &KDFParams{KDF: KDFScrypt, N: 65536, R: 8, P: 1}
	raw, err := kp.derive([]byte("test"))
	if err != nil {
		t.Fatal(err)
	}
	k := NewKey([32]byte(raw))
	if got := k.Fingerprint().String(); got != "12:b9:b7:74:bb:3d:89:95:2b:97:cb:c2:82:f0:0c:14:2b:83:ba:7f:96:62:6a:a1:5a:44:9a:63:e8:91:fe:25" {
		t.Errorf("fingerprint %s", got)
	}
	doc := `{
  "backup-type": "host", "backup-id": "elsa", "backup-time": 1593179765,
  "files": [
    {"filename": "test1.img.fidx", "size": 200, "csum": "0101010101010101010101010101010101010101010101010101010101010101", "crypt-mode": "encrypt"},
    {"filename": "abc.blob", "size": 200, "csum": "0202020202020202020202020202020202020202020202020202020202020202", "crypt-mode": "none"}
  ],
  "signature": null,
  "unprotected": {"key-fingerprint": "x"}
}`
	canon, err := CanonicalJSON([]byte(doc), "unprotected", "signature")
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"backup-id":"elsa","backup-time":1593179765,"backup-type":"host","files":[{"crypt-mode":"encrypt","csum":"0101010101010101010101010101010101010101010101010101010101010101","filename":"test1.img.fidx","size":200},{"crypt-mode":"none","csum":"0202020202020202020202020202020202020202020202020202020202020202","filename":"abc.blob","size":200}]}`
	if string(canon) != want {
		t.Fatalf("canonical:\n%s\nwant\n%s", canon, want)
	}
	sig := k.Sign(canon)
	if got := hex.EncodeToString(sig[:]); got != "d7b446fb7db081662081d4b40fedd858a1d6307a5aff4ecff7d5bf4fd35679e9" {
		t.Errorf("signature %s", got)
	}
	if !k.VerifySignature(canon, sig[:]) || k.VerifySignature(canon[1:], sig[:]) || testKey().VerifySignature(canon, sig[:]) {
		t.Error("VerifySignature disagrees")
	}
}

// crypto.md §5.6: the signed manifest of an encrypted snapshot.
func TestSignedManifestVector(t *testing.T) {
	const canon = `{"backup-id":"pbsfs","backup-time":1718000000,"backup-type":"host","files":[{"crypt-mode":"encrypt","csum":"8444a17423b9e62ab77eb23016c6dabd06f61d9090075508eaa2de75d9f162b7","filename":"hello.conf.blob","size":49},{"crypt-mode":"encrypt","csum":"649b97caf9c3041cd3f447c87fcf7047fbf6a6887ec0d257e95dd6b0017fc1d7","filename":"root.pxar.didx","size":11}]}`
	k := testKey()
	sig := k.Sign([]byte(canon))
	if got := hex.EncodeToString(sig[:]); got != "76d6ab072f74abe965e8442c554f2974fca6221bd9af774ae99633b27bc40374" {
		t.Errorf("signature %s", got)
	}
	// The index csum of the two keyed digests, hello and " world".
	h := sha256.New()
	for i, part := range []string{"hello", " world"} {
		var end [8]byte
		binary.LittleEndian.PutUint64(end[:], uint64([]int{5, 11}[i]))
		d := k.Digest([]byte(part))
		h.Write(end[:])
		h.Write(d[:])
		if i == 1 && hex.EncodeToString(d[:]) != "45ec5a6643a22632bf808b1971efd86700cacbae3b2dbdc09124fcc139e94a1f" {
			t.Errorf("digest of ' world' = %x", d)
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != "649b97caf9c3041cd3f447c87fcf7047fbf6a6887ec0d257e95dd6b0017fc1d7" {
		t.Errorf("index csum %s", got)
	}
}

func TestCanonicalJSON(t *testing.T) {
	for in, want := range map[string]string{
		`{"b":1,"a":[true,false,"x"]}`:        `{"a":[true,false,"x"],"b":1}`,
		`{"s":"<&>\u00e9\u2028\n\u0001\"\\"}`: "{\"s\":\"<&>\u00e9\u2028\\n\\u0001\\\"\\\\\"}",
		`{"Z":0,"a":0,"_":0}`:                 `{"Z":0,"_":0,"a":0}`,
	} {
		got, err := CanonicalJSON([]byte(in))
		if err != nil || string(got) != want {
			t.Errorf("CanonicalJSON(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{`{"a":null}`, `[1,null]`, `{`, ``} {
		if _, err := CanonicalJSON([]byte(bad)); err == nil {
			t.Errorf("CanonicalJSON(%s) accepted", bad)
		}
	}
}

// P1: a standard 12-byte GCM nonce (the first 12 IV bytes) fails the tag.
func TestTwelveByteNonceFails(t *testing.T) {
	blob := unhex(t, "7b6785be222d4cf0784eea93000102030405060708090a0b0c0d0e0f0c84c431837297c0b19e77e5608162ea0f09cc1a56")
	block, _ := aes.NewCipher(seq(0, 32))
	gcm12, _ := cipher.NewGCM(block)
	ct := append(bytes.Clone(blob[HeaderSize:]), blob[28:44]...)
	if _, err := gcm12.Open(nil, blob[12:24], ct, nil); err == nil {
		t.Fatal("12-byte nonce opened the blob")
	}
}

func TestSealBlobInPlace(t *testing.T) {
	k := testKey()
	for _, n := range []int{0, 1, 1000, 1 << 20} {
		payload := seq(7, n)
		b := append([]byte("prefix"), make([]byte, HeaderSize)...)
		b = append(b, payload...)
		b = k.SealBlobInPlace(b, 6, n == 1000)
		if string(b[:6]) != "prefix" || len(b) != 6+HeaderSize+n {
			t.Fatalf("%d: length %d", n, len(b))
		}
		plain, compressed, err := k.OpenBlob(nil, b[6:])
		if err != nil || compressed != (n == 1000) || !bytes.Equal(plain, payload) {
			t.Fatalf("%d: %v %v", n, compressed, err)
		}
	}
}

// TestOpenInPlace: a blob read as header and ciphertext opens in place to
// what OpenBlob gives; damage, another key, a plain magic or no room for
// the tag are errors, and nothing is returned.
func TestOpenInPlace(t *testing.T) {
	k := testKey()
	plain := bytes.Repeat([]byte("in place "), 1000)
	blob := k.SealBlob(nil, plain, true)
	split := func(b []byte) ([]byte, []byte) {
		ct := make([]byte, len(b)-HeaderSize, len(b)-HeaderSize+TagSize)
		copy(ct, b[HeaderSize:])
		return b[:HeaderSize], ct
	}
	hdr, ct := split(blob)
	got, compressed, err := k.OpenInPlace(hdr, ct)
	if err != nil || !compressed || !bytes.Equal(got, plain) || &got[0] != &ct[0] {
		t.Fatalf("OpenInPlace = %d bytes, %v, %v; want the plaintext in ct's memory", len(got), compressed, err)
	}
	bad := bytes.Clone(blob)
	bad[HeaderSize+5] ^= 1 // ciphertext changed, CRC fixed up
	binary.LittleEndian.PutUint32(bad[8:], crc32.ChecksumIEEE(bad[HeaderSize:]))
	plainMagic := bytes.Clone(blob)
	copy(plainMagic, []byte{66, 171, 56, 7, 190, 131, 112, 161})
	crc := bytes.Clone(blob)
	crc[HeaderSize] ^= 1
	for name, c := range map[string]struct {
		k    *Key
		blob []byte
		want error
	}{
		"tampered": {k, bad, ErrAuth}, "other key": {NewKey([32]byte(seq(1, 32))), blob, ErrAuth},
		"plain magic": {k, plainMagic, ErrFormat}, "crc": {k, crc, ErrFormat},
	} {
		h, ct := split(c.blob)
		if got, _, err := c.k.OpenInPlace(h, ct); !errors.Is(err, c.want) || got != nil {
			t.Errorf("%s: %d bytes, %v; want %v", name, len(got), err, c.want)
		}
	}
	h, ct := split(blob)
	if _, _, err := k.OpenInPlace(h, ct[:len(ct):len(ct)]); !errors.Is(err, ErrFormat) {
		t.Errorf("no room for the tag: %v", err)
	}
}
