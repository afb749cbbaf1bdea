package crypto

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The key files of crypto.md §5.1-5.3, byte for byte.
const (
	keyFileNone   = `{"kdf":null,"created":"2024-06-10T06:13:20+00:00","modified":"2024-06-10T06:13:20+00:00","data":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","fingerprint":"0e:ab:d4:46:0b:6e:b9:ca:34:50:23:de:e2:b7:78:c7:90:e5:4a:16:83:b9:65:9c:0a:57:ae:19:90:90:15:9b"}`
	keyFileScrypt = `{"kdf":{"Scrypt":{"n":65536,"r":8,"p":1,"salt":"oKGio6SlpqeoqaqrrK2ur7CxsrO0tba3uLm6u7y9vr8="}},"created":"2024-06-10T06:13:20+00:00","modified":"2024-06-10T06:13:20+00:00","data":"8PHy8/T19vf4+fr7/P3+/7CNxaB09SdBSSINMJZL8LQ6PBX2fugpAuqoLaF2tMCX3SXKWS18kQWy0swebLwlMg==","fingerprint":"0e:ab:d4:46:0b:6e:b9:ca:34:50:23:de:e2:b7:78:c7:90:e5:4a:16:83:b9:65:9c:0a:57:ae:19:90:90:15:9b","hint":"pbsfs"}`
	keyFilePBKDF2 = `{"kdf":{"PBKDF2":{"iter":65535,"salt":"YGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn8="}},"created":"2024-06-10T06:13:20+00:00","modified":"2024-06-10T06:13:20+00:00","data":"4OHi4+Tl5ufo6err7O3u7/I5gt+/9Y2cIRVzieCxm9Np7h9gHdWEnIQchKJjZH/1CMdIbadGscCpZdnDarfGtw==","fingerprint":"0e:ab:d4:46:0b:6e:b9:ca:34:50:23:de:e2:b7:78:c7:90:e5:4a:16:83:b9:65:9c:0a:57:ae:19:90:90:15:9b"}`
)

func password(s string) PasswordFunc { return func() ([]byte, error) { return []byte(s), nil } }

