package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Benchmarks report throughput beside a baseline measured in the same run:
// SHA-256 of the same bytes. The ratio is the figure; absolute numbers
// vary with the machine's load. Run on one core with -cpu 1.

func BenchmarkChunker(b *testing.B) {
	data := xorshiftBytes(42, 256<<20)
	b.Run("baseline=sha256", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			sha256.Sum256(data)
		}
	})
	b.Run("chunker", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			c, _ := NewChunker(DefaultAvgChunkSize)
			p := data
			for len(p) > 0 {
				n, _ := c.Scan(p)
				p = p[n:]
			}
		}
	})
}

// benchImage writes a 1 GiB image file: random (incompressible) or mixed
// (zeros, text and random blocks, like a used disk).
func benchImage(b testing.TB, kind string, size int) string {
	path := filepath.Join(b.TempDir(), kind+".img")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog\n"), 1<<20/44+1)[:1<<20]
	for off := 0; off < size; off += 1 << 20 {
		block := xorshiftBytes(uint64(off+1), 1<<20)
		if kind == "mixed" {
			switch (off >> 20) % 3 {
			case 0:
				block = make([]byte, 1<<20)
			case 1:
				block = text
			}
		}
		if _, err := f.Write(block); err != nil {
			b.Fatal(err)
		}
	}
	return path
}

func BenchmarkIngest(b *testing.B) {
	for _, kind := range []string{"random", "mixed"} {
		path := benchImage(b, kind, 1<<30)
		data, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(kind+"/baseline=sha256", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				h := sha256.New()
				for off := 0; off < len(data); off += FixedChunkSize {
					h.Write(data[off:min(off+FixedChunkSize, len(data))])
				}
				h.Sum(nil)
			}
		})
		data = nil
		for _, pass := range []string{"first", "unchanged"} {
			b.Run(kind+"/backup="+pass, func(b *testing.B) {
				b.SetBytes(1 << 30)
				ctx := context.Background()
				s := newTestStore(b)
				when := time.Unix(1_800_000_000, 0)
				backup := func() *Backup {
					f, err := os.Open(path)
					if err != nil {
						b.Fatal(err)
					}
					defer f.Close()
					when = when.Add(time.Minute)
					bk, err := s.StartBackup(ctx, GroupRef{Type: TypeVM, ID: "1"}, when, BackupOptions{})
					if err != nil {
						b.Fatal(err)
					}
					if err := bk.AddImage(ctx, "disk.img", f, 1<<30); err != nil {
						b.Fatal(err)
					}
					if err := bk.Finish(); err != nil {
						b.Fatal(err)
					}
					return bk
				}
				if pass == "unchanged" {
					backup()
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if pass == "first" && i > 0 {
						b.StopTimer()
						s = newTestStore(b)
						b.StartTimer()
					}
					bk := backup()
					if pass == "unchanged" && bk.Stats.NewChunks.Load() != 0 {
						b.Fatalf("unchanged backup wrote %d chunks", bk.Stats.NewChunks.Load())
					}
				}
			})
		}
	}
}

// BenchmarkVerify compares verify of a 2 GiB snapshot with the bare work
// it must do — zstd decode and SHA-256 of the same chunks, held in memory,
// on as many goroutines — measured in the same run. Run with -cpu 2.
func BenchmarkVerify(b *testing.B) {
	ctx := context.Background()
	s := newTestStore(b)
	bk, err := s.StartBackup(ctx, GroupRef{Type: TypeVM, ID: "1"}, time.Unix(1_800_000_000, 0), BackupOptions{})
	if err != nil {
		b.Fatal(err)
	}
	const size = 2 << 30
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog\n"), FixedChunkSize/44+1)[:FixedChunkSize]
	pr, pw := io.Pipe()
	go func() {
		for off := 0; off < size; off += FixedChunkSize {
			block := xorshiftBytes(uint64(off+1), FixedChunkSize)
			if (off/FixedChunkSize)%2 == 0 {
				block = append(append([]byte(nil), text[:FixedChunkSize/2]...), block[:FixedChunkSize/2]...)
			}
			pw.Write(block)
		}
		pw.Close()
	}()
	if err := bk.AddImage(ctx, "disk.img", pr, size); err != nil {
		b.Fatal(err)
	}
	if err := bk.Finish(); err != nil {
		b.Fatal(err)
	}
	idx, _ := s.OpenIndex(bk.Ref(), "disk.img.fidx")
	blobs := make([][]byte, idx.Len())
	for i := range blobs {
		d, _, _ := idx.Chunk(i)
		blobs[i], _ = s.chunks.Get(ctx, d)
	}
	b.Run("baseline=decode+sha256", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			var next atomic.Int64
			var wg sync.WaitGroup
			for range runtime.GOMAXPROCS(0) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := int(next.Add(1) - 1); i < len(blobs); i = int(next.Add(1) - 1) {
						data, err := s.codec.Decode(blobs[i])
						if err != nil {
							b.Error(err)
							return
						}
						sha256.Sum256(data)
					}
				}()
			}
			wg.Wait()
		}
	})
	blobs = nil
	b.Run("verify", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			r, err := s.NewVerifier(VerifyOptions{}).Verify(ctx, bk.Ref())
			if err != nil || !r.OK() {
				b.Fatal(err, r.Problems)
			}
		}
	})
}

