package fs

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/pbsfs/pbsfs/store"
)

// The mount never grants more than the datastore on disk does. Each
// directory of the hierarchy (namespaces, the "ns" and type directories,
// groups, snapshots) takes the owner, group and mode of the directory it
// stands for; a blob file (index.json, client.log, NAME.blob) those of
// its .blob file. A file or directory that stands for an archive read
// through chunks (an image, a pxar archive) takes those of its index
// file, less the read (and search) permission of every class of users
// that could not read the chunks on disk (search permission on .chunks
// and on the prefix directories .chunks/XXXX its chunks lie in) or, for
// a split archive, its payload index. The mount's root is also
// closed to those who cannot search every directory above the datastore.
// An encrypted archive or blob, which the mount decrypts with its key,
// goes to the mount's user alone (mode at most 0700): the store on disk
// gives others only its ciphertext.
// Archive contents keep their archived metadata behind these gates. With
// --allow-other the kernel checks these modes (default_permissions).
// Without it only the mount's user reaches the mount, and the modes
// decide nothing: the prefix directories, which cost a read of the
// archive's index and a stat of each prefix directory its chunks use
// (thousands for a large image, each a disk read when cold), are then not
// looked at, so a first ls -l or stat costs what its lookups cost.

// perm is the owner, group and permission bits of a path.
type perm struct {
	uid, gid uint32
	mode     uint32 // permission bits (07777)
}

// diskPerm returns the perm of the datastore path rel ("" for the root),
// or, for a path a removal through the mount took away less than
// ghostTTL ago, the perm it had (see keepPerms).
func (m *mount) diskPerm(rel string) (perm, bool) {
	var st syscall.Stat_t
	if err := syscall.Lstat(m.s.Path(rel), &st); err != nil {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.ghostPerms.get(rel, time.Now())
	}
	return perm{uid: st.Uid, gid: st.Gid, mode: st.Mode & 0o7777}, true
}

// keepPerms records the perms of the datastore directories dirs and of
// their entries, which a removal through the mount is about to take
// away. The rm -r doing it still unlinks and removes their names (as
// ghosts, see doc.go) and the kernel checks the caller's permission on
// them and their parents as before: they keep their modes meanwhile
// instead of closing to the mount's user alone.
func (m *mount) keepPerms(dirs ...string) {
	m.keep(dirs, true)
}

