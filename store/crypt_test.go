package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/store/crypto"
)

// vectorKey is enc_key 00 01 … 1f (datastore.md §10.3, crypto.md §5).
func vectorKey() *crypto.Key {
	var raw [32]byte
	for i := range raw {
		raw[i] = byte(i)
	}
	return crypto.NewKey(raw)
}

func otherKey() *crypto.Key {
	var raw [32]byte
	for i := range raw {
		raw[i] = byte(0x80 + i)
	}
	return crypto.NewKey(raw)
}

func keyring(keys ...*crypto.Key) *crypto.Keyring {
	r := &crypto.Keyring{}
	for _, k := range keys {
		r.Add(k)
	}
	return r
}

// reopen opens s's datastore again with keys.
func reopen(t testing.TB, s *Store, keys ...*crypto.Key) *Store {
	t.Helper()
	s2, err := Open(s.Root(), Options{RuntimeDir: s.RuntimeDir(), Keys: keyring(keys...)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	return s2
}

// crypto.md §5.4 and §5.5 through the store's decode path.
func TestEncryptedBlobVectorsDecode(t *testing.T) {
	c := NewCodec()
	k := vectorKey()
	hello := unhex(t, "7b6785be222d4cf0784eea93000102030405060708090a0b0c0d0e0f0c84c431837297c0b19e77e5608162ea0f09cc1a56")
	compr := unhex(t, "e6591bbf0bbfd80b3d49e64c101112131415161718191a1b1c1d1e1f129d700b60e1af59bec827a2458078caa2ef159d879939e26b0b8e08d6a111e29b0564")
	if got, err := c.AppendDecodeWith(nil, hello, k); err != nil || string(got) != "hello" {
		t.Errorf("hello: %q, %v", got, err)
	}
	got, err := c.AppendDecodeWith(nil, compr, k)
	if err != nil || !bytes.Equal(got, bytes.Repeat([]byte("a"), 1000)) {
		t.Errorf("encr+compr: %d bytes, %v", len(got), err)
	}
	for _, b := range [][]byte{hello, compr} {
		if _, err := c.AppendDecodeWith(nil, b, nil); !errors.Is(err, ErrEncrypted) {
			t.Errorf("no key: %v", err)
		}
		if _, err := c.AppendDecodeWith(nil, b, otherKey()); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "wrong key or corrupted data") {
			t.Errorf("other key: %v", err)
		}
	}
	// The chunk decoder checks the keyed digest, and the crypt mode.
	dHello, _ := ParseDigest("e34178a27b992c4a218599bf7f43ed50bc464a03d624d9092306fe2ed74d557e")
	dA, _ := ParseDigest("6e49a018cd6c9667b8e73f44e3b4061454b6904f0b56832c29549ee634289468")
	s := newTestStore(t)
	dec := s.EncryptedDecoder(k)
	if got, err := dec.Decode(nil, hello, dHello); err != nil || string(got) != "hello" {
		t.Errorf("decode hello chunk: %q %v", got, err)
	}
	if got, err := dec.Decode(nil, compr, dA); err != nil || len(got) != 1000 {
		t.Errorf("decode compressed chunk: %d %v", len(got), err)
	}
	if _, err := dec.Decode(nil, hello, dA); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "digest differs") {
		t.Errorf("wrong digest: %v", err)
	}
	// A swapped magic is covered by neither CRC nor tag (P10): zstd or
	// the keyed digest must catch it, never garbage.
	swapped := bytes.Clone(hello)
	copy(swapped, compr[:8])
	if _, err := dec.Decode(nil, swapped, dHello); !errors.Is(err, ErrCorrupt) {
		t.Errorf("swapped magic: %v", err)
	}
	plain, _ := NewCodec().Encode([]byte("hello"), false)
	if _, err := dec.Decode(nil, plain, dHello); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "crypt mode encrypt") {
		t.Errorf("plain chunk in an encrypted archive: %v", err)
	}
	if _, err := s.PlainDecoder().Decode(nil, hello, dHello); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "crypt mode none") {
		t.Errorf("encrypted chunk in a plain archive: %v", err)
	}
}

