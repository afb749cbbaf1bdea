package pxar

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// Linux POSIX ACL xattr layout (system.posix_acl_access/default): a u32
// version 2, then 8-byte entries {u16 tag, u16 perm, u32 id}.
const (
	aclXattrAccess  = "system.posix_acl_access"
	aclXattrDefault = "system.posix_acl_default"
	aclXattrVersion = 2
	aclUserObj      = 0x01
	aclUser         = 0x02
	aclGroupObj     = 0x04
	aclGroup        = 0x08
	aclMask         = 0x10
	aclOther        = 0x20
	aclUndefinedID  = 0xffffffff
	maxACLEntries   = 1 << 16
)

// parseACLXattr adds the POSIX ACL xattr value b to acl the way the PBS
// client converts ACLs (spec §5.14): named entries sorted by (id, perms),
// the access group_obj kept only with a mask, the default base entries
// kept if any is set.
func parseACLXattr(b []byte, isDefault bool, acl *ACL) error {
	if len(b) < 4 || binary.LittleEndian.Uint32(b) != aclXattrVersion || (len(b)-4)%8 != 0 || (len(b)-4)/8 > maxACLEntries {
		return fmt.Errorf("malformed POSIX ACL xattr of %d bytes", len(b))
	}
	var users, groups []ACLEntry
	base := [4]uint64{ACLNoMask, ACLNoMask, ACLNoMask, ACLNoMask} // user_obj, group_obj, other, mask
	for p := b[4:]; len(p) >= 8; p = p[8:] {
		tag, perm, id := binary.LittleEndian.Uint16(p), uint64(binary.LittleEndian.Uint16(p[2:])), uint64(binary.LittleEndian.Uint32(p[4:]))
		switch tag {
		case aclUserObj:
			base[0] = perm
		case aclGroupObj:
			base[1] = perm
		case aclOther:
			base[2] = perm
		case aclMask:
			base[3] = perm
		case aclUser:
			users = append(users, ACLEntry{ID: id, Perms: perm})
		case aclGroup:
			groups = append(groups, ACLEntry{ID: id, Perms: perm})
		default:
			return fmt.Errorf("unknown ACL tag %#x", tag)
		}
	}
	cmp := func(x, y ACLEntry) int {
		if x.ID != y.ID {
			if x.ID < y.ID {
				return -1
			}
			return 1
		}
		switch {
		case x.Perms < y.Perms:
			return -1
		case x.Perms > y.Perms:
			return 1
		}
		return 0
	}
	slices.SortFunc(users, cmp)
	slices.SortFunc(groups, cmp)
	if !isDefault {
		if base[1] != ACLNoMask && base[3] != ACLNoMask {
			g := base[1]
			acl.GroupObj = &g
		}
		acl.Users, acl.Groups = users, groups
		return nil
	}
	if base != [4]uint64{ACLNoMask, ACLNoMask, ACLNoMask, ACLNoMask} {
		acl.Default = &ACLDefault{UserObj: base[0], GroupObj: base[1], Other: base[2], Mask: base[3]}
	}
	acl.DefaultUsers, acl.DefaultGroups = users, groups
	return nil
}

func appendACLEntry(b []byte, tag uint16, perm uint64, id uint64) []byte {
	b = binary.LittleEndian.AppendUint16(b, tag)
	b = binary.LittleEndian.AppendUint16(b, uint16(perm&7))
	return binary.LittleEndian.AppendUint32(b, uint32(id))
}

func aclHeader() []byte { return binary.LittleEndian.AppendUint32(nil, aclXattrVersion) }

// accessACLXattr builds the system.posix_acl_access value that restores
// acl on a file with the given mode, as PBS's restore does: user_obj and
// other from the mode; with ACL_GROUP_OBJ, mask from the mode's group bits.
// It returns nil if the mode alone says everything.
func accessACLXattr(mode uint64, acl *ACL) []byte {
	if len(acl.Users) == 0 && len(acl.Groups) == 0 && acl.GroupObj == nil {
		return nil
	}
	b := aclHeader()
	b = appendACLEntry(b, aclUserObj, mode>>6&7, aclUndefinedID)
	for _, u := range acl.Users {
		b = appendACLEntry(b, aclUser, u.Perms, u.ID)
	}
	groupObj, mask := mode>>3&7, mode>>3&7
	if acl.GroupObj != nil {
		groupObj = *acl.GroupObj
	}
	b = appendACLEntry(b, aclGroupObj, groupObj, aclUndefinedID)
	for _, g := range acl.Groups {
		b = appendACLEntry(b, aclGroup, g.Perms, g.ID)
	}
	b = appendACLEntry(b, aclMask, mask, aclUndefinedID)
	return appendACLEntry(b, aclOther, mode&7, aclUndefinedID)
}

