package pxar

import "errors"

// Item types (spec §3). Each value is the SipHash-2-4 (keys hashKey0,
// hashKey1) of an ASCII marker string; format_test.go checks the table.
const (
	typeFormatVersion      = 0x730f6c75df16a40d // __PROXMOX_FORMAT_VERSION__
	typeEntry              = 0xd5956474e588acef // __PROXMOX_FORMAT_ENTRY_V2__
	typeEntryV1            = 0x11da850a1c1cceff // __PROXMOX_FORMAT_ENTRY__
	typePrelude            = 0xe309d79d9f7b771b // __PROXMOX_FORMAT_PRELUDE__
	typeFilename           = 0x16701121063917b3 // __PROXMOX_FORMAT_FILENAME__
	typeSymlink            = 0x27f971e7dbf5dc5f // __PROXMOX_FORMAT_SYMLINK__
	typeDevice             = 0x9fc9e906586d5ce9 // __PROXMOX_FORMAT_DEVICE__
	typeXattr              = 0x0dab0229b57dcd03 // __PROXMOX_FORMAT_XATTR__
	typeACLUser            = 0x2ce8540a457d55b8 // __PROXMOX_FORMAT_ACL_USER__
	typeACLGroup           = 0x136e3eceb04c03ab // __PROXMOX_FORMAT_ACL_GROUP__
	typeACLGroupObj        = 0x10868031e9582876 // __PROXMOX_FORMAT_ACL_GROUP_OBJ__
	typeACLDefault         = 0xbbbb13415a6896f5 // __PROXMOX_FORMAT_ACL_DEFAULT__
	typeACLDefaultUser     = 0xc89357b40532cd1f // __PROXMOX_FORMAT_ACL_DEFAULT_USER__
	typeACLDefaultGroup    = 0xf90a8a5816038ffe // __PROXMOX_FORMAT_ACL_DEFAULT_GROUP__
	typeFCaps              = 0x2da9dd9db5f7fb67 // __PROXMOX_FORMAT_FCAPS__
	typeQuotaProjID        = 0xe07540e82f7d1cbb // __PROXMOX_FORMAT_QUOTA_PROJID__
	typeHardlink           = 0x51269c8422bd7275 // __PROXMOX_FORMAT_HARDLINK__
	typePayload            = 0x28147a1b0b7c1a25 // __PROXMOX_FORMAT_PXAR_PAYLOAD__
	typePayloadRef         = 0x419d3d6bc4ba977e // __PROXMOX_FORMAT_PXAR_PAYLOAD_REF__
	typeGoodbye            = 0x2fec4fa642d5731d // __PROXMOX_FORMAT_GOODBYE__
	goodbyeTailMarker      = 0xef5eed5b753e1555 // __PROXMOX_FORMAT_PXAR_GOODBYE_TAIL_MARKER__
	typePayloadStartMarker = 0x834c68c2194a4ed2 // __PROXMOX_FORMAT_PXAR_PAYLOAD_START_MARKER__
	typePayloadTailMarker  = 0x6c72b78b984c81b5 // __PROXMOX_FORMAT_PXAR_PAYLOAD_TAIL_MARKER__
)

// Hash keys of the file name hash (spec §6.3): the first 16 bytes of
// sha1("PROXMOX ARCHIVE FORMAT"), as two big-endian u64.
const (
	hashKey0 = 0x83ac3f1cfbb450db
	hashKey1 = 0xaa4f1b6879369fbd
)

// Fixed sizes (spec §2, §5, §6.1).
const (
	headerSize      = 16 // htype u64 + full_size u64
	statSize        = 40 // ENTRY content
	statV1Size      = 32 // ENTRY_V1 content
	goodbyeItemSize = 24 // hash, offset, size
	minArchiveSize  = 24 // the accessor refuses shorter archives (§11)
)

// Limits from spec §11. Every allocation whose size comes from the archive
// is capped by one of these.
const (
	maxNameLen      = 4096                          // FILENAME name bytes, without NUL (§5.7)
	maxFilenameLen  = maxNameLen + 1                // FILENAME content
	maxSymlinkLen   = maxNameLen + 1                // SYMLINK content
	maxHardlinkLen  = 8 + maxNameLen + 1            // HARDLINK content (§5.9)
	maxXattrLen     = 255 + 65536                   // XATTR and FCAPS content (§5.13)
	maxXattrName    = 255                           // longest xattr name the encoder keeps
	maxPreludeLen   = 16 << 20                      // PRELUDE content; unlimited in the format, capped here
	maxGoodbyeLen   = goodbyeItemSize * (1<<22 + 1) // GOODBYE content read at once: 4Mi children
	maxGoodbyeItems = maxGoodbyeLen / goodbyeItemSize
	maxAttrItems    = 1 << 16 // XATTR/ACL items on one entry
	maxDepth        = 2048    // directory nesting
	maxPathLen      = 1 << 20 // bytes of a decoded path
)

// Mode bits (spec §5.5). They match Linux.
const (
	modeIFMT   = 0o170000
	modeIFSOCK = 0o140000
	modeIFLNK  = 0o120000
	modeIFREG  = 0o100000
	modeIFBLK  = 0o060000
	modeIFDIR  = 0o040000
	modeIFCHR  = 0o020000
	modeIFIFO  = 0o010000
	modeISUID  = 0o4000
	modeISGID  = 0o2000
	modeISVTX  = 0o1000
)

// ACLNoMask is the ACL permission value meaning "not set" (spec §5.14).
const ACLNoMask = ^uint64(0)

// Sentinel errors. A sentinel names the condition; the wrapping error names
// the subject (offset, path).
var (
	// ErrCorrupt reports archive bytes that do not follow the format.
	ErrCorrupt = errors.New("pxar: corrupt archive")
	// ErrTooLarge reports an item above a limit of spec §11 or of this package.
	ErrTooLarge = errors.New("pxar: item too large")
	// ErrNoPayload reports a file content read from a split archive opened
	// without its payload stream.
	ErrNoPayload = errors.New("pxar: payload stream not available")
	// ErrNotFile reports a content read of an entry that is not a regular file.
	ErrNotFile = errors.New("pxar: not a regular file")
	// ErrNotDir reports a directory operation on an entry that is not a directory.
	ErrNotDir = errors.New("pxar: not a directory")
	// ErrUnsafePath reports a name or link that would escape the extraction target.
	ErrUnsafePath = errors.New("pxar: unsafe path")
	// ErrWriter reports a misuse of the Writer (items in the wrong order).
	ErrWriter = errors.New("pxar: invalid writer call")
)
