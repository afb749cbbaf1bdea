package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// newTestStore creates a datastore in a temporary directory with its lock
// runtime directory in another.
func newTestStore(t testing.TB) *Store {
	t.Helper()
	s, err := Create(filepath.Join(t.TempDir(), "ds"), Options{RuntimeDir: t.TempDir(), LazyChunkDirs: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func verifyAll(t *testing.T, s *Store, ref SnapshotRef) *VerifyReport {
	t.Helper()
	r, err := s.VerifySnapshot(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range r.Problems {
		t.Errorf("verify %s: %v", ref, p)
	}
	return r
}

func TestBackupRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	g := GroupRef{Type: TypeVM, ID: "100"}
	image := xorshiftBytes(7, 9<<20+123) // 3 chunks, the last short
	stream := append(xorshiftBytes(8, 3<<20), bytes.Repeat([]byte{0}, 2<<20)...)
	t1 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

	b, err := s.StartBackup(ctx, g, t1, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddBlob(ctx, "qemu-server.conf", []byte("memory: 2048\n")); err != nil {
		t.Fatal(err)
	}
	if err := b.AddImage(ctx, "drive-scsi0.img", bytes.NewReader(image), uint64(len(image))); err != nil {
		t.Fatal(err)
	}
	if err := b.AddStream(ctx, "data.pxar", bytes.NewReader(stream), 64<<10); err != nil {
		t.Fatal(err)
	}
	// In progress: no manifest yet.
	if si, err := s.Snapshot(b.Ref()); err != nil || si.Finished {
		t.Fatalf("in-progress snapshot %+v, %v", si, err)
	}
	if err := b.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	si, err := s.Snapshot(b.Ref())
	if err != nil || !si.Finished || len(si.Files) != 4 {
		t.Fatalf("snapshot %+v, %v", si, err)
	}
	r := verifyAll(t, s, b.Ref())
	if r.Files != 3 || r.Chunks == 0 {
		t.Errorf("verified %d files %d chunks", r.Files, r.Chunks)
	}
	for name, want := range map[string][]byte{"drive-scsi0.img.fidx": image, "data.pxar.didx": stream} {
		a, err := s.OpenArchive(ctx, b.Ref(), name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(a.Reader())
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: read %d bytes, %v", name, len(got), err)
		}
		p := make([]byte, 100)
		off := int64(len(want)) - 150
		if n, err := a.ReadAt(p, off); n != 100 || err != nil || !bytes.Equal(p, want[off:off+100]) {
			t.Errorf("%s: ReadAt near the end: %d, %v", name, n, err)
		}
		if n, err := a.ReadAt(p, int64(len(want))-10); n != 10 || err != io.EOF {
			t.Errorf("%s: ReadAt across the end: %d, %v", name, n, err)
		}
	}
	conf, err := s.ReadBlob(b.Ref(), "qemu-server.conf.blob")
	if err != nil || string(conf) != "memory: 2048\n" {
		t.Errorf("blob %q %v", conf, err)
	}
	if owner, err := s.Owner(g); err != nil || owner != DefaultOwner {
		t.Errorf("owner %q %v", owner, err)
	}

	// An unchanged second backup writes no new chunk and touches the old ones.
	old := time.Now().Add(-48 * time.Hour)
	ageChunks(t, s, old)
	b2, err := s.StartBackup(ctx, g, t1.Add(time.Hour), BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if base, ok := b2.Base(); !ok || !base.Ref.Time.Equal(t1) {
		t.Errorf("base %v %v", base, ok)
	}
	if err := b2.AddImage(ctx, "drive-scsi0.img", bytes.NewReader(image), uint64(len(image))); err != nil {
		t.Fatal(err)
	}
	if err := b2.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	if n := b2.Stats.NewChunks.Load(); n != 0 || b2.Stats.ReusedChunks.Load() != 3 {
		t.Errorf("second backup: %d new chunks, %d reused", n, b2.Stats.ReusedChunks.Load())
	}
	idx, _ := s.OpenIndex(b2.Ref(), "drive-scsi0.img.fidx")
	for i := range idx.Len() {
		d, _, _ := idx.Chunk(i)
		st, err := s.chunks.Stat(ctx, d)
		if err != nil || st.Atime.Before(time.Now().Add(-time.Hour)) {
			t.Errorf("reused chunk %s not touched: %v %v", d, st.Atime, err)
		}
	}
	verifyAll(t, s, b2.Ref())

	// Backup time must move forward.
	if _, err := s.StartBackup(ctx, g, t1, BackupOptions{}); !errors.Is(err, ErrExists) {
		t.Errorf("old backup time: %v", err)
	}
}

func ageChunks(t *testing.T, s *Store, when time.Time) {
	t.Helper()
	for p := range 0x10000 {
		if _, err := os.Stat(s.chunks.PrefixDir(uint16(p))); err != nil {
			continue
		}
		infos, _ := s.chunks.ListPrefix(context.Background(), uint16(p))
		for _, ci := range infos {
			path := filepath.Join(s.chunks.PrefixDir(uint16(p)), ci.Name)
			if err := os.Chtimes(path, when, ci.Mtime); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestBackupLocksAndAbort(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	g := GroupRef{NS: "", Type: TypeHost, ID: "web1"}
	t1 := time.Unix(1_800_000_000, 0)
	b, err := s.StartBackup(ctx, g, t1, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A second session on the same group is refused while the first runs.
	if _, err := s.StartBackup(ctx, g, t1.Add(time.Minute), BackupOptions{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second session: %v, want ErrLocked", err)
	}
	if err := b.Finish(ctx); err == nil {
		t.Fatal("Finish with no archive succeeded")
	}
	if _, err := os.Stat(s.Path(b.Ref().Dir())); !os.IsNotExist(err) {
		t.Errorf("empty snapshot left behind: %v", err)
	}
	b, err = s.StartBackup(ctx, g, t1.Add(time.Minute), BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddImage(ctx, "disk.img", bytes.NewReader(make([]byte, 10)), 20); err == nil {
		t.Error("short image source accepted")
	}
	b.Abort()
	if _, err := os.Stat(s.Path(b.Ref().Dir())); !os.IsNotExist(err) {
		t.Errorf("aborted snapshot left behind: %v", err)
	}
	snaps, _, err := s.Snapshots(g)
	if err != nil || len(snaps) != 0 {
		t.Errorf("snapshots after abort: %v %v", snaps, err)
	}
}

func TestMissingAndCorruptChunks(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	g := GroupRef{Type: TypeVM, ID: "101"}
	image := xorshiftBytes(9, 8<<20)
	b, _ := s.StartBackup(ctx, g, time.Unix(1_800_000_000, 0), BackupOptions{})
	if err := b.AddImage(ctx, "d.img", bytes.NewReader(image), uint64(len(image))); err != nil {
		t.Fatal(err)
	}
	if err := b.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	idx, _ := s.OpenIndex(b.Ref(), "d.img.fidx")
	d0, _, _ := idx.Chunk(0)
	d1, _, _ := idx.Chunk(1)
	os.Remove(s.chunks.Path(d0))
	blob, _ := os.ReadFile(s.chunks.Path(d1))
	blob[len(blob)-1] ^= 0xff
	os.WriteFile(s.chunks.Path(d1), blob, 0o644)

	s2, err := Open(s.Root(), Options{RuntimeDir: s.RuntimeDir()}) // fresh cache
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	a, _ := s2.OpenArchive(ctx, b.Ref(), "d.img.fidx")
	p := make([]byte, 10)
	if _, err := a.ReadAt(p, 0); !errors.Is(err, ErrChunkMissing) || !bytes.Contains([]byte(err.Error()), []byte(d0.String())) {
		t.Errorf("missing chunk: %v", err)
	}
	if _, err := a.ReadAt(p, 4<<20); !errors.Is(err, ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(d1.String())) {
		t.Errorf("corrupt chunk: %v", err)
	}
	r, err := s2.VerifySnapshot(ctx, b.Ref())
	if err != nil || len(r.Problems) != 2 {
		t.Errorf("verify found %v, %v", r.Problems, err)
	}
}

func TestCreateLayout(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 65536 directories")
	}
	root := filepath.Join(t.TempDir(), "store1")
	s, err := Create(root, Options{RuntimeDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Name() != pathName(root) || !strings.HasPrefix(s.Name(), "store1-") || s.NameSource() != NameFromPath {
		t.Errorf("name %q from %s, want %q from the path", s.Name(), s.NameSource(), pathName(root))
	}
	for _, c := range []struct {
		rel  string
		mode os.FileMode
	}{{".chunks", 0o750 | os.ModeDir}, {".chunks/0000", 0o750 | os.ModeDir}, {".chunks/a342", 0o750 | os.ModeDir}, {".chunks/ffff", 0o750 | os.ModeDir}, {".lock", 0o644}} {
		st, err := os.Stat(s.Path(c.rel))
		if err != nil || st.Mode()&^0o022 != c.mode&^0o022 {
			t.Errorf("%s: %v %v, want %v", c.rel, st.Mode(), err, c.mode)
		}
	}
	ents, _ := os.ReadDir(s.Path(".chunks"))
	if len(ents) != 65536 {
		t.Errorf("%d prefix directories", len(ents))
	}
	if _, err := Create(root, Options{RuntimeDir: t.TempDir()}); !errors.Is(err, ErrExists) {
		t.Errorf("second Create: %v", err)
	}
	if _, err := Open(t.TempDir(), Options{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open of a plain directory: %v", err)
	}
}

// TestOwnerFollowsDatastore checks that a root-run backup into a datastore
// owned by another user (PBS's backup user) leaves nothing owned by root.
func TestOwnerFollowsDatastore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	root := filepath.Join(t.TempDir(), "ds")
	s, err := Create(root, Options{RuntimeDir: t.TempDir(), LazyChunkDirs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	const uid, gid = 34, 34
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error { return os.Lchown(p, uid, gid) })
	s, err = Open(root, Options{RuntimeDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateNamespace("prod"); err != nil {
		t.Fatal(err)
	}
	ref := backupOne(t, s, GroupRef{NS: "prod", Type: TypeVM, ID: "1"}, time.Unix(1_800_000_000, 0))
	if err := s.SetProtected(ref, true); err != nil {
		t.Fatal(err)
	}
	n := 0
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		info, _ := d.Info()
		st := info.Sys().(*syscall.Stat_t)
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("%s owned by %d:%d", p, st.Uid, st.Gid)
		}
		n++
		return nil
	})
	if n < 10 {
		t.Errorf("only %d entries walked", n)
	}
}

// TestChunkNotRegular: a chunk replaced by a directory or a FIFO is
// ErrCorrupt, and reading the FIFO does not block.
func TestChunkNotRegular(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	for i, mk := range []func(string) error{
		func(p string) error { return os.Mkdir(p, 0o755) },
		func(p string) error { return syscall.Mkfifo(p, 0o644) },
	} {
		data := []byte(fmt.Sprint("chunk ", i))
		d := DigestOf(data)
		blob, _ := s.Codec().Encode(data, false)
		if _, err := s.Chunks().Insert(ctx, d, blob); err != nil {
			t.Fatal(err)
		}
		p := s.Chunks().Path(d)
		os.Remove(p)
		if err := mk(p); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ReadChunk(ctx, d); !errors.Is(err, ErrCorrupt) {
			t.Errorf("case %d: ReadChunk = %v, want ErrCorrupt", i, err)
		}
	}
}

// unevenReader returns its data in pieces of varying sizes.
type unevenReader struct {
	data []byte
	n    int
}

func (u *unevenReader) Read(p []byte) (int, error) {
	if len(u.data) == 0 {
		return 0, io.EOF
	}
	u.n++
	k := min(len(p), len(u.data), 1+(u.n*7919)%(3<<20))
	copy(p, u.data[:k])
	u.data = u.data[k:]
	return k, nil
}

// TestStreamReadFrom: a stream fed through ReadFrom (reads straight into
// the chunk buffers, a chunk's buffer growing past 4 and 8 MiB) and the
// same bytes fed through Write in odd pieces are cut where the chunker
// cuts the whole stream, and read back equal.
func TestStreamReadFrom(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	data := xorshiftBytes(11, 56<<20)
	var want []uint64
	ch, _ := NewChunker(DefaultAvgChunkSize)
	var large, larger bool
	for off, last := 0, 0; off < len(data); {
		n, cut := ch.Scan(data[off:])
		off += n
		if cut || off == len(data) {
			want = append(want, uint64(off))
			large = large || off-last > 4<<20
			larger = larger || off-last > 8<<20
			last = off
		}
	}
	if !large || !larger {
		t.Fatalf("no chunk above 4 and 8 MiB in the test data (cuts %v)", want)
	}
	for i, feed := range []func(sw *StreamWriter) error{
		func(sw *StreamWriter) error {
			_, err := sw.ReadFrom(&unevenReader{data: data})
			return err
		},
		func(sw *StreamWriter) error {
			for p := data; len(p) > 0; {
				k := min(len(p), 1+len(p)%(1<<20+77))
				if _, err := sw.Write(p[:k]); err != nil {
					return err
				}
				p = p[k:]
			}
			return nil
		},
	} {
		b, sw := startDataStream(t, s, time.Date(2026, 11, 20, 10, i, 0, 0, time.UTC))
		if err := feed(sw); err != nil {
			t.Fatal(err)
		}
		if _, err := sw.Close(); err != nil {
			t.Fatal(err)
		}
		if err := b.Finish(ctx); err != nil {
			t.Fatal(err)
		}
		idx, err := s.OpenIndex(b.Ref(), "data.pxar.didx")
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for k := range idx.Len() {
			_, _, end := idx.Chunk(k)
			got = append(got, end)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("feed %d: chunk ends %v, want %v", i, got, want)
		}
		a, err := s.OpenArchive(ctx, b.Ref(), "data.pxar.didx")
		if err != nil {
			t.Fatal(err)
		}
		back, err := io.ReadAll(a.Reader())
		if err != nil || !bytes.Equal(back, data) {
			t.Errorf("feed %d: read back %d bytes, %v", i, len(back), err)
		}
	}
}

// TestShortChunksOwnBuffers cuts a stream into short chunks (Inject cuts
// the chunk in progress, as a metadata-mode backup does before every run
// of reused chunks): each is stored whole, and in flight it holds a
// buffer of its own size, not one of the pool's 4 MiB buffers, so the
// session's peak of chunk memory stays near the chunks' size.
func TestShortChunksOwnBuffers(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	b, sw := startDataStream(t, s, time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC))
	const chunks, size = 50, 10 << 10
	var want []byte
	for i := range chunks {
		p := xorshiftBytes(uint64(i+1), size)
		want = append(want, p...)
		if _, err := sw.Write(p); err != nil {
			t.Fatal(err)
		}
		if err := sw.Inject(nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	idx, err := s.OpenIndex(b.Ref(), "data.pxar.didx")
	if err != nil {
		t.Fatal(err)
	}
	if idx.Len() != chunks {
		t.Fatalf("%d chunks, want %d", idx.Len(), chunks)
	}
	a, err := s.OpenArchive(ctx, b.Ref(), "data.pxar.didx")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(a.Reader())
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes (%v), want the %d written", len(got), err, len(want))
	}
	// Every chunk in flight at once would be 50 × (10 KiB + its encoded
	// bound); one pooled buffer alone is 4 MiB.
	if peak := b.PeakInFlight(); peak >= 2<<20 {
		t.Errorf("peak chunk memory in flight %d bytes: short chunks held pooled buffers", peak)
	}
}

// startDataStream starts a backup of host/h at time when in s and a
// stream data.pxar in it with the default chunk size.
func startDataStream(t *testing.T, s *Store, when time.Time) (*Backup, *StreamWriter) {
	t.Helper()
	ctx := context.Background()
	b, err := s.StartBackup(ctx, GroupRef{Type: TypeHost, ID: "h"}, when, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sw, err := b.CreateStream(ctx, "data.pxar", DefaultAvgChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	return b, sw
}

// TestFinishCancelled: a Finish whose context is done (an interrupted
// backup) removes the snapshot, as Abort does, returns the context's
// error and releases the group, and an AddBlob whose context is done
// writes nothing.
func TestFinishCancelled(t *testing.T) {
	s := newTestStore(t)
	g := GroupRef{Type: TypeHost, ID: "h"}
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	ctx, cancel := context.WithCancel(context.Background())
	b, err := s.StartBackup(ctx, g, t0, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddBlob(ctx, "host.conf", []byte("x")); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := b.AddBlob(ctx, "other.conf", []byte("y")); !errors.Is(err, context.Canceled) {
		t.Errorf("AddBlob after cancel: %v", err)
	}
	if err := b.Finish(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Finish after cancel: %v", err)
	}
	if _, err := os.Stat(s.Path(b.Ref().Dir())); !os.IsNotExist(err) {
		t.Errorf("snapshot directory after a cancelled Finish: %v", err)
	}
	// The group is free: a new backup starts and finishes.
	b2, err := s.StartBackup(context.Background(), g, t0.Add(time.Minute), BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.AddBlob(context.Background(), "host.conf", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := b2.Finish(context.Background()); err != nil {
		t.Fatal(err)
	}
	if snaps, _, err := s.Snapshots(g); err != nil || len(snaps) != 1 || !snaps[0].Ref.Time.Equal(t0.Add(time.Minute)) {
		t.Errorf("snapshots: %v, %v; want only the second", snaps, err)
	}
}
