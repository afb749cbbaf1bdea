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

// DirSource is a Source over a directory of the live file system. It
// reads what the PBS client reads: stat, symlink targets, device numbers,
// and for regular files and directories the xattrs user.* and trusted.*,
// security.capability (as FCAPS), POSIX ACLs, chattr flags and quota
// project ids.
//
// Every entry is reached relative to its parent directory's descriptor,
// opened one element at a time without following symlinks, so a directory
// replaced by a symlink during the backup cannot lead outside Root. A
// DirSource is not safe for concurrent use; Close it when done.
type DirSource struct {
	// Root is the directory to archive (a symlink here is followed).
	Root string
	// SkipXattrs leaves out xattrs, fcaps and ACLs.
	SkipXattrs bool
	// SkipFlags leaves out chattr flags and quota project ids.
	SkipFlags bool
	// OneFileSystem stops at mount points, as the PBS client does by
	// default: a directory on another device than Root is archived empty.
	OneFileSystem bool

	// dirs is the chain of open directories from the root down to the
	// directory last used, with their paths ("" is the root).
	dirs []openFd
	// pending is the regular file Lstat opened to read its attributes,
	// handed out by the next Open of the same path, so a file is opened
	// once.
	pending     *fdFile
	pendingPath string
}

type openFd struct {
	path string
	fd   int
}

// CreateFromDir archives the directory tree at root into w like the PBS
// client (see Create and DirSource).
func CreateFromDir(ctx context.Context, root string, w *Writer, opts CreateOptions) error {
	src := &DirSource{Root: root}
	defer src.Close()
	return Create(ctx, src, w, opts)
}

// Close releases the descriptors the DirSource holds.
func (s *DirSource) Close() error {
	s.dropPending()
	for _, d := range s.dirs {
		unix.Close(d.fd)
	}
	s.dirs = nil
	return nil
}

func (s *DirSource) dropPending() {
	if s.pending != nil {
		s.pending.Close()
		s.pending, s.pendingPath = nil, ""
	}
}

// isUnder reports whether path p is dir or below it.
func isUnder(p, dir string) bool {
	return dir == "" || p == dir || strings.HasPrefix(p, dir+"/")
}

// dirFd returns a descriptor of directory dir, opening the missing path
// elements relative to the deepest open ancestor with O_NOFOLLOW.
func (s *DirSource) dirFd(dir string) (int, error) {
	for len(s.dirs) > 0 && !isUnder(dir, s.dirs[len(s.dirs)-1].path) {
		unix.Close(s.dirs[len(s.dirs)-1].fd)
		s.dirs = s.dirs[:len(s.dirs)-1]
	}
	if len(s.dirs) == 0 {
		fd, err := unix.Open(s.Root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: s.Root, Err: err}
		}
		s.dirs = append(s.dirs, openFd{path: "", fd: fd})
	}
	for {
		top := s.dirs[len(s.dirs)-1]
		if top.path == dir {
			return top.fd, nil
		}
		rest := dir
		if top.path != "" {
			rest = dir[len(top.path)+1:]
		}
		elem, _, _ := strings.Cut(rest, "/")
		fd, err := unix.Openat(top.fd, elem, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: s.full(join(top.path, elem)), Err: err}
		}
		s.dirs = append(s.dirs, openFd{path: join(top.path, elem), fd: fd})
	}
}

// at returns the parent descriptor and the name of path p; the root is
// reached through its own descriptor and ".".
func (s *DirSource) at(p string) (int, string, error) {
	if p == "" {
		fd, err := s.dirFd("")
		return fd, ".", err
	}
	dir, name := "", p
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		dir, name = p[:i], p[i+1:]
	}
	fd, err := s.dirFd(dir)
	return fd, name, err
}

func (s *DirSource) full(p string) string {
	if p == "" {
		return s.Root
	}
	return s.Root + "/" + p
}

// Lstat implements Source.
func (s *DirSource) Lstat(p string) (*SourceInfo, error) {
	s.dropPending()
	dfd, name, err := s.at(p)
	if err != nil {
		return nil, err
	}
	full := s.full(p)
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
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
		buf := make([]byte, maxNameLen+1)
		n, err := unix.Readlinkat(dfd, name, buf)
		if err != nil {
			return nil, &os.PathError{Op: "readlink", Path: full, Err: err}
		}
		if n > maxNameLen {
			return nil, &os.PathError{Op: "readlink", Path: full, Err: unix.ENAMETOOLONG}
		}
		info.LinkTarget = string(buf[:n])
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
	if (info.Kind != KindDir && info.Kind != KindFile) || (s.SkipXattrs && s.SkipFlags) {
		return info, nil
	}
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: full, Err: err}
	}
	var fst unix.Stat_t
	if err := unix.Fstat(fd, &fst); err != nil || fst.Dev != st.Dev || fst.Ino != st.Ino {
		unix.Close(fd)
		return nil, &os.PathError{Op: "open", Path: full, Err: errors.New("file replaced while being read")}
	}
	if !s.SkipXattrs {
		if err := readXattrs(fd, &info.Metadata); err != nil {
			unix.Close(fd)
			return nil, &os.PathError{Op: "read xattrs", Path: full, Err: err}
		}
	}
	if !s.SkipFlags {
		info.Flags, info.QuotaProjID = readFileAttrs(fd)
	}
	if info.Kind == KindFile {
		s.pending, s.pendingPath = &fdFile{fd: fd, path: full}, p
	} else {
		unix.Close(fd)
	}
	return info, nil
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

