package pxar

import (
	"reflect"
	"testing"
)

// TestACLXattrRoundTrip encodes ACLs as Linux xattr values and parses
// them back.
func TestACLXattrRoundTrip(t *testing.T) {
	gobj := uint64(5)
	tests := []struct {
		name string
		mode uint64
		acl  ACL
	}{
		{"named users with mask", 0o100640, ACL{Users: []ACLEntry{{ID: 7, Perms: 6}, {ID: 1000, Perms: 4}}, Groups: []ACLEntry{{ID: 9, Perms: 1}}, GroupObj: &gobj}},
		{"default only", 0o40755, ACL{Default: &ACLDefault{UserObj: 7, GroupObj: 5, Other: 0, Mask: 7}, DefaultUsers: []ACLEntry{{ID: 3, Perms: 7}}, DefaultGroups: []ACLEntry{{ID: 4, Perms: 5}}}},
		{"default partial", 0o40700, ACL{Default: &ACLDefault{UserObj: 6, GroupObj: ACLNoMask, Other: ACLNoMask, Mask: ACLNoMask}}},
		{"none", 0o100644, ACL{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := Metadata{Mode: tc.mode, ACL: tc.acl}
			var got ACL
			for _, x := range m.AllXattrs() {
				if err := parseACLXattr(x.Value, x.Name == aclXattrDefault, &got); err != nil {
					t.Fatal(err)
				}
			}
			if !reflect.DeepEqual(normalize(diskEntry{ACL: got}).ACL, normalize(diskEntry{ACL: tc.acl}).ACL) {
				t.Errorf("got %+v, want %+v", got, tc.acl)
			}
		})
	}
}
