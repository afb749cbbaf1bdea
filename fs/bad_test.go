package fs

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/internal/testutil"
	"github.com/pbsfs/pbsfs/store"
	"github.com/pbsfs/pbsfs/store/pxar"
)

func TestBadData(t *testing.T) {
	var log testutil.SyncBuffer
	s := newStore(t, &log)
	img := randomBytes(4, 12<<20) // three 4 MiB chunks
	good := backup(t, s, snap{g: vm, t: t0, image: img})
	badManifest := backup(t, s, snap{g: vm, t: t0.Add(time.Hour), image: img})
	badIndex := backup(t, s, snap{g: vm, t: t0.Add(2 * time.Hour), image: img, blobs: map[string][]byte{"qemu-server.conf": []byte("ok")}})

	// Corrupt the middle chunk of the image (all three snapshots share it).
	idx, err := s.OpenIndex(good, "drive-scsi0.img.fidx")
	if err != nil {
		t.Fatal(err)
	}
	d, _, _ := idx.Chunk(1)
	p := s.Chunks().Path(d)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.Path(badManifest.Dir()+"/"+store.ManifestName), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.Path(badIndex.Dir()+"/drive-scsi0.img.fidx"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}

	mnt, _ := mountStore(t, s, Options{})
	grp := filepath.Join(mnt, "vm/100")
	want := []string{good.TimeString(), badIndex.TimeString(), "latest"}
	if got := readDirNames(t, grp); !slices.Equal(got, want) {
		t.Errorf("group lists %q, want %q (bad manifest hidden)", got, want)
	}
	if got := readDirNames(t, filepath.Join(grp, badIndex.TimeString())); !slices.Equal(got, []string{"index.json", "qemu-server.conf"}) {
		t.Errorf("snapshot with a bad index lists %q", got)
	}
	f, err := os.Open(filepath.Join(grp, good.TimeString(), "drive-scsi0.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, tc := range []struct {
		off     int64
		wantErr bool
	}{
		{0, false},
		{4<<20 - 4096, false},
		{4 << 20, true},
		{6 << 20, true},
		{8 << 20, false},
		{12<<20 - 4096, false},
	} {
		buf := make([]byte, 4096)
		_, err := f.ReadAt(buf, tc.off)
		switch {
		case tc.wantErr && !errors.Is(err, syscall.EIO):
			t.Errorf("read at %d: %v, want EIO", tc.off, err)
		case !tc.wantErr && (err != nil || !bytes.Equal(buf, img[tc.off:tc.off+4096])):
			t.Errorf("read at %d: %v or wrong bytes", tc.off, err)
		}
	}
	for _, w := range []string{"bad manifest; snapshot hidden", "bad index; archive hidden", "read failed", d.String()} {
		if !strings.Contains(log.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, log.String())
		}
	}
}

// TestEncrypted forges a manifest that marks the archives encrypted.
func TestEncrypted(t *testing.T) {
	var log testutil.SyncBuffer
	s := newStore(t, &log)
	ref := backup(t, s, snap{g: vm, t: t0, image: randomBytes(5, 1000), blobs: map[string][]byte{"qemu-server.conf": []byte("x")}})
	man, err := s.LoadManifest(ref)
	if err != nil {
		t.Fatal(err)
	}
	for i := range man.Files {
		man.Files[i].CryptMode = store.CryptEncrypt
	}
	js, err := man.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := s.Codec().Encode(js, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.WriteFileAtomic(s.Path(ref.Dir()+"/"+store.ManifestName), enc, 0o644); err != nil {
		t.Fatal(err)
	}
	mnt, _ := mountStore(t, s, Options{})
	dir := filepath.Join(mnt, "vm/100", ref.TimeString())
	for _, name := range []string{"drive-scsi0.img", "qemu-server.conf"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s not listed: %v", name, err)
		}
	}
	if _, err := os.ReadFile(filepath.Join(dir, "drive-scsi0.img")); !errors.Is(err, syscall.EACCES) {
		t.Errorf("read drive-scsi0.img: %v, want EACCES", err)
	}
	// A blob is encrypted or not by its magic (crypto.md P7: the client
	// lists its plain rsa-encrypted.key.blob as encrypt): this one is plain.
	if got, err := os.ReadFile(filepath.Join(dir, "qemu-server.conf")); err != nil || string(got) != "x" {
		t.Errorf("read plain qemu-server.conf listed as encrypt: %q, %v", got, err)
	}
	if !strings.Contains(log.String(), "a key is needed") {
		t.Errorf("no log line about the key:\n%s", log.String())
	}
}

