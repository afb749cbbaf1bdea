package fs

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/pbsfs/pbsfs/store"
	"golang.org/x/sys/unix"
)

// TestDropBehindRanges feeds a sequential run of 1 MiB requests that
// come out of order (as the kernel's read-ahead sends them), a seek and a
// reread, and checks what is invalidated: only ranges the run has gone
// dropLag past, aligned, one invalidation at a time, and nothing of a
// range a new run has not read.
func TestDropBehindRanges(t *testing.T) {
	type rng struct{ off, n int64 }
	sent := make(chan rng)
	release := make(chan struct{})
	d := &dropBehind{}
	d.notify = func(off, n int64) {
		sent <- rng{off, n}
		<-release
	}
	const mib = 1 << 20
	// Nothing before the run is dropLag+dropStep long.
	for i := int64(0); i < (dropLag+dropStep)/mib-1; i++ {
		d.read(i*mib, mib)
	}
	select {
	case r := <-sent:
		t.Fatalf("dropped %+v of a run %d MiB long", r, (dropLag+dropStep)/mib-1)
	default:
	}
	// Out of order: the request at 20 MiB before the one at 19 MiB.
	d.read(20*mib, mib)
	r := <-sent
	if r != (rng{0, 5 * mib}) {
		t.Fatalf("first drop %+v, want [0, 5 MiB) (the run's end at 21 MiB less dropLag)", r)
	}
	// While that invalidation is on its way, none other starts.
	d.read(19*mib, mib)
	for i := int64(21); i < 40; i++ {
		d.read(i*mib, mib)
	}
	select {
	case r := <-sent:
		t.Fatalf("second drop %+v while the first was on its way", r)
	default:
	}
	release <- struct{}{}
	// Once it returned, what the run left behind meanwhile is dropped
	// too, from where the first stopped, without waiting for another
	// request (the last requests of a file would leave it undropped).
	if r := <-sent; r != (rng{5 * mib, 19 * mib}) {
		t.Fatalf("catch-up drop %+v, want [5, 24 MiB)", r)
	}
	release <- struct{}{}
	waitIdle(t, d)
	// Caught up: the next request is not dropStep past it.
	d.read(40*mib, mib)
	select {
	case r := <-sent:
		t.Fatalf("dropped %+v less than dropStep past the last drop", r)
	default:
	}
	// A seek far ahead starts a new run there: nothing of it is
	// dropped until it is long enough, and nothing before it.
	for i := int64(100); i < 100+(dropLag+dropStep)/mib-1; i++ {
		d.read(i*mib+4096, mib)
	}
	select {
	case r := <-sent:
		t.Fatalf("dropped %+v right after a seek", r)
	default:
	}
	d.read(120*mib+4096, mib)
	if r := <-sent; r != (rng{100 * mib, 5 * mib}) {
		t.Fatalf("drop of the new run %+v, want [100, 105 MiB)", r)
	}
	release <- struct{}{}
	waitIdle(t, d)
	// A reread of what was dropped is a new run too.
	d.read(0, mib)
	if d.dropped != 0 || d.next != mib {
		t.Fatalf("after a reread from 0: dropped %d, next %d", d.dropped, d.next)
	}
	// A nil dropBehind (Options.DropBehind off) does nothing.
	var off *dropBehind
	off.read(0, mib)
}

// waitIdle waits until d's invalidation has returned.
func waitIdle(t *testing.T, d *dropBehind) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		d.mu.Lock()
		busy := d.busy
		d.mu.Unlock()
		if !busy {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("invalidation still on its way after 10 s")
}

// TestDropBehindMount reads an image and a file of an archive through a
// mount with Options.DropBehind and checks with mincore that the kernel
// kept the file's last pages only; without it, all of them.
func TestDropBehindMount(t *testing.T) {
	s := newStore(t, nil)
	img := randomBytes(3, 40<<20)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "big.bin"), img, 0o644); err != nil {
		t.Fatal(err)
	}
	ref := backup(t, s, snap{g: store.GroupRef{Type: "vm", ID: "100"}, t: t0, image: img, pxarDir: src})
	for _, on := range []bool{true, false} {
		dir, _ := mountStore(t, s, Options{DropBehind: on})
		for _, p := range []string{"drive-scsi0.img", "root.pxar/big.bin"} {
			path := filepath.Join(dir, "vm/100", ref.TimeString(), p)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(f)
			if err != nil || !bytes.Equal(got, img) {
				f.Close()
				t.Fatalf("%s: %d bytes, %v; want the %d bytes backed up", p, len(got), err, len(img))
			}
			// The kept pages: the last dropLag+dropStep at most with
			// DropBehind (the invalidation is asynchronous: wait
			// for it), all without.
			var first, n int
			for deadline := time.Now().Add(10 * time.Second); ; {
				first, n = resident(t, f, len(img))
				if !on || first >= len(img)-dropLag-dropStep || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			f.Close()
			switch {
			case on && (first < len(img)-dropLag-dropStep || n > dropLag+dropStep):
				t.Errorf("%s with DropBehind: %d MiB kept from %d MiB on; want at most the last %d MiB", p, n>>20, first>>20, (dropLag+dropStep)>>20)
			case !on && n != len(img):
				t.Errorf("%s without DropBehind: %d of %d bytes kept", p, n, len(img))
			}
		}
	}
}

// resident returns the offset of the first page of f (size bytes) in the
// page cache and the bytes of it there.
func resident(t *testing.T, f *os.File, size int) (first, n int) {
	t.Helper()
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (size+page-1)/page)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(size), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	first = size
	for i, v := range vec {
		if v&1 != 0 {
			first = min(first, i*page)
			n += min(page, size-i*page)
		}
	}
	return first, n
}
