package fs

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/pbsfs/pbsfs/store"
	"golang.org/x/sys/unix"
)

// RemovalObserver is told of every snapshot removal made through the
// mount, once the snapshot's locks are held and before any of its files
// go; an error aborts the removal. *gc.Collector satisfies it
// (design/gc-safety.md, hazard 3).
type RemovalObserver interface {
	WillRemove(ctx context.Context, ref store.SnapshotRef) error
}

// Options configure a mount.
type Options struct {
	// Logger receives one line per refused or failed operation that the
	// user cannot otherwise diagnose (bad data, missing keys) and one per
	// removal; the store's logger if nil.
	Logger *slog.Logger
	// Observer, if set, is told of each removal before files go.
	Observer RemovalObserver
	// Pin, if set, is called with the index of each archive the mount
	// opens, and the function it returns when the archive is closed, so
	// that a collector keeps the chunks of open files of removed
	// snapshots (gc.Collector.Pin).
	Pin func(idx store.Index) (unpin func())
	// UID and GID, if not both zero, own the datastore hierarchy
	// (namespaces, groups, snapshots and the files in them) instead of
	// the owners of their backing paths on disk; the modes stay those on
	// disk (see gate.go). Archive contents keep their stored owners.
	UID, GID uint32
	// HierarchyTimeout is how long the kernel may cache names and
	// attributes of the hierarchy, which changes when backups land or
	// prune runs (default 1 s).
	HierarchyTimeout time.Duration
	// ArchiveTimeout is the same for the contents of archives, which
	// never change (default 1 h).
	ArchiveTimeout time.Duration
	// ReadOnly mounts read-only: removal through rm and protection or
	// notes changes are refused with EROFS (by the daemon: see mount).
	ReadOnly bool
	// AllowOther lets other users in; the kernel then checks
	// permissions against the stored modes (default_permissions).
	AllowOther bool
	// Debug logs every FUSE request.
	Debug bool
	// Metrics, if set, is told of every read request and every removal.
	Metrics Metrics
	// PanicHandler, if set, is called when a request panics (tests fail
	// with it).
	PanicHandler func(any) fuse.Status
	// DropBehind has the kernel drop the pages of images and archive
	// files that a sequential reader has gone past (see dropBehind): for
	// stores whose files are streamed once, such as a bucket's.
	DropBehind bool
}

// mount is the state every node of one mount shares.
type mount struct {
	ctx      context.Context
	s        *store.Store
	log      *slog.Logger
	obs      RemovalObserver
	metrics  Metrics
	pin      func(store.Index) func()
	uid, gid uint32 // the mount's user, for nodes whose backing path is gone
	owner    *perm  // Options.UID/GID, if set
	hierTTL  time.Duration
	archTTL  time.Duration
	started  time.Time
	// readOnly refuses removals and xattr changes with EROFS. The
	// daemon refuses them, not the kernel (no "ro" mount option): rm -r
	// of a snapshot then gets one refusal at index.json and stops at the
	// archives' doors, as for a protected snapshot, instead of the
	// kernel refusing every file of every archive.
	readOnly bool
	// allowOther: other users reach the mount, and removals are
	// checked against their credentials (mayRemove).
	allowOther bool
	// dropBehind: Options.DropBehind.
	dropBehind bool

	mu        sync.Mutex
	manifests map[string]manifestEntry // by snapshot directory
	// removedGroups: when a removal through the mount last touched a
	// group, by group directory (see groupGhost).
	removedGroups expiring[store.GroupRef, struct{}]
	// ghostPerms: the perms of paths removed through the mount, by
	// path relative to the store (see keepPerms).
	ghostPerms expiring[string, perm]
	// chunkGates: the distinct perms of the chunk prefix directories of
	// each index file, by its path; prefixPerms: each prefix directory's
	// (see chunkDirPerms).
	chunkGates  map[string][]perm
	prefixPerms map[uint16]prefixPerm
	// dirErrs: archive directories whose goodbye table failed to read
	// (see dirFailed).
	dirErrs  expiring[dirKey, syscall.Errno]
	nDirErrs atomic.Int64 // dirErrs.len(), read without mu
	// catalogs: the catalog lookups of plain archives, by index path
	// (see lostNames).
	catalogs map[string]catalogEntry

	// archiveOps counts lookups and directory opens inside archives;
	// tests check that rm -r of a snapshot makes none.
	archiveOps atomic.Int64
}

