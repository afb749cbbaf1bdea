package gc

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/store"
	"golang.org/x/sys/unix"
)

// BenchmarkGC runs a dry-run collection (marking for real, sweeping
// without removing, so every iteration does the same work) on a synthetic
// store beside the baseline `find STORE/.chunks -type f | wc -l`. The size
// comes from $PBSFS_GC_BENCH_CHUNKS (default 100000) with one index file
// per 100 chunks; 80% of the chunks are referenced, each by one index,
// and chunk files are empty. It reports utimensat calls per run beside
// the number of distinct referenced chunks.
func BenchmarkGC(b *testing.B) {
	n := 100_000
	if v := os.Getenv("PBSFS_GC_BENCH_CHUNKS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	root := filepath.Join(b.TempDir(), "bench")
	s, err := store.Create(root, store.Options{RuntimeDir: b.TempDir(), LazyChunkDirs: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	referenced := makeSyntheticStore(b, s, n)
	b.Logf("generated %d chunk files and %d index files in %s", n, n/100, time.Since(start).Round(time.Millisecond))

	b.Run("baseline=find", func(b *testing.B) {
		for b.Loop() {
			out, err := exec.Command("sh", "-c", "find '"+s.Chunks().Dir()+"' -type f | wc -l").Output()
			if err != nil {
				b.Fatal(err)
			}
			if got := strings.TrimSpace(string(out)); got != strconv.Itoa(n) {
				b.Fatalf("find counted %s files, want %d", got, n)
			}
		}
	})
	b.Run("gc", func(b *testing.B) {
		c := New(s, Options{DryRun: true, Logger: discardLogger()})
		var st Status
		for b.Loop() {
			if st, err = c.Run(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
		// The atime self-test's zero chunk is one more chunk on disk.
		if st.Touches != uint64(referenced) || st.DiskChunks != uint64(referenced)+1 {
			b.Fatalf("touches %d, in use %d; want %d", st.Touches, st.DiskChunks, referenced)
		}
		b.ReportMetric(float64(st.Touches), "utimensat/op")
		b.ReportMetric(st.MarkTime.Seconds(), "mark-s")
		b.ReportMetric(st.SweepTime.Seconds(), "sweep-s")
		b.ReportMetric(float64(referenced), "chunks-referenced")
	})
}

// makeSyntheticStore fills s with n empty chunk files, ages them three
// days, and writes n/100 dynamic indexes (10 snapshots per group) that
// together refer to 80% of them. It returns the number referenced.
func makeSyntheticStore(b *testing.B, s *store.Store, n int) int {
	digests := make([]store.Digest, n)
	raw := make([]byte, 32*n)
	rand.Read(raw)
	for i := range digests {
		copy(digests[i][:], raw[32*i:])
	}
	old := time.Now().Add(-3 * days)
	ts := []unix.Timespec{unix.NsecToTimespec(old.UnixNano()), unix.NsecToTimespec(old.UnixNano())}
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 2 {
				p := s.Chunks().Path(digests[i])
				fd, err := unix.Open(p, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
				if err == unix.ENOENT {
					os.MkdirAll(filepath.Dir(p), 0o750)
					fd, err = unix.Open(p, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
				}
				if err == nil {
					err = unix.Futimes(fd, []unix.Timeval{unix.NsecToTimeval(ts[0].Nano()), unix.NsecToTimeval(ts[1].Nano())})
					unix.Close(fd)
				}
				if err != nil {
					errc <- fmt.Errorf("%s: %w", p, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		b.Fatal(err)
	default:
	}

	// A template header from the store's own writer; the body is ours.
	tmpl := filepath.Join(b.TempDir(), "t.didx")
	w, err := store.CreateDynamicIndex(tmpl)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		b.Fatal(err)
	}
	header, err := os.ReadFile(tmpl)
	if err != nil {
		b.Fatal(err)
	}
	referenced := n * 8 / 10
	perIndex := 100
	for i := 0; i*perIndex < referenced; i++ {
		ref := store.SnapshotRef{Group: store.GroupRef{Type: store.TypeHost, ID: fmt.Sprint("g", i/10)},
			Time: time.Unix(1_700_000_000+int64(i%10), 0).UTC()}
		dir := s.Path(ref.Dir())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		body := make([]byte, 0, len(header)+40*perIndex)
		body = append(body, header...)
		for j := 0; j < perIndex && i*perIndex+j < referenced; j++ {
			body = binary.LittleEndian.AppendUint64(body, uint64(j+1)*4096)
			body = append(body, digests[i*perIndex+j][:]...)
		}
		if err := os.WriteFile(path.Join(dir, "root.pxar.didx"), body, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return referenced
}
