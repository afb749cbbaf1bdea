package pxar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// ExtractOptions controls Extract.
type ExtractOptions struct {
	// NoOwners skips restoring uid/gid. Owners are restored only when the
	// process runs as root.
	NoOwners bool
	// NoXattrs skips xattrs, ACLs and fcaps; NoFlags skips chattr flags.
	NoXattrs, NoFlags bool
	// Overwrite replaces existing non-directories in the target. Without
	// it an existing entry is an error. Existing directories are reused.
	Overwrite bool
	// OnError is called when metadata (owner, mode, xattr, ACL, flags,
	// times) cannot be applied to path, or a device or FIFO cannot be
	// created; returning nil continues. A nil OnError makes such errors
	// fatal.
	OnError func(path string, err error) error
}

// Extract restores the entry at subpath of a (the whole archive for "" or
// "/") below the directory target, which is created if missing. A
// directory's contents go into target; any other entry becomes
// target/<name>. It restores modes, owners (as root), mtimes, xattrs,
// ACLs, fcaps, flags, symlinks, hardlinks, devices, FIFOs and sockets.
//
// It never writes outside target: every entry is created relative to a
// directory it opened itself with O_NOFOLLOW, symlinks are created but
// never followed, names are single path elements, and hardlinks only link
// to files this extraction wrote (an unsafe stored target path is an
// ErrUnsafePath error; a target outside subpath is restored as a copy).
func Extract(ctx context.Context, a *Archive, subpath, target string, opts ExtractOptions) error {
	e, err := a.Lookup(subpath)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("pxar: extract: %w", err)
	}
	rootfd, err := unix.Open(target, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: target, Err: err}
	}
	defer unix.Close(rootfd)
	x := &extractor{ctx: ctx, a: a, opts: opts, rootfd: rootfd, files: map[int64]string{}, seen: map[int64]bool{},
		owners: !opts.NoOwners && os.Geteuid() == 0}
	if e.Kind == KindDir {
		if err := x.dirContents(e, rootfd, "", 0); err != nil {
			return err
		}
		return x.applyFd(rootfd, rootfd, ".", e, ".")
	}
	return x.entry(e, rootfd, "", 0)
}

type extractor struct {
	ctx    context.Context
	a      *Archive
	opts   ExtractOptions
	rootfd int
	owners bool
	files  map[int64]string // FILENAME offset of an extracted file -> its path below target
	seen   map[int64]bool   // entries extracted, by Offset: a corrupt archive may share them
}

// meta reports a metadata error through OnError.
func (x *extractor) meta(path, op string, err error) error {
	if err == nil {
		return nil
	}
	err = fmt.Errorf("pxar: extract %s: %s: %w", path, op, err)
	if x.opts.OnError == nil {
		return err
	}
	return x.opts.OnError(path, err)
}

