package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"github.com/pbsfs/pbsfs/internal/testutil"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/gc"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"
)

// lockedBuffer is a bytes.Buffer safe for a writer and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// scrape fetches and parses the metrics at url with the Prometheus text
// parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	return fams
}

// value returns the value of the sample of family name whose labels
// include labels (name=value pairs), or -1.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		}
	}
	return -1
}

// TestMetricsScrape mounts with --metrics-listen and a background
// collection, reads a file, removes one snapshot (refused while protected,
// then accepted), and checks the scraped metrics against .gc-status and
// the bytes read.
func TestMetricsScrape(t *testing.T) {
	testutil.RequireFUSE(t)
	dir, flags := newStore(t)
	rt := flags[3]
	src := t.TempDir()
	img := make([]byte, 9<<20+12345)
	rand.Read(img)
	os.WriteFile(filepath.Join(src, "disk.img"), img, 0o644)
	os.WriteFile(filepath.Join(src, "vm.conf"), []byte("memory: 512\n"), 0o644)
	for _, b := range []struct{ when, archive string }{
		{"2026-11-20T10:00:00Z", "drive-scsi0.img:" + filepath.Join(src, "disk.img")},
		{"2026-11-21T10:00:00Z", "qemu-server.conf:" + filepath.Join(src, "vm.conf")},
	} {
		if code, _, errs := cli(t, append([]string{"backup", "--no-progress", "--type", "vm", "--id", "1", "--time", b.when, b.archive}, flags...)...); code != 0 {
			t.Fatalf("backup: %s", errs)
		}
	}
	junk := garbage(t, dir, rt, 20)
	ageTree(t, dir)

	var runs atomic.Int32
	hooks := gc.Hooks{AfterLock: func(ctx context.Context) {
		if runs.Add(1) > 1 {
			<-ctx.Done() // one collection: its figures stay those of .gc-status
		}
	}}
	mnt := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(withGCHooks(ctx, hooks), append([]string{"mount", "--gc-interval", "200ms", "--gc-cutoff", "1m",
			"--metrics-listen", "127.0.0.1:0", dir, mnt}, flags...), &out, &errb)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("mount exited %d\n%s", code, errb.String())
			}
		case <-time.After(20 * time.Second):
			t.Errorf("mount did not stop")
		}
		if isMountPoint(mnt) {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	addr := regexp.MustCompile(`metrics on (http://\S+)`)
	var url string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if m := addr.FindStringSubmatch(out.String()); m != nil && isMountPoint(mnt) {
			url = m[1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mount with metrics did not come up\n%s%s", out.String(), errb.String())
		}
	}

	// Reads.
	got, err := os.ReadFile(filepath.Join(mnt, "vm/1/2026-11-20T10:00:00Z/drive-scsi0.img"))
	if err != nil || !bytes.Equal(got, img) {
		t.Fatalf("read through the mount: %v (%d bytes)", err, len(got))
	}
	// Removals: refused while protected, then accepted.
	snap := "vm/1/2026-11-21T10:00:00Z"
	if code, _, errs := cli(t, append([]string{"protect", snap}, flags...)...); code != 0 {
		t.Fatal(errs)
	}
	if err := os.RemoveAll(filepath.Join(mnt, snap)); err == nil {
		t.Fatal("rm -r of a protected snapshot worked")
	}
	if code, _, errs := cli(t, append([]string{"unprotect", snap}, flags...)...); code != 0 {
		t.Fatal(errs)
	}
	time.Sleep(1100 * time.Millisecond) // the refusal is remembered for the caller a moment
	if err := os.RemoveAll(filepath.Join(mnt, snap)); err != nil {
		t.Fatalf("rm -r: %v", err)
	}

	// Wait for the collection.
	var fams map[string]*dto.MetricFamily
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		fams = scrape(t, url)
		if value(fams, "pbsfs_gc_runs_total", "result", "success") == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no collection in the metrics\n%s", errb.String())
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, ".gc-status"))
	if err != nil {
		t.Fatal(err)
	}
	var st gc.Status
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if st.RemovedChunks < uint64(len(junk)) {
		t.Errorf(".gc-status: removed %d chunks, want at least the %d of garbage", st.RemovedChunks, len(junk))
	}
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"pbsfs_gc_removed_chunks_total", []string{"kind", "chunk"}, float64(st.RemovedChunks)},
		{"pbsfs_gc_removed_bytes_total", nil, float64(st.RemovedBytes)},
		{"pbsfs_gc_last_run", []string{"figure", "pending_chunks"}, float64(st.PendingChunks)},
		{"pbsfs_gc_last_run", []string{"figure", "pending_bytes"}, float64(st.PendingBytes)},
		{"pbsfs_gc_last_run", []string{"figure", "disk_chunks"}, float64(st.DiskChunks)},
		{"pbsfs_gc_last_run", []string{"figure", "disk_bytes"}, float64(st.DiskBytes)},
		{"pbsfs_gc_last_run", []string{"figure", "index_files"}, float64(st.IndexFileCount)},
		{"pbsfs_gc_last_run", []string{"figure", "marked_chunks"}, float64(st.CacheStats.Misses)},
		{"pbsfs_gc_runs_total", []string{"result", "failed"}, 0},
		{"pbsfs_gc_duration_seconds", []string{"phase", "mark"}, 1},
		{"pbsfs_read_bytes_total", nil, float64(len(img))},
		{"pbsfs_read_errors_total", nil, -1}, // no error, no series
		{"pbsfs_snapshot_removals_total", []string{"result", "accepted"}, 1},
		{"pbsfs_groups", nil, 1},
	}
	for _, c := range checks {
		if got := value(fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// rm -r tries the removal more than once (index.json, then the
	// directory); each try is refused.
	if v := value(fams, "pbsfs_snapshot_removals_total", "result", "refused", "reason", "protected"); v < 1 {
		t.Errorf("refused removals of a protected snapshot: %v", v)
	}
	// The decoded-chunk cache and read-ahead: the image is 3 chunks, each
	// decoded once (by the reader or ahead of it).
	if v := value(fams, "pbsfs_chunk_cache_misses_total"); v < 3 {
		t.Errorf("pbsfs_chunk_cache_misses_total = %v, want at least the image's 3 chunks", v)
	}
	if v := value(fams, "pbsfs_chunk_cache_bytes"); v < float64(len(img)) {
		t.Errorf("pbsfs_chunk_cache_bytes = %v, want the image's %d bytes held", v, len(img))
	}
	if v := value(fams, "pbsfs_chunk_cache_hits_total"); v < 0 {
		t.Errorf("pbsfs_chunk_cache_hits_total missing")
	}
	if v := value(fams, "pbsfs_readahead_chunks_total"); v < 0 {
		t.Errorf("pbsfs_readahead_chunks_total missing")
	}
	if v := value(fams, "pbsfs_read_requests_total"); v < 1 {
		t.Errorf("pbsfs_read_requests_total = %v", v)
	}
	if v := value(fams, "pbsfs_gc_last_success_timestamp_seconds"); v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("pbsfs_gc_last_success_timestamp_seconds = %v", v)
	}
	if v := value(fams, "pbsfs_snapshots"); v != 1 && v != 2 {
		t.Errorf("pbsfs_snapshots = %v", v)
	}
	// A sample of the exposition, for the record.
	var sample bytes.Buffer
	resp, err := http.Get(url)
	if err == nil {
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		resp.Body.Close()
		for _, line := range bytes.Split(buf.Bytes(), []byte("\n")) {
			if bytes.HasPrefix(line, []byte("pbsfs_")) {
				fmt.Fprintf(&sample, "%s\n", line)
			}
		}
		t.Logf("scrape:\n%s", sample.String())
	}
}
