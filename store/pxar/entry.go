package pxar

import (
	"io/fs"
	"time"
)

// Kind is the type of an archive entry.
type Kind uint8

// Entry kinds. The item that ends an entry decides its kind (spec §4.1).
const (
	KindDir      Kind = iota + 1 // directory
	KindFile                     // regular file (PAYLOAD or PAYLOAD_REF)
	KindSymlink                  // symbolic link (SYMLINK)
	KindHardlink                 // hard link to an earlier file (HARDLINK, no ENTRY)
	KindCharDev                  // character device (DEVICE, mode S_IFCHR)
	KindBlockDev                 // block device (DEVICE, mode S_IFBLK)
	KindFifo                     // named pipe, no body
	KindSocket                   // socket, no body
)

// String returns a lower-case name for k ("directory", "file", ...).
func (k Kind) String() string {
	switch k {
	case KindDir:
		return "directory"
	case KindFile:
		return "file"
	case KindSymlink:
		return "symlink"
	case KindHardlink:
		return "hardlink"
	case KindCharDev:
		return "chardev"
	case KindBlockDev:
		return "blockdev"
	case KindFifo:
		return "fifo"
	case KindSocket:
		return "socket"
	}
	return "unknown"
}

// Timestamp is an ENTRY mtime: seconds since the epoch (may be negative)
// and non-negative nanoseconds counted forward from Secs (spec §5.3).
type Timestamp struct {
	Secs  int64
	Nanos uint32
}

// Time returns t as a time.Time.
func (t Timestamp) Time() time.Time { return time.Unix(t.Secs, int64(t.Nanos)) }

// TimestampOf converts a time.Time to the archive form.
func TimestampOf(t time.Time) Timestamp {
	return Timestamp{Secs: t.Unix(), Nanos: uint32(t.Nanosecond())}
}

// Xattr is one extended attribute. Name and Value are raw bytes.
type Xattr struct {
	Name  string
	Value []byte
}

// ACLEntry is a named user or group entry of a POSIX ACL. Perms is a bit
// set of READ 4, WRITE 2, EXECUTE 1.
type ACLEntry struct {
	ID    uint64
	Perms uint64
}

// ACLDefault holds the base entries of a directory's default ACL. A field
// that is not set is ACLNoMask.
type ACLDefault struct {
	UserObj, GroupObj, Other, Mask uint64
}

// ACL is the POSIX ACL data of an entry as the archive stores it
// (spec §5.14). The owner and other entries of the access ACL live in the
// mode bits; GroupObj is set only when the access ACL has a mask.
type ACL struct {
	Users         []ACLEntry
	Groups        []ACLEntry
	GroupObj      *uint64
	Default       *ACLDefault
	DefaultUsers  []ACLEntry
	DefaultGroups []ACLEntry
}

// IsEmpty reports whether a carries no ACL items.
func (a *ACL) IsEmpty() bool {
	return len(a.Users) == 0 && len(a.Groups) == 0 && a.GroupObj == nil &&
		a.Default == nil && len(a.DefaultUsers) == 0 && len(a.DefaultGroups) == 0
}

// Metadata is what an ENTRY item and its attribute items describe.
type Metadata struct {
	Mode  uint64 // full st_mode: file type and permission bits
	Flags uint64 // PBS chattr/FAT feature bits (spec §5.6)
	UID   uint32
	GID   uint32
	Mtime Timestamp

	Xattrs      []Xattr // in stored (listxattr) order
	ACL         ACL
	FCaps       []byte  // raw security.capability, nil if absent
	QuotaProjID *uint64 // nil if absent
}

// Entry is one archive member as the Decoder or the Archive reports it.
// Names, paths and link targets are raw bytes held in strings.
type Entry struct {
	Metadata

	// Path is the entry's path from the archive root with a leading "/";
	// the root is "/".
	Path string
	Kind Kind

	// Size is the content size of a regular file.
	Size uint64
	// LinkTarget is a symlink's target, or a hardlink's stored target path
	// (relative to the root, no leading "/").
	LinkTarget string
	// HardlinkOffset is the absolute position of a hardlink target's
	// FILENAME header.
	HardlinkOffset int64
	// DevMajor and DevMinor describe a device.
	DevMajor, DevMinor uint64

	// FilenameOffset is the position of the entry's FILENAME header, -1
	// for the root.
	FilenameOffset int64
	// Offset is the position of the entry's ENTRY (or HARDLINK) item, and
	// its identity: two entries of one archive share an Offset only if
	// they are the same item. The root's Offset is where its ENTRY starts.
	Offset int64
	// End is where the entry's range ends as the goodbye table states it
	// (random access only; for files of split archives an upper bound).
	End int64
	// ContentOffset is the position in the metadata stream of the PAYLOAD
	// content (plain archives) or of the PAYLOAD_REF content (split).
	ContentOffset int64
	// PayloadOffset is the PAYLOAD header position in the payload stream
	// (split archives), -1 otherwise.
	PayloadOffset int64

	// goodbyeEnd is where a directory's goodbye table ends; attrEnd is
	// where its attributes end and its children start (-1 if unknown).
	goodbyeEnd int64
	attrEnd    int64
}

// Name returns the last element of e.Path ("/" for the root).
func (e *Entry) Name() string {
	for i := len(e.Path) - 1; i >= 0; i-- {
		if e.Path[i] == '/' {
			if i == len(e.Path)-1 {
				return "/"
			}
			return e.Path[i+1:]
		}
	}
	return e.Path
}

// IsDir reports whether e is a directory.
func (e *Entry) IsDir() bool { return e.Kind == KindDir }

// FileMode converts the stored mode to an fs.FileMode, the type taken from Kind.
func (e *Entry) FileMode() fs.FileMode {
	m := fs.FileMode(e.Mode & 0o777)
	if e.Mode&modeISUID != 0 {
		m |= fs.ModeSetuid
	}
	if e.Mode&modeISGID != 0 {
		m |= fs.ModeSetgid
	}
	if e.Mode&modeISVTX != 0 {
		m |= fs.ModeSticky
	}
	switch e.Kind {
	case KindDir:
		m |= fs.ModeDir
	case KindSymlink:
		m |= fs.ModeSymlink
	case KindCharDev:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case KindBlockDev:
		m |= fs.ModeDevice
	case KindFifo:
		m |= fs.ModeNamedPipe
	case KindSocket:
		m |= fs.ModeSocket
	case KindHardlink:
		m |= fs.ModeIrregular
	}
	return m
}

// Rdev returns the Linux dev_t of a device entry (glibc makedev).
func (e *Entry) Rdev() uint64 {
	ma, mi := e.DevMajor, e.DevMinor
	return (ma&0xfff)<<8 | (ma&^0xfff)<<32 | mi&0xff | (mi&^0xff)<<12
}

// kindFromMode returns the kind of an entry without body from its mode.
func kindFromMode(mode uint64) Kind {
	switch mode & modeIFMT {
	case modeIFIFO:
		return KindFifo
	case modeIFSOCK:
		return KindSocket
	}
	return KindDir
}