// defaultACLXattr builds the system.posix_acl_default value of acl, nil
// if there is no default ACL.
func defaultACLXattr(acl *ACL) []byte {
	d := acl.Default
	if d == nil && len(acl.DefaultUsers) == 0 && len(acl.DefaultGroups) == 0 {
		return nil
	}
	if d == nil {
		d = &ACLDefault{UserObj: ACLNoMask, GroupObj: ACLNoMask, Other: ACLNoMask, Mask: ACLNoMask}
	}
	b := aclHeader()
	if d.UserObj != ACLNoMask {
		b = appendACLEntry(b, aclUserObj, d.UserObj, aclUndefinedID)
	}
	for _, u := range acl.DefaultUsers {
		b = appendACLEntry(b, aclUser, u.Perms, u.ID)
	}
	if d.GroupObj != ACLNoMask {
		b = appendACLEntry(b, aclGroupObj, d.GroupObj, aclUndefinedID)
	}
	for _, g := range acl.DefaultGroups {
		b = appendACLEntry(b, aclGroup, g.Perms, g.ID)
	}
	if d.Mask != ACLNoMask {
		b = appendACLEntry(b, aclMask, d.Mask, aclUndefinedID)
	}
	if d.Other != ACLNoMask {
		b = appendACLEntry(b, aclOther, d.Other, aclUndefinedID)
	}
	return b
}

// chattrFlags maps Linux FS_IOC_GETFLAGS bits to PBS entry flags (spec §5.6).
func chattrFlags() [10][2]uint64 {
	return [10][2]uint64{
		{0x20, 0x10000},         // FS_APPEND_FL
		{0x80, 0x20000},         // FS_NOATIME_FL
		{0x4, 0x40000},          // FS_COMPR_FL
		{0x800000, 0x80000},     // FS_NOCOW_FL
		{0x40, 0x100000},        // FS_NODUMP_FL
		{0x10000, 0x200000},     // FS_DIRSYNC_FL
		{0x10, 0x400000},        // FS_IMMUTABLE_FL
		{0x8, 0x800000},         // FS_SYNC_FL
		{0x400, 0x1000000},      // FS_NOCOMP_FL
		{0x20000000, 0x2000000}, // FS_PROJINHERIT_FL
	}
}

// flagsFromChattr converts FS_IOC_GETFLAGS bits to PBS flags.
func flagsFromChattr(fl uint64) uint64 {
	var f uint64
	for _, m := range chattrFlags() {
		if fl&m[0] != 0 {
			f |= m[1]
		}
	}
	return f
}

// chattrFromFlags converts PBS flags to FS_IOC_SETFLAGS bits.
func chattrFromFlags(f uint64) uint64 {
	var fl uint64
	for _, m := range chattrFlags() {
		if f&m[1] != 0 {
			fl |= m[0]
		}
	}
	return fl
}

// AllXattrs returns m's extended attributes the way Linux lists them for
// the restored file: the stored xattrs in order, then security.capability
// from FCAPS, then the POSIX ACLs encoded as system.posix_acl_access and
// system.posix_acl_default values. A FUSE mount can serve
// listxattr/getxattr from it.
func (m *Metadata) AllXattrs() []Xattr {
	list := append([]Xattr(nil), m.Xattrs...)
	if m.FCaps != nil {
		list = append(list, Xattr{Name: "security.capability", Value: m.FCaps})
	}
	if v := accessACLXattr(m.Mode, &m.ACL); v != nil {
		list = append(list, Xattr{Name: aclXattrAccess, Value: v})
	}
	if v := defaultACLXattr(&m.ACL); v != nil && m.Mode&modeIFMT == modeIFDIR {
		list = append(list, Xattr{Name: aclXattrDefault, Value: v})
	}
	return list
}
