package gc

import (
	"context"
	"encoding/binary"
	"os"
	"strconv"
	"strings"
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
	ds, took := putChunkObjects(t, ts, c, n)
	if t.Failed() {
		return
	}
	t.Logf("setup: %d chunk objects put, 64 in flight, with their markers: %v (%.0f objects/s; load %s)",
		n, took.Round(time.Millisecond), float64(n)/took.Seconds(), loadavg())
	ts.snapshot(snapRef(group("bench"), 100), ds[:n/2])
	ts.age(3*days, ds...)

	srv := s3shared.Get(t)
	before, cpu := c.Counts().Tally(), srv.CPUTime()
	start := time.Now()
	listed := 0
	if err := c.List(context.Background(), ".chunks/", func(s3.ObjectInfo) error { listed++; return nil }); err != nil {
		t.Fatal(err)
	}
	listTime, listReq, listCPU := time.Since(start), c.Counts().Tally().Sub(before), srv.CPUTime()-cpu

	// Where phase 1 (mark) ends and phase 2 (list and delete) begins.
	var atSweep s3.Tally
	var cpuAtSweep time.Duration
	col := ts.collector(Options{SkipAtimeCheck: true, Logger: discardLogger(),
		Hooks: Hooks{BeforeSweep: func(context.Context) { atSweep, cpuAtSweep = c.Counts().Tally(), srv.CPUTime() }}})
	before, cpu = c.Counts().Tally(), srv.CPUTime()
	st := run(t, col)
	after, cpuAfter := c.Counts().Tally(), srv.CPUTime()
	if st.RemovedChunks != uint64(n-n/2) || st.DiskChunks != uint64(n/2) {
		t.Fatalf("removed %d, in use %d; want %d and %d", st.RemovedChunks, st.DiskChunks, n-n/2, n/2)
	}
	gcTime := st.MarkTime + st.SweepTime
	t.Logf("baseline: list %d objects: %v, %s; server CPU %v", listed, listTime.Round(time.Millisecond), listReq, listCPU.Round(10*time.Millisecond))
	t.Logf("gc of %d objects, %d removed: %v (load %s)", st.S3Objects, st.RemovedChunks, gcTime.Round(time.Millisecond), loadavg())
	t.Logf("  mark:           %8v  %s; server CPU %v", st.MarkTime.Round(time.Millisecond), atSweep.Sub(before),
		(cpuAtSweep - cpu).Round(10*time.Millisecond))
	t.Logf("  list + delete:  %8v  %s; server CPU %v", st.SweepTime.Round(time.Millisecond), after.Sub(atSweep),
		(cpuAfter - cpuAtSweep).Round(10*time.Millisecond))
	t.Logf("  %d DeleteObjects of up to %d keys, up to %d at once: their summed time %v; the listing waited %v for a free slot",
		st.S3DeleteCalls, s3BatchSize(), s3DeletesInFlight, st.S3DeleteTime.Round(time.Millisecond), st.S3DeleteWait.Round(time.Millisecond))
	t.Logf("gc / list time: %.2f", gcTime.Seconds()/listTime.Seconds())
}

// putChunkObjects puts n small chunk objects into the bucket of ts, 64
// requests in flight, each with its 0-byte marker in the local chunk
// directory (not fsynced: a benchmark's setup), and returns their
// digests and the time taken.
func putChunkObjects(t *testing.T, ts *testStore, c *s3.Client, n int) ([]store.Digest, time.Duration) {
	t.Helper()
	cfg := c.Config()
	cfg.Parallel = 64
	fast, err := s3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts.Chunks().SyncWrites = false
	defer func() { ts.Chunks().SyncWrites = true }()
	ds := make([]store.Digest, n)
	seed := time.Now().UnixNano()
	start := time.Now()
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range cfg.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				data := make([]byte, 64)
				binary.LittleEndian.PutUint64(data, uint64(i))
				binary.LittleEndian.PutUint64(data[8:], uint64(seed))
				d := store.DigestOf(data)
				blob, err := ts.Codec().Encode(data, false)
				if err == nil {
					_, err = fast.Put(context.Background(), s3.ObjectRel(d.String()), blob, false)
				}
				if err == nil {
					err = ts.Chunks().WriteMarker(context.Background(), d)
				}
				if err != nil {
					t.Error(err)
					continue
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
	return ds, time.Since(start)
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
