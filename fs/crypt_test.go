package fs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/store"
	"github.com/pbsfs/pbsfs/store/crypto"
)

func testKey(b byte) *crypto.Key {
	var raw [32]byte
	for i := range raw {
		raw[i] = b + byte(i)
	}
	return crypto.NewKey(raw)
}

// openWithKeys opens s's datastore again with the given keys.
func openWithKeys(t *testing.T, s *store.Store, keys ...*crypto.Key) *store.Store {
	t.Helper()
	kr := &crypto.Keyring{}
	for _, k := range keys {
		kr.Add(k)
	}
	s2, err := store.Open(s.Root(), store.Options{RuntimeDir: s.RuntimeDir(), Keys: kr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	return s2
}

// An encrypted snapshot browses like a plain one with its key; without it
// the snapshot lists, its archives give EACCES and the key-fingerprint
// xattr names the key.
func TestMountEncrypted(t *testing.T) {
	s := newStore(t, nil)
	key := testKey(0)
	src := t.TempDir()
	tree(t, src)
	image := randomBytes(3, 9<<20+5)
	ctx := context.Background()
	g := store.GroupRef{Type: store.TypeVM, ID: "100"}
	b, err := s.StartBackup(ctx, g, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), store.BackupOptions{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(b.AddImage(ctx, "drive-scsi0.img", bytes.NewReader(image), uint64(len(image))))
	must(b.AddBlob(ctx, "qemu-server.conf", []byte("memory: 4096\n")))
	_, err = b.AddPxar(ctx, "root.pxar", src, store.PxarOptions{})
	must(err)
	must(b.Finish(ctx))
	snapDir := filepath.Join("vm/100", b.Ref().TimeString())

	t.Run("with key", func(t *testing.T) {
		mnt, _ := mountStore(t, openWithKeys(t, s, testKey(0x40), key), Options{})
		d := filepath.Join(mnt, snapDir)
		got, err := os.ReadFile(filepath.Join(d, "drive-scsi0.img"))
		if err != nil || !bytes.Equal(got, image) {
			t.Errorf("image: %d bytes, %v", len(got), err)
		}
		got, err = os.ReadFile(filepath.Join(d, "qemu-server.conf"))
		if err != nil || string(got) != "memory: 4096\n" {
			t.Errorf("blob: %q, %v", got, err)
		}
		for _, f := range []string{"etc/passwd", "etc/sub/big"} {
			want, _ := os.ReadFile(filepath.Join(src, f))
			got, err := os.ReadFile(filepath.Join(d, "root.pxar", f))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: %d bytes, %v", f, len(got), err)
			}
		}
		if l, err := os.Readlink(filepath.Join(d, "root.pxar/link")); err != nil || l != "etc/passwd" {
			t.Errorf("symlink %q %v", l, err)
		}
		buf := make([]byte, 200)
		n, err := syscall.Getxattr(d, "user.pbs.key-fingerprint", buf)
		if err != nil || string(buf[:n]) != key.Fingerprint().String() {
			t.Errorf("key-fingerprint xattr %q %v", buf[:n], err)
		}
		man, err := os.ReadFile(filepath.Join(d, "index.json"))
		if err != nil || !strings.Contains(string(man), `"crypt-mode": "encrypt"`) {
			t.Errorf("index.json: %v", err)
		}
		// Plaintext decrypted with the mount's key is for the mount's
		// user alone, whatever the modes on disk give others.
		for _, f := range []string{"drive-scsi0.img", "qemu-server.conf", "root.pxar"} {
			fi, err := os.Stat(filepath.Join(d, f))
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if fi.Mode().Perm()&0o077 != 0 || st.Uid != uint32(os.Getuid()) {
				t.Errorf("%s: %v uid %d, want no access beyond the mount's user", f, fi.Mode(), st.Uid)
			}
		}
		if fi, err := os.Stat(filepath.Join(d, "index.json")); err != nil || fi.Mode().Perm()&0o044 == 0 {
			t.Errorf("index.json (plain): %v %v", fi.Mode(), err)
		}
	})
	t.Run("without key", func(t *testing.T) {
		for name, st := range map[string]*store.Store{"none": s, "other": openWithKeys(t, s, testKey(0x40))} {
			mnt, _ := mountStore(t, st, Options{})
			d := filepath.Join(mnt, snapDir)
			ents, err := os.ReadDir(d)
			if err != nil || len(ents) != 4 {
				t.Fatalf("%s: listing %v %v", name, ents, err)
			}
			for _, f := range []string{"drive-scsi0.img", "qemu-server.conf"} {
				if _, err := os.ReadFile(filepath.Join(d, f)); !errors.Is(err, syscall.EACCES) {
					t.Errorf("%s: %s: %v, want EACCES", name, f, err)
				}
			}
			if _, err := os.ReadDir(filepath.Join(d, "root.pxar")); !errors.Is(err, syscall.EACCES) {
				t.Errorf("%s: root.pxar: %v, want EACCES", name, err)
			}
			if fi, err := os.Stat(filepath.Join(d, "drive-scsi0.img")); err != nil || fi.Size() != int64(len(image)) {
				t.Errorf("%s: stat image %v", name, err)
			}
			buf := make([]byte, 200)
			n, err := syscall.Getxattr(d, "user.pbs.key-fingerprint", buf)
			if err != nil || string(buf[:n]) != key.Fingerprint().String() {
				t.Errorf("%s: key-fingerprint xattr %q %v", name, buf[:n], err)
			}
			if _, err := os.ReadFile(filepath.Join(d, "index.json")); err != nil {
				t.Errorf("%s: index.json: %v", name, err)
			}
		}
	})
}

// A sign-only snapshot reads without a key; with the key a bad signature
// is refused (EIO), never served.
func TestMountSignOnly(t *testing.T) {
	s := newStore(t, nil)
	key := testKey(0)
	image := randomBytes(5, 1<<20)
	ctx := context.Background()
	b, err := s.StartBackup(ctx, store.GroupRef{Type: store.TypeHost, ID: "h"}, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), store.BackupOptions{Key: key, SignOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddImage(ctx, "drive-scsi0.img", bytes.NewReader(image), uint64(len(image))); err != nil {
		t.Fatal(err)
	}
	if err := b.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	ref := b.Ref()
	d := func(mnt string) string { return filepath.Join(mnt, "host/h", ref.TimeString(), "drive-scsi0.img") }
	mnt, _ := mountStore(t, s, Options{})
	if got, err := os.ReadFile(d(mnt)); err != nil || !bytes.Equal(got, image) {
		t.Fatalf("sign-only without key: %v", err)
	}
	m, err := s.LoadManifest(ref)
	if err != nil {
		t.Fatal(err)
	}
	if m.Signature == "" {
		t.Fatal("not signed")
	}
	m.Signature = strings.Repeat("ab", 32)
	js, _ := m.MarshalJSON()
	enc, _ := s.Codec().Encode(js, true)
	if err := store.WriteFileAtomic(filepath.Join(s.Path(ref.Dir()), store.ManifestName), enc, 0o644); err != nil {
		t.Fatal(err)
	}
	mnt2, _ := mountStore(t, openWithKeys(t, s, key), Options{})
	if _, err := os.ReadFile(d(mnt2)); !errors.Is(err, syscall.EIO) {
		t.Errorf("bad signature with key: %v, want EIO", err)
	}
}