func TestEncodeEncryptedCompressesOnlyWhenShorter(t *testing.T) {
	c := NewCodec()
	k := vectorKey()
	for _, tc := range []struct {
		data []byte
		kind BlobKind
	}{
		{[]byte("hello"), BlobEncrypted},
		{bytes.Repeat([]byte("a"), 1000), BlobEncryptedCompressed},
		{xorshiftBytes(3, 100000), BlobEncrypted},
	} {
		b, err := c.AppendEncodeEncrypted(nil, tc.data, k, true)
		if err != nil {
			t.Fatal(err)
		}
		if kind, _ := BlobKindOf(b); kind != tc.kind {
			t.Errorf("%d bytes: kind %v, want %v", len(tc.data), kind, tc.kind)
		}
		if got, err := c.AppendDecodeWith(nil, b, k); err != nil || !bytes.Equal(got, tc.data) {
			t.Errorf("round trip: %v", err)
		}
		b2, _ := c.AppendEncodeEncrypted(nil, tc.data, k, true)
		if bytes.Equal(b[12:28], b2[12:28]) {
			t.Error("IV repeated")
		}
	}
}

const vectorManifestCanon = `{"backup-id":"pbsfs","backup-time":1718000000,"backup-type":"host","files":[{"crypt-mode":"encrypt","csum":"8444a17423b9e62ab77eb23016c6dabd06f61d9090075508eaa2de75d9f162b7","filename":"hello.conf.blob","size":49},{"crypt-mode":"encrypt","csum":"649b97caf9c3041cd3f447c87fcf7047fbf6a6887ec0d257e95dd6b0017fc1d7","filename":"root.pxar.didx","size":11}]}`

