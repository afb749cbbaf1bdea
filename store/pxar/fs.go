package pxar

import (
	"errors"
	"io"
	"io/fs"
	"slices"
	"time"
	"unicode/utf8"
)

// The Archive is an fs.FS. Symlinks are never followed: opening one gives
// a file that describes the link itself (Stat reports fs.ModeSymlink, Read
// returns io.EOF), and ReadLink returns its target. Hardlinks appear as their
// target file under their own name. Entries whose names are not valid
// UTF-8 cannot be named by fs.FS paths and are left out of listings; use
// OpenDir and LookupChild for raw names.
var (
	_ fs.FS         = (*Archive)(nil)
	_ fs.StatFS     = (*Archive)(nil)
	_ fs.ReadDirFS  = (*Archive)(nil)
	_ fs.ReadLinkFS = (*Archive)(nil)
)

// Open implements fs.FS.
func (a *Archive) Open(name string) (fs.File, error) {
	e, err := a.lookupFS("open", name)
	if err != nil {
		return nil, err
	}
	info := &fileInfo{e: e, name: fsBase(name)}
	switch e.Kind {
	case KindDir:
		return &dirFile{a: a, info: info, name: name}, nil
	case KindFile:
		r, err := a.Content(e)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return &regFile{info: info, SectionReader: r}, nil
	}
	return &otherFile{info: info}, nil
}

// lookupFS looks up a valid fs.FS name and resolves a final hardlink.
func (a *Archive) lookupFS(op, name string) (*Entry, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	e, err := a.Lookup(name)
	if err == nil {
		e, err = a.Resolve(e)
	}
	if err != nil {
		if errors.Is(err, ErrNotDir) {
			err = errors.Join(err, fs.ErrNotExist)
		}
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	return e, nil
}

// Stat implements fs.StatFS.
func (a *Archive) Stat(name string) (fs.FileInfo, error) {
	e, err := a.lookupFS("stat", name)
	if err != nil {
		return nil, err
	}
	return &fileInfo{e: e, name: fsBase(name)}, nil
}

// Lstat implements fs.ReadLinkFS. Symlinks are never followed, so it is Stat.
func (a *Archive) Lstat(name string) (fs.FileInfo, error) {
	e, err := a.lookupFS("lstat", name)
	if err != nil {
		return nil, err
	}
	return &fileInfo{e: e, name: fsBase(name)}, nil
}

// ReadLink implements fs.ReadLinkFS.
func (a *Archive) ReadLink(name string) (string, error) {
	e, err := a.lookupFS("readlink", name)
	if err != nil {
		return "", err
	}
	if e.Kind != KindSymlink {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	return e.LinkTarget, nil
}

// ReadDir implements fs.ReadDirFS: the entries sorted by name.
func (a *Archive) ReadDir(name string) ([]fs.DirEntry, error) {
	e, err := a.lookupFS("readdir", name)
	if err != nil {
		return nil, err
	}
	list, err := a.dirEntries(e)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	return list, nil
}

// dirEntries lists directory e sorted by name, hardlinks resolved.
func (a *Archive) dirEntries(e *Entry) ([]fs.DirEntry, error) {
	r, err := a.OpenDir(e)
	if err != nil {
		return nil, err
	}
	var list []fs.DirEntry
	for {
		c, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		name := c.Name()
		if !utf8.ValidString(name) {
			continue // not representable as an fs.FS path
		}
		if c, err = a.Resolve(c); err != nil {
			return nil, err
		}
		list = append(list, &fileInfo{e: c, name: name})
	}
	slices.SortFunc(list, func(x, y fs.DirEntry) int {
		switch {
		case x.Name() < y.Name():
			return -1
		case x.Name() > y.Name():
			return 1
		}
		return 0
	})
	return list, nil
}

func fsBase(name string) string {
	if name == "." {
		return "."
	}
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '/' {
			return name[i+1:]
		}
	}
	return name
}

// fileInfo is the fs.FileInfo and fs.DirEntry of an Entry. Sys returns
// the *Entry.
type fileInfo struct {
	e    *Entry
	name string
}

func (fi *fileInfo) Name() string               { return fi.name }
func (fi *fileInfo) Mode() fs.FileMode          { return fi.e.FileMode() }
func (fi *fileInfo) Type() fs.FileMode          { return fi.e.FileMode().Type() }
func (fi *fileInfo) ModTime() time.Time         { return fi.e.Mtime.Time() }
func (fi *fileInfo) IsDir() bool                { return fi.e.Kind == KindDir }
func (fi *fileInfo) Sys() any                   { return fi.e }
func (fi *fileInfo) Info() (fs.FileInfo, error) { return fi, nil }
func (fi *fileInfo) String() string             { return fs.FormatFileInfo(fi) }
func (fi *fileInfo) Size() int64 {
	if fi.e.Kind == KindFile {
		return int64(fi.e.Size)
	}
	return 0
}

// regFile is an open regular file.
type regFile struct {
	info *fileInfo
	*io.SectionReader
}

func (f *regFile) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *regFile) Close() error               { return nil }

// otherFile is an open symlink, device, FIFO or socket: it has no data.
type otherFile struct{ info *fileInfo }

func (f *otherFile) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *otherFile) Close() error               { return nil }
func (f *otherFile) Read([]byte) (int, error)   { return 0, io.EOF }

// dirFile is an open directory; ReadDir returns entries sorted by name.
type dirFile struct {
	a    *Archive
	info *fileInfo
	name string
	list []fs.DirEntry
	read bool
}

func (f *dirFile) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *dirFile) Close() error               { return nil }
func (f *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrInvalid}
}

func (f *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	if !f.read {
		list, err := f.a.dirEntries(f.info.e)
		if err != nil {
			return nil, &fs.PathError{Op: "readdir", Path: f.name, Err: err}
		}
		f.list, f.read = list, true
	}
	if n <= 0 {
		list := f.list
		f.list = nil
		return list, nil
	}
	if len(f.list) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(f.list))
	list := f.list[:n]
	f.list = f.list[n:]
	return list, nil
}