// keep records the perms of rels, and of their entries if ents is set.
func (m *mount) keep(rels []string, ents bool) {
	kept := make(map[string]perm)
	for _, d := range rels {
		if p, ok := m.diskPerm(d); ok {
			kept[d] = p
		}
		if !ents {
			continue
		}
		ents, _ := os.ReadDir(m.s.Path(d))
		for _, e := range ents {
			if p, ok := m.diskPerm(path.Join(d, e.Name())); ok {
				kept[path.Join(d, e.Name())] = p
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for k, p := range kept {
		m.ghostPerms.put(k, p, now)
	}
}

// gone is the perm of a node whose backing path is gone (a snapshot just
// removed): the mount's user alone.
func (m *mount) gone(dir bool) perm {
	if dir {
		return perm{uid: m.uid, gid: m.gid, mode: 0o700}
	}
	return perm{uid: m.uid, gid: m.gid, mode: 0o600}
}

// hierPerm returns the perm of a hierarchy node standing for rel.
func (m *mount) hierPerm(rel string, dir bool) perm {
	p, ok := m.diskPerm(rel)
	if !ok {
		return m.gone(dir)
	}
	if rel == "" {
		// Above the datastore: whoever cannot search every ancestor
		// cannot reach the store on disk.
		root, err := filepath.Abs(m.s.Root())
		if err == nil {
			for d := filepath.Dir(root); ; d = filepath.Dir(d) {
				var st syscall.Stat_t
				if syscall.Stat(d, &st) == nil {
					p = p.gate(perm{uid: st.Uid, gid: st.Gid, mode: st.Mode & 0o7777}, 1)
				}
				if d == filepath.Dir(d) {
					break
				}
			}
		}
	}
	if m.owner != nil {
		p.uid, p.gid = m.owner.uid, m.owner.gid
	}
	return p
}

// archivePerm returns the perm of the node standing for the archive whose
// index files are files (metadata first) in snapshot directory snapDir:
// the first index file's owner and mode, gated by the others and by the
// chunk store (its prefix directories with --allow-other only). A
// directory gets search permission with read.
func (m *mount) archivePerm(snapDir string, dir bool, files ...string) perm {
	p, ok := m.diskPerm(path.Join(snapDir, files[0]))
	if !ok {
		return m.gone(dir)
	}
	p.mode &= 0o777
	for _, f := range files[1:] {
		q, ok := m.diskPerm(path.Join(snapDir, f))
		if !ok {
			return m.gone(dir)
		}
		p = p.gate(q, 4)
	}
	if c, ok := m.diskPerm(".chunks"); ok {
		p = p.gate(c, 1)
	} else {
		p.mode &= 0o700
	}
	if m.allowOther {
		for _, f := range files {
			for _, q := range m.chunkDirPerms(snapDir, f) {
				p = p.gate(q, 1)
			}
		}
	}
	if dir {
		p.mode |= (p.mode & 0o444) >> 2
	}
	if m.owner != nil {
		p.uid, p.gid = m.owner.uid, m.owner.gid
	}
	return p
}

// chunkDirPerms returns the distinct perms of the chunk prefix
// directories (.chunks/XXXX) holding the chunks of index file f of
// snapshot directory snapDir: on disk a user without search permission
// on one of them cannot read those chunks, so the archive is closed to
// it as for .chunks itself. Each index's list is made once, and each
// prefix directory looked at once, per mount; a prefix directory that
// does not exist (its chunks missing) closes nothing.
func (m *mount) chunkDirPerms(snapDir, f string) []perm {
	key := path.Join(snapDir, f)
	m.mu.Lock()
	ps, ok := m.chunkGates[key]
	m.mu.Unlock()
	if ok {
		return ps
	}
	var prefixes map[uint16]bool
	if idx, err := store.OpenIndex(m.s.Path(key)); err == nil {
		prefixes = make(map[uint16]bool)
		for i := range idx.Len() {
			d, _, _ := idx.Chunk(i)
			prefixes[uint16(d[0])<<8|uint16(d[1])] = true
		}
	}
	seen := make(map[perm]bool)
	for pfx := range prefixes {
		m.mu.Lock()
		q, ok := m.prefixPerms[pfx]
		m.mu.Unlock()
		if !ok {
			q.p, q.ok = m.diskPerm(fmt.Sprintf(".chunks/%04x", pfx))
			m.mu.Lock()
			m.prefixPerms[pfx] = q
			m.mu.Unlock()
		}
		if q.ok && !seen[q.p] {
			seen[q.p] = true
			ps = append(ps, q.p)
		}
	}
	if prefixes != nil {
		m.mu.Lock()
		m.chunkGates[key] = ps
		m.mu.Unlock()
	}
	return ps
}

// prefixPerm is the perm of a chunk prefix directory, if it exists.
type prefixPerm struct {
	p  perm
	ok bool
}

// keyGate narrows p to the mount's user when dec decrypts the archive
// with a key the mount holds.
func (m *mount) keyGate(dec *store.ChunkDecoder, p perm) perm {
	if dec != nil && dec.Encrypted() {
		return m.private(p)
	}
	return p
}

// private narrows p to the mount's user. Plaintext decrypted with the
// mount's key is more than the datastore on disk gives anyone who lacks
// the key (the ciphertext), so it goes to the user holding the key alone.
func (m *mount) private(p perm) perm {
	p.uid, p.gid = m.uid, m.gid
	p.mode &= 0o700
	return p
}

// gate takes from p the read and search permission of every class of
// users (owner, group, others of p) that is not sure to have the rwx bits
// need on q, the path p's data also comes through.
func (p perm) gate(q perm, need uint32) perm {
	l := leastBits(p, q)
	for c := 0; c < 3; c++ {
		if l[c]&need != need {
			p.mode &^= 0o5 << (6 - 3*c)
		}
	}
	return p
}

// leastBits returns, for each class of users of p (owner, group,
// others), the rwx bits on q that every process of that class has
// (leaving root aside). A process of p's group class may be q's owner
// unless q's owner is p's, and may belong to q's group unless only p's
// group is known of it; and so on.
func leastBits(p, q perm) [3]uint32 {
	bits := func(c int) uint32 { return q.mode >> (6 - 3*c) & 7 }
	u, g, o := bits(0), bits(1), bits(2)
	var l [3]uint32
	// p's owner: q's owner too, or maybe in q's group, maybe not.
	if p.uid == q.uid {
		l[0] = u
	} else {
		l[0] = g & o
	}
	// p's group class: uid is not p's owner, member of p's group.
	l[1] = g
	if p.gid != q.gid {
		l[1] &= o
	}
	if p.uid != q.uid {
		l[1] &= u
	}
	// p's others: neither p's owner nor in p's group.
	l[2] = o
	if p.gid != q.gid {
		l[2] &= g
	}
	if p.uid != q.uid {
		l[2] &= u
	}
	return l
}

// Removal through the mount asks for what removing the same directories
// on disk would. With --allow-other the kernel checks write and search
// permission on the directory it sees the name in (the snapshot directory
// for an unlink of index.json, the group directory for an rmdir of a
// snapshot, the type directory for an rmdir of a group), but forgetting a
// snapshot takes its files out of the snapshot directory and the
// snapshot directory out of the group directory: on disk both need write
// and search permission (and, under a sticky bit, ownership). mayRemove
// checks every directory of dirs so, against the caller's credentials:
// its uid and gid from the request, its supplementary groups and
// capabilities from /proc. Mode bits only (an ACL is not consulted: the
// mount shows none on the hierarchy). Without --allow-other only the
// mount's user reaches the mount, and the daemon's own removals on disk
// are the check.

// creds are the credentials a removal is checked against.
type creds struct {
	uid    uint32
	groups map[uint32]bool // gid and supplementary groups
	caps   uint64          // effective capabilities
}

// Capability bits (linux/capability.h).
const (
	capDACOverride = 1
	capFowner      = 3
)

// callerCreds returns the credentials of the request's caller; ok is
// false when they cannot be known (no caller, or it exited), which
// refuses the removal.
func callerCreds(ctx context.Context) (creds, bool) {
	c, ok := ctx.(*fuse.Context)
	if !ok {
		return creds{}, false
	}
	cr := creds{uid: c.Caller.Uid, groups: map[uint32]bool{c.Caller.Gid: true}}
	// The request's pid is the calling thread's, whose status holds the
	// credentials it made the request with.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Caller.Pid))
	if err != nil {
		return creds{}, false
	}
	seen := 0
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "Groups":
			for _, f := range strings.Fields(v) {
				g, err := strconv.ParseUint(f, 10, 32)
				if err != nil {
					return creds{}, false
				}
				cr.groups[uint32(g)] = true
			}
			seen++
		case "CapEff":
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return creds{}, false
			}
			cr.caps = caps
			seen++
		}
	}
	return cr, seen == 2
}

