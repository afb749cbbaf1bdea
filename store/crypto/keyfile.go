package crypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// KeyConfig is a key file as the PBS client writes it (§2): the key,
// in clear or encrypted under a password, with its metadata.
type KeyConfig struct {
	// KDF is nil for a key stored in clear.
	KDF      *KDFParams
	Created  time.Time
	Modified time.Time
	// Data is the key (kdf none, 32 bytes) or IV‖tag‖ciphertext of it
	// under the derived key (64 bytes).
	Data []byte
	// Fingerprint is the fingerprint the file records, if any.
	Fingerprint *Fingerprint
	// Hint is the password hint, or empty.
	Hint string
}

// maxKeyFileSize bounds what ParseKeyConfig reads: real files are about
// 400 bytes (paper keys pretty-print them).
const maxKeyFileSize = 64 << 10

// ParseKeyConfig parses key file JSON. Key names are matched exactly (the
// PBS client is case-sensitive); unknown keys are ignored; whitespace and
// a trailing newline are accepted. Nothing is decrypted.
func ParseKeyConfig(b []byte) (*KeyConfig, error) {
	if len(b) > maxKeyFileSize {
		return nil, fmt.Errorf("key file of %d bytes: %w", len(b), ErrFormat)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil || raw == nil {
		return nil, fmt.Errorf("key file is not a JSON object: %w", ErrFormat)
	}
	kc := &KeyConfig{}
	if v, ok := raw["kdf"]; ok && !isNull(v) {
		kdf, err := parseKDF(v)
		if err != nil {
			return nil, err
		}
		kc.KDF = kdf
	}
	var err error
	for _, f := range []struct {
		key string
		dst *time.Time
	}{{"created", &kc.Created}, {"modified", &kc.Modified}} {
		var s string
		if err := unmarshalField(raw, f.key, &s, true); err != nil {
			return nil, err
		}
		if *f.dst, err = parseTimestamp(s); err != nil {
			return nil, fmt.Errorf("key file %q: %w", f.key, err)
		}
	}
	var data string
	if err := unmarshalField(raw, "data", &data, true); err != nil {
		return nil, err
	}
	if kc.Data, err = decodeBase64(data); err != nil {
		return nil, fmt.Errorf("key file \"data\": %w", err)
	}
	var fp *string
	if err := unmarshalField(raw, "fingerprint", &fp, false); err != nil {
		return nil, err
	}
	if fp != nil {
		f, err := ParseFingerprint(*fp)
		if err != nil {
			return nil, fmt.Errorf("key file: %w", err)
		}
		kc.Fingerprint = &f
	}
	var hint *string
	if err := unmarshalField(raw, "hint", &hint, false); err != nil {
		return nil, err
	}
	if hint != nil {
		kc.Hint = *hint
	}
	if kc.KDF == nil && len(kc.Data) != KeySize {
		return nil, fmt.Errorf("key file without kdf holds %d key bytes, want %d: %w", len(kc.Data), KeySize, ErrFormat)
	}
	if kc.KDF != nil && len(kc.Data) != ivSize+tagSize+KeySize {
		return nil, fmt.Errorf("key file holds %d bytes of encrypted key, want %d: %w", len(kc.Data), ivSize+tagSize+KeySize, ErrFormat)
	}
	return kc, nil
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

// unmarshalField decodes raw[key] into dst; a missing key is an error only
// when required.
func unmarshalField(raw map[string]json.RawMessage, key string, dst any, required bool) error {
	v, ok := raw[key]
	if !ok {
		if required {
			return fmt.Errorf("key file has no %q: %w", key, ErrFormat)
		}
		return nil
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return fmt.Errorf("key file %q: %v: %w", key, err, ErrFormat)
	}
	return nil
}

// parseKDF parses the externally tagged kdf object (§2.2, P3).
func parseKDF(v json.RawMessage) (*KDFParams, error) {
	var tagged map[string]json.RawMessage
	if err := json.Unmarshal(v, &tagged); err != nil || len(tagged) != 1 {
		return nil, fmt.Errorf("key file \"kdf\" is not {\"Scrypt\":…} or {\"PBKDF2\":…}: %w", ErrFormat)
	}
	var fields map[string]json.RawMessage
	p := &KDFParams{}
	var need []string
	for tag, body := range tagged {
		switch tag {
		case "Scrypt":
			p.KDF, need = KDFScrypt, []string{"n", "r", "p", "salt"}
		case "PBKDF2":
			p.KDF, need = KDFPBKDF2, []string{"iter", "salt"}
		default:
			return nil, fmt.Errorf("key file kdf %q unknown: %w", tag, ErrFormat)
		}
		if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
			return nil, fmt.Errorf("key file kdf %s is not an object: %w", tag, ErrFormat)
		}
	}
	for _, k := range need {
		v, ok := fields[k]
		if !ok {
			return nil, fmt.Errorf("key file kdf has no %q: %w", k, ErrFormat)
		}
		if k == "salt" {
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return nil, fmt.Errorf("key file kdf salt: %v: %w", err, ErrFormat)
			}
			salt, err := decodeBase64(s)
			if err != nil {
				return nil, fmt.Errorf("key file kdf salt: %w", err)
			}
			p.Salt = salt
			continue
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("key file kdf %q is not an unsigned integer: %w", k, ErrFormat)
		}
		switch k {
		case "n":
			p.N = n
		case "r":
			p.R = n
		case "p":
			p.P = n
		case "iter":
			p.Iter = n
		}
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	return p, nil
}

// decodeBase64 accepts standard base64 with or without padding.
func decodeBase64(s string) ([]byte, error) {
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	b, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("bad base64: %w", ErrFormat)
	}
	return b, nil
}

