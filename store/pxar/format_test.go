package pxar

import "testing"

// TestTypeConstants checks each item type against the hash of its marker
// string (spec §3), and the name hash against the spec's check values (§6.3).
func TestTypeConstants(t *testing.T) {
	tests := []struct {
		marker string
		want   uint64
	}{
		{"__PROXMOX_FORMAT_VERSION__", typeFormatVersion},
		{"__PROXMOX_FORMAT_ENTRY_V2__", typeEntry},
		{"__PROXMOX_FORMAT_ENTRY__", typeEntryV1},
		{"__PROXMOX_FORMAT_PRELUDE__", typePrelude},
		{"__PROXMOX_FORMAT_FILENAME__", typeFilename},
		{"__PROXMOX_FORMAT_SYMLINK__", typeSymlink},
		{"__PROXMOX_FORMAT_DEVICE__", typeDevice},
		{"__PROXMOX_FORMAT_XATTR__", typeXattr},
		{"__PROXMOX_FORMAT_ACL_USER__", typeACLUser},
		{"__PROXMOX_FORMAT_ACL_GROUP__", typeACLGroup},
		{"__PROXMOX_FORMAT_ACL_GROUP_OBJ__", typeACLGroupObj},
		{"__PROXMOX_FORMAT_ACL_DEFAULT__", typeACLDefault},
		{"__PROXMOX_FORMAT_ACL_DEFAULT_USER__", typeACLDefaultUser},
		{"__PROXMOX_FORMAT_ACL_DEFAULT_GROUP__", typeACLDefaultGroup},
		{"__PROXMOX_FORMAT_FCAPS__", typeFCaps},
		{"__PROXMOX_FORMAT_QUOTA_PROJID__", typeQuotaProjID},
		{"__PROXMOX_FORMAT_HARDLINK__", typeHardlink},
		{"__PROXMOX_FORMAT_PXAR_PAYLOAD__", typePayload},
		{"__PROXMOX_FORMAT_PXAR_PAYLOAD_REF__", typePayloadRef},
		{"__PROXMOX_FORMAT_GOODBYE__", typeGoodbye},
		{"__PROXMOX_FORMAT_PXAR_GOODBYE_TAIL_MARKER__", goodbyeTailMarker},
		{"__PROXMOX_FORMAT_PXAR_PAYLOAD_START_MARKER__", typePayloadStartMarker},
		{"__PROXMOX_FORMAT_PXAR_PAYLOAD_TAIL_MARKER__", typePayloadTailMarker},
		{"a", 0x0c26e9067c2c7bcf},
		{"b", 0x4d1da3f512e8c733},
		{"c", 0xb147860a8cd7220b},
		{"d", 0x25b61d6cbc2f47c3},
		{"e", 0x88fcc5ee2e1f5699},
		{"hello.txt", 0x9b1ee0b84c66190c},
		{"dir2", 0x4f03398ad1f0458a},
		{"hl-cross.txt", 0x04dfb292acf02838},
		{"one.txt", 0xb4b41a0be333b073},
	}
	for _, tc := range tests {
		t.Run(tc.marker, func(t *testing.T) {
			if got := hashName(tc.marker); got != tc.want {
				t.Errorf("hash = %#x, want %#x", got, tc.want)
			}
		})
	}
}
