// Package pxar reads and writes pxar archives, the file-level backup format
// of Proxmox Backup Server, in its plain (v1, one .pxar stream) and split
// (v2, .mpxar metadata + .ppxar payload streams) forms. The format is
// described in the pbsfs spec pxar.md; section numbers in comments refer
// to it.
//
// # Sequential reading
//
// A Decoder reads an archive in stored order, like archive/tar.Reader. The
// first entry is the root directory; after Next returns a regular file,
// the Decoder reads its contents:
//
//	d := pxar.NewDecoder(meta, metaSize, payload) // payload nil for v1
//	for {
//		e, err := d.Next()
//		if err == io.EOF {
//			break
//		}
//		...
//		io.Copy(w, d)
//	}
//
// # Random access
//
// An Archive finds entries through the goodbye tables (hash-ordered binary
// search trees at the end of each directory) without reading file
// contents, like archive/zip.Reader, and implements io/fs.FS:
//
//	a, err := pxar.Open(meta, metaSize, payload)
//	e, err := a.Lookup("etc/hosts")          // a hardlink is returned as such
//	f, err := a.Resolve(e)                    // hardlink -> its target file
//	r, err := a.Content(f)                    // *io.SectionReader of the bytes
//	dr, err := a.OpenDir(a.Root())            // streaming listing, goodbye order
//	for c, err := dr.Next(); err == nil; c, err = dr.Next() { ... }
//	c, err := a.LookupChild(dir, name)        // one name, O(log n) reads
//
// Entry.Offset is a stable identity within one archive, usable as an inode
// number (resolve hardlinks first so that all names of a file share it).
// Metadata.AllXattrs gives the xattrs, fcaps and ACLs as Linux would list
// them, for getxattr/listxattr.
// Names, paths and link targets are raw bytes held in Go strings. Entries
// returned by an Archive can be passed back to its methods; entries from a
// Decoder carry no goodbye-table information and cannot.
//
// # Writing
//
// A Writer writes items in order (BeginDir, AddFile, AddSymlink,
// AddDevice, AddSpecial, AddHardlink, EndDir, Close). Create walks a
// Source (DirSource for the live file system, or any abstract tree) the
// way the PBS client does: byte-sorted names, hardlinks after the first
// path, xattrs user.* and trusted.*, security.capability as FCAPS, POSIX
// ACLs, chattr flags, quota project ids, nanosecond mtimes. It can feed a
// catalog (CreateOptions.Catalog, satisfied by *catalog.Writer).
//
//	w := pxar.NewWriter(metaFile, nil) // or NewWriter(mpxar, ppxar) for split
//	err := pxar.CreateFromDir(ctx, "/src", w, pxar.CreateOptions{OnError: report})
//
// # Extraction
//
// Extract restores an archive or one sub-path into a target directory with
// its metadata, never writing outside the target.
//
// # Damage
//
// An archive read from a store can have unreadable stretches (a missing or
// corrupt chunk). Since a directory's goodbye table gives every child's
// offset, a DirReader goes on past a child it cannot decode (a
// *ChildError, naming the child when its FILENAME could be read), a
// lookup searches both subtrees of an unreadable goodbye item, and Extract
// with OnDamaged restores every intact entry and reports the others,
// removing any file whose contents could not be read in full.
//
// # Safety
//
// Corrupt input yields errors wrapping ErrCorrupt or ErrTooLarge that name
// the offset. Every allocation sized by the archive is capped by a limit
// in format.go, offsets in goodbye tables and hardlinks must point strictly
// backwards, and a directory's range must lie inside its parent's, so no
// walk can loop.
package pxar