// NewRoot returns the root node of a mount of s. ctx bounds the chunk
// loads of every archive the mount opens; cancel it only after unmounting.
func NewRoot(ctx context.Context, s *store.Store, opts Options) fusefs.InodeEmbedder {
	m := &mount{
		ctx: ctx, s: s, log: opts.Logger, obs: opts.Observer, metrics: opts.Metrics, pin: opts.Pin,
		uid: opts.UID, gid: opts.GID,
		hierTTL: opts.HierarchyTimeout, archTTL: opts.ArchiveTimeout,
		readOnly:      opts.ReadOnly,
		allowOther:    opts.AllowOther,
		dropBehind:    opts.DropBehind,
		started:       time.Now(),
		manifests:     make(map[string]manifestEntry),
		removedGroups: newExpiring[store.GroupRef, struct{}](ghostTTL),
		ghostPerms:    newExpiring[string, perm](ghostTTL),
		chunkGates:    make(map[string][]perm),
		prefixPerms:   make(map[uint16]prefixPerm),
		dirErrs:       newExpiring[dirKey, syscall.Errno](dirErrTTL),
		catalogs:      make(map[string]catalogEntry),
	}
	if m.log == nil {
		m.log = s.Logger()
	}
	if m.uid == 0 && m.gid == 0 {
		m.uid, m.gid = uint32(os.Getuid()), uint32(os.Getgid())
	} else {
		m.owner = &perm{uid: m.uid, gid: m.gid}
	}
	if m.hierTTL == 0 {
		m.hierTTL = time.Second
	}
	if m.archTTL == 0 {
		m.archTTL = time.Hour
	}
	return &nsNode{m: m, ns: ""}
}

// Mount mounts s at dir and returns the serving FUSE server; call Wait
// on it, and Unmount to end it.
func Mount(ctx context.Context, dir string, s *store.Store, opts Options) (*fuse.Server, error) {
	return mountRoot(dir, s, NewRoot(ctx, s, opts), opts)
}

func mountRoot(dir string, s *store.Store, root fusefs.InodeEmbedder, opts Options) (*fuse.Server, error) {
	mo := fuse.MountOptions{
		DirectMount:  true,
		FsName:       s.Root(),
		Name:         "pbsfs",
		AllowOther:   opts.AllowOther,
		MaxReadAhead: 1 << 20,
		MaxWrite:     1 << 20, // also the largest READ the kernel sends
		Debug:        opts.Debug,
		PanicHandler: opts.PanicHandler,
	}
	if opts.AllowOther {
		mo.Options = append(mo.Options, "default_permissions")
		mo.EnableAcl = true
	}
	// NullPermissions: go-fuse would otherwise show a stored mode 0000
	// (and 4000, 2000, 1000: no permission bits) as 0644 or 0755. Every
	// node fills its whole mode, owner and st_blocks (Blksize set, so
	// go-fuse leaves Blocks alone); nothing is defaulted by the library.
	raw := fusefs.NewNodeFS(root, &fusefs.Options{MountOptions: mo, NullPermissions: true})
	if opts.Metrics != nil {
		raw = &observedFS{RawFileSystem: raw, m: opts.Metrics}
	}
	srv, err := fuse.NewServer(raw, dir, &mo)
	if err != nil {
		return nil, fmt.Errorf("mount %s on %s: %w", s.Root(), dir, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		return nil, fmt.Errorf("mount %s on %s: %w", s.Root(), dir, err)
	}
	if err := setReadAhead(dir, kernelReadAhead); err != nil {
		log := opts.Logger
		if log == nil {
			log = s.Logger()
		}
		log.Debug("kernel read-ahead of the mount left at its default", "err", err)
	}
	return srv, nil
}

// kernelReadAhead is the read-ahead the mount asks of the kernel for its
// files (the read_ahead_kb of the mount's backing device info). With the
// kernel's default, 128 KiB, a sequential reader (cat, cp) waits for one
// 128 KiB request after another, each a round trip through the daemon;
// with 1 MiB the requests are 1 MiB (MaxWrite bounds a READ), eight
// times fewer. Larger windows go out as several 1 MiB requests at once,
// and the ones far ahead of the reader start decodes of later chunks
// that take the cores from the chunk the reader waits for (measured on
// a loaded machine: 4 MiB read 30 % slower than 1 MiB, 2 MiB no better
// than 4). Random reads are not read ahead by the kernel, whatever the
// window. Setting it needs root; without, the default stays.
const kernelReadAhead = 1 << 20

// setReadAhead sets the kernel read-ahead of the file system mounted at
// dir to n bytes.
func setReadAhead(dir string, n int) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return err
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%d", n>>10)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// statfs fills out with the sizes of the file system holding the store.
func (m *mount) statfs(out *fuse.StatfsOut) syscall.Errno {
	var st unix.Statfs_t
	if err := unix.Statfs(m.s.Root(), &st); err != nil {
		return m.toErrno(err, "statfs")
	}
	out.Blocks, out.Bfree, out.Bavail = st.Blocks, st.Bfree, st.Bavail
	out.Files, out.Ffree = st.Files, st.Ffree
	out.Bsize, out.Frsize = uint32(st.Bsize), uint32(st.Frsize)
	out.NameLen = maxNameLen
	return 0
}

// maxNameLen is the longest file name the mount reports: PBS's names
// (and pxar's, on Linux) are at most 255 bytes.
const maxNameLen = 255