// crypto.md §5.6: the signed manifest, both signature forms (§3.4).
func TestSignedManifestVector(t *testing.T) {
	k := vectorKey()
	m := &Manifest{BackupType: "host", BackupID: "pbsfs", BackupTime: 1718000000, Files: []FileInfo{
		{Filename: "hello.conf.blob", CryptMode: CryptEncrypt, Size: 49, Csum: "8444a17423b9e62ab77eb23016c6dabd06f61d9090075508eaa2de75d9f162b7"},
		{Filename: "root.pxar.didx", CryptMode: CryptEncrypt, Size: 11, Csum: "649b97caf9c3041cd3f447c87fcf7047fbf6a6887ec0d257e95dd6b0017fc1d7"},
	}}
	if c, err := m.canonical(); err != nil || string(c) != vectorManifestCanon {
		t.Fatalf("canonical %s, %v", c, err)
	}
	if err := m.Sign(k); err != nil {
		t.Fatal(err)
	}
	if m.Signature != "76d6ab072f74abe965e8442c554f2974fca6221bd9af774ae99633b27bc40374" {
		t.Errorf("signature %s", m.Signature)
	}
	fp, ok, err := m.KeyFingerprint()
	if err != nil || !ok || fp != k.Fingerprint() {
		t.Errorf("key-fingerprint %v %v %v", fp, ok, err)
	}
	js, _ := m.MarshalJSON()
	if !strings.Contains(string(js), `"key-fingerprint": "0e:ab:d4:46:0b:6e:b9:ca:34:50:23:de:e2:b7:78:c7:90:e5:4a:16:83:b9:65:9c:0a:57:ae:19:90:90:15:9b"`) {
		t.Errorf("manifest json:\n%s", js)
	}
	parsed, err := ParseManifest(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := parsed.CheckSignature(k); err != nil {
		t.Errorf("check: %v", err)
	}
	err = parsed.CheckSignature(otherKey())
	if !errors.Is(err, ErrEncrypted) || !strings.HasPrefix(err.Error(), "wrong key - unable to verify signature since manifest's key 0e:ab:d4:46:0b:6e:b9:ca does not match provided key ") {
		t.Errorf("other key: %v", err)
	}

	// An unknown top-level key signed as read (pbs-old) verifies; signed
	// in struct form (pbs-new, the key dropped) it verifies too.
	withExtra := strings.TrimSuffix(vectorManifestCanon, "}") + `,"x-extra":"1"}`
	oldSig := k.Sign([]byte(withExtra))
	for _, sig := range []string{hex.EncodeToString(oldSig[:]), m.Signature} {
		doc := strings.TrimSuffix(withExtra, "}") + `,"signature":"` + sig + `","unprotected":{"key-fingerprint":"` + k.Fingerprint().String() + `"}}`
		pm, err := ParseManifest([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		if err := pm.CheckSignature(k); err != nil {
			t.Errorf("form %s: %v", sig[:8], err)
		}
	}
	// Tampering with a signed field breaks it.
	parsed.Files[0].Size = 50
	parsed.raw = nil
	if err := parsed.CheckSignature(k); !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "wrong signature in manifest") {
		t.Errorf("tampered: %v", err)
	}
}

// backupEncrypted writes one snapshot with a blob, an image and a stream.
func backupEncrypted(t *testing.T, s *Store, g GroupRef, at time.Time, opts BackupOptions, image, stream []byte) SnapshotRef {
	t.Helper()
	ctx := context.Background()
	b, err := s.StartBackup(ctx, g, at, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddBlob(ctx, "qemu-server.conf", []byte("memory: 2048\n")); err != nil {
		t.Fatal(err)
	}
	if err := b.AddImage(ctx, "drive-scsi0.img", bytes.NewReader(image), uint64(len(image))); err != nil {
		t.Fatal(err)
	}
	if err := b.AddStream(ctx, "data.pxar", bytes.NewReader(stream), 64<<10); err != nil {
		t.Fatal(err)
	}
	if err := b.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	return b.Ref()
}

func readAll(t *testing.T, s *Store, ref SnapshotRef, name string) ([]byte, error) {
	t.Helper()
	if KindOf(name) == KindBlob {
		return s.ReadBlob(ref, name)
	}
	a, err := s.OpenArchive(context.Background(), ref, name)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	_, err = a.WriteTo(&buf)
	return buf.Bytes(), err
}

func TestEncryptedBackupRoundTrip(t *testing.T) {
	s := newTestStore(t)
	k := vectorKey()
	g := GroupRef{Type: TypeVM, ID: "100"}
	image := append(xorshiftBytes(7, 5<<20+123), make([]byte, 4<<20)...)
	stream := append(xorshiftBytes(8, 1<<20), bytes.Repeat([]byte("x"), 1<<20)...)
	ref := backupEncrypted(t, s, g, time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC), BackupOptions{Key: k}, image, stream)

	m, err := s.LoadManifest(ref)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Signature) != 64 || !m.Encrypted() {
		t.Fatalf("manifest not signed/encrypted: %+v", m)
	}
	for _, f := range m.Files {
		if f.CryptMode != CryptEncrypt {
			t.Errorf("%s: crypt-mode %s", f.Filename, f.CryptMode)
		}
	}
	if err := m.CheckSignature(k); err != nil {
		t.Error(err)
	}
	// Every chunk on disk is encrypted and named by its keyed digest.
	idx, err := s.OpenIndex(ref, "drive-scsi0.img.fidx")
	if err != nil {
		t.Fatal(err)
	}
	d0, start, end := idx.Chunk(0)
	if d0 != Digest(k.Digest(image[start:end])) {
		t.Error("chunk 0 not named by its keyed digest")
	}
	raw, _ := os.ReadFile(s.chunks.Path(d0))
	if kind, _ := BlobKindOf(raw); !kind.Encrypted() {
		t.Errorf("chunk 0 stored as %v", kind)
	}
	if bytes.Contains(raw, image[start:start+64]) {
		t.Error("plaintext visible in the chunk file")
	}
	// The zero chunk is encrypted too, under a key-dependent name.
	dz, _, _ := idx.Chunk(2)
	if dz == DigestOf(make([]byte, 4<<20-(5<<20+123-8<<20))) || dz == DigestOf(make([]byte, 4<<20)) {
		t.Error("zero chunk named by its plain digest")
	}

	withKey := reopen(t, s, otherKey(), k)
	for name, want := range map[string][]byte{"qemu-server.conf.blob": []byte("memory: 2048\n"), "drive-scsi0.img.fidx": image, "data.pxar.didx": stream} {
		got, err := readAll(t, withKey, ref, name)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s with key: %d bytes, %v", name, len(got), err)
		}
		_, err = readAll(t, s, ref, name)
		if !errors.Is(err, ErrEncrypted) || !strings.Contains(err.Error(), "missing key - manifest was created with key 0e:ab:d4:46:0b:6e:b9:ca") {
			t.Errorf("%s without key: %v", name, err)
		}
		_, err = readAll(t, reopen(t, s, otherKey()), ref, name)
		if !errors.Is(err, ErrEncrypted) || !strings.Contains(err.Error(), "wrong key - manifest's key 0e:ab:d4:46:0b:6e:b9:ca does not match provided key "+otherKey().Fingerprint().Short()) {
			t.Errorf("%s with another key: %v", name, err)
		}
	}
	// A plain blob listed with crypt mode encrypt, as the client uploads
	// rsa-encrypted.key.blob (crypto.md §2.7), reads without a key.
	rsa, _ := NewCodec().Encode(bytes.Repeat([]byte{0xa5}, 512), false)
	if err := os.WriteFile(s.Path(ref.Dir()+"/rsa-encrypted.key.blob"), rsa, 0o644); err != nil {
		t.Fatal(err)
	}
	m.Files = append(m.Files, FileInfo{Filename: "rsa-encrypted.key.blob", CryptMode: CryptEncrypt, Size: uint64(len(rsa)), Csum: sha(rsa)})
	if err := m.Sign(k); err != nil {
		t.Fatal(err)
	}
	if err := s.writeManifest(context.Background(), ref, m); err != nil {
		t.Fatal(err)
	}
	for _, st := range []*Store{s, withKey} {
		if got, err := st.ReadBlob(ref, "rsa-encrypted.key.blob"); err != nil || len(got) != 512 {
			t.Errorf("rsa-encrypted.key.blob: %d bytes, %v", len(got), err)
		}
	}
	if enc, err := s.BlobEncrypted(ref, "rsa-encrypted.key.blob"); err != nil || enc {
		t.Errorf("BlobEncrypted(rsa) = %v %v", enc, err)
	}
	if enc, err := s.BlobEncrypted(ref, "qemu-server.conf.blob"); err != nil || !enc {
		t.Errorf("BlobEncrypted(conf) = %v %v", enc, err)
	}
	// Verify: CRC and size without the key, everything with it.
	r := verifyAll(t, s, ref)
	if r.Keyed || r.Chunks == 0 {
		t.Errorf("verify without key: %+v", r)
	}
	r = verifyAll(t, withKey, ref)
	if !r.Keyed {
		t.Error("verify with key did not use it")
	}
}

