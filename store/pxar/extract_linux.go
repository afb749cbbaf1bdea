package pxar

import (
	"cmp"
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
	// NoDevices, NoFifos and NoSockets skip device nodes, FIFOs and
	// sockets (the pxar tool's --no-device-nodes, --no-fifos and
	// --no-sockets).
	NoDevices, NoFifos, NoSockets bool
	// OnError is called when metadata (owner, mode, xattr, ACL, flags,
	// times) cannot be applied to path, or a device or FIFO cannot be
	// created; returning nil continues. A nil OnError makes such errors
	// fatal.
	OnError func(path string, err error) error
	// OnDamaged is called for each entry that cannot be read from the
	// archive (missing or corrupt chunks, damaged items), with its path
	// below the target (a directory's path when the entry's name could
	// not be read). The entry is left out: a file whose contents cannot
	// be read is removed, never left partly written, and a directory
	// whose listing cannot be read keeps what could be read of it.
	// Returning nil goes on with the next entry; a nil OnDamaged makes
	// the first damage fatal.
	OnDamaged func(path string, err error) error
	// OnExtracted, if set, is called after each entry is restored with its
	// metadata (a file after its contents), with its path below the target.
	OnExtracted func(path string, e *Entry)
	// Names, if set, returns the names directory dir (an archive path
	// such as "/" or "/etc") holds, from a catalog. When damage took
	// the names of some children with it, they are reported to OnDamaged
	// by the names the catalog has and the listing lacks.
	Names func(dir string) ([]string, error)
}

// A DamagedError reports an entry of an archive that could not be read
// during extraction; Path is below the extraction target.
type DamagedError struct {
	Path string
	Err  error
}

func (e *DamagedError) Error() string { return "pxar: extract " + e.Path + ": " + e.Err.Error() }
func (e *DamagedError) Unwrap() error { return e.Err }

// Extract restores the entry at subpath of a (the whole archive for "" or
// "/") below the directory target, which is created if missing. A
// directory's contents go into target; any other entry becomes
// target/<name>. It restores modes, owners (as root), mtimes, xattrs,
// ACLs, fcaps, flags, symlinks, hardlinks, devices, FIFOs and sockets.
// Where owners are not restored (NoOwners, not root, or a chown that
// failed), set-user-ID and set-group-ID bits are dropped, as tar does, so
// that a user's set-id file never becomes the restoring user's.
//
// Damaged parts of the archive do not stop it when OnDamaged allows:
// every child of a directory is located through the goodbye table, so the
// intact ones are restored and each damaged one is reported once.
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
// in stored order (so that hardlink targets come first). Children that
// cannot be read are reported to OnDamaged and left out.
func (x *extractor) dirContents(dir *Entry, dirfd int, rel string, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("pxar: extract %s: nested deeper than %d: %w", rel, maxDepth, ErrTooLarge)
	}
	r, err := x.a.OpenDir(dir)
	if err != nil {
		return x.damaged(relPath(rel), err)
	}
	var children []*Entry
	var unnamed []error
	named := map[string]bool{}
	for {
		c, err := r.Next()
		if err == io.EOF {
			break
		}
		var ce *ChildError
		if errors.As(err, &ce) {
			if ce.Name == "" {
				unnamed = append(unnamed, err)
				continue
			}
			named[ce.Name] = true
			if err := x.lose(dirfd, rel, ce.Name, err); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		named[c.Name()] = true
		children = append(children, c)
	}
	if len(unnamed) > 0 {
		if err := x.lostNames(dir, dirfd, rel, named, unnamed); err != nil {
			return err
		}
	}
	slices.SortFunc(children, func(p, q *Entry) int { return cmp.Compare(p.FilenameOffset, q.FilenameOffset) })
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

// lostNames reports the children of dir whose names were lost with the
// damage (errs): by name when the catalog has names the listing lacks,
// else as damage of the directory.
func (x *extractor) lostNames(dir *Entry, dirfd int, rel string, listed map[string]bool, errs []error) error {
	var lost []string
	if x.opts.Names != nil {
		names, err := x.opts.Names(dir.Path)
		if err == nil {
			for _, n := range names {
				if !listed[n] && checkName(n) == nil {
					lost = append(lost, n)
				}
			}
		}
	}
	if len(lost) == 0 {
		for _, err := range errs {
			if err := x.damaged(relPath(rel), err); err != nil {
				return err
			}
		}
		return nil
	}
	for _, n := range lost {
		if err := x.lose(dirfd, rel, n, fmt.Errorf("entry lost (name from the catalog): %w", errs[0])); err != nil {
			return err
		}
	}
	return nil
}

// lose reports damaged child name of the directory dirfd (at rel). With
// Overwrite, an older non-directory of that name is removed, so that
// nothing stale stands where the damaged entry should be.
func (x *extractor) lose(dirfd int, rel, name string, err error) error {
	path := join(rel, name)
	if x.opts.Overwrite {
		if perr := x.prepare(dirfd, name, path); perr != nil && !errors.Is(perr, os.ErrExist) {
			return perr
		}
	}
	return x.damaged(path, err)
}

// damaged reports an entry that could not be read from the archive. A
// canceled context is not damage and ends the extraction.
func (x *extractor) damaged(path string, err error) error {
	if canceled(err) {
		return err
	}
	err = &DamagedError{Path: path, Err: err}
	if x.opts.OnDamaged == nil {
		return err
	}
	return x.opts.OnDamaged(path, err)
}

// relPath names a path below the target for messages ("." for the target).
func relPath(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
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
		return x.damaged(path, fmt.Errorf("entry at offset %d reached twice: %w", e.Offset, ErrCorrupt))
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
		if err := x.applyFd(fd, fd, ".", e, path); err != nil {
			return err
		}
		x.done(path, e)
		return nil
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
		if x.skip(e.Kind) {
			return nil
		}
		if err := x.prepare(dirfd, name, path); err != nil {
			return err
		}
		mode := uint32(e.Mode&modeIFMT) | 0o600
		if err := unix.Mknodat(dirfd, name, mode, int(e.Rdev())); err != nil {
			// Devices need privileges: a failure can be skipped by OnError.
			return x.meta(path, "mknod", err)
		}
	default:
		return x.damaged(path, fmt.Errorf("kind %v: %w", e.Kind, ErrCorrupt))
	}
	if err := x.applyAt(dirfd, name, e, path); err != nil {
		return err
	}
	x.done(path, e)
	return nil
}

