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
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
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
// mixed data, pbsfs ingest MB/s against SHA-256 of the same bytes and
// against dd (the same bytes written to one file and fsynced), measured
// alternately in the same run, best of three rounds each.
func TestIngestTable(t *testing.T) {
	if os.Getenv("PBSFS_BENCH") == "" {
		t.Skip("set PBSFS_BENCH=1")
	}
	const size = 512 << 20
	ctx := context.Background()
	type row struct{ sha, ingest, ingestCPU, dd, ddCPU time.Duration }
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	rows := map[string]*row{}
	for _, kind := range []string{"random", "mixed"} {
		path := benchImage(t, kind, size)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		r := &row{sha: time.Hour, ingest: time.Hour, ingestCPU: time.Hour, dd: time.Hour, ddCPU: time.Hour}
		rows[kind] = r
		for round := 0; round < 3; round++ {
			start := time.Now()
			h := sha256.New()
			for off := 0; off < len(data); off += FixedChunkSize {
				h.Write(data[off:min(off+FixedChunkSize, len(data))])
			}
			h.Sum(nil)
			r.sha = min(r.sha, time.Since(start))

			s := newTestStore(t)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			start, c0 := time.Now(), cpu()
			b, err := s.StartBackup(ctx, GroupRef{Type: TypeVM, ID: "1"}, time.Unix(1_800_000_000, 0), BackupOptions{})
			if err == nil {
				err = b.AddImage(ctx, "disk.img", f, size)
			}
			if err == nil {
				err = b.Finish()
			}
			el, elCPU := time.Since(start), cpu()-c0
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			r.ingest = min(r.ingest, el)
			r.ingestCPU = min(r.ingestCPU, elCPU)
			s.Close()

			out := filepath.Join(t.TempDir(), "dd")
			start, c0 = time.Now(), cpu()
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
			r.dd = min(r.dd, time.Since(start))
			r.ddCPU = min(r.ddCPU, cpu()-c0)
			os.Remove(out)
		}
	}
	mbps := func(d time.Duration) float64 { return float64(size) / 1e6 / d.Seconds() }
	t.Logf("GOMAXPROCS=%d, %d MiB per kind, best of 3 rounds measured alternately", runtime.GOMAXPROCS(0), size>>20)
	t.Logf("wall: MB/s of elapsed time (ingest and dd wait for the disk: their data is synced); cpu: MB per CPU second of this process (user+sys)")
	t.Logf("| data | SHA-256 MB/s | ingest wall MB/s | ingest cpu MB/s | ingest cpu / SHA | dd+fsync wall MB/s | dd cpu MB/s | ingest wall / dd wall |")
	t.Logf("|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, kind := range []string{"random", "mixed"} {
		r := rows[kind]
		t.Logf("| %s | %.0f | %.0f | %.0f | %.2f | %.0f | %.0f | %.2f |", kind, mbps(r.sha), mbps(r.ingest), mbps(r.ingestCPU),
			r.sha.Seconds()/r.ingestCPU.Seconds(), mbps(r.dd), mbps(r.ddCPU), r.dd.Seconds()/r.ingest.Seconds())
	}
}
