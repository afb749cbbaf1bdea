package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pbsfs/pbsfs/store"
	"github.com/pbsfs/pbsfs/store/lock"
	"golang.org/x/sys/unix"
)

// The collector and the mount keep what `pbsfs status` shows in the
// store's runtime directory, <runtime>/pbsfs/<store>/, every file written
// atomically (temporary file, fsync, rename):
//
//	gc-last-run.json   the last collection that held the GC lock: its pid,
//	                   start, end and outcome (RunRecord); .gc-status,
//	                   PBS's file, has the figures but no times
//	gc-progress.json   the running collection's progress, rewritten every
//	                   second while gc.lock is held (RunProgress)
//	mounts/<pid>.json  each mount serving the store (MountRecord)
//	gc-schedule.json   the scheduled daemon's last run (ScheduleState)
//
// Files of processes that died are recognized (no lock holder, or no such
// pid) and left out.

// RunRecord describes the last collection run that held the GC lock.
type RunRecord struct {
	PID    int       `json:"pid"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	DryRun bool      `json:"dry-run,omitempty"`
	// Result is "ok", "failed" or "stopped" (cancelled, e.g. by SIGTERM).
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
	// MissingChunks counts referenced chunks not found (warnings).
	MissingChunks uint64 `json:"missing-chunks"`
}

// RunProgress is the state of a collection under way.
type RunProgress struct {
	PID        int       `json:"pid"`
	Start      time.Time `json:"start"`
	Updated    time.Time `json:"updated"`
	Phase      string    `json:"phase"`
	IndexFiles int64     `json:"index-files"`
	IndexTotal int64     `json:"index-total"`
	ChunkDirs  int64     `json:"chunk-dirs"`
	Removed    int64     `json:"removed-chunks"`
	RemovedB   int64     `json:"removed-bytes"`
}

// MountRecord describes a mount serving the store.
type MountRecord struct {
	PID        int        `json:"pid"`
	Mountpoint string     `json:"mountpoint"`
	Started    time.Time  `json:"started"`
	GCSchedule string     `json:"gc-schedule,omitempty"`
	GCInterval string     `json:"gc-interval,omitempty"`
	NextGC     *time.Time `json:"next-gc,omitempty"`
	Metrics    string     `json:"metrics,omitempty"`
}

func runtimeDir(s *store.Store) string { return filepath.Join(s.RuntimeDir(), "pbsfs", s.Name()) }

func writeJSON(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return store.WriteFileAtomic(path, b, 0o644)
}

func readJSON(path string, v any) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	return true, nil
}

// recordRun writes gc-last-run.json for a run that held the GC lock.
func (c *Collector) recordRun(start time.Time, st Status, err error) {
	rec := RunRecord{PID: os.Getpid(), Start: start, End: time.Now(), DryRun: c.opts.DryRun, Result: "ok", MissingChunks: st.MissingChunks}
	switch {
	case err == nil:
	case errors.Is(err, context.Canceled):
		rec.Result, rec.Error = "stopped", err.Error()
	default:
		rec.Result, rec.Error = "failed", err.Error()
	}
	if werr := writeJSON(filepath.Join(runtimeDir(c.s), "gc-last-run.json"), rec); werr != nil {
		c.log.Warn("write gc-last-run.json", "err", werr)
	}
}

// publishProgress rewrites gc-progress.json every interval until stop is
// closed, then removes it.
func (c *Collector) publishProgress(start time.Time, every time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	path := filepath.Join(runtimeDir(c.s), "gc-progress.json")
	defer os.Remove(path)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		p := c.Progress()
		writeJSON(path, RunProgress{PID: os.Getpid(), Start: start, Updated: time.Now(), Phase: p.Phase.String(),
			IndexFiles: p.IndexFiles, IndexTotal: p.IndexTotal, ChunkDirs: p.Prefixes, Removed: p.Removed, RemovedB: p.RemovedBytes})
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// mountPath is the record of the mount of process pid.
func mountPath(s *store.Store, pid int) string {
	return filepath.Join(runtimeDir(s), "mounts", strconv.Itoa(pid)+".json")
}

// PublishMount writes the record of this process's mount of s.
func PublishMount(s *store.Store, rec MountRecord) error {
	rec.PID = os.Getpid()
	return writeJSON(mountPath(s, rec.PID), rec)
}

// UnpublishMount removes the record of this process's mount of s.
func UnpublishMount(s *store.Store) error {
	err := os.Remove(mountPath(s, os.Getpid()))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// LastGC is the last collection of a store: PBS's .gc-status and what
// pbsfs recorded of the run.
type LastGC struct {
	// Status holds .gc-status's figures; nil if there is none.
	Status *Status `json:"gc-status,omitempty"`
	// StatusTime is when .gc-status was written.
	StatusTime time.Time `json:"gc-status-time,omitzero"`
	// Run is the last run pbsfs recorded (it may have failed, leaving
	// .gc-status from an earlier one); nil if none.
	Run *RunRecord `json:"run,omitempty"`
}

// StoreStatus is what `pbsfs status` shows.
type StoreStatus struct {
	Store string `json:"store"`
	// StoreNameFrom tells where Store came from (store.Store.NameSource):
	// "datastore.cfg", "path" or "options".
	StoreNameFrom string        `json:"store-name-from"`
	Path          string        `json:"path"`
	LastGC        LastGC        `json:"last-gc"`
	Running       *RunProgress  `json:"running,omitempty"`
	Mounts        []MountRecord `json:"mounts"`
	Writers       []WriterInfo  `json:"writers"`
}

// WriterInfo is a registered writer.
type WriterInfo struct {
	PID   int       `json:"pid"`
	Start time.Time `json:"start"`
}

// ReadStatus gathers the status of s from its files and runtime
// directory.
func ReadStatus(s *store.Store) (StoreStatus, error) {
	out := StoreStatus{Store: s.Name(), StoreNameFrom: s.NameSource(), Path: s.Root(), Mounts: []MountRecord{}, Writers: []WriterInfo{}}
	gcs := filepath.Join(s.Root(), ".gc-status")
	if b, err := os.ReadFile(gcs); err == nil {
		var st Status
		if err := json.Unmarshal(b, &st); err != nil {
			return out, fmt.Errorf("%s: %w", gcs, err)
		}
		out.LastGC.Status = &st
		if fi, err := os.Stat(gcs); err == nil {
			out.LastGC.StatusTime = fi.ModTime()
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return out, err
	}
	var rec RunRecord
	if ok, err := readJSON(filepath.Join(runtimeDir(s), "gc-last-run.json"), &rec); err != nil {
		return out, err
	} else if ok {
		out.LastGC.Run = &rec
	}

	// A collection is running while someone holds gc.lock.
	lockPath := filepath.Join(runtimeDir(s), "gc.lock")
	if holders, err := lock.LockHolders(lockPath); err == nil {
		for _, h := range holders {
			if h.Kind != lock.KindFlock || h.PID <= 0 {
				continue
			}
			var p RunProgress
			ok, _ := readJSON(filepath.Join(runtimeDir(s), "gc-progress.json"), &p)
			if !ok || p.PID != h.PID {
				p = RunProgress{PID: h.PID, Phase: "starting"}
			}
			out.Running = &p
			break
		}
	}

	ents, err := os.ReadDir(filepath.Join(runtimeDir(s), "mounts"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return out, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(strings.TrimSuffix(e.Name(), ".json"))
		if err != nil || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		var m MountRecord
		if ok, err := readJSON(filepath.Join(runtimeDir(s), "mounts", e.Name()), &m); err != nil || !ok {
			continue
		}
		if !alive(pid) {
			continue // a mount that died without cleaning up
		}
		out.Mounts = append(out.Mounts, m)
	}

	ws, err := lock.ListWriters(s.WritersDir())
	if err != nil {
		return out, err
	}
	for _, w := range ws {
		out.Writers = append(out.Writers, WriterInfo{PID: w.PID, Start: w.Start})
	}
	return out, nil
}

// alive reports whether process pid exists.
func alive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
