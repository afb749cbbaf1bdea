package fs

import (
	"encoding/binary"
	"hash/fnv"
)

// rootIno is the inode number FUSE gives the mount's root.
const rootIno = 1

// childIno returns the inode number of the entry called name in the
// directory with inode number parent. It depends on nothing else, so an
// entry keeps its number for the life of a mount and across remounts.
// Numbers 0 and 1 are never returned (0 is invalid, 1 is the root).
func childIno(parent uint64, name string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], parent)
	h.Write(b[:])
	h.Write([]byte(name))
	return fixIno(h.Sum64())
}

// entryIno returns the inode number of the pxar entry at offset off in the
// archive whose directory has inode number archive. All names of a
// hardlinked file resolve to the file's offset, so they share the number.
func entryIno(archive uint64, off int64) uint64 {
	h := fnv.New64a()
	var b [17]byte
	binary.LittleEndian.PutUint64(b[:], archive)
	b[8] = '@' // keeps offsets apart from names in childIno
	binary.LittleEndian.PutUint64(b[9:], uint64(off))
	h.Write(b[:])
	return fixIno(h.Sum64())
}

func fixIno(x uint64) uint64 {
	if x <= rootIno {
		x += 2
	}
	return x
}
