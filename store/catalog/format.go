// Package catalog reads and writes the PBS catalog (catalog.pcat1), the
// side file that lists the directory trees of a snapshot's legacy pxar
// archives with names, types, sizes and mtimes (spec pxar.md §10).
//
// A catalog is a sequence of directory blocks, children before parents,
// followed by the root block and its absolute offset:
//
//	w, _ := catalog.NewWriter(f)
//	w.StartDirectory("root.pxar.didx")
//	w.AddFile("a", 2, 0)
//	w.EndDirectory()
//	w.Finish()
//
//	r, _ := catalog.NewReader(ra, size)
//	e, _ := r.Lookup("/root.pxar.didx/a")
//	list, _ := r.ReadDir(r.Root())
package catalog

import "errors"

// Magic is the 8-byte file magic: sha256("Proxmox Backup Catalog file v1.0")[0:8] (§10.3).
const Magic = "\x91\xfd\x60\xf9\xc4\x67\x58\xd5"

// Entry types (§10.3).
const (
	TypeDir      = 'd'
	TypeFile     = 'f'
	TypeSymlink  = 'l'
	TypeHardlink = 'h'
	TypeBlockDev = 'b'
	TypeCharDev  = 'c'
	TypeFifo     = 'p'
	TypeSocket   = 's'
)

// Limits. Every allocation from a length field is capped by one of these
// and by the size of the catalog.
const (
	maxNameLen     = 4095    // name_len must be < 4096
	maxBlockLen    = 1 << 30 // a directory block's table
	maxVarintLen   = 10      // u64 varint
	maxIVarintLen  = 11      // i64 varint with its negative terminator
	minCatalogSize = len(Magic) + 2 + 8
)

var (
	// ErrCorrupt reports catalog bytes that do not follow the format.
	ErrCorrupt = errors.New("catalog: corrupt catalog")
	// ErrNotDir reports a directory operation on a non-directory entry.
	ErrNotDir = errors.New("catalog: not a directory")
	// ErrWriter reports a misuse of the Writer.
	ErrWriter = errors.New("catalog: invalid writer call")
)
