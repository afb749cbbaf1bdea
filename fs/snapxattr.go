package fs

import (
	"context"
	"strconv"
	"strings"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
)

// Extended attributes of a snapshot directory. protected and notes can be
// set (setfattr), taking the same locks as pbsfs protect and pbsfs notes;
// the others are read-only. On a read-only mount the daemon refuses every
// set with EROFS.
const (
	xattrProtected = "user.pbs.protected"    // "0" or "1"
	xattrNotes     = "user.pbs.notes"        // the snapshot notes
	xattrVerify    = "user.pbs.verify-state" // "ok", "failed" or "none"
	xattrSize      = "user.pbs.size"         // logical bytes of all archives
	xattrOwner     = "user.pbs.owner"        // the group's owner (Authid)
	// xattrKeyFingerprint names the key of an encrypted or signed
	// snapshot (full colon-hex form); absent for a plain one.
	xattrKeyFingerprint = "user.pbs.key-fingerprint"
)

// snapshotXattrNames is the order listxattr reports them in.
var snapshotXattrNames = []string{xattrProtected, xattrNotes, xattrVerify, xattrSize, xattrOwner}

var (
	_ = (fusefs.NodeGetxattrer)((*snapshotNode)(nil))
	_ = (fusefs.NodeListxattrer)((*snapshotNode)(nil))
	_ = (fusefs.NodeSetxattrer)((*snapshotNode)(nil))
	_ = (fusefs.NodeRemovexattrer)((*snapshotNode)(nil))
)

// xattr returns the value of one snapshot attribute.
func (n *snapshotNode) xattr(ctx context.Context, name string) ([]byte, syscall.Errno) {
	if n.isRemoved() {
		// Other names (the kernel's ACL lookups before every
		// permission check) have no value, as for a live snapshot: an
		// error here would fail the rest of an rm -r under
		// --allow-other.
		if strings.HasPrefix(name, "user.pbs.") {
			return nil, syscall.ENOENT
		}
		return nil, syscall.ENODATA
	}
	switch name {
	case xattrProtected:
		si, err := n.m.s.Snapshot(n.ref)
		if err != nil {
			return nil, n.m.toErrno(err, "getxattr", snapAttr(n.ref))
		}
		if si.Protected {
			return []byte("1"), 0
		}
		return []byte("0"), 0
	case xattrOwner:
		owner, err := n.m.s.Owner(n.ref.Group)
		if err != nil {
			return nil, n.m.toErrno(err, "getxattr", snapAttr(n.ref))
		}
		return []byte(owner), 0
	case xattrNotes, xattrVerify, xattrSize, xattrKeyFingerprint:
		man, err := n.m.manifest(n.ref)
		if err != nil {
			return nil, n.m.toErrno(err, "getxattr", snapAttr(n.ref))
		}
		switch name {
		case xattrKeyFingerprint:
			fp, ok, err := man.KeyFingerprint()
			if err != nil {
				return nil, n.m.toErrno(err, "getxattr", snapAttr(n.ref))
			}
			if !ok {
				return nil, syscall.ENODATA
			}
			return []byte(fp.String()), 0
		case xattrNotes:
			return []byte(man.Notes()), 0
		case xattrVerify:
			if v, ok := man.Verify(); ok && v.State != "" {
				return []byte(v.State), 0
			}
			return []byte("none"), 0
		default:
			return []byte(strconv.FormatUint(man.TotalSize(), 10)), 0
		}
	}
	return nil, syscall.ENODATA
}

// Getxattr serves the snapshot attributes.
func (n *snapshotNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, errno := n.xattr(ctx, attr)
	if errno != 0 {
		return 0, errno
	}
	if len(dest) == 0 {
		return uint32(len(v)), 0
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// Listxattr lists the snapshot attributes, NUL-terminated; the key
// fingerprint only when the manifest has one.
func (n *snapshotNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	list := strings.Join(snapshotXattrNames, "\x00") + "\x00"
	if man, err := n.m.manifest(n.ref); err == nil {
		if _, ok, _ := man.KeyFingerprint(); ok {
			list += xattrKeyFingerprint + "\x00"
		}
	}
	if len(dest) == 0 {
		return uint32(len(list)), 0
	}
	if len(dest) < len(list) {
		return uint32(len(list)), syscall.ERANGE
	}
	return uint32(copy(dest, list)), 0
}

// Setxattr sets protection ("0" or "1") or the notes.
func (n *snapshotNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if n.isRemoved() {
		return syscall.ENOENT
	}
	if n.m.readOnly {
		return syscall.EROFS
	}
	switch attr {
	case xattrProtected:
		var on bool
		switch strings.TrimSpace(string(data)) {
		case "1":
			on = true
		case "0":
		default:
			return syscall.EINVAL
		}
		if err := n.m.s.SetProtected(n.ref, on); err != nil {
			return n.m.toErrno(err, "setxattr", snapAttr(n.ref))
		}
		n.m.log.Info("protection changed", snapAttr(n.ref), "protected", on)
		return 0
	case xattrNotes:
		err := n.m.s.SetSnapshotNotes(ctx, n.ref, string(data))
		n.m.dropManifest(n.ref)
		return n.m.toErrno(err, "setxattr", snapAttr(n.ref))
	case xattrVerify, xattrSize, xattrOwner, xattrKeyFingerprint:
		return syscall.EPERM
	}
	return syscall.ENOTSUP
}

// Removexattr clears the notes, or the protection.
func (n *snapshotNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	switch attr {
	case xattrProtected:
		return n.Setxattr(ctx, attr, []byte("0"), 0)
	case xattrNotes:
		return n.Setxattr(ctx, attr, nil, 0)
	case xattrVerify, xattrSize, xattrOwner, xattrKeyFingerprint:
		return syscall.EPERM
	}
	return syscall.ENODATA
}