func TestSignOnlyBackup(t *testing.T) {
	s := newTestStore(t)
	k := vectorKey()
	g := GroupRef{Type: TypeHost, ID: "signed"}
	image := xorshiftBytes(9, 1<<20)
	stream := []byte("hello world")
	ref := backupEncrypted(t, s, g, time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC), BackupOptions{Key: k, SignOnly: true}, image, stream)
	m, _ := s.LoadManifest(ref)
	if m.Encrypted() || m.Signature == "" {
		t.Fatalf("sign-only manifest: %+v", m)
	}
	for _, f := range m.Files {
		if f.CryptMode != CryptSignOnly {
			t.Errorf("%s: %s", f.Filename, f.CryptMode)
		}
	}
	idx, _ := s.OpenIndex(ref, "drive-scsi0.img.fidx")
	if d, _, _ := idx.Chunk(0); d != DigestOf(image) {
		t.Error("sign-only chunk not named by its plain digest (P8)")
	}
	// Readable without a key, and with one (signature checked).
	for _, st := range []*Store{s, reopen(t, s, k)} {
		got, err := readAll(t, st, ref, "drive-scsi0.img.fidx")
		if err != nil || !bytes.Equal(got, image) {
			t.Errorf("read: %v", err)
		}
	}
	// A tampered signed manifest is refused when the key is at hand.
	m.Signature = strings.Repeat("0", 64)
	if err := s.writeManifest(context.Background(), ref, m); err != nil {
		t.Fatal(err)
	}
	if _, err := readAll(t, reopen(t, s, k), ref, "drive-scsi0.img.fidx"); !errors.Is(err, ErrBadSignature) {
		t.Errorf("bad signature: %v", err)
	}
	if _, err := readAll(t, s, ref, "drive-scsi0.img.fidx"); err != nil {
		t.Errorf("without key (signature unchecked): %v", err)
	}
	if r, _ := reopen(t, s, k).VerifySnapshot(context.Background(), ref); r.OK() {
		t.Error("verify with key passed a bad signature")
	}
}

