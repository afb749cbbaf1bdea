package integration

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/internal/testutil"
	"github.com/pbsfs/pbsfs/store"
	"github.com/pbsfs/pbsfs/store/pxar"
	"golang.org/x/sys/unix"
)

// testdataDir holds the pxar test vectors (see testdata/README.md).
var testdataDir = filepath.Join("testdata", "pxar")

// TestTestdataArchives puts every archive of the test vectors into
// a store (plain ones as NAME.pxar.didx, split ones as the .mpxar/.ppxar
// pair), mounts it with the binary and compares every entry the pxar
// package decodes with what the mount shows.
func TestTestdataArchives(t *testing.T) {
	testutil.RequireFUSE(t)
	plain, _ := filepath.Glob(filepath.Join(testdataDir, "*.pxar"))
	split, _ := filepath.Glob(filepath.Join(testdataDir, "*.mpxar"))
	if len(plain) == 0 || len(split) == 0 {
		t.Fatalf("test vectors missing in %s: %d plain, %d split archives", testdataDir, len(plain), len(split))
	}
	e := newEnv(t)
	s := e.open(t)
	type arch struct{ id, meta, payload string }
	var archs []arch
	for _, p := range plain {
		archs = append(archs, arch{"v1-" + strings.TrimSuffix(filepath.Base(p), ".pxar"), p, ""})
	}
	for _, p := range split {
		archs = append(archs, arch{"v2-" + strings.TrimSuffix(filepath.Base(p), ".mpxar"), p, strings.TrimSuffix(p, ".mpxar") + ".ppxar"})
	}
	ctx := context.Background()
	for _, a := range archs {
		b, err := s.StartBackup(ctx, store.GroupRef{Type: store.TypeHost, ID: a.id}, t0, store.BackupOptions{})
		if err != nil {
			t.Fatal(err)
		}
		streams := map[string]string{"root.pxar": a.meta}
		if a.payload != "" {
			streams = map[string]string{"root.mpxar": a.meta, "root.ppxar": a.payload}
		}
		for name, file := range streams {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			w, err := b.CreateStream(ctx, name, 64<<10)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(data); err != nil {
				t.Fatal(err)
			}
			if _, err := w.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Finish(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mnt, _ := e.mount(t)
	for _, a := range archs {
		t.Run(a.id, func(t *testing.T) {
			meta, _ := os.ReadFile(a.meta)
			var payload io.ReaderAt
			if a.payload != "" {
				p, _ := os.ReadFile(a.payload)
				payload = bytes.NewReader(p)
			}
			ar, err := pxar.Open(bytes.NewReader(meta), int64(len(meta)), payload)
			if err != nil {
				t.Fatal(err)
			}
			root := filepath.Join(mnt, "host", a.id, "latest", "root.pxar")
			n := compareDir(t, ar, ar.Root(), root)
			t.Logf("%d entries compared", n)
			if out, err := run("ls", "-lR", root); err != nil {
				t.Errorf("ls -lR: %v\n%s", err, out)
			}
		})
	}
}

// compareDir compares directory dir of ar with its mounted path p,
// recursively, and returns the number of entries compared.
func compareDir(t *testing.T, ar *pxar.Archive, dir *pxar.Entry, p string) int {
	t.Helper()
	r, err := ar.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		c, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		e, err := ar.Resolve(c)
		if err != nil {
			t.Fatal(err)
		}
		mp := filepath.Join(p, c.Name())
		var st unix.Stat_t
		if err := unix.Lstat(mp, &st); err != nil {
			t.Errorf("%s: %v", c.Path, err)
			continue
		}
		n++
		mt := time.Unix(st.Mtim.Unix())
		if st.Mode != uint32(e.Mode) || st.Uid != e.UID || st.Gid != e.GID || !mt.Equal(e.Mtime.Time()) {
			t.Errorf("%s: mode %o uid %d gid %d mtime %v; archive: %o %d %d %v", c.Path, st.Mode, st.Uid, st.Gid, mt, e.Mode, e.UID, e.GID, e.Mtime.Time())
		}
		switch e.Kind {
		case pxar.KindDir:
			n += compareDir(t, ar, e, mp)
		case pxar.KindFile:
			cr, err := ar.Content(e)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := io.ReadAll(cr)
			got, err := os.ReadFile(mp)
			if err != nil || !bytes.Equal(got, want) || uint64(st.Size) != e.Size {
				t.Errorf("%s: content %d bytes (%v), want %d", c.Path, len(got), err, len(want))
			}
		case pxar.KindSymlink:
			if got, err := os.Readlink(mp); err != nil || got != e.LinkTarget {
				t.Errorf("%s: link %q (%v), want %q", c.Path, got, err, e.LinkTarget)
			}
		case pxar.KindCharDev, pxar.KindBlockDev:
			if st.Rdev != e.Rdev() {
				t.Errorf("%s: rdev %x, want %x", c.Path, st.Rdev, e.Rdev())
			}
		}
		for _, x := range e.AllXattrs() {
			buf := make([]byte, 1<<16)
			k, err := unix.Lgetxattr(mp, x.Name, buf)
			if err != nil || !bytes.Equal(buf[:k], x.Value) {
				t.Errorf("%s: xattr %s = %x (%v), want %x", c.Path, x.Name, buf[:k], err, x.Value)
			}
		}
	}
	return n
}
