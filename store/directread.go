package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Images read with O_DIRECT.
//
// A backup reads each byte of an image once. Read through the page cache,
// every byte costs the kernel a copy into the worker's buffer (and, for
// an image not cached, a page of cache filled by the device and later
// reclaimed, pushing out what the machine had cached); read with
// O_DIRECT, the device fills the worker's buffer and the CPU does
// nothing. On the 1-core ingest test that copy was 0.1-0.15× the
// SHA-256 of the same bytes. Proxmox VE's own VM backups read disks
// this way (QEMU's default cache mode for disks, cache=none, is
// O_DIRECT). Dirty cached pages of the range are written back by the
// kernel before a direct read, so the bytes read are the file's current
// ones, as with a buffered read.
//
// A worker reads a chunk with O_DIRECT into its buffer directAlign bytes
// past the start (address, length and offset aligned). It holds its
// compute token while it waits for the device, as it does for a buffered
// read, so as many reads are in flight as before (one per CPU): letting
// other workers take the token during the read doubled the context
// switches of a 1-core backup of a 512 MiB image (1,565 → 3,065) and
// cost 5-10 % more CPU, for wall times within the noise on the test
// machine's disk. On a device slow to answer (a network block device, a
// disk that seeks) more reads in flight might pay; the kernel's
// readahead, which a buffered read of a cold file had, a direct read has
// not. A chunk stored uncompressed is moved down to the blob's
// place (chunkHeadroom) before its header is written, a copy in memory
// that costs less than the copy out of the page cache it replaces.
//
// Sources that are not regular files or block devices (pipes), offsets
// that are not aligned, and file systems or buffers that refuse O_DIRECT
// are read through the page cache, as before.

// openDirect opens src a second time with O_DIRECT (through
// /proc/self/fd, so a file since renamed or unlinked is still the one
// read) for reading its image at base. It returns nil when src cannot be
// read so: not a regular file or block device, base not aligned, or
// O_DIRECT refused.
func openDirect(src io.ReaderAt, base int64) *os.File {
	f, ok := src.(*os.File)
	if !ok || base%directAlign != 0 {
		return nil
	}
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	if m := fi.Mode(); !m.IsRegular() && (m&os.ModeDevice == 0 || m&os.ModeCharDevice != 0) {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	fd := -1
	cerr := rc.Control(func(s uintptr) {
		fd, err = unix.Open("/proc/self/fd/"+strconv.Itoa(int(s)), unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	})
	if cerr != nil || err != nil {
		return nil
	}
	d := os.NewFile(uintptr(fd), f.Name())
	if di, err := d.Stat(); err != nil || !os.SameFile(fi, di) {
		d.Close()
		return nil
	}
	return d
}

// alignUp returns n rounded up to directAlign.
func alignUp(n int) int { return (n + directAlign - 1) &^ (directAlign - 1) }

// readDirect reads the n bytes at off of the uploader's direct source
// into a new buffer for job: job.data starts directAlign bytes into
// job.buf. It returns false, holding no buffer, when the read cannot be
// direct (an unaligned buffer, or the file system refused it: reads are
// buffered from then on); the caller then reads through the page cache.
func (u *uploader) readDirect(job *upJob, off int64, n int) (bool, error) {
	rn := alignUp(n)
	buf := u.b.getBuf(directAlign + rn)
	if uintptr(unsafe.Pointer(unsafe.SliceData(buf)))%directAlign != 0 {
		u.b.putBuf(buf) // this buffer only: the next may be aligned
		return false, nil
	}
	// The last chunk of a source whose size is not aligned reads past its
	// end: the short read gives what there is (a file system may answer
	// the read after it, at the unaligned end, with EINVAL).
	k, err := u.direct.ReadAt(buf[directAlign:directAlign+rn], off)
	if k < n && errors.Is(err, syscall.EINVAL) {
		u.b.putBuf(buf)
		u.noDirect.Store(true)
		return false, nil
	}
	if k < n {
		u.b.putBuf(buf)
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return false, fmt.Errorf("read at %d: %w", off, err)
	}
	job.buf = buf[:directAlign+rn]
	job.data = buf[directAlign : directAlign+n]
	u.b.directReads.Add(1)
	return true, nil
}

// inPlaceBlob returns job's data as an uncompressed blob built in its
// buffer, the header in the chunkHeadroom bytes before the data: data
// read elsewhere in the buffer (readDirect) is moved there first.
func inPlaceBlob(job *upJob, crc uint32) []byte {
	n := len(job.data)
	if unsafe.SliceData(job.data) != unsafe.SliceData(job.buf[chunkHeadroom:]) {
		copy(job.buf[chunkHeadroom:chunkHeadroom+n], job.data)
		job.data = job.buf[chunkHeadroom : chunkHeadroom+n]
	}
	return putUncompressedHeader(job.buf[:chunkHeadroom+n], crc)
}
