package pxar

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Linux FS_IOC_FSGETXATTR/FSSETXATTR on struct fsxattr (28 bytes); the
// project id is the u32 at offset 12.
const (
	ioctlFSGetXattr = 0x801c581f // _IOR('X', 31, struct fsxattr)
	ioctlFSSetXattr = 0x401c5820 // _IOW('X', 32, struct fsxattr)
	fsxattrSize     = 28
	fsxattrProjID   = 12
)

func fsxattrIoctl(fd int, req uintptr, b *[fsxattrSize]byte) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(&b[0])))
	if errno != 0 {
		return errno
	}
	return nil
}

// getProjID returns the quota project id of an open file, 0 if none.
func getProjID(fd int) uint64 {
	var b [fsxattrSize]byte
	if fsxattrIoctl(fd, ioctlFSGetXattr, &b) != nil {
		return 0
	}
	return uint64(binary.LittleEndian.Uint32(b[fsxattrProjID:]))
}

// setProjID sets the quota project id of an open file.
func setProjID(fd int, id uint64) error {
	var b [fsxattrSize]byte
	if err := fsxattrIoctl(fd, ioctlFSGetXattr, &b); err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(b[fsxattrProjID:], uint32(id))
	return fsxattrIoctl(fd, ioctlFSSetXattr, &b)
}