// done reports an entry restored.
func (x *extractor) done(path string, e *Entry) {
	if x.opts.OnExtracted != nil {
		x.opts.OnExtracted(path, e)
	}
}

// skip reports whether entries of kind k are left out by the options.
func (x *extractor) skip(k Kind) bool {
	switch k {
	case KindCharDev, KindBlockDev:
		return x.opts.NoDevices
	case KindFifo:
		return x.opts.NoFifos
	case KindSocket:
		return x.opts.NoSockets
	}
	return false
}

// file writes a regular file and its metadata. If its contents cannot be
// read in full, the partly written file is removed and the damage
// reported: a restored file is never shorter or other than archived.
func (x *extractor) file(e *Entry, dirfd int, name, path string) error {
	// Make room first: with Overwrite, a damaged file leaves no older
	// version under its name either.
	if err := x.prepare(dirfd, name, path); err != nil {
		return err
	}
	content, err := x.a.Content(e)
	if err != nil {
		return x.damaged(path, err)
	}
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	src := &sourceReader{r: content}
	n, err := io.Copy(f, src)
	if err == nil && n != int64(e.Size) {
		src.err = fmt.Errorf("contents end after %d of %d bytes: %w", n, e.Size, ErrCorrupt)
	}
	if src.err != nil {
		if uerr := unix.Unlinkat(dirfd, name, 0); uerr != nil {
			return &os.PathError{Op: "remove damaged file", Path: path, Err: uerr}
		}
		return x.damaged(path, src.err)
	}
	if err != nil {
		return fmt.Errorf("pxar: extract %s: %w", path, err)
	}
	if err := x.applyFd(fd, dirfd, name, e, path); err != nil {
		return err
	}
	if e.FilenameOffset >= 0 {
		x.files[e.FilenameOffset] = path
	}
	x.done(path, e)
	return nil
}

// sourceReader keeps the read error of a file's contents apart from the
// write errors of its copy.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// hardlink links name to the already extracted target of e, or writes a
// copy if the target lies outside the extracted sub-tree.
func (x *extractor) hardlink(e *Entry, dirfd int, name, path string) error {
	if strings.HasPrefix(e.LinkTarget, "/") || slices.Contains(strings.Split(e.LinkTarget, "/"), "..") {
		return fmt.Errorf("pxar: extract %q: hardlink target %q: %w", e.Path, e.LinkTarget, ErrUnsafePath)
	}
	if err := x.prepare(dirfd, name, path); err != nil {
		return err
	}
	t, err := x.a.Resolve(e)
	if err != nil {
		return x.damaged(path, err)
	}
	tpath, ok := x.files[t.FilenameOffset]
	if !ok {
		t.Path = e.Path
		return x.file(t, dirfd, name, path)
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
	x.done(path, e)
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
	owned := false
	if x.owners {
		err := unix.Fchown(fd, int(e.UID), int(e.GID))
		owned = err == nil
		if err := x.meta(path, "chown", err); err != nil {
			return err
		}
	}
	if err := x.meta(path, "chmod", unix.Fchmod(fd, permBits(e, owned))); err != nil {
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
	owned := false
	if x.owners {
		err := unix.Fchownat(dirfd, name, int(e.UID), int(e.GID), unix.AT_SYMLINK_NOFOLLOW)
		owned = err == nil
		if err := x.meta(path, "chown", err); err != nil {
			return err
		}
	}
	if e.Kind != KindSymlink {
		if err := x.meta(path, "chmod", unix.Fchmodat(dirfd, name, permBits(e, owned), 0)); err != nil {
			return err
		}
	}
	ts := []unix.Timespec{mtimeSpec(e), mtimeSpec(e)}
	return x.meta(path, "set times", unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW))
}

// permBits returns the permission bits to give e: its stored ones, less
// the set-user-ID and set-group-ID bits unless its owner was restored
// (owned), as tar does without --same-owner.
func permBits(e *Entry, owned bool) uint32 {
	m := uint32(e.Mode & 0o7777)
	if !owned {
		m &^= modeISUID | modeISGID
	}
	return m
}

func mtimeSpec(e *Entry) unix.Timespec {
	return unix.Timespec{Sec: e.Mtime.Secs, Nsec: int64(e.Mtime.Nanos)}
}
