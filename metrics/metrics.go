// Package metrics serves a mount's Prometheus metrics (`pbsfs mount
// --metrics-listen`): its garbage collections, the reads and removals it
// serves, the decoded-chunk cache and what the datastore holds. It uses
// the official Prometheus Go client; names follow Prometheus's
// conventions (pbsfs_ prefix, base units, _total for counters, _seconds
// for times).
//
// The mount feeds it through small hooks: Metrics satisfies fs.Metrics
// (reads, removals), GCRan is the gc.Daemon's Ran callback, and the
// collector's phase, the cache's counters and the store's groups and
// snapshots are read at each scrape.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/pbsfs/pbsfs/gc"
	"github.com/pbsfs/pbsfs/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"
)

// Metrics holds a mount's metrics in their own registry.
type Metrics struct {
	reg *prometheus.Registry

	gcRuns        *prometheus.CounterVec
	gcDuration    *prometheus.HistogramVec
	gcRemoved     *prometheus.CounterVec
	gcRemovedB    prometheus.Counter
	gcLast        *prometheus.GaugeVec
	gcLastSuccess prometheus.Gauge

	reads        prometheus.Counter
	readBytes    prometheus.Counter
	readErrors   *prometheus.CounterVec
	readDuration prometheus.Histogram

	removals *prometheus.CounterVec
}

// New returns metrics with the Go runtime's and the process's collectors
// registered beside pbsfs's own.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.gcRuns = m.counterVec("pbsfs_gc_runs_total",
		"Garbage collections started in the background, by result: success, failed, skipped (another collection held the store), stopped (shutdown).",
		"result", "success", "failed", "skipped", "stopped")
	m.gcDuration = m.histogramVec("pbsfs_gc_duration_seconds",
		"Duration of the phases of successful garbage collections: mark (phase 1) and sweep (phase 2).",
		prometheus.ExponentialBuckets(0.1, 4, 10), "phase") // 0.1 s .. 7.3 h
	m.gcRemoved = m.counterVec("pbsfs_gc_removed_chunks_total",
		"Chunk files removed by garbage collection, by kind: chunk, or bad (a .bad copy).",
		"kind", "chunk", "bad")
	m.gcRemovedB = m.counter("pbsfs_gc_removed_bytes_total", "Bytes of the chunk files removed by garbage collection.")
	m.gcLast = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pbsfs_gc_last_run",
		Help: "Figures of the last successful garbage collection (its .gc-status), by name: index_files, index_data_bytes, marked_chunks, disk_chunks, disk_bytes, pending_chunks, pending_bytes, removed_chunks, removed_bytes, missing_chunks, still_bad.",
	}, []string{"figure"})
	m.gcLastSuccess = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pbsfs_gc_last_success_timestamp_seconds",
		Help: "When the last successful garbage collection started, in seconds since the epoch (0: none yet).",
	})
	m.reg.MustRegister(m.gcLast, m.gcLastSuccess)
	m.reads = m.counter("pbsfs_read_requests_total", "FUSE read requests served.")
	m.readBytes = m.counter("pbsfs_read_bytes_total", "Bytes returned by FUSE read requests.")
	m.readErrors = m.counterVec("pbsfs_read_errors_total",
		"FUSE read requests that failed, by errno name (EIO: bad or missing data).", "errno")
	m.readDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "pbsfs_read_duration_seconds",
		Help:    "Time to serve a FUSE read request.",
		Buckets: prometheus.ExponentialBuckets(10e-6, 4, 10), // 10 µs .. 2.6 s
	})
	m.reg.MustRegister(m.readDuration)
	m.removals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pbsfs_snapshot_removals_total",
		Help: "Snapshot removals through the mount (rm -r), by result (accepted, refused) and reason of a refusal (protected, locked, read_only, permission, error).",
	}, []string{"result", "reason"})
	m.removals.WithLabelValues("accepted", "")
	m.reg.MustRegister(m.removals)
	return m
}

// counter registers and returns a counter.
func (m *Metrics) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	m.reg.MustRegister(c)
	return c
}

// counterVec registers and returns a counter with one label, exported at
// zero for each of values from the start.
func (m *Metrics) counterVec(name, help, label string, values ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
	for _, v := range values {
		c.WithLabelValues(v)
	}
	m.reg.MustRegister(c)
	return c
}

// histogramVec registers and returns a histogram with one label.
func (m *Metrics) histogramVec(name, help string, buckets []float64, label string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, []string{label})
	m.reg.MustRegister(h)
	return h
}