// A backup with another key than its base's does not take it as base.
func TestBackupBaseNeedsSameKey(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	g := GroupRef{Type: TypeHost, ID: "h"}
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	backupEncrypted(t, s, g, t0, BackupOptions{Key: vectorKey()}, []byte("img"), []byte("str"))
	for i, tc := range []struct {
		opts BackupOptions
		base bool
	}{
		{BackupOptions{Key: vectorKey()}, true},
		{BackupOptions{Key: otherKey()}, false},
		{BackupOptions{}, false},
		{BackupOptions{Key: vectorKey()}, false}, // the base is now the plain one
	} {
		b, err := s.StartBackup(ctx, g, t0.Add(time.Duration(i+1)*time.Minute), tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := b.Base(); ok != tc.base {
			t.Errorf("case %d: base %v, want %v", i, ok, tc.base)
		}
		if err := b.AddBlob(ctx, "x", []byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := b.Finish(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestVerifyEncryptedWithoutKey(t *testing.T) {
	s := newTestStore(t)
	k := vectorKey()
	image := xorshiftBytes(11, 6<<20)
	ref := backupEncrypted(t, s, GroupRef{Type: TypeVM, ID: "1"}, time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC), BackupOptions{Key: k}, image, []byte("s"))
	idx, _ := s.OpenIndex(ref, "drive-scsi0.img.fidx")
	d0, _, _ := idx.Chunk(0)
	d1, _, _ := idx.Chunk(1)
	// Truncate chunk 0; flip a ciphertext bit of chunk 1 and fix its CRC.
	p0 := s.chunks.Path(d0)
	raw0, _ := os.ReadFile(p0)
	os.WriteFile(p0, raw0[:len(raw0)-100], 0o644)
	p1 := s.chunks.Path(d1)
	raw1, _ := os.ReadFile(p1)
	raw1[1000] ^= 1
	fixEncryptedCRC(raw1)
	os.WriteFile(p1, raw1, 0o644)

	r, err := s.VerifySnapshot(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0].Error(), d0.String()) || !errors.Is(r.Problems[0], ErrCorrupt) {
		t.Errorf("without key: %v", r.Problems)
	} else {
		t.Logf("verify without key: %v", r.Problems[0])
	}
	r, _ = reopen(t, s, k).VerifySnapshot(context.Background(), ref)
	if len(r.Problems) != 2 || !strings.Contains(r.Problems[1].Error()+r.Problems[0].Error(), d1.String()) {
		t.Errorf("with key: %v", r.Problems)
	} else {
		t.Logf("verify with key: %v", r.Problems)
	}
}

func sha(b []byte) string { s := sha256.Sum256(b); return hexs(s[:]) }

func fixEncryptedCRC(b []byte) {
	binary.LittleEndian.PutUint32(b[8:], crc32.ChecksumIEEE(b[encryptedBlobHeaderSize:]))
}

// FuzzEncryptedBlobDecode: encrypted blobs and chunks decode through the
// store's path without panics; what decodes is authenticated and, for a
// chunk, matches its keyed digest.
func FuzzEncryptedBlobDecode(f *testing.F) {
	k := vectorKey()
	c := NewCodec()
	f.Add(unhex(f, "7b6785be222d4cf0784eea93000102030405060708090a0b0c0d0e0f0c84c431837297c0b19e77e5608162ea0f09cc1a56"))
	f.Add(unhex(f, "e6591bbf0bbfd80b3d49e64c101112131415161718191a1b1c1d1e1f129d700b60e1af59bec827a2458078caa2ef159d879939e26b0b8e08d6a111e29b0564"))
	big, _ := c.AppendEncodeEncrypted(nil, bytes.Repeat([]byte("pbsfs "), 5000), k, true)
	f.Add(big)
	dec := &ChunkDecoder{codec: c, key: k, encrypted: true}
	dHello := Digest(k.Digest([]byte("hello")))
	f.Fuzz(func(t *testing.T, b []byte) {
		data, err := c.AppendDecodeWith(nil, b, k)
		if err == nil {
			if kind, _ := BlobKindOf(b); kind.Encrypted() {
				if _, _, err := k.OpenBlob(nil, b); err != nil {
					t.Fatalf("decoded a blob that does not authenticate: %v", err)
				}
			}
			re, err := c.AppendEncodeEncrypted(nil, data, k, true)
			if err != nil {
				t.Fatal(err)
			}
			if again, err := c.AppendDecodeWith(nil, re, k); err != nil || !bytes.Equal(again, data) {
				t.Fatalf("re-encoded blob decodes differently: %v", err)
			}
		}
		if got, err := dec.Decode(nil, b, dHello); err == nil && string(got) != "hello" {
			t.Fatalf("chunk decoded to %q under the digest of hello", got)
		}
	})
}

// BenchmarkChunkCodec compares encoding and decoding a 4 MiB chunk of
// incompressible and of compressible data, plain and encrypted.
func BenchmarkChunkCodec(b *testing.B) {
	c := NewCodec()
	k := vectorKey()
	s := &Store{codec: c}
	s.plain = &ChunkDecoder{codec: c}
	inputs := map[string][]byte{
		"random":       xorshiftBytes(5, 4<<20),
		"compressible": bytes.Repeat([]byte("pbsfs chunk codec benchmark "), (4<<20)/28),
	}
	for _, in := range []string{"random", "compressible"} {
		data := inputs[in]
		for _, mode := range []string{"plain", "encrypted"} {
			dec := s.plain
			if mode == "encrypted" {
				dec = s.EncryptedDecoder(k)
			}
			var blob []byte
			encode := func(dst []byte) []byte {
				var err error
				if mode == "encrypted" {
					dst, err = c.AppendEncodeEncrypted(dst[:0], data, k, true)
				} else {
					dst, err = c.AppendEncode(dst[:0], data, true)
				}
				if err != nil {
					b.Fatal(err)
				}
				return dst
			}
			b.Run("encode/"+in+"/"+mode, func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					blob = encode(blob)
					_ = dec.Digest(data)
				}
			})
			blob = encode(nil)
			d := dec.Digest(data)
			b.Run("decode/"+in+"/"+mode, func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					if _, err := dec.Decode(nil, blob, d); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestEncryptedChunkDamageNamed: the read engine opens encrypted chunks
// without a CRC pass (the tag authenticates), yet a damaged chunk is
// still named as such: a ciphertext flip that breaks the CRC reads as a
// CRC error, one with its CRC fixed up as a failed decryption; both are
// ErrCorrupt, and the other chunks read fine.
func TestEncryptedChunkDamageNamed(t *testing.T) {
	s := newTestStore(t)
	k := vectorKey()
	image := xorshiftBytes(12, 12<<20)
	ref := backupEncrypted(t, s, GroupRef{Type: TypeVM, ID: "1"}, time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC), BackupOptions{Key: k}, image, []byte("s"))
	idx, _ := s.OpenIndex(ref, "drive-scsi0.img.fidx")
	d0, _, _ := idx.Chunk(0)
	d1, _, _ := idx.Chunk(1)
	p0 := s.chunks.Path(d0)
	raw0, _ := os.ReadFile(p0)
	raw0[1000] ^= 1 // the CRC no longer matches
	os.WriteFile(p0, raw0, 0o644)
	p1 := s.chunks.Path(d1)
	raw1, _ := os.ReadFile(p1)
	raw1[1000] ^= 1
	fixEncryptedCRC(raw1)
	os.WriteFile(p1, raw1, 0o644)

	a, err := reopen(t, s, k).OpenArchive(context.Background(), ref, "drive-scsi0.img.fidx")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := a.ReadAt(buf, 0); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "crc") || !strings.Contains(err.Error(), d0.String()) {
		t.Errorf("chunk with a bad CRC: %v", err)
	}
	if _, err := a.ReadAt(buf, 4<<20); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "decryption with key") || !strings.Contains(err.Error(), d1.String()) {
		t.Errorf("chunk with a flipped bit and a fixed CRC: %v", err)
	}
	if n, err := a.ReadAt(buf, 8<<20); err != nil || !bytes.Equal(buf[:n], image[8<<20:8<<20+4096]) {
		t.Errorf("good chunk: %d bytes, %v", n, err)
	}
}

// TestEncryptedRereadOfVerifiedChunks: once a chunk of an encrypted
// archive stored without compression was authenticated and its keyed
// digest checked, later reads of it that miss the cache (random and
// sequential, across chunk boundaries) decrypt just their range from
// the file it was read through, with no second load, and give the same
// bytes; compressed chunks are decoded each time; a reader with another
// key for the same digest never uses the verified file.
func TestEncryptedRereadOfVerifiedChunks(t *testing.T) {
	k := vectorKey()
	var mu sync.Mutex
	loaded := map[Digest]int{}
	s, err := Create(filepath.Join(t.TempDir(), "ds"), Options{
		RuntimeDir: t.TempDir(), LazyChunkDirs: true, Keys: keyring(k), CacheBytes: 1, // caches nothing
		OnChunkLoad: func(d Digest) {
			mu.Lock()
			loaded[d]++
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	// Random, text, zeros, random, text, a short random chunk: in an
	// encrypted archive zeros are no hole (the digest is keyed), and are
	// stored compressed.
	img := engineImage()
	ref := backupEncrypted(t, s, GroupRef{Type: TypeVM, ID: "1"}, time.Unix(1700000000, 0), BackupOptions{Key: k}, img, []byte("s"))
	ctx := context.Background()
	a, err := s.OpenArchive(ctx, ref, "drive-scsi0.img.fidx")
	if err != nil {
		t.Fatal(err)
	}
	if !a.Decoder().Encrypted() {
		t.Fatal("archive not encrypted")
	}
	rnd := rand.New(rand.NewPCG(3, 4))
	for pass := range 3 {
		mu.Lock()
		clear(loaded)
		mu.Unlock()
		r := a.NewReader()
		if pass < 2 {
			for _, size := range []int{700 << 10, 1<<20 + 4097} {
				buf := make([]byte, size)
				for off := 0; off < len(img); off += size {
					got, err := readCopy(r, ctx, buf, int64(off))
					if err != nil || !bytes.Equal(got, img[off:min(off+size, len(img))]) {
						t.Fatalf("pass %d, %d-byte reads, at %d: %d bytes, %v", pass, size, off, len(got), err)
					}
				}
			}
		} else {
			for range 100 {
				off, n := rnd.IntN(len(img)), 1+rnd.IntN(9000)
				buf := make([]byte, n)
				got, err := readCopy(r, ctx, buf, int64(off))
				if err != nil || !bytes.Equal(got, img[off:min(off+n, len(img))]) {
					t.Fatalf("random read of %d at %d: %d bytes, %v", n, off, len(got), err)
				}
			}
		}
		if pass == 0 {
			continue
		}
		mu.Lock()
		for i := range a.Index().Len() {
			d, _, _ := a.Index().Chunk(i)
			compressed := i == 1 || i == 2 || i == 4
			switch n := loaded[d]; {
			case compressed && n == 0 && pass == 1:
				t.Errorf("compressed chunk %d not decoded (nothing is cached)", i)
			case !compressed && n > 0:
				t.Errorf("pass %d: chunk %d (stored uncompressed and verified) loaded %d times", pass, i, n)
			}
		}
		mu.Unlock()
	}
	if n := s.files.verified.lru.Len(); n != 3 {
		t.Errorf("%d verified files open, want 3", n)
	}
	// A whole-chunk load (cat, restore) of a verified chunk is its
	// ciphertext decrypted again, not a load.
	mu.Lock()
	clear(loaded)
	mu.Unlock()
	var all bytes.Buffer
	if _, err := a.WriteTo(&all); err != nil || !bytes.Equal(all.Bytes(), img) {
		t.Fatalf("WriteTo: %d bytes, %v", all.Len(), err)
	}
	for _, i := range []int{0, 3, 5} {
		if d, _, _ := a.Index().Chunk(i); loaded[d] > 0 {
			t.Errorf("WriteTo loaded verified chunk %d", i)
		}
	}
	// Another key never reads the verified files: the range is not served.
	d0, _, _ := a.Index().Chunk(0)
	buf := make([]byte, 100)
	if s.files.ReadChunkRange(d0, otherKey(), buf, 0) || s.files.ReadChunkRange(d0, nil, buf, 0) {
		t.Error("a verified encrypted chunk's file served a reader with another key or none")
	}
	if !s.files.ReadChunkRange(d0, k, buf, 0) || !bytes.Equal(buf, img[:100]) {
		t.Error("the verifying key's range read failed or differs")
	}
	// Nothing past the verified length, whatever the file holds.
	_, start, end := a.Index().Chunk(0)
	if s.files.ReadChunkRange(d0, k, buf, end-start-50) {
		t.Error("a range past the chunk's verified length was served")
	}
}
