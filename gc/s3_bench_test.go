package gc

import (
	"context"
	"encoding/binary"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/store"
	"github.com/pbsfs/pbsfs/store/s3"
)

// TestBenchS3GC times the collection of an S3 datastore of
// $PBSFS_BENCH_S3_CHUNKS chunk objects (default 100000), half of them
// referenced and the other half aged garbage, beside a baseline in the
// same run: listing the same objects with the same client. It prints
// the time and the requests of each. Runs with PBSFS_BENCH=1.
func TestBenchS3GC(t *testing.T) {
	if os.Getenv("PBSFS_BENCH") != "1" {
		t.Skip("benchmarks run with PBSFS_BENCH=1")
	}
	n := 100000
	if v, err := strconv.Atoi(os.Getenv("PBSFS_BENCH_S3_CHUNKS")); err == nil && v > 0 {
		n = v
	}
	ts, c := newS3TestStore(t)
	cs := ts.ChunkStore()
	ds := make([]store.Digest, n)
	start := time.Now()
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				data := make([]byte, 64)
				binary.LittleEndian.PutUint64(data, uint64(i))
				binary.LittleEndian.PutUint64(data[8:], uint64(start.UnixNano()))
				d := store.DigestOf(data)
				blob, err := ts.Codec().Encode(data, false)
				if err == nil {
					_, err = cs.Insert(context.Background(), d, blob)
				}
				if err != nil {
					t.Error(err)
					return
				}
				ds[i] = d
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("upload of %d chunk objects: %v", n, time.Since(start).Round(time.Millisecond))
	ts.snapshot(snapRef(group("bench"), 100), ds[:n/2])
	ts.age(3*days, ds...)

	before := c.Counts().Requests()
	start = time.Now()
	listed := 0
	if err := c.List(context.Background(), ".chunks/", func(s3.ObjectInfo) error { listed++; return nil }); err != nil {
		t.Fatal(err)
	}
	listTime, listReq := time.Since(start), c.Counts().Requests()-before

	before = c.Counts().Requests()
	st := run(t, ts.collector(Options{SkipAtimeCheck: true, Logger: discardLogger()}))
	gcReq := c.Counts().Requests() - before
	if st.RemovedChunks != uint64(n-n/2) || st.DiskChunks != uint64(n/2) {
		t.Fatalf("removed %d, in use %d; want %d and %d", st.RemovedChunks, st.DiskChunks, n-n/2, n/2)
	}
	gcTime := st.MarkTime + st.SweepTime
	t.Logf("baseline: list %d objects: %v, %d requests", listed, listTime.Round(time.Millisecond), listReq)
	t.Logf("gc: %d objects, %d removed in %d DeleteObjects requests: %v (mark %v, sweep %v), %d requests (%s)",
		st.S3Objects, st.RemovedChunks, st.S3DeleteCalls, gcTime.Round(time.Millisecond),
		st.MarkTime.Round(time.Millisecond), st.SweepTime.Round(time.Millisecond), gcReq, c.Counts())
	t.Logf("gc / list time: %.2f", gcTime.Seconds()/listTime.Seconds())
}
