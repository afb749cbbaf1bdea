package store

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"sort"
)

// Crypt modes of a manifest file entry (§4).
const (
	CryptNone     = "none"
	CryptEncrypt  = "encrypt"
	CryptSignOnly = "sign-only"
)

// FileInfo is one archive of a snapshot as the manifest lists it (§4).
// For a blob, Size is the encoded file length and Csum SHA256 of the file;
// for an index, Size is the archive size and Csum the index checksum.
type FileInfo struct {
	CryptMode string `json:"crypt-mode"`
	Csum      string `json:"csum"`
	Filename  string `json:"filename"`
	Size      uint64 `json:"size"`
}

// Manifest is a snapshot's `index.json.blob` (§4). Unknown top-level keys
// and the whole `unprotected` object survive a read-modify-write.
type Manifest struct {
	BackupType string
	BackupID   string
	BackupTime int64
	Files      []FileInfo
	// Signature is the hex HMAC of a signed manifest, or empty.
	Signature string
	// Unprotected is the free-form object not covered by the signature,
	// kept verbatim (notes, verify_state, key-fingerprint, …).
	Unprotected json.RawMessage
	extra       map[string]json.RawMessage
	// raw is the JSON as read, for checking a signature over it (see
	// signedForms); nil for a manifest built in memory.
	raw []byte
	// ref is the snapshot a manifest loaded from the store belongs to,
	// and match the key found for it when it names none (keymatch.go).
	ref   *SnapshotRef
	match *keyMatch
}

// ParseManifest decodes the manifest JSON (the blob's payload).
func ParseManifest(data []byte) (*Manifest, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("manifest json: %v: %w", err, ErrCorrupt)
	}
	m := &Manifest{extra: map[string]json.RawMessage{}}
	fields := []struct {
		key string
		dst any
	}{{"backup-type", &m.BackupType}, {"backup-id", &m.BackupID}, {"backup-time", &m.BackupTime}, {"files", &m.Files}}
	for _, f := range fields {
		v, ok := raw[f.key]
		if !ok {
			return nil, fmt.Errorf("manifest: no %q: %w", f.key, ErrCorrupt)
		}
		if err := json.Unmarshal(v, f.dst); err != nil {
			return nil, fmt.Errorf("manifest %q: %v: %w", f.key, err, ErrCorrupt)
		}
		delete(raw, f.key)
	}
	if v, ok := raw["signature"]; ok {
		var sig *string
		if err := json.Unmarshal(v, &sig); err != nil {
			return nil, fmt.Errorf("manifest signature: %v: %w", err, ErrCorrupt)
		}
		if sig != nil {
			m.Signature = *sig
		}
		delete(raw, "signature")
	}
	m.Unprotected = json.RawMessage("{}")
	if v, ok := raw["unprotected"]; ok {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(v, &obj); err != nil || obj == nil {
			return nil, fmt.Errorf("manifest unprotected is not an object: %w", ErrCorrupt)
		}
		m.Unprotected = v
		delete(raw, "unprotected")
	}
	m.extra = raw
	m.raw = data
	if err := ValidBackupType(m.BackupType); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if err := ValidBackupID(m.BackupID); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	for i := range m.Files {
		f := &m.Files[i]
		if f.CryptMode == "" {
			f.CryptMode = CryptNone
		}
		if err := validArchiveName(f.Filename); err != nil {
			return nil, fmt.Errorf("manifest file %d: %w", i, err)
		}
		if d, err := hex.DecodeString(f.Csum); err != nil || len(d) != 32 {
			return nil, fmt.Errorf("manifest file %s: csum %q is not 64 hex digits: %w", f.Filename, f.Csum, ErrCorrupt)
		}
		switch f.CryptMode {
		case CryptNone, CryptEncrypt, CryptSignOnly:
		default:
			return nil, fmt.Errorf("manifest file %s: crypt-mode %q: %w", f.Filename, f.CryptMode, ErrCorrupt)
		}
	}
	return m, nil
}

// MarshalJSON writes the manifest as PBS does: keys sorted, two-space
// indentation, `unprotected` and unknown keys as they were read.
func (m *Manifest) MarshalJSON() ([]byte, error) {
	obj := map[string]any{}
	for k, v := range m.extra {
		obj[k] = v
	}
	files := m.Files
	if files == nil {
		files = []FileInfo{}
	}
	obj["backup-type"] = m.BackupType
	obj["backup-id"] = m.BackupID
	obj["backup-time"] = m.BackupTime
	obj["files"] = files
	if m.Signature != "" {
		obj["signature"] = m.Signature
	}
	unprot := m.Unprotected
	if len(unprot) == 0 {
		unprot = json.RawMessage("{}")
	}
	obj["unprotected"] = unprot
	return json.MarshalIndent(obj, "", "  ")
}

// TotalSize is the sum of the sizes of the files the manifest lists. It
// saturates at the largest uint64 instead of wrapping: a damaged or
// hostile manifest (four files of 2^62 bytes) must not show as empty.
func (m *Manifest) TotalSize() uint64 {
	var total uint64
	for _, f := range m.Files {
		if total+f.Size < total {
			return math.MaxUint64
		}
		total += f.Size
	}
	return total
}

// File returns the manifest entry of archive name.
func (m *Manifest) File(name string) (FileInfo, bool) {
	for _, f := range m.Files {
		if f.Filename == name {
			return f, true
		}
	}
	return FileInfo{}, false
}

// UnprotectedValue decodes key of the unprotected object into v and
// reports whether the key was present.
func (m *Manifest) UnprotectedValue(key string, v any) (bool, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(m.unprotected(), &obj); err != nil {
		return false, fmt.Errorf("manifest unprotected: %v: %w", err, ErrCorrupt)
	}
	raw, ok := obj[key]
	if !ok {
		return false, nil
	}
	return true, json.Unmarshal(raw, v)
}

// SetUnprotected sets key of the unprotected object to v (deleting it when
// v is nil), leaving every other key's value as it was.
func (m *Manifest) SetUnprotected(key string, v any) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(m.unprotected(), &obj); err != nil {
		return fmt.Errorf("manifest unprotected: %v: %w", err, ErrCorrupt)
	}
	if v == nil {
		delete(obj, key)
	} else {
		raw, err := json.Marshal(v)
		if err != nil {
			return err
		}
		obj[key] = raw
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			buf.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		buf.Write(kb)
		buf.WriteByte(':')
		buf.Write(obj[k])
	}
	buf.WriteByte('}')
	m.Unprotected = buf.Bytes()
	return nil
}

func (m *Manifest) unprotected() []byte {
	if len(m.Unprotected) == 0 {
		return []byte("{}")
	}
	return m.Unprotected
}

// Notes returns the snapshot notes kept in unprotected.notes.
func (m *Manifest) Notes() string {
	var s string
	m.UnprotectedValue("notes", &s)
	return s
}

// VerifyState is unprotected.verify_state, written by verify (§4).
type VerifyState struct {
	UPID  string `json:"upid"`
	State string `json:"state"`
}

// Verify returns the last verify result, if any.
func (m *Manifest) Verify() (VerifyState, bool) {
	var v VerifyState
	ok, err := m.UnprotectedValue("verify_state", &v)
	return v, ok && err == nil
}
