package crypto

import (
	"bytes"
	"testing"
)

// FuzzParseKeyConfig: untrusted key files never panic, never make the KDF
// run beyond its limits, and what parses writes back to a file that
// parses to the same thing.
func FuzzParseKeyConfig(f *testing.F) {
	for _, s := range []string{keyFileNone, keyFileScrypt, keyFilePBKDF2,
		`{"kdf":{"Scrypt":{"n":16,"r":1,"p":1,"salt":""}},"created":"2024-06-10T06:13:20Z","modified":"2024-06-10T06:13:20Z","data":"8PHy8/T19vf4+fr7/P3+/7CNxaB09SdBSSINMJZL8LQ6PBX2fugpAuqoLaF2tMCX3SXKWS18kQWy0swebLwlMg=="}`,
		`{"kdf":{"PBKDF2":{"iter":1,"salt":"YQ"}},"created":"2024-06-10T06:13:20Z","modified":"2024-06-10T06:13:20Z","data":"4OHi4+Tl5ufo6err7O3u7/I5gt+/9Y2cIRVzieCxm9Np7h9gHdWEnIQchKJjZH/1CMdIbadGscCpZdnDarfGtw"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		kc, err := ParseKeyConfig(b)
		if err != nil {
			return
		}
		out, err := kc.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseKeyConfig(out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if again.KDFName() != kc.KDFName() || !bytes.Equal(again.Data, kc.Data) || !again.Created.Equal(kc.Created) || again.Hint != kc.Hint {
			t.Fatalf("re-parse differs: %+v vs %+v", again, kc)
		}
		// Decrypt only cheap KDFs here; the limits are tested elsewhere.
		if p := kc.KDF; p != nil && (p.KDF == KDFScrypt && p.N*p.R*p.P > 1<<10 || p.KDF == KDFPBKDF2 && p.Iter > 1000) {
			return
		}
		k, err := kc.Decrypt(password("pbsfs-test"))
		if err == nil && kc.Fingerprint != nil && *kc.Fingerprint != k.Fingerprint() {
			t.Fatal("decrypted a key whose fingerprint differs from the file's")
		}
	})
}

// FuzzOpenBlob: encrypted blob decoding never panics and never returns
// plaintext that did not authenticate.
func FuzzOpenBlob(f *testing.F) {
	k := testKey()
	f.Add(k.sealBlobIV(nil, []byte("hello"), false, [16]byte(seq(0, 16))))
	f.Add(k.sealBlobIV(nil, []byte("28b52ffd60e8024d00001061610100e32b8005"), true, [16]byte(seq(0x10, 16))))
	f.Add(k.SealBlob(nil, nil, false))
	f.Add(k.SealBlob(nil, bytes.Repeat([]byte("pbsfs "), 3000), false))
	f.Fuzz(func(t *testing.T, b []byte) {
		plain, compressed, err := k.OpenBlob(nil, b)
		if err != nil {
			if plain != nil {
				t.Fatal("plaintext returned with an error")
			}
			return
		}
		re := k.SealBlob(nil, plain, compressed)
		back, c2, err := k.OpenBlob(nil, re)
		if err != nil || c2 != compressed || !bytes.Equal(back, plain) {
			t.Fatalf("re-sealed blob opens differently: %v", err)
		}
	})
}
