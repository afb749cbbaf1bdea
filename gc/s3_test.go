package gc

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// s3ChunkIn inserts a chunk of random content whose digest lies in prefix
// directory p (any prefix for p < 0) and returns its digest.
func s3ChunkIn(t *testing.T, ts *testStore, p int) store.Digest {
	t.Helper()
	data := make([]byte, 64)
	for {
		rand.Read(data)
		d := store.DigestOf(data)
		if p >= 0 && int(d[0])<<8|int(d[1]) != p {
			continue
		}
		blob, err := ts.Codec().Encode(data, false)
		if err == nil {
			_, err = ts.ChunkStore().Insert(context.Background(), d, blob)
		}
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
}

// TestS3SweepParallelBatches: phase 2 has several DeleteObjects requests
// in flight while the listing goes on, and the lock of a prefix stays
// held until every batch with a key in it has returned: here batches of
// one key, two of them in one prefix, the third in a later one.
func TestS3SweepParallelBatches(t *testing.T) {
	ts, c := newS3TestStore(t)
	a1 := s3ChunkIn(t, ts, -1)
	p := int(a1[0])<<8 | int(a1[1])
	if p == 0xffff {
		t.Skip("no later prefix; run again")
	}
	a2 := s3ChunkIn(t, ts, p)
	var b store.Digest
	for b = s3ChunkIn(t, ts, -1); int(b[0])<<8|int(b[1]) <= p; b = s3ChunkIn(t, ts, -1) {
		ts.age(3*days, b) // garbage too
	}
	ts.age(3*days, a1, a2, b)
	col := ts.collector(Options{SkipAtimeCheck: true, Logger: discardLogger()})
	col.opts.test.s3Batch = 1
	entered := make(chan string, 16)
	done := make(chan string, 16)
	release := map[string]chan struct{}{}
	for _, d := range []store.Digest{a1, a2, b} {
		release[d.String()] = make(chan struct{})
	}
	col.opts.test.beforeUnlink = func(path string) {
		n := filepath.Base(path)
		entered <- n
		if ch := release[n]; ch != nil {
			<-ch
		}
	}
	col.opts.test.s3BatchDone = func(names []string) {
		if release[names[0]] != nil {
			done <- names[0]
		}
	}
	result := make(chan error, 1)
	go func() { _, err := col.Run(context.Background()); result <- err }()
	defer func() {
		for _, ch := range release {
			select {
			case <-ch:
			default:
				close(ch)
			}
		}
	}()
	inFlight := map[string]bool{}
	timeout := time.After(time.Minute)
	for !inFlight[a1.String()] || !inFlight[a2.String()] || !inFlight[b.String()] {
		select {
		case n := <-entered:
			inFlight[n] = true
		case err := <-result:
			t.Fatalf("run ended with %d deletes in flight: %v", len(inFlight), err)
		case <-timeout:
			t.Fatalf("%d DeleteObjects requests in flight at once, want 3", len(inFlight))
		}
	}
	locked := func() bool {
		f, err := os.Open(ts.Chunks().PrefixDir(uint16(p)))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
			return true
		}
		return false
	}
	if !locked() {
		t.Fatal("prefix lock not held while its deletes are in flight")
	}
	close(release[a1.String()])
	if n := <-done; n != a1.String() {
		t.Fatalf("batch %s done, want %s", n, a1)
	}
	if !locked() {
		t.Error("prefix lock released while another batch with a key in it was in flight")
	}
	close(release[a2.String()])
	if n := <-done; n != a2.String() {
		t.Fatalf("batch %s done, want %s", n, a2)
	}
	if locked() {
		t.Error("prefix lock still held after both batches of the prefix returned")
	}
	close(release[b.String()])
	if err := <-result; err != nil {
		t.Fatal(err)
	}
	for _, d := range []store.Digest{a1, a2, b} {
		if objectExists(t, c, d) || ts.exists(d) {
			t.Errorf("garbage chunk %s: object %v, marker %v", d, objectExists(t, c, d), ts.exists(d))
		}
	}
}