// dirContents extracts the children of dir into the open directory dirfd,
// in stored order (so that hardlink targets come first).
func (x *extractor) dirContents(dir *Entry, dirfd int, rel string, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("pxar: extract %s: nested deeper than %d: %w", rel, maxDepth, ErrTooLarge)
	}
	r, err := x.a.OpenDir(dir)
	if err != nil {
		return err
	}
	var children []*Entry
	for {
		c, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		children = append(children, c)
	}
	slices.SortFunc(children, func(p, q *Entry) int { return int(p.FilenameOffset - q.FilenameOffset) })
	for _, c := range children {
		if err := x.ctx.Err(); err != nil {
			return err
		}
		if err := x.entry(c, dirfd, rel, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// prepare makes room for name in dirfd: an existing entry is an error
// unless Overwrite is set and it is not a directory.
func (x *extractor) prepare(dirfd int, name, path string) error {
	var st unix.Stat_t
	err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if !x.opts.Overwrite || st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return &os.PathError{Op: "extract", Path: path, Err: os.ErrExist}
	}
	if err := unix.Unlinkat(dirfd, name, 0); err != nil {
		return &os.PathError{Op: "unlink", Path: path, Err: err}
	}
	return nil
}

// entry extracts one entry into dirfd.
func (x *extractor) entry(e *Entry, dirfd int, parent string, depth int) error {
	name := e.Name()
	if err := checkName(name); err != nil {
		return fmt.Errorf("pxar: extract %q: %w", e.Path, ErrUnsafePath)
	}
	path := join(parent, name)
	if x.seen[e.Offset] {
		return fmt.Errorf("pxar: extract %q: entry at offset %d reached twice: %w", e.Path, e.Offset, ErrCorrupt)
	}
	x.seen[e.Offset] = true
	if e.Kind == KindHardlink {
		return x.hardlink(e, dirfd, name, path)
	}
	switch e.Kind {
	case KindDir:
		err := unix.Mkdirat(dirfd, name, 0o700)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return &os.PathError{Op: "mkdir", Path: path, Err: err}
		}
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: path, Err: err}
		}
		defer unix.Close(fd)
		if err := x.dirContents(e, fd, path, depth); err != nil {
			return err
		}
		return x.applyFd(fd, fd, ".", e, path)
	case KindFile:
		return x.file(e, dirfd, name, path)
	case KindSymlink:
		if err := x.prepare(dirfd, name, path); err != nil {
			return err
		}
		if err := unix.Symlinkat(e.LinkTarget, dirfd, name); err != nil {
			return &os.PathError{Op: "symlink", Path: path, Err: err}
		}
	case KindCharDev, KindBlockDev, KindFifo, KindSocket:
		if err := x.prepare(dirfd, name, path); err != nil {
			return err
		}
		mode := uint32(e.Mode&modeIFMT) | 0o600
		if err := unix.Mknodat(dirfd, name, mode, int(e.Rdev())); err != nil {
			// Devices need privileges: a failure can be skipped by OnError.
			return x.meta(path, "mknod", err)
		}
	default:
		return fmt.Errorf("pxar: extract %q: kind %v: %w", e.Path, e.Kind, ErrCorrupt)
	}
	return x.applyAt(dirfd, name, e, path)
}

// file writes a regular file and its metadata.
func (x *extractor) file(e *Entry, dirfd int, name, path string) error {
	content, err := x.a.Content(e)
	if err != nil {
		return err
	}
	if err := x.prepare(dirfd, name, path); err != nil {
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if _, err := io.Copy(f, content); err != nil {
		return fmt.Errorf("pxar: extract %s: %w", path, err)
	}
	if err := x.applyFd(fd, dirfd, name, e, path); err != nil {
		return err
	}
	if e.FilenameOffset >= 0 {
		x.files[e.FilenameOffset] = path
	}
	return nil
}

// hardlink links name to the already extracted target of e, or writes a
// copy if the target lies outside the extracted sub-tree.
func (x *extractor) hardlink(e *Entry, dirfd int, name, path string) error {
	if strings.HasPrefix(e.LinkTarget, "/") || slices.Contains(strings.Split(e.LinkTarget, "/"), "..") {
		return fmt.Errorf("pxar: extract %q: hardlink target %q: %w", e.Path, e.LinkTarget, ErrUnsafePath)
	}
	t, err := x.a.Resolve(e)
	if err != nil {
		return err
	}
	tpath, ok := x.files[t.FilenameOffset]
	if !ok {
		t.Path = e.Path
		return x.file(t, dirfd, name, path)
	}
	if err := x.prepare(dirfd, name, path); err != nil {
		return err
	}
	tdir, tname := "", tpath
	if i := strings.LastIndexByte(tpath, '/'); i >= 0 {
		tdir, tname = tpath[:i], tpath[i+1:]
	}
	tfd, err := x.openDir(tdir)
	if err != nil {
		return err
	}
	defer unix.Close(tfd)
	if err := unix.Linkat(tfd, tname, dirfd, name, 0); err != nil {
		return &os.PathError{Op: "link", Path: path, Err: err}
	}
	return nil
}

// openDir opens a directory below the target, one element at a time,
// never following symlinks.
func (x *extractor) openDir(rel string) (int, error) {
	fd, err := unix.Dup(x.rootfd)
	if err != nil {
		return -1, err
	}
	if rel == "" {
		return fd, nil
	}
	for _, c := range strings.Split(rel, "/") {
		next, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: rel, Err: err}
		}
		fd = next
	}
	return fd, nil
}

