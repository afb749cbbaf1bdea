package fs

import (
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Metrics receives counts of what the mount serves, for monitoring
// (package metrics implements it). Its methods are called from many
// goroutines at once and must be quick.
type Metrics interface {
	// Read is called after each FUSE read request with the bytes it
	// returned, how long it took and its errno (0 on success).
	Read(bytes int, took time.Duration, errno syscall.Errno)
	// Removal is called after each removal of a snapshot through the
	// mount (rm -r) with its outcome: 0 when it was removed, else the
	// errno rm sees (EPERM for a protected snapshot, EBUSY for a locked
	// one).
	Removal(errno syscall.Errno)
}

// observedFS counts the read requests of a mount at the FUSE boundary,
// whichever node serves them.
type observedFS struct {
	fuse.RawFileSystem
	m Metrics
}

func (o *observedFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	start := time.Now()
	res, st := o.RawFileSystem.Read(cancel, in, buf)
	n := 0
	if st == fuse.OK && res != nil {
		n = res.Size()
	}
	o.m.Read(n, time.Since(start), syscall.Errno(st))
	return res, st
}
