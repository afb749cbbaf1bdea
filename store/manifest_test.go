package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func TestManifestRoundTrip(t *testing.T) {
	in := `{
  "backup-id": "100",
  "backup-time": 1718000000,
  "backup-type": "vm",
  "files": [
    {"crypt-mode": "none", "csum": "4c038ad982f42733f8cf5de38af46a51c822e758fd72497bc1187040bb42f5ca", "filename": "drive-scsi0.img.fidx", "size": 6291456},
    {"csum": "9c5944aba3379b450612203cafb5bf60c2358103550b7f799d197f4668f169d5", "filename": "qemu-server.conf.blob", "size": 17}
  ],
  "signature": null,
  "unprotected": {"zeta": [1, 2,   3], "verify_state": {"state": "failed", "upid": "UPID:x"}, "key-fingerprint": "aa:bb"},
  "future-key": {"x": 1}
}`
	m, err := ParseManifest([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := m.File("qemu-server.conf.blob"); !ok || f.CryptMode != CryptNone || f.Size != 17 {
		t.Errorf("blob entry %+v", f)
	}
	if v, ok := m.Verify(); !ok || v.State != "failed" {
		t.Errorf("verify state %+v %v", v, ok)
	}
	if err := m.SetUnprotected("notes", "first line\nsecond"); err != nil {
		t.Fatal(err)
	}
	out, err := m.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	// Keys sorted, two-space indentation, unknown key kept, untouched values verbatim.
	order := []string{`"backup-id"`, `"backup-time"`, `"backup-type"`, `"files"`, `"future-key"`, `"unprotected"`}
	last := -1
	for _, k := range order {
		i := strings.Index(s, k)
		if i < last {
			t.Errorf("key %s out of order in\n%s", k, s)
		}
		last = i
	}
	if !strings.Contains(s, "\n  \"backup-id\": \"100\"") || strings.Contains(s, `"signature"`) {
		t.Errorf("layout:\n%s", s)
	}
	var back map[string]json.RawMessage
	json.Unmarshal(out, &back)
	var unprot map[string]json.RawMessage
	json.Unmarshal(back["unprotected"], &unprot)
	if string(unprot["key-fingerprint"]) != `"aa:bb"` || len(unprot) != 4 {
		t.Errorf("unprotected %v", unprot)
	}
	m2, err := ParseManifest(out)
	if err != nil || m2.Notes() != "first line\nsecond" {
		t.Fatalf("reparse: %v, notes %q", err, m2.Notes())
	}
}

func TestManifestRejects(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"not json", `{"backup-type":`},
		{"array", `[]`},
		{"missing files", `{"backup-type":"vm","backup-id":"1","backup-time":1}`},
		{"bad type", `{"backup-type":"lxc","backup-id":"1","backup-time":1,"files":[]}`},
		{"bad id", `{"backup-type":"vm","backup-id":"../x","backup-time":1,"files":[]}`},
		{"bad csum", `{"backup-type":"vm","backup-id":"1","backup-time":1,"files":[{"filename":"a.blob","size":1,"csum":"zz"}]}`},
		{"bad file name", `{"backup-type":"vm","backup-id":"1","backup-time":1,"files":[{"filename":"../a.blob","size":1,"csum":"` + strings.Repeat("0", 64) + `"}]}`},
		{"bad crypt mode", `{"backup-type":"vm","backup-id":"1","backup-time":1,"files":[{"filename":"a.blob","crypt-mode":"rot13","size":1,"csum":"` + strings.Repeat("0", 64) + `"}]}`},
		{"unprotected not object", `{"backup-type":"vm","backup-id":"1","backup-time":1,"files":[],"unprotected":3}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseManifest([]byte(tc.in)); !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrInvalidName) {
				t.Fatalf("error %v", err)
			}
		})
	}
}

// TestManifestTotalSize: sizes sum without wrapping; four files of 2^62
// bytes (a hostile manifest) saturate instead of showing 0 bytes, also
// after a round trip through the store.
func TestManifestTotalSize(t *testing.T) {
	m := &Manifest{Files: []FileInfo{{Filename: "a.blob", Size: 1}, {Filename: "b.blob", Size: 2}}}
	if got := m.TotalSize(); got != 3 {
		t.Errorf("TotalSize = %d, want 3", got)
	}
	s := newTestStore(t)
	ref := backupOne(t, s, GroupRef{Type: TypeVM, ID: "100"}, time.Unix(1_800_000_000, 0))
	m, err := s.LoadManifest(ref)
	if err != nil {
		t.Fatal(err)
	}
	m.Files = nil
	for i := range 4 {
		m.Files = append(m.Files, FileInfo{Filename: fmt.Sprintf("f%d.img.fidx", i), Size: 1 << 62, Csum: strings.Repeat("00", 32)})
	}
	if err := s.writeManifest(context.Background(), ref, m); err != nil {
		t.Fatal(err)
	}
	m, err = s.LoadManifest(ref)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.TotalSize(); got != math.MaxUint64 {
		t.Errorf("TotalSize of 4 × 2^62 = %d, want %d (saturated)", got, uint64(math.MaxUint64))
	}
}