// timestampLayout is RFC 3339 with a numeric offset and no fractional
// seconds, as PBS writes it (§2.1, P4).
const timestampLayout = "2006-01-02T15:04:05-07:00"

// parseTimestamp accepts exactly YYYY-MM-DDTHH:MM:SS followed by Z or ±HH:MM.
func parseTimestamp(s string) (time.Time, error) {
	if len(s) != 20 && len(s) != 25 {
		return time.Time{}, fmt.Errorf("timestamp %q is not RFC 3339 without fractions: %w", s, ErrFormat)
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("timestamp %q: %v: %w", s, err, ErrFormat)
	}
	return t, nil
}

// MarshalJSON writes the key file as the PBS client does: compact, keys in
// the order kdf, created, modified, data, fingerprint, hint; no newline.
func (kc *KeyConfig) MarshalJSON() ([]byte, error) {
	var b []byte
	b = append(b, `{"kdf":`...)
	switch {
	case kc.KDF == nil:
		b = append(b, "null"...)
	case kc.KDF.KDF == KDFScrypt:
		b = fmt.Appendf(b, `{"Scrypt":{"n":%d,"r":%d,"p":%d,"salt":"%s"}}`, kc.KDF.N, kc.KDF.R, kc.KDF.P, base64.StdEncoding.EncodeToString(kc.KDF.Salt))
	case kc.KDF.KDF == KDFPBKDF2:
		b = fmt.Appendf(b, `{"PBKDF2":{"iter":%d,"salt":"%s"}}`, kc.KDF.Iter, base64.StdEncoding.EncodeToString(kc.KDF.Salt))
	default:
		return nil, fmt.Errorf("kdf %q: %w", kc.KDF.KDF, ErrFormat)
	}
	b = fmt.Appendf(b, `,"created":"%s","modified":"%s","data":"%s"`,
		kc.Created.Format(timestampLayout), kc.Modified.Format(timestampLayout), base64.StdEncoding.EncodeToString(kc.Data))
	if kc.Fingerprint != nil {
		b = fmt.Appendf(b, `,"fingerprint":"%s"`, kc.Fingerprint)
	}
	if kc.Hint != "" {
		b = append(b, `,"hint":`...)
		b = AppendJSONString(b, kc.Hint)
	}
	return append(b, '}'), nil
}

// KDFName returns the file's KDF as `key show` prints it.
func (kc *KeyConfig) KDFName() KDF {
	if kc.KDF == nil {
		return KDFNone
	}
	return kc.KDF.KDF
}

