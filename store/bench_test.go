package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
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
					if err := bk.Finish(ctx); err != nil {
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
	if err := bk.Finish(ctx); err != nil {
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
// mixed data (benchImage, 512 MiB each), pbsfs ingest (AddImage of the
// image file, read with O_DIRECT as a backup reads it, into a store made
// as `pbsfs init` makes one and holding none of the image's chunks, see
// benchStoreDir; synced: chunk batch, syncfs, indexes, manifest) against
// SHA-256 of the same bytes and against dd (the same bytes written to one
// file and fsynced); and ingest of the same file read through the page
// cache (pageCacheFile), as it was read before O_DIRECT reads. They run
// in turn, round after round (PBSFS_BENCH_ROUNDS, default 5), so that a
// change in the machine's load hits all of a round alike; every ratio is
// taken within a round (paired) and the table gives the median of the
// rounds' ratios and their spread [min–max]; MB/s columns are medians
// over the rounds.
//
// What each CPU figure is:
//   - sha: CPU time of the thread that hashes (RUSAGE_THREAD, locked to it).
//   - own: CPU time (user+sys) of this process during the run
//     (RUSAGE_SELF): hashing, chunking, compressing, and the kernel's work
//     done in this process's syscalls (submitting the reads and writes,
//     copying out of or into the page cache where one is used, the part
//     of fsync done in the caller).
//   - kern: the kernel's work not charged to this process: CPU time of
//     every kernel thread (children of kthreadd: the writeback kworkers
//     that syncfs and dirty-page flushing run in, the filesystem's journal
//     thread) plus the machine's irq and softirq time (/proc/stat: the
//     completions of the direct reads and writes among them), from
//     before the run to after it. Another process's writes in the same
//     window count here too: on a shared machine kern is an upper bound.
//   - all = own + kern: what the run cost the machine. The goal
//     ("ingest at least 0.6× SHA-256, the kernel cost of writing chunk
//     files part of the budget") is the column sha/all ≥ 0.6.
//
// Columns: SHA-256 MB per CPU second; ingest MB (of input) per own and per
// all CPU second; dd the same; sha/own and sha/all the paired ratios of
// SHA-256's CPU time to ingest's, and sha/all of the ingest reading
// through the page cache; dd/all the share of ingest's all-CPU
// that dd spent to write the same (uncompressed) bytes; ingest and dd
// wall MB/s (both wait for the disk: their data is synced).
//
// A second table says where ingest's time goes: before each round's
// runs, ingestStages runs every stage of the upload path alone over the
// same chunks on one locked thread (read from the page cache, SHA-256,
// the compressibility probe, zstd, CRC32, writing the chunk files: own
// CPU, and own plus kern), each as MB per CPU second and as a multiple of
// SHA-256's time in that pass; the stages' sum beside ingest's own CPU
// (as a multiple of the same run's SHA-256 time) shows what the pipeline
// itself costs.
func TestIngestTable(t *testing.T) {
	if os.Getenv("PBSFS_BENCH") == "" {
		t.Skip("set PBSFS_BENCH=1")
	}
	const size = 512 << 20
	rounds := 5
	if n, err := strconv.Atoi(os.Getenv("PBSFS_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	kinds := []string{"random", "mixed"}
	if k := os.Getenv("PBSFS_BENCH_KINDS"); k != "" {
		kinds = strings.Split(k, ",")
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
	type cpus struct{ own, kern time.Duration }
	sample := func() cpus { return cpus{procCPU(), kernelCPU(t)} }
	since := func(c0 cpus) cpus {
		c := sample()
		return cpus{c.own - c0.own, c.kern - c0.kern}
	}
	type row struct {
		sha, ingestWall, ddWall []time.Duration
		ingest, dd              []cpus
		shaOwn, shaAll, ddShare []float64
		shaCached               []float64 // sha/all reading the image through the page cache
		stages                  map[string][]time.Duration
	}
	rows := map[string]*row{}
	root := benchStoreDir(t)
	for _, kind := range kinds {
		path := benchImage(t, kind, size)
		if !directReadable(t, filepath.Dir(path)) {
			t.Skipf("%s: no O_DIRECT reads; the table measures a backup reading its image so", filepath.Dir(path))
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		digests := chunkDigests(data)
		r := &row{stages: map[string][]time.Duration{}}
		rows[kind] = r
		for range rounds {
			ingestStages(t, root, path, data, digests, r.stages)
			runtime.GC()
			runtime.LockOSThread()
			c0 := threadCPU()
			h := sha256.New()
			for off := 0; off < len(data); off += FixedChunkSize {
				h.Write(data[off:min(off+FixedChunkSize, len(data))])
			}
			h.Sum(nil)
			sha := threadCPU() - c0
			runtime.UnlockOSThread()
			r.sha = append(r.sha, sha)

			// ingest backs up the image, read by AddImage as it reads
			// a file (O_DIRECT) or, with cached, through the page cache
			// (a source that is not an *os.File).
			ingest := func(cached bool) (time.Duration, cpus) {
				s := openBenchStore(t, root, digests)
				defer s.Close()
				f, err := os.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				var src io.Reader = f
				if cached {
					src = pageCacheFile{f}
				}
				unix.Sync() // nothing of an earlier run left to write back
				start, s0 := time.Now(), sample()
				b, err := s.StartBackup(ctx, GroupRef{Type: TypeVM, ID: "1"}, time.Unix(1_800_000_000, 0), BackupOptions{})
				if err == nil {
					err = b.AddImage(ctx, "disk.img", src, size)
				}
				if err == nil {
					err = b.Finish(ctx)
				}
				el, ic := time.Since(start), since(s0)
				if err != nil {
					t.Fatal(err)
				}
				if n := b.directReads.Load(); (n > 0) == cached {
					t.Fatalf("cached=%v: %d chunks read with O_DIRECT", cached, n)
				}
				return el, ic
			}
			el, ic := ingest(false)
			r.ingestWall = append(r.ingestWall, el)
			r.ingest = append(r.ingest, ic)
			_, cc := ingest(true)
			r.shaCached = append(r.shaCached, sha.Seconds()/(cc.own+cc.kern).Seconds())

			out := filepath.Join(t.TempDir(), "dd")
			unix.Sync()
			start, s0 := time.Now(), sample()
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
			r.ddWall = append(r.ddWall, time.Since(start))
			dc := since(s0)
			r.dd = append(r.dd, dc)
			os.Remove(out)

			r.shaOwn = append(r.shaOwn, sha.Seconds()/ic.own.Seconds())
			r.shaAll = append(r.shaAll, sha.Seconds()/(ic.own+ic.kern).Seconds())
			r.ddShare = append(r.ddShare, (dc.own+dc.kern).Seconds()/(ic.own+ic.kern).Seconds())
		}
	}
	mbps := func(d []time.Duration) float64 {
		d = slices.Clone(d)
		slices.Sort(d)
		return float64(size) / 1e6 / d[len(d)/2].Seconds()
	}
	pick := func(c []cpus, f func(cpus) time.Duration) []time.Duration {
		var d []time.Duration
		for _, x := range c {
			d = append(d, f(x))
		}
		return d
	}
	own := func(c cpus) time.Duration { return c.own }
	all := func(c cpus) time.Duration { return c.own + c.kern }
	ratio := func(v []float64) string {
		v = slices.Clone(v)
		slices.Sort(v)
		return fmt.Sprintf("%.2f [%.2f–%.2f]", v[len(v)/2], v[0], v[len(v)-1])
	}
	t.Logf("GOMAXPROCS=%d, %d MiB per kind, %d rounds of SHA-256, ingest (O_DIRECT reads), ingest (page-cache reads) and dd in turn; MB/s: medians over rounds; ratios: median [min–max] of the rounds' paired ratios", runtime.GOMAXPROCS(0), size>>20, rounds)
	t.Logf("own = the process's user+sys CPU; all = own + kernel threads' CPU + irq/softirq (writeback charged to no process; upper bound on a shared machine)")
	t.Logf("| data | SHA-256 MB/s | ingest own MB/s | ingest all MB/s | sha/own | sha/all (goal ≥ 0.6) | sha/all, page-cache reads | dd own MB/s | dd all MB/s | dd all / ingest all | ingest wall MB/s | dd wall MB/s |")
	t.Logf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, kind := range kinds {
		r := rows[kind]
		t.Logf("| %s | %.0f | %.0f | %.0f | %s | %s | %s | %.0f | %.0f | %s | %.0f | %.0f |", kind,
			mbps(r.sha), mbps(pick(r.ingest, own)), mbps(pick(r.ingest, all)), ratio(r.shaOwn), ratio(r.shaAll), ratio(r.shaCached),
			mbps(pick(r.dd, own)), mbps(pick(r.dd, all)), ratio(r.ddShare), mbps(r.ingestWall), mbps(r.ddWall))
	}
	t.Logf("Where ingest's time goes: each stage of the upload path run alone over the same bytes, one goroutine, MB (of input) per CPU second, medians over rounds; in brackets the stage's share of SHA-256's time (the stages' sum against ingest's own CPU: what is left is the pipeline: goroutines, budget, pool, index)")
	t.Logf("| data | read (page cache) | SHA-256 | probe | zstd (chunks the probe passes) | CRC32 of stored form | write chunk files: own | write: own+kern | sum own (x SHA) | ingest own (x SHA) |")
	t.Logf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, kind := range kinds {
		r := rows[kind]
		sha := median(r.stages["sha"]).Seconds()
		cell := func(name string) string {
			d := median(r.stages[name]).Seconds()
			return fmt.Sprintf("%.0f (%.2f)", float64(size)/1e6/d, d/sha)
		}
		var sum float64
		for _, name := range []string{"read", "sha", "probe", "zstd", "crc", "write"} {
			sum += median(r.stages[name]).Seconds()
		}
		t.Logf("| %s | %s | %s | %s | %s | %s | %s | %s | %.2f | %.2f |", kind, cell("read"), cell("sha"), cell("probe"), cell("zstd"),
			cell("crc"), cell("write"), cell("writeAll"), sum/sha, median(pick(r.ingest, own)).Seconds()/sha)
	}
}

// pageCacheFile is a file as a source AddImage reads at offsets but not
// with O_DIRECT (it is no *os.File): through the page cache.
type pageCacheFile struct{ f *os.File }

func (p pageCacheFile) Read(b []byte) (int, error)              { return p.f.Read(b) }
func (p pageCacheFile) ReadAt(b []byte, off int64) (int, error) { return p.f.ReadAt(b, off) }
func (p pageCacheFile) Seek(off int64, whence int) (int64, error) {
	return p.f.Seek(off, whence)
}

// benchStoreDir returns the root of the datastore TestIngestTable backs
// up into, made as `pbsfs init` makes one: its 65536 chunk directories
// exist before any timed run (as PBS makes them), so ingest pays no mkdir
// per new chunk, as a user's backup into an initialized store does not
// (newTestStore makes them on demand). Making and removing them takes
// long on a busy machine, so the store is made once per test and
// emptied between runs (openBenchStore); PBSFS_BENCH_STORE names a
// directory where it is made once and kept for later runs.
func benchStoreDir(t testing.TB) string {
	t.Helper()
	root := os.Getenv("PBSFS_BENCH_STORE")
	if root == "" {
		root = filepath.Join(t.TempDir(), "ds")
	}
	if _, err := os.Stat(filepath.Join(root, ".chunks")); err == nil {
		return root
	}
	s, err := Create(root, Options{RuntimeDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	return root
}

// openBenchStore removes from the store at root the chunks named by
// digests and the group vm/1, the backups of earlier runs, and opens it.
func openBenchStore(t testing.TB, root string, digests []Digest) *Store {
	t.Helper()
	s, err := Open(root, Options{RuntimeDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, d := range digests {
		if err := os.Remove(s.chunks.Path(d)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(s.Path(GroupRef{Type: TypeVM, ID: "1"}.Dir())); err != nil {
		t.Fatal(err)
	}
	return s
}

// chunkDigests returns the digests of data's fixed-size chunks.
func chunkDigests(data []byte) []Digest {
	var ds []Digest
	for off := 0; off < len(data); off += FixedChunkSize {
		ds = append(ds, sha256.Sum256(data[off:min(off+FixedChunkSize, len(data))]))
	}
	return ds
}

func median(d []time.Duration) time.Duration {
	d = slices.Clone(d)
	slices.Sort(d)
	return d[len(d)/2]
}

// ingestStages runs the stages of a first backup's upload path one by one
// over the image at path (data: its bytes), in fixed chunks as AddImage
// cuts them, on one locked thread, and appends each stage's CPU time to
// stages: "read" (the file read into a chunk buffer, from the page
// cache), "sha" (the digest), "probe" (worthCompressing), "zstd" (the
// zstd encoding of the chunks the probe passes, into a blob), "crc"
// (the CRC32 of the stored form: the zstd frame or the plain data),
// "write" (the blobs inserted into a chunk batch of the store at root,
// emptied of them first, and flushed: this process's CPU) and "writeAll" (the same with the kernel
// threads' and irq time, see kernelCPU).
func ingestStages(t *testing.T, root, path string, data []byte, digests []Digest, stages map[string][]time.Duration) {
	runtime.GC()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	thread := func() time.Duration {
		var ru unix.Rusage
		unix.Getrusage(unix.RUSAGE_THREAD, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	timed := func(name string, f func()) {
		c0 := thread()
		f()
		stages[name] = append(stages[name], thread()-c0)
	}
	s := openBenchStore(t, root, digests)
	defer s.Close()
	var chunks [][]byte
	for off := 0; off < len(data); off += FixedChunkSize {
		chunks = append(chunks, data[off:min(off+FixedChunkSize, len(data))])
	}
	buf := make([]byte, FixedChunkSize)
	timed("read", func() {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for {
			if _, err := io.ReadFull(f, buf); err != nil {
				break
			}
		}
	})
	sums := make([]Digest, len(chunks))
	timed("sha", func() {
		for i, c := range chunks {
			sums[i] = sha256.Sum256(c)
		}
	})
	worth := make([]bool, len(chunks))
	timed("probe", func() {
		for i, c := range chunks {
			worth[i] = s.codec.worthCompressing(c)
		}
	})
	blobs := make([][]byte, len(chunks))
	timed("zstd", func() {
		for i, c := range chunks {
			if worth[i] {
				blobs[i] = s.codec.enc.EncodeAll(c, make([]byte, 0, blobBound(len(c))))
			}
		}
	})
	timed("crc", func() {
		for i, c := range chunks {
			if blobs[i] != nil && len(blobs[i]) < len(c) {
				crc32.ChecksumIEEE(blobs[i])
			} else {
				crc32.ChecksumIEEE(c)
			}
		}
	})
	for i, c := range chunks { // the stored form, not timed
		var err error
		if blobs[i], err = s.codec.AppendEncode(nil, c, worth[i]); err != nil {
			t.Fatal(err)
		}
	}
	unix.Sync()
	k0 := kernelCPU(t)
	timed("write", func() {
		batch := s.chunks.NewBatch(0, 0, SyncFS)
		for i, bl := range blobs {
			if _, err := batch.Insert(context.Background(), digests[i], bl); err != nil {
				t.Fatal(err)
			}
		}
		if err := batch.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	w := stages["write"]
	stages["writeAll"] = append(stages["writeAll"], w[len(w)-1]+kernelCPU(t)-k0)
}

// kernelCPU is the CPU time the kernel spent outside any process so far:
// every kernel thread's (the children of kthreadd, pid 2, and kthreadd
// itself) user+sys plus the machine's irq and softirq time from
// /proc/stat. A kernel thread that exits between two samples takes its
// time with it (kworkers come and go; the error is a few ticks).
func kernelCPU(t testing.TB) time.Duration {
	const tick = 10 * time.Millisecond // USER_HZ = 100 on Linux
	var total int64
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone
		}
		// pid (comm) state ppid ...: comm may hold spaces; fields after ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 || (f[1] != "2" && e.Name() != "2") {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		total += u + s
	}
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(stat), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq ...
	if len(f) > 7 {
		irq, _ := strconv.ParseInt(f[6], 10, 64)
		soft, _ := strconv.ParseInt(f[7], 10, 64)
		total += irq + soft
	}
	return time.Duration(total) * tick
}