// may reports whether c has the rwx bits need on a directory with perm p.
func (c creds) may(p perm, need uint32) bool {
	if c.caps&(1<<capDACOverride) != 0 {
		return true
	}
	var bits uint32
	switch {
	case c.uid == p.uid:
		bits = p.mode >> 6
	case c.groups[p.gid]:
		bits = p.mode >> 3
	default:
		bits = p.mode
	}
	return bits&need == need
}

// unlinkErr returns 0 if c may remove an entry whose perm is child from
// a directory whose perm is dir: write and search on dir (else EACCES),
// and under a sticky bit ownership of dir or child (else EPERM).
func (c creds) unlinkErr(dir, child perm) syscall.Errno {
	if !c.may(dir, 3) {
		return syscall.EACCES
	}
	if dir.mode&syscall.S_ISVTX != 0 && c.caps&(1<<capFowner) == 0 && c.uid != dir.uid && c.uid != child.uid {
		return syscall.EPERM
	}
	return 0
}

// mayRemove returns 0 if the caller may remove the hierarchy directory
// rel (a snapshot or a group) with everything in it as on disk would
// allow, else EACCES (or EPERM under a sticky bit): rel's parent must
// let it go, and rel and each of subdirs (rel's directories, relative
// to the store, such as a group's snapshots) must let their entries go.
// Without --allow-other it always returns 0.
func (m *mount) mayRemove(ctx context.Context, rel string, subdirs ...string) syscall.Errno {
	if !m.allowOther {
		return 0
	}
	if _, ok := m.diskPerm(rel); !ok {
		return 0 // gone: the removal says so
	}
	c, ok := callerCreds(ctx)
	if !ok {
		return syscall.EACCES
	}
	parent := map[string]string{rel: path.Dir(rel)}
	for _, d := range subdirs {
		parent[d] = path.Dir(d)
	}
	for _, d := range append([]string{rel}, subdirs...) {
		if errno := c.unlinkErr(m.hierPerm(parent[d], true), m.hierPerm(d, true)); errno != 0 {
			return errno
		}
		// The entries of d: a snapshot's files, or a group's snapshot
		// directories (checked in turn). Under a sticky bit on d only
		// d's owner is sure to remove them all (the owner of each file
		// is not looked at: the refusal errs on the side of the disk).
		if errno := c.unlinkErr(m.hierPerm(d, true), perm{uid: ^uint32(0)}); errno != 0 {
			return errno
		}
	}
	return 0
}