func TestKeyFileVectors(t *testing.T) {
	for _, tc := range []struct {
		name, file   string
		size         int
		sumPrefix    string
		sumSuffix    string
		kdf          KDF
		derived, tag string
		salt, iv     byte
	}{
		{"none", keyFileNone, 255, "e320c679", "c008b428", KDFNone, "", "", 0, 0},
		{"scrypt", keyFileScrypt, 398, "0731614b", "f6c70732", KDFScrypt,
			"8a96e597229cc52c932a18ae3a8ce329fcb3b0ddc77ddeacb2ca473875f75265", "b08dc5a074f5274149220d30964bf0b4", 0xa0, 0xf0},
		{"pbkdf2", keyFilePBKDF2, 374, "8faf653b", "7c75a23f", KDFPBKDF2,
			"19339d0f1839c3527814708fe09574fd9a6b3d130a425749e9629285d853f574", "f23982dfbff58d9c21157389e0b19bd3", 0x60, 0xe0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.file) != tc.size {
				t.Fatalf("vector is %d bytes, want %d", len(tc.file), tc.size)
			}
			sum := hex.EncodeToString(func() []byte { s := sha256.Sum256([]byte(tc.file)); return s[:] }())
			if !strings.HasPrefix(sum, tc.sumPrefix) || !strings.HasSuffix(sum, tc.sumSuffix) {
				t.Fatalf("vector sha256 %s", sum)
			}
			kc, err := ParseKeyConfig([]byte(tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if kc.KDFName() != tc.kdf || kc.Created.Unix() != 1718000000 || kc.Modified.Unix() != 1718000000 {
				t.Errorf("parsed %v %v %v", kc.KDFName(), kc.Created, kc.Modified)
			}
			out, err := kc.MarshalJSON()
			if err != nil || string(out) != tc.file {
				t.Fatalf("re-marshal:\n%s\nwant\n%s (%v)", out, tc.file, err)
			}
			var calls int
			pw := func() ([]byte, error) { calls++; return []byte("pbsfs-test"), nil }
			k, err := kc.Decrypt(pw)
			if err != nil {
				t.Fatal(err)
			}
			if k.Fingerprint().String() != testFingerprint {
				t.Errorf("fingerprint %s", k.Fingerprint())
			}
			if tc.kdf == KDFNone {
				if calls != 0 {
					t.Error("password asked for a clear key")
				}
				return
			}
			dk, err := kc.KDF.derive([]byte("pbsfs-test"))
			if err != nil || hex.EncodeToString(dk) != tc.derived {
				t.Errorf("derived key %x, %v", dk, err)
			}
			if hex.EncodeToString(kc.Data[16:32]) != tc.tag || !bytes.Equal(kc.Data[:16], seq(tc.iv, 16)) || !bytes.Equal(kc.KDF.Salt, seq(tc.salt, 32)) {
				t.Errorf("data %x salt %x", kc.Data, kc.KDF.Salt)
			}
			// Writing the same key with the same salt and IV gives the same file.
			again := &KeyConfig{Created: kc.Created, Modified: kc.Modified, Fingerprint: kc.Fingerprint}
			p := *kc.KDF
			if err := again.sealKey([32]byte(seq(0, 32)), &p, []byte("pbsfs-test"), kc.Hint, [16]byte(seq(tc.iv, 16))); err != nil {
				t.Fatal(err)
			}
			if out, _ := again.MarshalJSON(); string(out) != tc.file {
				t.Errorf("written again:\n%s\nwant\n%s", out, tc.file)
			}

			// Wrong password: the tag fails; the hint is shown when there is one.
			_, err = kc.Decrypt(password("wrong-pass"))
			if !errors.Is(err, ErrWrongPassword) || !errors.Is(err, ErrAuth) {
				t.Fatalf("wrong password: %v", err)
			}
			if kc.Hint != "" && !strings.Contains(err.Error(), "password hint: pbsfs") {
				t.Errorf("wrong password message lacks the hint: %v", err)
			}
			if kc.Hint == "" && !strings.Contains(err.Error(), "wrong password?") {
				t.Errorf("wrong password message: %v", err)
			}
			// Too short, checked before the KDF runs (P5).
			if _, err := kc.Decrypt(password("abcd")); !errors.Is(err, ErrWrongPassword) || !strings.Contains(err.Error(), "too short") {
				t.Errorf("short password: %v", err)
			}
			if _, err := kc.Decrypt(nil); !errors.Is(err, ErrNoPassword) {
				t.Errorf("no password source: %v", err)
			}
			// The first 12 IV bytes as a standard GCM nonce fail the tag (P1).
			block, _ := aes.NewCipher(dk)
			gcm12, _ := cipher.NewGCM(block)
			ct := append(bytes.Clone(kc.Data[32:]), kc.Data[16:32]...)
			if _, err := gcm12.Open(nil, kc.Data[:12], ct, nil); err == nil {
				t.Error("12-byte nonce opened the key")
			}
		})
	}
}

// A zeroed fingerprint must be rejected (the upstream fingerprint test),
// as must any other wrong one; a missing one is accepted.
func TestKeyFileFingerprintChecks(t *testing.T) {
	zero := strings.Replace(keyFileNone, testFingerprint, strings.Repeat("00:", 31)+"00", 1)
	kc, err := ParseKeyConfig([]byte(zero))
	if err != nil {
		t.Fatal(err)
	}
	_, err = kc.Decrypt(nil)
	if !errors.Is(err, ErrFingerprint) || !strings.Contains(err.Error(), "00:00:00:00:00:00:00:00") || !strings.Contains(err.Error(), "0e:ab:d4:46:0b:6e:b9:ca") {
		t.Errorf("zeroed fingerprint: %v", err)
	}
	noFP := strings.Replace(keyFileNone, `,"fingerprint":"`+testFingerprint+`"`, "", 1)
	kc, err = ParseKeyConfig([]byte(noFP))
	if err != nil {
		t.Fatal(err)
	}
	if k, err := kc.Decrypt(nil); err != nil || k.Fingerprint().String() != testFingerprint {
		t.Errorf("no fingerprint: %v", err)
	}
	// The same for an encrypted key: only the key bytes are authenticated (P6).
	bad := strings.Replace(keyFilePBKDF2, "0e:ab", "0e:ac", 1)
	kc, _ = ParseKeyConfig([]byte(bad))
	if _, err := kc.Decrypt(password("pbsfs-test")); !errors.Is(err, ErrFingerprint) {
		t.Errorf("altered fingerprint: %v", err)
	}
}

func TestParseKeyConfigRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"not json":        `{`,
		"array":           `[]`,
		"no created":      strings.Replace(keyFileNone, `"created"`, `"Created"`, 1),
		"fraction":        strings.Replace(keyFileNone, `06:13:20+00:00","modified"`, `06:13:20.5+00:00","modified"`, 1),
		"kdf lower tag":   strings.Replace(keyFilePBKDF2, `"PBKDF2"`, `"pbkdf2"`, 1),
		"kdf type form":   strings.Replace(keyFileNone, `"kdf":null`, `"kdf":{"type":"scrypt"}`, 1),
		"short key":       strings.Replace(keyFileNone, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "AAECAw==", 1),
		"bad base64":      strings.Replace(keyFileNone, "AAECAwQF", "A!ECAwQF", 1),
		"scrypt n not 2^": strings.Replace(keyFileScrypt, `"n":65536`, `"n":65535`, 1),
		"scrypt huge n":   strings.Replace(keyFileScrypt, `"n":65536`, `"n":1073741824`, 1),
		"scrypt huge r":   strings.Replace(keyFileScrypt, `"r":8`, `"r":18446744073709551615`, 1),
		"scrypt huge p":   strings.Replace(keyFileScrypt, `"p":1`, `"p":4294967295`, 1),
		"scrypt p 0":      strings.Replace(keyFileScrypt, `"p":1`, `"p":0`, 1),
		"pbkdf2 huge":     strings.Replace(keyFilePBKDF2, `"iter":65535`, `"iter":4000000000`, 1),
		"pbkdf2 zero":     strings.Replace(keyFilePBKDF2, `"iter":65535`, `"iter":0`, 1),
		"pbkdf2 negative": strings.Replace(keyFilePBKDF2, `"iter":65535`, `"iter":-1`, 1),
		"bad fingerprint": strings.Replace(keyFileNone, `"0e:ab`, `"zz:ab`, 1),
	} {
		start := time.Now()
		_, err := ParseKeyConfig([]byte(doc))
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
		if time.Since(start) > time.Second {
			t.Errorf("%s: took %v", name, time.Since(start))
		}
	}
	// Accepted: Z timestamps, local offsets, whitespace, a newline, unknown keys.
	for name, doc := range map[string]string{
		"Z":       strings.Replace(keyFileNone, `06:13:20+00:00","modified"`, `06:13:20Z","modified"`, 1),
		"offset":  strings.ReplaceAll(keyFileNone, "06:13:20+00:00", "08:13:20+02:00"),
		"pretty":  strings.ReplaceAll(strings.ReplaceAll(keyFileNone, ",", ",\n  "), ":\"", ": \"") + "\n",
		"unknown": strings.Replace(keyFileNone, `{"kdf"`, `{"extra":[1,2],"kdf"`, 1),
		"no kdf":  strings.Replace(keyFileNone, `"kdf":null,`, ``, 1),
	} {
		kc, err := ParseKeyConfig([]byte(doc))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if kc.Created.Unix() != 1718000000 {
			t.Errorf("%s: created %v", name, kc.Created)
		}
	}
}