// PasswordFunc returns the password of a key file. It is only called for
// files whose key is encrypted.
type PasswordFunc func() ([]byte, error)

// Decrypt returns the file's key (§2.4): the password is asked only when a
// KDF protects the key, must be at least 5 bytes, and a tag failure is a
// wrong password (the error shows the hint). The key's fingerprint must
// match the one the file records, if any.
func (kc *KeyConfig) Decrypt(password PasswordFunc) (*Key, error) {
	raw, err := kc.rawKey(password)
	if err != nil {
		return nil, err
	}
	k := NewKey(raw)
	clear(raw[:])
	if kc.Fingerprint != nil && *kc.Fingerprint != k.Fingerprint() {
		return nil, fmt.Errorf("key file records fingerprint %s, but its key has fingerprint %s: %w",
			kc.Fingerprint.Short(), k.Fingerprint().Short(), ErrFingerprint)
	}
	return k, nil
}

func (kc *KeyConfig) rawKey(password PasswordFunc) ([KeySize]byte, error) {
	var raw [KeySize]byte
	if kc.KDF == nil {
		if len(kc.Data) != KeySize {
			return raw, fmt.Errorf("key file holds %d key bytes, want %d: %w", len(kc.Data), KeySize, ErrFormat)
		}
		copy(raw[:], kc.Data)
		return raw, nil
	}
	if len(kc.Data) != ivSize+tagSize+KeySize {
		return raw, fmt.Errorf("key file holds %d bytes of encrypted key, want %d: %w", len(kc.Data), ivSize+tagSize+KeySize, ErrFormat)
	}
	if password == nil {
		return raw, fmt.Errorf("key is protected by a password: %w", ErrNoPassword)
	}
	pw, err := password()
	if err != nil {
		return raw, err
	}
	if len(pw) < minPassphrase {
		return raw, &keyError{fmt.Sprintf("password is too short (at least %d bytes)", minPassphrase), []error{ErrWrongPassword}}
	}
	dk, err := kc.KDF.derive(pw)
	if err != nil {
		return raw, err
	}
	aead := gcm16(dk)
	ct := make([]byte, 0, KeySize+tagSize)
	ct = append(ct, kc.Data[ivSize+tagSize:]...)
	ct = append(ct, kc.Data[ivSize:ivSize+tagSize]...)
	plain, err := aead.Open(ct[:0], kc.Data[:ivSize], ct, nil)
	if err != nil {
		if kc.Hint != "" {
			return raw, &keyError{fmt.Sprintf("unable to decrypt key (password hint: %s)", kc.Hint), []error{ErrWrongPassword, ErrAuth}}
		}
		return raw, &keyError{"unable to decrypt key (wrong password?)", []error{ErrWrongPassword, ErrAuth}}
	}
	copy(raw[:], plain)
	clear(plain)
	return raw, nil
}

// keyError is an error with its own message that still matches the
// sentinels it lists with errors.Is.
type keyError struct {
	msg  string
	errs []error
}

func (e *keyError) Error() string   { return e.msg }
func (e *keyError) Unwrap() []error { return e.errs }

// gcm16 returns AES-256-GCM with PBS's 16-byte nonce.
func gcm16(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCMWithNonceSize(block, ivSize)
	if err != nil {
		panic(err)
	}
	return aead
}

// NewKeyConfig returns a key file for key: in clear with kdf none
// (password is ignored and hint must be empty), or encrypted under a key
// derived from password with PBS's parameters and a fresh salt and IV.
func NewKeyConfig(key [KeySize]byte, kdf KDF, password []byte, hint string, now time.Time) (*KeyConfig, error) {
	now = now.Truncate(time.Second)
	fp := NewKey(key).Fingerprint()
	kc := &KeyConfig{Created: now, Modified: now, Fingerprint: &fp}
	if err := kc.setKey(key, kdf, password, hint); err != nil {
		return nil, err
	}
	return kc, nil
}

