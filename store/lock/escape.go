package lock

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Lock-file naming facts (spec §5.2; proxmox-rs proxmox-systemd escape_unit,
// proxmox-backup backup_info.rs lock_file_path_helper).
const (
	// maxEscapedName: an escaped name this long or longer is hashed.
	maxEscapedName = 255
	// hashedKeep is how many escaped bytes a hashed name keeps from each end.
	hashedKeep = 80
	// hashedDir is the sub-directory of the namespace part holding hashed names.
	hashedDir = "hashed"
)

// EscapeUnit escapes a path the way systemd escapes unit names
// (systemd-escape --path, proxmox-systemd escape_unit with is_path set):
// leading '/' are dropped and an empty path becomes "-"; each remaining '/'
// becomes '-'; ASCII letters, digits, '_' and '.' stay, except a '.' as the
// very first byte; every other byte, '-' and ':' included, becomes \xNN
// with two lowercase hex digits.
//
//	EscapeUnit("vm/100/2024-06-10T06:13:20Z") == `vm-100-2024\x2d06\x2d10T06\x3a13\x3a20Z`
func EscapeUnit(path string) string {
	path = strings.TrimLeft(path, "/")
	if path == "" {
		return "-"
	}
	const hexDigits = "0123456789abcdef"
	var b strings.Builder
	b.Grow(len(path))
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '/':
			b.WriteByte('-')
		case c == '.' && i == 0:
			b.WriteString(`\x2e`)
		case c == '_' || c == '.' || '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z':
			b.WriteByte(c)
		default:
			b.WriteString(`\x`)
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
		}
	}
	return b.String()
}

// lockFileName is the name of a lock file relative to the store's lock
// directory (PBS 2025+): "<ns-part>/<EscapeUnit(rel)>", where ns-part is the
// namespace components joined with ':' (nothing for the root namespace)
// and rel is the object's path below its namespace ("vm/100",
// "vm/100/<time>", "vm/100/<time>/.index.json.lck"). An escaped name of 255
// bytes or more becomes "<ns-part>/hashed/<first 80>...<last 80>-<sha256>",
// the hash taken over rel unescaped, in lowercase hex.
func lockFileName(ns []string, rel string) string {
	nsPart := strings.Join(ns, ":")
	enc := EscapeUnit(rel)
	name := enc
	if len(enc) >= maxEscapedName {
		sum := sha256.Sum256([]byte(rel))
		name = hashedDir + "/" + enc[:hashedKeep] + "..." + enc[len(enc)-hashedKeep:] + "-" + hex.EncodeToString(sum[:])
	}
	if nsPart == "" {
		return name
	}
	return nsPart + "/" + name
}