// Registry returns the registry the metrics are in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in Prometheus's exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Read counts a FUSE read request (fs.Metrics).
func (m *Metrics) Read(n int, took time.Duration, errno syscall.Errno) {
	m.reads.Inc()
	m.readDuration.Observe(took.Seconds())
	if errno != 0 {
		m.readErrors.WithLabelValues(unix.ErrnoName(errno)).Inc()
		return
	}
	m.readBytes.Add(float64(n))
}

// Removal counts a snapshot removal through the mount (fs.Metrics).
func (m *Metrics) Removal(errno syscall.Errno) {
	if errno == 0 {
		m.removals.WithLabelValues("accepted", "").Inc()
		return
	}
	reason := "error"
	switch errno {
	case syscall.EPERM:
		reason = "protected"
	case syscall.EBUSY:
		reason = "locked"
	case syscall.EROFS:
		reason = "read_only"
	case syscall.EACCES:
		reason = "permission"
	}
	m.removals.WithLabelValues("refused", reason).Inc()
}

// GCRan records the outcome of a background collection (gc.Daemon.Ran).
func (m *Metrics) GCRan(st gc.Status, err error) {
	switch {
	case err == nil:
	case errors.Is(err, gc.ErrRunning):
		m.gcRuns.WithLabelValues("skipped").Inc()
		return
	case errors.Is(err, context.Canceled):
		m.gcRuns.WithLabelValues("stopped").Inc()
		return
	default:
		m.gcRuns.WithLabelValues("failed").Inc()
		return
	}
	m.gcDuration.WithLabelValues("mark").Observe(st.MarkTime.Seconds())
	m.gcDuration.WithLabelValues("sweep").Observe(st.SweepTime.Seconds())
	if !st.DryRun {
		m.gcRemoved.WithLabelValues("chunk").Add(float64(st.RemovedChunks))
		m.gcRemoved.WithLabelValues("bad").Add(float64(st.RemovedBad))
		m.gcRemovedB.Add(float64(st.RemovedBytes))
	}
	var marked uint64
	if st.CacheStats != nil {
		marked = st.CacheStats.Misses
	}
	for name, v := range map[string]uint64{
		"index_files": st.IndexFileCount, "index_data_bytes": st.IndexDataBytes, "marked_chunks": marked,
		"disk_chunks": st.DiskChunks, "disk_bytes": st.DiskBytes, "pending_chunks": st.PendingChunks,
		"pending_bytes": st.PendingBytes, "removed_chunks": st.RemovedChunks, "removed_bytes": st.RemovedBytes,
		"missing_chunks": st.MissingChunks, "still_bad": st.StillBad,
	} {
		m.gcLast.WithLabelValues(name).Set(float64(v))
	}
	m.gcLastSuccess.Set(float64(st.Start.UnixNano()) / 1e9)
	// Counted last: a scrape that sees the run counted sees its figures
	// (TestMetricsScrape waits for the count, then reads them).
	m.gcRuns.WithLabelValues("success").Inc()
}

// WatchCollector exports the phase and progress of c's runs, read at each
// scrape.
func (m *Metrics) WatchCollector(c *gc.Collector) {
	m.reg.MustRegister(&collectorMetrics{c: c,
		phase: prometheus.NewDesc("pbsfs_gc_phase", "1 for the phase the garbage collector is in: idle, starting, marking, sweeping.", []string{"phase"}, nil),
		index: prometheus.NewDesc("pbsfs_gc_progress_index_files", "Index files marked by the running collection (0 when idle).", nil, nil),
		dirs:  prometheus.NewDesc("pbsfs_gc_progress_chunk_dirs", "Chunk directories swept by the running collection, of 65536.", nil, nil),
	})
}

type collectorMetrics struct {
	c                  *gc.Collector
	phase, index, dirs *prometheus.Desc
}

func (cm *collectorMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- cm.phase
	ch <- cm.index
	ch <- cm.dirs
}