// setKey stores key in kc under kdf and password.
func (kc *KeyConfig) setKey(key [KeySize]byte, kdf KDF, password []byte, hint string) error {
	if kdf == KDFNone {
		if hint != "" {
			return errors.New("a password hint needs a kdf other than none")
		}
		kc.KDF, kc.Data, kc.Hint = nil, append([]byte(nil), key[:]...), ""
		return nil
	}
	if len(password) < minPassphrase {
		return fmt.Errorf("password is too short (at least %d bytes)", minPassphrase)
	}
	p := &KDFParams{KDF: kdf, Salt: make([]byte, saltSize)}
	switch kdf {
	case KDFScrypt:
		p.N, p.R, p.P = scryptN, scryptR, scryptP
	case KDFPBKDF2:
		p.Iter = pbkdf2Iter
	default:
		return fmt.Errorf("kdf %q: %w", kdf, ErrFormat)
	}
	var iv [ivSize]byte
	if _, err := rand.Read(p.Salt); err != nil {
		return err
	}
	if _, err := rand.Read(iv[:]); err != nil {
		return err
	}
	return kc.sealKey(key, p, password, hint, iv)
}

// sealKey encrypts key under p and password with iv (tests fix the salt and IV).
func (kc *KeyConfig) sealKey(key [KeySize]byte, p *KDFParams, password []byte, hint string, iv [ivSize]byte) error {
	dk, err := p.derive(password)
	if err != nil {
		return err
	}
	sealed := gcm16(dk).Seal(nil, iv[:], key[:], nil)
	data := append([]byte(nil), iv[:]...)
	data = append(data, sealed[KeySize:]...) // tag
	data = append(data, sealed[:KeySize]...) // ciphertext
	kc.KDF, kc.Data, kc.Hint = p, data, hint
	return nil
}

// ChangePassphrase re-protects the file's key: it is decrypted with old
// (when it is encrypted), then stored under kdf and the new password, with
// Modified set to now and Created kept.
func (kc *KeyConfig) ChangePassphrase(old PasswordFunc, kdf KDF, password []byte, hint string, now time.Time) error {
	raw, err := kc.rawKey(old)
	if err != nil {
		return err
	}
	defer clear(raw[:])
	fp := NewKey(raw).Fingerprint()
	if kc.Fingerprint != nil && *kc.Fingerprint != fp {
		return fmt.Errorf("key file records fingerprint %s, but its key has fingerprint %s: %w", kc.Fingerprint.Short(), fp.Short(), ErrFingerprint)
	}
	if err := kc.setKey(raw, kdf, password, hint); err != nil {
		return err
	}
	kc.Fingerprint = &fp
	kc.Modified = now.Truncate(time.Second)
	return nil
}

// ReadKeyConfig reads and parses the key file at path.
func ReadKeyConfig(path string) (*KeyConfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	kc, err := ParseKeyConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return kc, nil
}

// LoadKey reads the key file at path and decrypts its key. Errors name
// the file.
func LoadKey(path string, password PasswordFunc) (*Key, *KeyConfig, error) {
	kc, err := ReadKeyConfig(path)
	if err != nil {
		return nil, nil, fmt.Errorf("load key: %w", err)
	}
	k, err := kc.Decrypt(password)
	if err != nil {
		return nil, nil, fmt.Errorf("load key %s: %w", path, err)
	}
	return k, kc, nil
}

// WriteNew writes the key file to path with mode 0600, refusing to
// replace an existing file. It is crash-safe: the key is written to a
// temp file and synced, then linked to path (link never replaces a file,
// so a crash leaves either no key file or the whole one).
func (kc *KeyConfig) WriteNew(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("unable to store key file: %s: %w", path, os.ErrExist)
	}
	return kc.store(path, os.Link)
}

// Replace atomically replaces the key file at path (temp file with mode
// 0600, fsync, rename).
func (kc *KeyConfig) Replace(path string) error {
	return kc.store(path, os.Rename)
}

// store writes the key file into a synced 0600 temp file beside path,
// puts it in place with place (link or rename) and syncs the directory.
func (kc *KeyConfig) store(path string, place func(tmp, path string) error) error {
	b, err := kc.MarshalJSON()
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp_")
	if err != nil {
		return fmt.Errorf("unable to store key file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a link: the temp name; after a rename: gone
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(b)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = place(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("unable to store key file %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
