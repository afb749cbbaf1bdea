package lock

import "errors"

// Sentinel errors. A sentinel names the condition; the wrapping error names
// the subject (lock file, group, snapshot).
var (
	// ErrLocked reports a lock that another process, another open file
	// description or, for the process lock, this process already holds in
	// a conflicting mode.
	ErrLocked = errors.New("lock: held by another")
	// ErrStale reports a lock file that was removed or replaced between
	// opening and locking it (the "double stat" check): the object it stood
	// for was destroyed while we waited.
	ErrStale = errors.New("lock: lock file replaced")
	// ErrClosed reports use of a ProcessLocker after Close.
	ErrClosed = errors.New("lock: locker closed")
	// ErrInvalidName reports a namespace component, type, id or backup time
	// that cannot name a lock file safely.
	ErrInvalidName = errors.New("lock: invalid name")
)