func (cm *collectorMetrics) Collect(ch chan<- prometheus.Metric) {
	p := cm.c.Progress()
	for _, ph := range []gc.Phase{gc.PhaseIdle, gc.PhaseStart, gc.PhaseMark, gc.PhaseSweep} {
		v := 0.0
		if p.Phase == ph {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(cm.phase, prometheus.GaugeValue, v, ph.String())
	}
	var idx, dirs int64
	if p.Phase != gc.PhaseIdle {
		idx, dirs = p.IndexFiles, p.Prefixes
	}
	ch <- prometheus.MustNewConstMetric(cm.index, prometheus.GaugeValue, float64(idx))
	ch <- prometheus.MustNewConstMetric(cm.dirs, prometheus.GaugeValue, float64(dirs))
}

// CacheStats are the counters of a decoded-chunk cache.
type CacheStats struct {
	Hits, Misses, Evictions int64
	// Bytes is what the cache holds now.
	Bytes int64
}

// WatchCache exports the decoded-chunk cache's counters, read with stats
// at each scrape.
func (m *Metrics) WatchCache(stats func() CacheStats) {
	var mu sync.Mutex
	read := func(f func(CacheStats) int64) func() float64 {
		return func() float64 {
			mu.Lock()
			defer mu.Unlock()
			return float64(f(stats()))
		}
	}
	for _, c := range []struct {
		name, help string
		counter    bool
		f          func(CacheStats) int64
	}{
		{"pbsfs_chunk_cache_hits_total", "Decoded-chunk cache lookups that found the chunk.", true, func(s CacheStats) int64 { return s.Hits }},
		{"pbsfs_chunk_cache_misses_total", "Decoded-chunk cache lookups that loaded and decoded the chunk.", true, func(s CacheStats) int64 { return s.Misses }},
		{"pbsfs_chunk_cache_evictions_total", "Chunks evicted from the decoded-chunk cache.", true, func(s CacheStats) int64 { return s.Evictions }},
		{"pbsfs_chunk_cache_bytes", "Bytes of decoded chunks the cache holds.", false, func(s CacheStats) int64 { return s.Bytes }},
	} {
		if c.counter {
			m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help}, read(c.f)))
		} else {
			m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: c.name, Help: c.help}, read(c.f)))
		}
	}
}

// WatchReadAhead exports the count of chunks decoded ahead of readers,
// read with count at each scrape.
func (m *Metrics) WatchReadAhead(count func() int64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "pbsfs_readahead_chunks_total",
		Help: "Chunks decoded in the background ahead of sequential readers.",
	}, func() float64 { return float64(count()) }))
}

// storeCountTTL is how long a count of groups and snapshots is reused.
const storeCountTTL = 30 * time.Second

// WatchStore exports the number of backup groups and snapshots in s,
// counted from the directories at most once per 30 s.
func (m *Metrics) WatchStore(s *store.Store) {
	sm := &storeMetrics{s: s,
		groups: prometheus.NewDesc("pbsfs_groups", "Backup groups in the datastore, in all namespaces.", nil, nil),
		snaps:  prometheus.NewDesc("pbsfs_snapshots", "Snapshot directories in the datastore, in all namespaces.", nil, nil),
	}
	m.reg.MustRegister(sm)
}

type storeMetrics struct {
	s             *store.Store
	groups, snaps *prometheus.Desc

	mu            sync.Mutex
	at            time.Time
	nGroups, nSnp int
}

func (sm *storeMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- sm.groups
	ch <- sm.snaps
}

func (sm *storeMetrics) Collect(ch chan<- prometheus.Metric) {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if time.Since(sm.at) > storeCountTTL {
		sm.count()
	}
	ch <- prometheus.MustNewConstMetric(sm.groups, prometheus.GaugeValue, float64(sm.nGroups))
	ch <- prometheus.MustNewConstMetric(sm.snaps, prometheus.GaugeValue, float64(sm.nSnp))
}

func (sm *storeMetrics) count() {
	nss, _, err := sm.s.Namespaces(context.Background(), "", -1)
	if err != nil {
		return
	}
	groups, snaps := 0, 0
	for _, ns := range nss {
		gs, _, err := sm.s.Groups(ns)
		if err != nil {
			continue
		}
		for _, g := range gs {
			groups++
			ents, err := os.ReadDir(sm.s.Path(g.Dir()))
			if err != nil {
				continue
			}
			for _, e := range ents {
				if _, err := store.ParseBackupTime(e.Name()); err == nil && e.IsDir() {
					snaps++
				}
			}
		}
	}
	sm.nGroups, sm.nSnp, sm.at = groups, snaps, time.Now()
}

// Server serves metrics over HTTP.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Listen starts serving h at addr (host:port; port 0 picks one) under
// /metrics.
func Listen(addr string, h http.Handler) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return &Server{srv: srv, ln: ln}, nil
}

// Addr is the address served.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops serving.
func (s *Server) Close() error { return s.srv.Close() }