// BenchmarkChunkFiles measures the kernel's cost of storing chunks as
// files: the encoded chunks of 256 MiB (random and text blocks) inserted
// into a chunk store (temp file, write, fsync, rename each; or a
// ChunkBatch: temp files, one sync per batch, renames), against the
// same bytes written to one file with one fsync at the end (what
// `dd conv=fsync` does), in the same run.
func BenchmarkChunkFiles(b *testing.B) {
	const total = 256 << 20
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog\n"), FixedChunkSize/44+1)[:FixedChunkSize]
	codec := NewCodec()
	var blobs [][]byte
	var digests []Digest
	for off := 0; off < total; off += FixedChunkSize {
		chunk := xorshiftBytes(uint64(off+7), FixedChunkSize)
		if (off/FixedChunkSize)%2 == 1 {
			chunk = append(slices.Clone(text[:FixedChunkSize-8]), chunk[:8]...)
		}
		blob, err := codec.Encode(chunk, true)
		if err != nil {
			b.Fatal(err)
		}
		blobs = append(blobs, blob)
		digests = append(digests, sha256.Sum256(chunk))
	}
	var size int64
	for _, bl := range blobs {
		size += int64(len(bl))
	}
	b.Run("baseline=one-file+fsync", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			f, err := os.Create(filepath.Join(b.TempDir(), "all"))
			if err != nil {
				b.Fatal(err)
			}
			for _, bl := range blobs {
				if _, err := f.Write(bl); err != nil {
					b.Fatal(err)
				}
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
	b.Run("chunk-files=fsync-each", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			s := newTestStore(b)
			s.chunks.SyncWrites = true
			for i, bl := range blobs {
				if _, err := s.chunks.Insert(context.Background(), digests[i], bl); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	// A backup's ChunkBatch: temp files without fsync, one sync per batch
	// (64 MiB here) and one after the last rename.
	for _, mode := range []struct {
		name string
		mode SyncMode
	}{{"syncfs", SyncFS}, {"fsync-parallel", SyncFiles}} {
		b.Run("chunk-files=batch-"+mode.name, func(b *testing.B) {
			b.SetBytes(size)
			var syncs int64
			for b.Loop() {
				s := newTestStore(b)
				batch := s.chunks.NewBatch(64<<20, 0, mode.mode)
				for i, bl := range blobs {
					if _, err := batch.Insert(context.Background(), digests[i], bl); err != nil {
						b.Fatal(err)
					}
				}
				if err := batch.Flush(context.Background()); err != nil {
					b.Fatal(err)
				}
				syncs = batch.Syncs()
			}
			b.ReportMetric(float64(syncs), "syncs")
		})
	}
}

// TestIngestTable prints the one-core ingest table of a first backup
// (PBSFS_BENCH=1; run under taskset -c N with -cpu 1): for random and
// mixed data, pbsfs ingest against SHA-256 of the same bytes and against
// dd (the same bytes written to one file and fsynced). The three are
// measured in turn, round after round (PBSFS_BENCH_ROUNDS, default 5), so
// that a change in the machine's load hits all of them alike; the table
// gives the best round and the median. The ratio that counts is CPU time
// against CPU time: SHA-256's is the CPU time of the thread that hashes
// (RUSAGE_THREAD), ingest's and dd's that of the whole process (hashing,
// compressing, writing and the kernel's work on its behalf), so time the
// process waits for a core on a shared machine counts in neither.
func TestIngestTable(t *testing.T) {
	if os.Getenv("PBSFS_BENCH") == "" {
		t.Skip("set PBSFS_BENCH=1")
	}
	const size = 512 << 20
	rounds := 5
	if n, err := strconv.Atoi(os.Getenv("PBSFS_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	ctx := context.Background()
	procCPU := func() time.Duration {
		var ru unix.Rusage
		unix.Getrusage(unix.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	threadCPU := func() time.Duration {
		var ru unix.Rusage
		unix.Getrusage(unix.RUSAGE_THREAD, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	type row struct{ shaCPU, ingest, ingestCPU, dd, ddCPU, ratio []time.Duration }
	rows := map[string]*row{}
	for _, kind := range []string{"random", "mixed"} {
		path := benchImage(t, kind, size)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		r := &row{}
		rows[kind] = r
		for range rounds {
			runtime.GC()
			runtime.LockOSThread()
			c0 := threadCPU()
			h := sha256.New()
			for off := 0; off < len(data); off += FixedChunkSize {
				h.Write(data[off:min(off+FixedChunkSize, len(data))])
			}
			h.Sum(nil)
			shaCPU := threadCPU() - c0
			runtime.UnlockOSThread()
			r.shaCPU = append(r.shaCPU, shaCPU)

			s := newTestStore(t)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			start, c0 := time.Now(), procCPU()
			b, err := s.StartBackup(ctx, GroupRef{Type: TypeVM, ID: "1"}, time.Unix(1_800_000_000, 0), BackupOptions{})
			if err == nil {
				err = b.AddImage(ctx, "disk.img", f, size)
			}
			if err == nil {
				err = b.Finish()
			}
			el, elCPU := time.Since(start), procCPU()-c0
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			r.ingest = append(r.ingest, el)
			r.ingestCPU = append(r.ingestCPU, elCPU)
			// The ratio of this round: a load change between rounds
			// moves both of its terms.
			r.ratio = append(r.ratio, time.Duration(float64(time.Second)*shaCPU.Seconds()/elCPU.Seconds()))
			s.Close()

			out := filepath.Join(t.TempDir(), "dd")
			start, c0 = time.Now(), procCPU()
			o, err := os.Create(out)
			if err != nil {
				t.Fatal(err)
			}
			for off := 0; off < len(data); off += FixedChunkSize {
				if _, err := o.Write(data[off:min(off+FixedChunkSize, len(data))]); err != nil {
					t.Fatal(err)
				}
			}
			if err := o.Sync(); err != nil {
				t.Fatal(err)
			}
			o.Close()
			r.dd = append(r.dd, time.Since(start))
			r.ddCPU = append(r.ddCPU, procCPU()-c0)
			os.Remove(out)
		}
	}
	best := func(d []time.Duration) time.Duration { return slices.Min(d) }
	median := func(d []time.Duration) time.Duration {
		d = slices.Clone(d)
		slices.Sort(d)
		return d[len(d)/2]
	}
	mbps := func(d time.Duration) float64 { return float64(size) / 1e6 / d.Seconds() }
	t.Logf("GOMAXPROCS=%d, %d MiB per kind, %d rounds of SHA-256, ingest and dd in turn; best round (median)", runtime.GOMAXPROCS(0), size>>20, rounds)
	t.Logf("cpu: MB per CPU second (SHA-256: its thread's; ingest, dd: the process's user+sys); wall: MB/s of elapsed time (ingest and dd wait for the disk: their data is synced)")
	t.Logf("| data | SHA-256 cpu MB/s | ingest cpu MB/s | ingest cpu / SHA cpu, per round | ingest wall MB/s | dd+fsync wall MB/s | dd cpu MB/s | ingest wall / dd wall |")
	t.Logf("|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, kind := range []string{"random", "mixed"} {
		r := rows[kind]
		t.Logf("| %s | %.0f (%.0f) | %.0f (%.0f) | %.2f (%.2f) | %.0f (%.0f) | %.0f (%.0f) | %.0f (%.0f) | %.2f |", kind,
			mbps(best(r.shaCPU)), mbps(median(r.shaCPU)), mbps(best(r.ingestCPU)), mbps(median(r.ingestCPU)),
			slices.Max(r.ratio).Seconds(), median(r.ratio).Seconds(), mbps(best(r.ingest)), mbps(median(r.ingest)),
			mbps(best(r.dd)), mbps(median(r.dd)), mbps(best(r.ddCPU)), mbps(median(r.ddCPU)), best(r.dd).Seconds()/best(r.ingest).Seconds())
	}
}
