package store

// Format facts of the PBS datastore. Each constant cites its section in
// shared/spec/datastore.md.

// Magic numbers (§2.1): the first 8 bytes of SHA-256 of an ASCII label.
var (
	magicUncompressed = [8]byte{66, 171, 56, 7, 190, 131, 112, 161}
	magicCompressed   = [8]byte{49, 185, 88, 66, 111, 182, 163, 127}
	magicEncrypted    = [8]byte{123, 103, 133, 190, 34, 45, 76, 240}
	magicEncrCompr    = [8]byte{230, 89, 27, 191, 11, 191, 216, 11}
	magicFixedIndex   = [8]byte{47, 127, 65, 237, 145, 253, 15, 205}
	magicDynamicIndex = [8]byte{28, 145, 78, 165, 25, 186, 179, 205}
)

const (
	// blobHeaderSize is the header of an unencrypted blob: magic and CRC (§2.2).
	blobHeaderSize = 12
	// encryptedBlobHeaderSize adds the 16-byte IV and 16-byte tag (§2.2).
	encryptedBlobHeaderSize = 44
	// MaxBlobSize is the largest payload DataBlob::encode accepts (§2.7).
	MaxBlobSize = 128 << 20
	// MaxManifestSize is the largest manifest (index.json.blob content)
	// pbsfs reads. PBS sets no lower bound than MaxBlobSize; a manifest
	// lists each archive in about 200 bytes, so 16 MiB is far above any
	// real one while keeping a hostile one cheap to refuse.
	MaxManifestSize = 16 << 20

	// indexHeaderSize is the header of both index formats (§3).
	indexHeaderSize = 4096
	// dynamicEntrySize is one (end, digest) entry of a dynamic index (§3.2).
	dynamicEntrySize = 40

	// FixedChunkSize is the chunk size of every fixed index PBS writes (§2.7).
	FixedChunkSize = 4 << 20
	// DefaultAvgChunkSize is the chunker average for pxar streams (§8).
	DefaultAvgChunkSize = 4 << 20
	// CatalogAvgChunkSize is the chunker average for the catalog stream (§8).
	CatalogAvgChunkSize = 512 << 10

	// maxChunkSize caps the decoded size of one chunk we accept when
	// reading (§2.7: 16 MiB upstream, blobs up to 128 MiB).
	maxChunkSize = MaxBlobSize

	// MaxNamespaceDepth is the number of namespace levels below the root (§1.3).
	MaxNamespaceDepth = 7
	// maxNamespaceLength bounds the joined namespace path (§1.3).
	maxNamespaceLength = 32 * 8

	// ManifestName is the manifest blob of a snapshot (§1.4, §4).
	ManifestName = "index.json.blob"
	// ClientLogName is the optional client log; it is not in the manifest (§1.4).
	ClientLogName = "client.log.blob"
	// ProtectedName marks a protected snapshot (§1.4).
	ProtectedName = ".protected"
	// OwnerName holds a group's owner (§1.4).
	OwnerName = "owner"
	// NotesName holds a group's notes (§1.4).
	NotesName = "notes"
	// CatalogName is the catalog archive beside v1 pxar archives (§1.4, §9.1).
	CatalogName = "catalog.pcat1.didx"
)