func TestChildIno(t *testing.T) {
	seen := map[uint64]string{}
	for p := range uint64(50) {
		for _, name := range []string{"a", "b", "latest", "root.pxar", "2026-11-20T10:00:00Z"} {
			ino := childIno(p, name)
			if ino <= rootIno || ino != childIno(p, name) {
				t.Fatalf("childIno(%d, %q) = %d", p, name, ino)
			}
			if prev, ok := seen[ino]; ok {
				t.Fatalf("collision: %d/%s and %s", p, name, prev)
			}
			seen[ino] = fmt.Sprint(p, "/", name)
		}
		if e := entryIno(p, int64(p)); e <= rootIno || seen[e] != "" {
			t.Fatalf("entryIno(%d) = %d collides", p, e)
		}
	}
}

func TestToErrno(t *testing.T) {
	var log testutil.SyncBuffer
	m := &mount{log: slog.New(slog.NewTextHandler(&log, nil))}
	tests := []struct {
		err    error
		want   syscall.Errno
		logged bool
	}{
		{nil, 0, false},
		{fmt.Errorf("x: %w", store.ErrProtected), syscall.EPERM, false},
		{fmt.Errorf("x: %w", store.ErrLocked), syscall.EBUSY, false},
		{fmt.Errorf("x: %w", store.ErrNotFound), syscall.ENOENT, false},
		{fmt.Errorf("x: %w", os.ErrNotExist), syscall.ENOENT, false},
		{fmt.Errorf("x: %w", pxar.ErrNotDir), syscall.ENOTDIR, false},
		{fmt.Errorf("x: %w", store.ErrEncrypted), syscall.EACCES, true},
		{fmt.Errorf("x: %w", store.ErrCorrupt), syscall.EIO, true},
		{fmt.Errorf("x: %w", store.ErrChunkMissing), syscall.EIO, true},
		{fmt.Errorf("x: %w", pxar.ErrCorrupt), syscall.EIO, true},
		{errors.New("something else"), syscall.EIO, true},
		{&os.PathError{Op: "read", Path: "x", Err: syscall.EISDIR}, syscall.EIO, true},
	}
	for _, tc := range tests {
		before := len(log.String())
		if got := m.toErrno(tc.err, "op"); got != tc.want {
			t.Errorf("toErrno(%v) = %v, want %v", tc.err, got, tc.want)
		}
		if logged := len(log.String()) > before; logged != tc.logged {
			t.Errorf("toErrno(%v) logged %v, want %v", tc.err, logged, tc.logged)
		}
	}
}

// TestChunkReplacedByDirectory: a chunk file replaced by a directory reads
// as EIO (not EISDIR) for that chunk's range only.
func TestChunkReplacedByDirectory(t *testing.T) {
	var log testutil.SyncBuffer
	s := newStore(t, &log)
	img := randomBytes(5, 12<<20) // three 4 MiB chunks
	ref := backup(t, s, snap{g: vm, t: t0, image: img})
	idx, err := s.OpenIndex(ref, "drive-scsi0.img.fidx")
	if err != nil {
		t.Fatal(err)
	}
	d, _, _ := idx.Chunk(2)
	p := s.Chunks().Path(d)
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	mnt, _ := mountStore(t, s, Options{})
	f, err := os.Open(filepath.Join(mnt, "vm/100", ref.TimeString(), "drive-scsi0.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 8<<20); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of the replaced chunk: %v, want EIO", err)
	}
	if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, img[:4096]) {
		t.Errorf("read of an intact chunk: %v or wrong bytes", err)
	}
	if !strings.Contains(log.String(), "not a regular file") {
		t.Errorf("log does not say what is wrong:\n%s", log.String())
	}
}
