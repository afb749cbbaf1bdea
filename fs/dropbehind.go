package fs

import (
	"sync"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
)

// dropBehind has the kernel drop the pages of an open file that a
// sequential reader has left behind (Options.DropBehind): every dropStep
// bytes that a run of sequential requests has gone past dropLag behind
// its end are invalidated (FUSE_NOTIFY_INVAL_INODE with a range), so a
// file streamed once holds dropLag of the page cache, not its size, and
// the kernel takes the pages of the next requests from the ones just
// freed.
//
// Why: the kernel copies every byte of a reply into a page-cache folio of
// the file. Folios of memory that was free for long cost far more to
// fill than the copy itself on virtual machines that hand free memory
// back to the host (virtio-balloon free page reporting): the first touch
// of such a page faults on the host. Measured on one (2 cores, 24 GiB):
// 512 MiB of huge pages touched again within 50 ms of being freed took
// 0.3-0.5 µs per 4 KiB, after 3 s free 3-27 µs; a cold cat of a 1 GiB
// image from an S3 bucket through the mount spent two thirds of the
// mount's CPU in that copy (perf: memcpy under fuse_copy_folio), 3-4 s
// per GiB, against 3.7 % for a store on disk whose file pages had just
// been dropped. A bucket's reader streams images and large files once
// (a restore, a copy); its pages would be fetched again from the chunk
// cache or the bucket if read again.
//
// Requests of one run come out of order (the kernel's read-ahead sends
// several at once): one that starts within dropNear of the run's end
// continues it; any other starts a new run there.
type dropBehind struct {
	ino *fusefs.Inode
	// notify sends the invalidation (ino.NotifyContent; tests replace
	// it).
	notify func(off, n int64)

	mu      sync.Mutex
	next    int64 // end of the run's furthest request
	dropped int64 // start of what the run has not dropped yet
	busy    bool  // an invalidation is on its way
}

const (
	// dropLag is how far behind a run's end its pages are kept: the
	// reader is behind the kernel's read-ahead (1 MiB windows, two in
	// flight), and a reader a little behind another one of the same
	// file finds the pages.
	dropLag = 16 << 20
	// dropStep is the least range invalidated at once (one
	// notification, a few per GiB).
	dropStep = 4 << 20
	// dropNear: a request starting this near a run's end continues it.
	dropNear = 8 << 20
	// dropAlign aligns the ranges (64 KiB pages, large folios).
	dropAlign = 1 << 20
)

// newDropBehind returns the drop-behind state of one open file of node
// ino, or nil (nothing dropped) when off.
func newDropBehind(on bool, ino *fusefs.Inode) *dropBehind {
	if !on {
		return nil
	}
	d := &dropBehind{ino: ino}
	d.notify = func(off, n int64) { d.ino.NotifyContent(off, n) }
	return d
}

// read records a request of n bytes at file offset off that was answered,
// and drops what the run left far enough behind. The invalidation runs
// on a goroutine of its own: the kernel locks each page it drops, and a
// page under a read of the same file waits for that read's reply.
func (d *dropBehind) read(off, n int64) {
	if d == nil || n <= 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if off < d.dropped || off > d.next+dropNear {
		// A new run (a seek, or a reread of what was dropped).
		d.dropped = off / dropAlign * dropAlign
		d.next = off + n
		return
	}
	d.next = max(d.next, off+n)
	end := (d.next - dropLag) / dropAlign * dropAlign
	if d.busy || end-d.dropped < dropStep {
		return
	}
	from := d.dropped
	d.dropped, d.busy = end, true
	go d.drain(from, end)
}

// drain invalidates [from, end), then what the run left behind while
// that was on its way (requests then arrive without starting one: the
// last ones of a file would otherwise never be dropped), until it has
// caught up.
func (d *dropBehind) drain(from, end int64) {
	for {
		d.notify(from, end-from)
		d.mu.Lock()
		next := (d.next - dropLag) / dropAlign * dropAlign
		if next-d.dropped < dropStep {
			d.busy = false
			d.mu.Unlock()
			return
		}
		from, end = d.dropped, next
		d.dropped = next
		d.mu.Unlock()
	}
}