func TestNewKeyConfigAndChangePassphrase(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600))
	raw := [32]byte(seq(0, 32))
	if _, err := NewKeyConfig(raw, KDFNone, nil, "a hint", now); err == nil {
		t.Error("hint with kdf none accepted")
	}
	if _, err := NewKeyConfig(raw, KDFScrypt, []byte("1234"), "", now); err == nil {
		t.Error("4-byte password accepted")
	}
	for _, kdf := range []KDF{KDFNone, KDFScrypt, KDFPBKDF2} {
		kc, err := NewKeyConfig(raw, kdf, []byte("secret"), "", now)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, string(kdf)+".json")
		if err := kc.WriteNew(p); err != nil {
			t.Fatal(err)
		}
		if err := kc.WriteNew(p); err == nil {
			t.Error("WriteNew replaced an existing file")
		}
		if m, _ := filepath.Glob(p + ".tmp_*"); len(m) != 0 {
			t.Errorf("temp files left: %q", m)
		}
		st, _ := os.Stat(p)
		if st.Mode().Perm() != 0o600 {
			t.Errorf("mode %v", st.Mode())
		}
		b, _ := os.ReadFile(p)
		if !strings.Contains(string(b), `"created":"2026-01-02T03:04:05+01:00"`) || bytes.HasSuffix(b, []byte("\n")) {
			t.Errorf("file %s", b)
		}
		k, _, err := LoadKey(p, password("secret"))
		if err != nil || k.Fingerprint().String() != testFingerprint {
			t.Fatalf("LoadKey: %v", err)
		}
		later := now.Add(time.Hour)
		if err := kc.ChangePassphrase(password("secret"), KDFPBKDF2, []byte("new-secret"), "new", later); err != nil {
			t.Fatal(err)
		}
		if err := kc.Replace(p); err != nil {
			t.Fatal(err)
		}
		st, _ = os.Stat(p)
		if st.Mode().Perm() != 0o600 {
			t.Errorf("mode after replace %v", st.Mode())
		}
		if _, _, err := LoadKey(p, password("secret")); !errors.Is(err, ErrWrongPassword) {
			t.Errorf("old password after change: %v", err)
		}
		k, kc2, err := LoadKey(p, password("new-secret"))
		if err != nil || k.Fingerprint().String() != testFingerprint || !kc2.Created.Equal(now.Truncate(time.Second)) || !kc2.Modified.Equal(later.Truncate(time.Second)) || kc2.Hint != "new" {
			t.Fatalf("after change: %v %+v", err, kc2)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 3 {
		t.Errorf("left %d files (temp files?)", len(ents))
	}
}

func TestEnvSecret(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	os.WriteFile(file, []byte("from-file\r\nsecond line\n"), 0o600)
	r, w, _ := os.Pipe()
	w.Write([]byte("from-fd\nignored"))
	w.Close()
	defer r.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		env  map[string]string
		want string
		ok   bool
	}{
		{map[string]string{}, "", false},
		{map[string]string{"P": "direct\nsecond", "P_FILE": file}, "direct", true},
		{map[string]string{"P_FD": strconv.Itoa(int(r.Fd())), "P_FILE": file}, "from-fd", true},
		{map[string]string{"P_FILE": file, "P_CMD": "echo nope"}, "from-file", true},
		{map[string]string{"P_CMD": `printf '%s\n%s' "from cmd" x`}, "from cmd", true},
	} {
		lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
		got, ok, err := EnvSecret(ctx, "P", lookup)
		if err != nil || ok != tc.ok || string(got) != tc.want {
			t.Errorf("%v: %q %v %v", tc.env, got, ok, err)
		}
	}
	for _, env := range []map[string]string{
		{"P_FD": "x"}, {"P_FILE": filepath.Join(dir, "missing")}, {"P_CMD": "false"}, {"P_CMD": `"unterminated`},
	} {
		lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
		if _, ok, err := EnvSecret(ctx, "P", lookup); err == nil || !ok {
			t.Errorf("%v: no error", env)
		}
	}
}

func TestShellWords(t *testing.T) {
	got, err := ShellWords(`a 'b c' "d \"e\" \$f" g\ h  `)
	want := []string{"a", "b c", `d "e" $f`, "g h"}
	if err != nil || strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("ShellWords = %q, %v", got, err)
	}
}
