package lock

// Prefix-directory locks (shared/design/gc-safety.md, Hazard 2). The sweep
// of a garbage collection holds a chunk prefix directory (.chunks/XXXX)
// exclusively while it stats, judges and unlinks the chunks in it; a
// writer holds it shared around "exists? then touch, else write a temp file
// and rename". PBS does the same with an in-process mutex; this lock also
// works across processes. Each call opens the directory afresh, so each
// lock is its own open file description and goroutines of one process
// exclude each other too.

// LockPrefixDir flocks the directory at path, shared or exclusive, waiting
// as long as it takes. A waiting call occupies an OS thread.
func LockPrefixDir(path string, exclusive bool) (*FileLock, error) {
	return lockDirectory(prefixSubject, path, exclusive, true)
}

// TryLockPrefixDir is LockPrefixDir without waiting: a busy directory
// returns an error wrapping ErrLocked.
func TryLockPrefixDir(path string, exclusive bool) (*FileLock, error) {
	return lockDirectory(prefixSubject, path, exclusive, false)
}

// prefixSubject names the lock in errors; lockDirectory adds the path.
const prefixSubject = "chunk directory"
