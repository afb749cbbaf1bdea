package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/internal/testutil"
	"github.com/pbsfs/pbsfs/store"
	"github.com/pbsfs/pbsfs/store/s3"
)

// s3shared is the S3 server of this package's tests (closed by TestMain).
var s3shared testutil.SharedS3

var s3Names struct {
	sync.Mutex
	n int
}

// newS3TestStore opens a fresh datastore in the shared bucket alone.
func newS3TestStore(t *testing.T) (*testStore, *s3.Client) {
	t.Helper()
	srv := s3shared.Get(t)
	s3Names.Lock()
	s3Names.n++
	name := fmt.Sprintf("gc%d", s3Names.n)
	s3Names.Unlock()
	cfg := s3.Config{Endpoint: srv.Endpoint, Insecure: true, Bucket: srv.Bucket, Store: name, PathStyle: true,
		AccessKey: "gc-test", SecretKey: "gc-test-secret"}
	buf := &testutil.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, c, err := s3.Open(context.Background(), cfg, filepath.Join(t.TempDir(), "cache"), store.Options{RuntimeDir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &testStore{Store: s, t: t, log: buf}, c
}

func objectExists(t *testing.T, c *s3.Client, d store.Digest) bool {
	t.Helper()
	_, err := c.Stat(context.Background(), s3.ObjectRel(d.String()))
	if err != nil && !errors.Is(err, s3.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// TestS3GC: referenced chunks stay (those without a marker get one),
// unreferenced ones with an aged marker go, with their marker, in one
// DeleteObjects request; fresh ones are pending.
func TestS3GC(t *testing.T) {
	ts, c := newS3TestStore(t)
	ds := ts.chunks(6)
	used, old, young := ds[:2], ds[2:5], ds[5]
	ts.snapshot(snapRef(group("a"), 100), used)
	ts.age(3*days, ds...)
	ts.age(time.Hour, young) // unreferenced, younger than the cutoff: pending
	// A referenced chunk whose marker is missing (evicted by hand, or
	// uploaded elsewhere): phase 1 writes .using, phase 2 the marker.
	if err := ts.Chunks().Remove(context.Background(), used[1].String()); err != nil {
		t.Fatal(err)
	}
	st := run(t, ts.collector(Options{SkipAtimeCheck: true, Logger: discardLogger()}))
	for _, d := range used {
		if !objectExists(t, c, d) || !ts.exists(d) {
			t.Errorf("referenced chunk %s: object %v, marker %v", d, objectExists(t, c, d), ts.exists(d))
		}
	}
	for _, d := range old {
		if objectExists(t, c, d) || ts.exists(d) {
			t.Errorf("unreferenced aged chunk %s: object %v, marker %v", d, objectExists(t, c, d), ts.exists(d))
		}
	}
	if !objectExists(t, c, young) {
		t.Errorf("unreferenced fresh chunk removed")
	}
	if st.RemovedChunks != 3 || st.PendingChunks != 1 || st.DiskChunks != 2 || st.S3DeleteCalls != 1 || st.S3Objects != 6 {
		t.Errorf("status: removed %d pending %d in use %d, %d objects, %d delete calls",
			st.RemovedChunks, st.PendingChunks, st.DiskChunks, st.S3Objects, st.S3DeleteCalls)
	}
	if n, _ := filepath.Glob(filepath.Join(ts.Chunks().Dir(), "*", "*.using")); len(n) != 0 {
		t.Errorf(".using files left: %v", n)
	}
}

// TestS3SweepHoldsPrefixLock forces the interleaving that loses data
// without phase 2's prefix lock: the collector has condemned an aged,
// unreferenced chunk and queued its object for deletion; a writer that
// now finds the marker would reuse the chunk (touch it, skip the upload)
// and reference an object about to go. With the lock held until the
// DeleteObjects request returned, the writer waits, then finds no marker
// and uploads again. Switched off, the writer reuses the doomed chunk.
func TestS3SweepHoldsPrefixLock(t *testing.T) {
	for _, lockOn := range []bool{true, false} {
		t.Run(fmt.Sprintf("prefix lock %v", lockOn), func(t *testing.T) {
			ts, c := newS3TestStore(t)
			ds := ts.chunks(1)
			target := ds[0]
			ts.age(3*days, target)
			reuser := ts.ChunkStore().(interface {
				TouchIfPresent(context.Context, store.Digest) (bool, error)
			})
			result := make(chan bool, 1)
			early := false
			col := ts.collector(Options{SkipAtimeCheck: true, Logger: discardLogger()})
			col.opts.off.prefixLock = !lockOn
			var once sync.Once
			col.opts.test.beforeUnlink = func(string) {
				once.Do(func() {
					go func() {
						reused, err := reuser.TouchIfPresent(context.Background(), target)
						if err != nil {
							t.Error(err)
						}
						result <- reused
					}()
					// The writer must not get through while the delete
					// is pending; give it time to try.
					select {
					case r := <-result:
						early = true
						result <- r
					case <-time.After(300 * time.Millisecond):
					}
				})
			}
			st := run(t, col)
			reused := <-result
			if st.RemovedChunks != 1 || objectExists(t, c, target) {
				t.Fatalf("the aged chunk was not collected: %+v", st)
			}
			lost := reused // the writer references an object that is gone
			if lockOn && (early || lost) {
				t.Errorf("with the prefix lock: writer got through early %v, reused the deleted chunk %v", early, reused)
			}
			if !lockOn && !lost {
				t.Errorf("without the prefix lock the writer should have reused the doomed chunk (the test cannot fail otherwise)")
			}
		})
	}
}

// TestS3GCInUse: a bucket whose .in-use names a PBS host is not collected.
func TestS3GCInUse(t *testing.T) {
	ts, c := newS3TestStore(t)
	ds := ts.chunks(2)
	ts.age(3*days, ds...)
	if _, err := c.Put(context.Background(), ".in-use", []byte(`{"hostname":"pve-backup"}`), false); err != nil {
		t.Fatal(err)
	}
	_, err := ts.collector(Options{SkipAtimeCheck: true, Logger: discardLogger()}).Run(context.Background())
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("Run beside a PBS host: %v", err)
	}
	for _, d := range ds {
		if !objectExists(t, c, d) {
			t.Errorf("chunk %s removed by a refused run", d)
		}
	}
}