// applyFd applies the metadata of a file or directory through its open fd:
// owner, mode, xattrs, ACLs, fcaps, mtime, then flags.
// Times are set through (tdir, tname) without following symlinks.
func (x *extractor) applyFd(fd int, tdir int, tname string, e *Entry, path string) error {
	if x.owners {
		if err := x.meta(path, "chown", unix.Fchown(fd, int(e.UID), int(e.GID))); err != nil {
			return err
		}
	}
	if err := x.meta(path, "chmod", unix.Fchmod(fd, uint32(e.Mode&0o7777))); err != nil {
		return err
	}
	if !x.opts.NoXattrs {
		for _, xa := range e.Xattrs {
			if err := x.meta(path, "setxattr "+xa.Name, unix.Fsetxattr(fd, xa.Name, xa.Value, 0)); err != nil {
				return err
			}
		}
		if v := accessACLXattr(e.Mode, &e.ACL); v != nil {
			if err := x.meta(path, "set ACL", unix.Fsetxattr(fd, aclXattrAccess, v, 0)); err != nil {
				return err
			}
		}
		if v := defaultACLXattr(&e.ACL); v != nil && e.Kind == KindDir {
			if err := x.meta(path, "set default ACL", unix.Fsetxattr(fd, aclXattrDefault, v, 0)); err != nil {
				return err
			}
		}
		if e.FCaps != nil {
			if err := x.meta(path, "set fcaps", unix.Fsetxattr(fd, "security.capability", e.FCaps, 0)); err != nil {
				return err
			}
		}
	}
	ts := []unix.Timespec{mtimeSpec(e), mtimeSpec(e)}
	if err := x.meta(path, "set times", unix.UtimesNanoAt(tdir, tname, ts, unix.AT_SYMLINK_NOFOLLOW)); err != nil {
		return err
	}
	if !x.opts.NoFlags && e.QuotaProjID != nil {
		if err := x.meta(path, "set project id", setProjID(fd, *e.QuotaProjID)); err != nil {
			return err
		}
	}
	if !x.opts.NoFlags && e.Flags != 0 {
		if fl := chattrFromFlags(e.Flags); fl != 0 {
			// Keep the bits PBS does not manage (such as ext4's extents flag).
			cur, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
			if err == nil {
				fl |= uint64(cur) &^ chattrFromFlags(^uint64(0))
				err = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(int32(uint32(fl))))
			}
			if err := x.meta(path, "set flags", err); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyAt applies owner, mode and mtime to a symlink, device, FIFO or
// socket, without following symlinks.
func (x *extractor) applyAt(dirfd int, name string, e *Entry, path string) error {
	if x.owners {
		if err := x.meta(path, "chown", unix.Fchownat(dirfd, name, int(e.UID), int(e.GID), unix.AT_SYMLINK_NOFOLLOW)); err != nil {
			return err
		}
	}
	if e.Kind != KindSymlink {
		if err := x.meta(path, "chmod", unix.Fchmodat(dirfd, name, uint32(e.Mode&0o7777), 0)); err != nil {
			return err
		}
	}
	ts := []unix.Timespec{mtimeSpec(e), mtimeSpec(e)}
	return x.meta(path, "set times", unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW))
}

func mtimeSpec(e *Entry) unix.Timespec {
	return unix.Timespec{Sec: e.Mtime.Secs, Nsec: int64(e.Mtime.Nanos)}
}
