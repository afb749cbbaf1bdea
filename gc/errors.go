package gc

import "errors"

// Sentinel errors. A sentinel names the condition; the wrapping error
// names the subject (store, group, index file, holder).
var (
	// ErrRunning reports that another collection of the same store holds
	// the GC lock, in this process or another; the error names its pid.
	ErrRunning = errors.New("gc: already running")
	// ErrForeignLock reports a process holding the store's .lock that is
	// not a registered pbsfs writer (a PBS daemon, most likely): its
	// writers are invisible to pbsfs, so the collector refuses to run.
	ErrForeignLock = errors.New("gc: .lock held by a process that is not a pbsfs writer")
	// ErrAtimeCheck reports a file system on which touching a chunk does
	// not visibly move its access time (spec §6.5).
	ErrAtimeCheck = errors.New("gc: access time safety check failed")
	// ErrUnsafeCutoff reports a cutoff shorter than PBS's 24 h 5 min with
	// the atime self-test switched off, or one below MinCutoff.
	ErrUnsafeCutoff = errors.New("gc: unsafe cutoff")
	// ErrRelists reports a group that kept changing under phase 1 even
	// after the collector took its lock (spec §6.3).
	ErrRelists = errors.New("gc: group changed too often while marking")
)
