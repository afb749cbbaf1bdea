package fs

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/pbsfs/pbsfs/internal/testutil"
	"github.com/pbsfs/pbsfs/store"
)

// newStore creates a datastore with lazy chunk directories and a private
// runtime directory.
func newStore(t *testing.T, log *testutil.SyncBuffer) *store.Store {
	t.Helper()
	opts := store.Options{RuntimeDir: t.TempDir(), LazyChunkDirs: true}
	if log != nil {
		opts.Logger = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := store.Create(filepath.Join(t.TempDir(), "store"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// mountStore mounts s on a fresh directory, unmounted at cleanup even when
// the test fails; a panic in a FUSE handler fails the test.
func mountStore(t *testing.T, s *store.Store, opts Options) (string, *mount) {
	t.Helper()
	testutil.RequireFUSE(t)
	dir := t.TempDir() // registered first, so removed after the unmount
	opts.PanicHandler = func(v any) fuse.Status {
		t.Errorf("panic in FUSE handler: %v", v)
		return fuse.EIO
	}
	ctx, cancel := context.WithCancel(context.Background())
	root := NewRoot(ctx, s, opts)
	srv, err := mountRoot(dir, s, root, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
		cancel()
	})
	return dir, root.(*nsNode).m
}

// snap describes a backup to make.
type snap struct {
	g       store.GroupRef
	t       time.Time
	image   []byte            // drive-scsi0.img unless nil
	blobs   map[string][]byte // name without .blob
	pxarDir string            // root.pxar unless ""
	split   bool
	log     []byte // client.log unless nil
}

// backup makes snapshot sn in s.
func backup(t *testing.T, s *store.Store, sn snap) store.SnapshotRef {
	t.Helper()
	ctx := context.Background()
	b, err := s.StartBackup(ctx, sn.g, sn.t, store.BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sn.image != nil {
		if err := b.AddImage(ctx, "drive-scsi0.img", bytes.NewReader(sn.image), uint64(len(sn.image))); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range sn.blobs {
		if err := b.AddBlob(ctx, name, data); err != nil {
			t.Fatal(err)
		}
	}
	if sn.pxarDir != "" {
		if _, err := b.AddPxar(ctx, "root.pxar", sn.pxarDir, store.PxarOptions{Split: sn.split}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	ref := b.Ref()
	if sn.log != nil {
		enc, err := s.Codec().Encode(sn.log, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := store.WriteFileAtomic(filepath.Join(s.Path(ref.Dir()), store.ClientLogName), enc, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return ref
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// tree writes a small tree of every entry kind below dir.
func tree(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "etc/sub"), 0o750))
	must(os.WriteFile(filepath.Join(dir, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "etc/sub/big"), randomBytes(7, 5<<20+123), 0o600))
	must(os.WriteFile(filepath.Join(dir, "empty"), nil, 0o444))
	must(os.Symlink("etc/passwd", filepath.Join(dir, "link")))
	must(os.Link(filepath.Join(dir, "etc/passwd"), filepath.Join(dir, "hard")))
	must(syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o640))
	must(syscall.Mknod(filepath.Join(dir, "null"), syscall.S_IFCHR|0o666, 1<<8|3))
	must(syscall.Setxattr(filepath.Join(dir, "etc/passwd"), "user.note", []byte("hello"), 0))
	for i := range 300 {
		must(os.WriteFile(filepath.Join(dir, "etc", "f"+string(rune('a'+i%26))+time.Duration(i).String()), []byte{byte(i)}, 0o644))
	}
	mt := time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)
	must(os.Chtimes(filepath.Join(dir, "etc/passwd"), mt, mt))
	must(os.Lchown(filepath.Join(dir, "empty"), 1234, 5678))
}