// listXattrs returns the xattr names of an open file in listxattr order.
func listXattrs(fd int) ([]string, error) {
	for range 8 {
		n, err := unix.Flistxattr(fd, nil)
		if err != nil || n == 0 {
			if errors.Is(err, unix.ENOTSUP) {
				err = nil
			}
			return nil, err
		}
		buf := make([]byte, n)
		n, err = unix.Flistxattr(fd, buf)
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

// getXattr returns one xattr value of an open file, nil if it vanished.
func getXattr(fd int, name string) ([]byte, error) {
	for range 8 {
		n, err := unix.Fgetxattr(fd, name, nil)
		if err != nil {
			if errors.Is(err, unix.ENODATA) {
				return nil, nil
			}
			return nil, err
		}
		buf := make([]byte, n)
		n, err = unix.Fgetxattr(fd, name, buf)
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
func readXattrs(fd int, md *Metadata) error {
	names, err := listXattrs(fd)
	if err != nil {
		return fmt.Errorf("listxattr: %w", err)
	}
	for _, name := range names {
		isACL := name == aclXattrAccess || name == aclXattrDefault
		keep := name == "security.capability" || isACL ||
			(len(name) <= maxXattrName && (strings.HasPrefix(name, "user.") || strings.HasPrefix(name, "trusted.")))
		if !keep {
			continue
		}
		v, err := getXattr(fd, name)
		if err != nil {
			return fmt.Errorf("getxattr %s: %w", name, err)
		}
		if v == nil {
			continue
		}
		switch {
		case name == "security.capability":
			md.FCaps = v
		case isACL:
			if err := parseACLXattr(v, name == aclXattrDefault, &md.ACL); err != nil {
				return err
			}
		default:
			md.Xattrs = append(md.Xattrs, Xattr{Name: name, Value: v})
		}
	}
	return nil
}

// ReadDirNames implements Source.
func (s *DirSource) ReadDirNames(p string) ([]string, error) {
	s.dropPending()
	fd, err := s.dirFd(p)
	if err != nil {
		return nil, err
	}
	// Read through a fresh descriptor of the same directory, so that the
	// kept one is not consumed.
	rfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: s.full(p), Err: err}
	}
	f := os.NewFile(uintptr(rfd), s.full(p))
	defer f.Close()
	if s.OneFileSystem && p != "" {
		var st, root unix.Stat_t
		if err := unix.Fstat(rfd, &st); err != nil {
			return nil, &os.PathError{Op: "stat", Path: s.full(p), Err: err}
		}
		if err := unix.Fstat(s.dirs[0].fd, &root); err != nil {
			return nil, &os.PathError{Op: "stat", Path: s.Root, Err: err}
		}
		if st.Dev != root.Dev {
			return nil, nil
		}
	}
	return f.Readdirnames(-1)
}

// Open implements Source.
func (s *DirSource) Open(p string) (io.ReadCloser, error) {
	if s.pending != nil && s.pendingPath == p {
		f := s.pending
		s.pending, s.pendingPath = nil, ""
		return f, nil
	}
	s.dropPending()
	dfd, name, err := s.at(p)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: s.full(p), Err: err}
	}
	return &fdFile{fd: fd, path: s.full(p)}, nil
}

// fdFile reads a regular file through its descriptor with plain read(2)
// calls: an os.File would first try to register it with the runtime's
// poller (two more system calls per file, which a metadata-mode backup of
// many unchanged files pays for every one).
type fdFile struct {
	fd   int
	path string
}

func (f *fdFile) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := unix.Read(f.fd, p)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, &os.PathError{Op: "read", Path: f.path, Err: err}
		}
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

// sameFile reports whether f is the file info describes (same device
// and inode), true when that cannot be told.
func (f *fdFile) sameFile(info *SourceInfo) bool {
	var st unix.Stat_t
	if unix.Fstat(f.fd, &st) != nil {
		return true
	}
	return st.Dev == info.Dev && st.Ino == info.Ino
}

func (f *fdFile) Close() error {
	if f.fd < 0 {
		return nil
	}
	err := unix.Close(f.fd)
	f.fd = -1
	return err
}

// prefetchMax is the most bytes of one file Prefetch asks the kernel to
// read ahead; larger files get the kernel's sequential readahead anyway.
const prefetchMax = 1 << 20

// Prefetch implements Prefetcher: it reads the inode of path and, with
// contents, asks the kernel to read the start of a regular file into the
// page cache (posix_fadvise WILLNEED), without waiting. It is safe to
// call from any goroutine; errors are ignored.
func (s *DirSource) Prefetch(p string, contents bool) {
	if !contents {
		var st unix.Stat_t
		unix.Fstatat(unix.AT_FDCWD, s.full(p), &st, unix.AT_SYMLINK_NOFOLLOW)
		return
	}
	fd, err := unix.Open(s.full(p), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NOATIME, 0)
	if err == unix.EPERM {
		fd, err = unix.Open(s.full(p), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	}
	if err != nil {
		return
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size == 0 {
		return
	}
	unix.Fadvise(fd, 0, min(st.Size, prefetchMax), unix.FADV_WILLNEED)
}
