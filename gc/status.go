package gc

import (
	"encoding/json"
	"time"
)

// Status is the outcome of a run. Its JSON form is PBS's `.gc-status`
// (spec §1.6): the tagged fields, in this order, with these names. Fields
// tagged "-" describe the run for callers and are not written.
//
// The bands follow PBS's sweep (spec §6.4): a chunk file whose atime is
// before MinAtime is removed; one before OldestWriter is pending (not
// marked, too young to go); any other is in use. A .bad file counts in the
// byte sums and in RemovedBad or StillBad, never in a chunk count.
type Status struct {
	// UPID is PBS's task id; pbsfs runs no PBS task, so it is null.
	UPID *string `json:"upid"`
	// IndexFileCount counts the index files marked in phase 1.
	IndexFileCount uint64 `json:"index-file-count"`
	// IndexDataBytes sums their logical sizes. Both count each file once
	// per run; PBS counts a file again when a relisting reads it again.
	IndexDataBytes uint64 `json:"index-data-bytes"`
	// DiskBytes and DiskChunks measure the files in use.
	DiskBytes  uint64 `json:"disk-bytes"`
	DiskChunks uint64 `json:"disk-chunks"`
	// RemovedBytes and RemovedChunks measure what was unlinked (in a dry
	// run: what would have been).
	RemovedBytes  uint64 `json:"removed-bytes"`
	RemovedChunks uint64 `json:"removed-chunks"`
	// PendingBytes and PendingChunks measure unmarked files too young to go.
	PendingBytes  uint64 `json:"pending-bytes"`
	PendingChunks uint64 `json:"pending-chunks"`
	// RemovedBad counts .bad files unlinked; StillBad those in the
	// pending band (a .bad copy kept alive by a missing chunk is in use
	// and counted in neither, as in PBS).
	RemovedBad uint64 `json:"removed-bad"`
	StillBad   uint64 `json:"still-bad"`
	// CacheStats counts the digests phase 1 found already touched in this
	// run (hits) and those it touched (misses), as PBS 2025+ reports its
	// LRU cache.
	CacheStats *CacheStats `json:"cache-stats,omitempty"`

	// Start is when phase 1 started (the injected clock).
	Start time.Time `json:"-"`
	// MinAtime is the sweep's cutoff; OldestWriter the start of the oldest
	// active writer (Start when there was none).
	MinAtime     time.Time `json:"-"`
	OldestWriter time.Time `json:"-"`
	// DryRun reports that nothing was removed.
	DryRun bool `json:"-"`
	// MissingChunks counts the referenced chunks that were not found.
	MissingChunks uint64 `json:"-"`
	// S3Objects counts the chunk objects an S3 datastore's phase 2
	// listed, S3DeleteCalls its DeleteObjects requests, and S3Requests
	// sums up the requests of the run.
	S3Objects     uint64 `json:"-"`
	S3DeleteCalls uint64 `json:"-"`
	S3Requests    string `json:"-"`
	// S3DeleteTime sums the times of the DeleteObjects requests (several
	// run at once), S3DeleteWait the time the listing waited for one to
	// finish before it could send the next.
	S3DeleteTime, S3DeleteWait time.Duration `json:"-"`
	// RemovedTemp counts stale temporary chunk files (<digest>.tmp_*)
	// removed; PBS leaves them, pbsfs cleans those older than MinAtime.
	RemovedTemp uint64 `json:"-"`
	// Touches counts the utimensat calls of phase 1 (chunks and .bad copies).
	Touches uint64 `json:"-"`
	// MarkTime and SweepTime are the wall times of the two phases.
	MarkTime, SweepTime time.Duration `json:"-"`
}

// CacheStats is the `cache-stats` object of `.gc-status`.
type CacheStats struct {
	Hits   uint64 `json:"hits"`
	Misses uint64 `json:"misses"`
}

// DedupFactor is index-data-bytes / disk-bytes, 1 when nothing is on disk
// (PBS's "deduplication factor").
func (s Status) DedupFactor() float64 {
	if s.DiskBytes == 0 {
		return 1
	}
	return float64(s.IndexDataBytes) / float64(s.DiskBytes)
}

// AverageChunk is disk-bytes / disk-chunks, 0 when there are no chunks.
func (s Status) AverageChunk() uint64 {
	if s.DiskChunks == 0 {
		return 0
	}
	return s.DiskBytes / s.DiskChunks
}

// MarshalGCStatus returns the single-line `.gc-status` JSON of s.
func (s Status) MarshalGCStatus() ([]byte, error) { return json.Marshal(s) }
