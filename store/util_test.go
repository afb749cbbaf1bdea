package store

import (
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
)

func hexs(b []byte) string { return hex.EncodeToString(b) }

// fixCRC recomputes the CRC of an unencrypted blob after a test changed it.
func fixCRC(b []byte) {
	binary.LittleEndian.PutUint32(b[8:], crc32.ChecksumIEEE(b[blobHeaderSize:]))
}
