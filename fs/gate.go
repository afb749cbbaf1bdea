package fs

import (
	"path"
	"path/filepath"
	"syscall"

	"github.com/pbsfs/pbsfs/store"
)

// The mount never grants more than the datastore on disk does. Each
// directory of the hierarchy (namespaces, the "ns" and type directories,
// groups, snapshots) takes the owner, group and mode of the directory it
// stands for; a blob file (index.json, client.log, NAME.blob) those of
// its .blob file. A file or directory that stands for an archive read
// through chunks (an image, a pxar archive) takes those of its index
// file, less the read (and search) permission of every class of users
// that could not read the chunks on disk (search permission on .chunks)
// or, for a split archive, its payload index. The mount's root is also
// closed to those who cannot search every directory above the datastore.
// An encrypted archive or blob, which the mount decrypts with its key,
// goes to the mount's user alone (mode at most 0700): the store on disk
// gives others only its ciphertext.
// Archive contents keep their archived metadata behind these gates. With
// --allow-other the kernel checks these modes (default_permissions).

// perm is the owner, group and permission bits of a path.
type perm struct {
	uid, gid uint32
	mode     uint32 // permission bits (07777)
}

// diskPerm returns the perm of the datastore path rel ("" for the root).
func (m *mount) diskPerm(rel string) (perm, bool) {
	var st syscall.Stat_t
	if err := syscall.Lstat(m.s.Path(rel), &st); err != nil {
		return perm{}, false
	}
	return perm{uid: st.Uid, gid: st.Gid, mode: st.Mode & 0o7777}, true
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
// chunk store. A directory gets search permission with read.
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
	if dir {
		p.mode |= (p.mode & 0o444) >> 2
	}
	if m.owner != nil {
		p.uid, p.gid = m.owner.uid, m.owner.gid
	}
	return p
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
