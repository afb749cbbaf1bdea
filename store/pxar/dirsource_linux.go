package pxar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// DirSource is a Source over a directory of the live file system. It is
// not safe for concurrent use; call Close when done with it. It
// reads what the PBS client reads: stat, symlink targets, device numbers,
// and for regular files and directories the xattrs user.* and trusted.*,
// security.capability (as FCAPS), POSIX ACLs and chattr flags.
type DirSource struct {
	// Root is the directory to archive.
	Root string
	// SkipXattrs leaves out xattrs, fcaps and ACLs.
	SkipXattrs bool
	// SkipFlags leaves out chattr flags and quota project ids (saves an
	// open per directory).
	SkipFlags bool

	// pending is the regular file Lstat opened to read its flags, handed
	// out by the next Open of the same path, so a file is opened once.
	pending     *os.File
	pendingPath string
}

// CreateFromDir archives the directory tree at root into w like the PBS
// client (see Create and DirSource).
func CreateFromDir(ctx context.Context, root string, w *Writer, opts CreateOptions) error {
	src := &DirSource{Root: root}
	defer src.Close()
	return Create(ctx, src, w, opts)
}

func (s *DirSource) full(p string) string {
	if p == "" {
		return s.Root
	}
	return s.Root + "/" + p
}

// Lstat implements Source.
func (s *DirSource) Lstat(p string) (*SourceInfo, error) {
	full := s.full(p)
	var st unix.Stat_t
	if err := unix.Lstat(full, &st); err != nil {
		return nil, &os.PathError{Op: "lstat", Path: full, Err: err}
	}
	info := &SourceInfo{
		Metadata: Metadata{
			Mode:  uint64(st.Mode),
			UID:   st.Uid,
			GID:   st.Gid,
			Mtime: Timestamp{Secs: st.Mtim.Sec, Nanos: uint32(st.Mtim.Nsec)},
		},
		Dev: st.Dev, Ino: st.Ino, Nlink: uint64(st.Nlink),
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		info.Kind = KindDir
	case unix.S_IFREG:
		info.Kind = KindFile
		info.Size = uint64(st.Size)
	case unix.S_IFLNK:
		info.Kind = KindSymlink
		t, err := os.Readlink(full)
		if err != nil {
			return nil, err
		}
		info.LinkTarget = t
	case unix.S_IFCHR, unix.S_IFBLK:
		info.Kind = KindCharDev
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			info.Kind = KindBlockDev
		}
		info.DevMajor, info.DevMinor = uint64(unix.Major(st.Rdev)), uint64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		info.Kind = KindFifo
	case unix.S_IFSOCK:
		info.Kind = KindSocket
	default:
		return nil, fmt.Errorf("%s: unknown file type %o", full, st.Mode)
	}
	if info.Kind == KindDir || info.Kind == KindFile {
		if !s.SkipXattrs {
			if err := readXattrs(full, &info.Metadata); err != nil {
				return nil, err
			}
		}
		if !s.SkipFlags {
			s.Close()
			fd, err := unix.Open(full, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
			if err == nil {
				info.Flags, info.QuotaProjID = readFileAttrs(fd)
				var fst unix.Stat_t
				if info.Kind == KindFile && unix.Fstat(fd, &fst) == nil && fst.Dev == st.Dev && fst.Ino == st.Ino {
					s.pending, s.pendingPath = os.NewFile(uintptr(fd), full), p
				} else {
					unix.Close(fd)
				}
			}
		}
	}
	return info, nil
}

// Close releases a file Lstat kept open for Open.
func (s *DirSource) Close() error {
	if s.pending == nil {
		return nil
	}
	err := s.pending.Close()
	s.pending, s.pendingPath = nil, ""
	return err
}

// readFileAttrs returns the PBS flags of an open file's chattr attributes (0
// where the file system has none) and its quota project id (nil if 0 or
// unsupported, as the PBS client writes it only then).
func readFileAttrs(fd int) (uint64, *uint64) {
	var flags uint64
	if fl, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS); err == nil {
		flags = flagsFromChattr(uint64(fl))
	}
	var projID *uint64
	if id := getProjID(fd); id != 0 {
		projID = &id
	}
	return flags, projID
}

// listXattrs returns the xattr names of full in listxattr order.
func listXattrs(full string) ([]string, error) {
	for range 8 {
		n, err := unix.Llistxattr(full, nil)
		if err != nil || n == 0 {
			if errors.Is(err, unix.ENOTSUP) {
				err = nil
			}
			return nil, err
		}
		buf := make([]byte, n)
		n, err = unix.Llistxattr(full, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var names []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				names = append(names, s)
			}
		}
		return names, nil
	}
	return nil, unix.ERANGE
}

// getXattr returns one xattr value, nil if it vanished.
func getXattr(full, name string) ([]byte, error) {
	for range 8 {
		n, err := unix.Lgetxattr(full, name, nil)
		if err != nil {
			if errors.Is(err, unix.ENODATA) {
				return nil, nil
			}
			return nil, err
		}
		buf := make([]byte, n)
		n, err = unix.Lgetxattr(full, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			if errors.Is(err, unix.ENODATA) {
				return nil, nil
			}
			return nil, err
		}
		return buf[:n], nil
	}
	return nil, unix.ERANGE
}

// readXattrs fills the xattrs, fcaps and ACLs of md as the PBS client does
// (spec §5.13, §5.14).
func readXattrs(full string, md *Metadata) error {
	names, err := listXattrs(full)
	if err != nil {
		return &os.PathError{Op: "listxattr", Path: full, Err: err}
	}
	for _, name := range names {
		isACL := name == aclXattrAccess || name == aclXattrDefault
		keep := name == "security.capability" || isACL ||
			(len(name) <= maxXattrName && (strings.HasPrefix(name, "user.") || strings.HasPrefix(name, "trusted.")))
		if !keep {
			continue
		}
		v, err := getXattr(full, name)
		if err != nil {
			return &os.PathError{Op: "getxattr " + name, Path: full, Err: err}
		}
		if v == nil {
			continue
		}
		switch {
		case name == "security.capability":
			md.FCaps = v
		case isACL:
			if err := parseACLXattr(v, name == aclXattrDefault, &md.ACL); err != nil {
				return fmt.Errorf("%s: %w", full, err)
			}
		default:
			md.Xattrs = append(md.Xattrs, Xattr{Name: name, Value: v})
		}
	}
	return nil
}

// ReadDirNames implements Source.
func (s *DirSource) ReadDirNames(p string) ([]string, error) {
	f, err := os.Open(s.full(p))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// Open implements Source.
func (s *DirSource) Open(p string) (io.ReadCloser, error) {
	if s.pending != nil && s.pendingPath == p {
		f := s.pending
		s.pending, s.pendingPath = nil, ""
		return f, nil
	}
	return os.OpenFile(s.full(p), os.O_RDONLY|unix.O_NOFOLLOW, 0)
}
