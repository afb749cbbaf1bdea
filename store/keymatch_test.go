package store

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/internal/testutil"
	"github.com/pbsfs/pbsfs/store/crypto"
)

// TestManifestWithoutFingerprint: a manifest whose key-fingerprint was
// stripped, its archives encrypted, reads with the given key that
// authenticates it, as the PBS client reads it with its key: by the HMAC
// when signed, by an encrypted blob's or chunk's AES-GCM tag when not.
// The log names the key that matched. A set of keys none of which
// authenticates it is an error, never garbage; no key at all is the
// missing-key error. Verify uses the key that matched, and counts no
// key matching as a key not at hand, not as a problem.
func TestManifestWithoutFingerprint(t *testing.T) {
	s := newTestStore(t)
	k := vectorKey()
	g := GroupRef{Type: TypeVM, ID: "100"}
	image := xorshiftBytes(7, 3<<20+5)
	stream := xorshiftBytes(8, 1<<20)
	ref := backupEncrypted(t, s, g, time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC), BackupOptions{Key: k}, image, stream)
	want := map[string][]byte{"qemu-server.conf.blob": []byte("memory: 2048\n"), "drive-scsi0.img.fidx": image, "data.pxar.didx": stream}

	withKeys := func(keys ...*crypto.Key) (*Store, *testutil.SyncBuffer) {
		var logs testutil.SyncBuffer
		s2, err := Open(s.Root(), Options{RuntimeDir: s.RuntimeDir(), Keys: keyring(keys...), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s2.Close() })
		return s2, &logs
	}
	strip := func(unsign bool) {
		m, err := s.LoadManifest(ref)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.SetUnprotected("key-fingerprint", nil); err != nil {
			t.Fatal(err)
		}
		if unsign {
			m.Signature = ""
		}
		if err := s.writeManifest(context.Background(), ref, m); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := m.KeyFingerprint(); ok {
			t.Fatal("fingerprint not stripped")
		}
	}
	check := func(form string, wrongErr error, wrongMsg string) {
		t.Helper()
		good, logs := withKeys(otherKey(), k)
		for name, w := range want {
			if got, err := readAll(t, good, ref, name); err != nil || !bytes.Equal(got, w) {
				t.Errorf("%s: %s with the right key among others: %d bytes, %v", form, name, len(got), err)
			}
		}
		if !strings.Contains(logs.String(), "key="+k.Fingerprint().Short()) || strings.Contains(logs.String(), otherKey().Fingerprint().Short()) {
			t.Errorf("%s: the log does not name the key that matched (%s):\n%s", form, k.Fingerprint().Short(), logs.String())
		}
		wrong, _ := withKeys(otherKey())
		for name := range want {
			got, err := readAll(t, wrong, ref, name)
			if !errors.Is(err, wrongErr) || !strings.Contains(err.Error(), wrongMsg) || len(got) != 0 {
				t.Errorf("%s: %s with a wrong key: %d bytes, %v; want %v %q", form, name, len(got), err, wrongErr, wrongMsg)
			}
		}
		// Verify uses the key that matched; a key not at hand is no
		// problem (the chunks get the checks made without a key).
		if r := verifyAll(t, good, ref); !r.Keyed {
			t.Errorf("%s: verify with the right key among others did not use it", form)
		}
		if r := verifyAll(t, wrong, ref); r.Keyed {
			t.Errorf("%s: verify with a wrong key used it", form)
		}
		none, _ := withKeys()
		for name := range want {
			if _, err := readAll(t, none, ref, name); !errors.Is(err, ErrEncrypted) {
				t.Errorf("%s: %s without a key: %v", form, name, err)
			}
		}
	}
	strip(false)
	check("signed", ErrBadSignature, "none of the provided keys "+otherKey().Fingerprint().Short()+" signed it")
	strip(true)
	check("unsigned", ErrEncrypted, "none of the provided keys "+otherKey().Fingerprint().Short()+" decrypts")

	// Unsigned, the blob gone: the first chunk of an index decides.
	if err := os.Remove(s.Path(ref.Dir() + "/qemu-server.conf.blob")); err != nil {
		t.Fatal(err)
	}
	delete(want, "qemu-server.conf.blob")
	good, logs := withKeys(otherKey(), k)
	if got, err := readAll(t, good, ref, "drive-scsi0.img.fidx"); err != nil || !bytes.Equal(got, image) {
		t.Errorf("image after the blob went: %d bytes, %v", len(got), err)
	}
	if !strings.Contains(logs.String(), "chunk") {
		t.Errorf("no chunk sample in the log:\n%s", logs.String())
	}
}
