package gc

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/internal/testutil"
	"github.com/pbsfs/pbsfs/store"
)

// testStore is a datastore in a temporary directory, with the log it writes.
type testStore struct {
	*store.Store
	t   *testing.T
	log *testutil.SyncBuffer
}

func newTestStore(t *testing.T) *testStore {
	t.Helper()
	buf := &testutil.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := store.Create(filepath.Join(t.TempDir(), "store1"),
		store.Options{RuntimeDir: t.TempDir(), LazyChunkDirs: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &testStore{Store: s, t: t, log: buf}
}

// collector returns a collector of ts with opts, logging into ts's log.
func (ts *testStore) collector(opts Options) *Collector {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(ts.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return New(ts.Store, opts)
}

// chunks inserts n chunks of random content through the store's chunk
// store (on S3: object, then marker) and returns their digests.
func (ts *testStore) chunks(n int) []store.Digest {
	ts.t.Helper()
	out := make([]store.Digest, n)
	for i := range out {
		data := make([]byte, 512)
		rand.Read(data)
		d := store.DigestOf(data)
		blob, err := ts.Codec().Encode(data, false)
		if err != nil {
			ts.t.Fatal(err)
		}
		if _, err := ts.ChunkStore().Insert(context.Background(), d, blob); err != nil {
			ts.t.Fatal(err)
		}
		out[i] = d
	}
	return out
}

// age sets the atime (and mtime) of chunk files d back by ago.
func (ts *testStore) age(ago time.Duration, ds ...store.Digest) {
	ts.t.Helper()
	for _, d := range ds {
		ts.agePath(ts.Chunks().Path(d), ago)
	}
}

func (ts *testStore) agePath(p string, ago time.Duration) {
	ts.t.Helper()
	when := time.Now().Add(-ago)
	if err := os.Chtimes(p, when, when); err != nil {
		ts.t.Fatal(err)
	}
}

// exists reports whether chunk d is on disk.
func (ts *testStore) exists(d store.Digest) bool {
	_, err := os.Lstat(ts.Chunks().Path(d))
	return err == nil
}

// lost returns the digests of ds that are not on disk.
func (ts *testStore) lost(ds []store.Digest) []store.Digest {
	var out []store.Digest
	for _, d := range ds {
		if !ts.exists(d) {
			out = append(out, d)
		}
	}
	return out
}

func group(id string) store.GroupRef { return store.GroupRef{Type: store.TypeHost, ID: id} }

func snapRef(g store.GroupRef, sec int64) store.SnapshotRef {
	return store.SnapshotRef{Group: g, Time: time.Unix(1_700_000_000+sec, 0).UTC()}
}

// mkSnapshot makes the directory of snapshot ref (and its group), as a
// backup does when it starts.
func (ts *testStore) mkSnapshot(ref store.SnapshotRef) {
	ts.t.Helper()
	if err := os.MkdirAll(ts.Path(ref.Dir()), 0o755); err != nil {
		ts.t.Fatal(err)
	}
	owner := ts.Path(path.Join(ref.Group.Dir(), store.OwnerName))
	if _, err := os.Stat(owner); err != nil {
		if err := os.WriteFile(owner, []byte(store.DefaultOwner+"\n"), 0o644); err != nil {
			ts.t.Fatal(err)
		}
	}
}

// writeIndex writes dynamic index name into snapshot ref, referring to ds
// as 512-byte chunks. Like a PBS writer reusing known chunks, it touches
// nothing.
func (ts *testStore) writeIndex(ref store.SnapshotRef, name string, ds []store.Digest) {
	ts.t.Helper()
	ts.mkSnapshot(ref)
	w, err := store.CreateDynamicIndex(ts.Path(path.Join(ref.Dir(), name)))
	if err != nil {
		ts.t.Fatal(err)
	}
	for i, d := range ds {
		if err := w.Append(uint64(i+1)*512, d); err != nil {
			ts.t.Fatal(err)
		}
	}
	if _, err := w.Close(); err != nil {
		ts.t.Fatal(err)
	}
}

// finish writes the manifest of snapshot ref, which marks it finished.
func (ts *testStore) finish(ref store.SnapshotRef) {
	ts.t.Helper()
	si, err := ts.Snapshot(ref)
	if err != nil {
		ts.t.Fatal(err)
	}
	m := &store.Manifest{BackupType: ref.Group.Type, BackupID: ref.Group.ID, BackupTime: ref.Time.Unix()}
	for _, f := range si.Files {
		m.Files = append(m.Files, store.FileInfo{CryptMode: store.CryptNone, Filename: f, Csum: fmt.Sprintf("%064x", 0)})
	}
	js, err := m.MarshalJSON()
	if err != nil {
		ts.t.Fatal(err)
	}
	blob, err := ts.Codec().Encode(js, false)
	if err != nil {
		ts.t.Fatal(err)
	}
	if err := store.WriteFileAtomic(ts.Path(path.Join(ref.Dir(), store.ManifestName)), blob, 0o644); err != nil {
		ts.t.Fatal(err)
	}
}

// snapshot writes a finished snapshot with one index referring to ds.
func (ts *testStore) snapshot(ref store.SnapshotRef, ds []store.Digest) {
	ts.t.Helper()
	ts.writeIndex(ref, "root.pxar.didx", ds)
	ts.finish(ref)
}

// removeOutside deletes snapshot ref the way a PBS prune or a plain rm
// does: without telling the collector.
func (ts *testStore) removeOutside(ref store.SnapshotRef) {
	ts.t.Helper()
	if err := os.RemoveAll(ts.Path(ref.Dir())); err != nil {
		ts.t.Fatal(err)
	}
}

// run runs c and fails the test on error.
func run(t *testing.T, c *Collector) Status {
	t.Helper()
	st, err := c.Run(context.Background())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return st
}

const days = 24 * time.Hour

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
