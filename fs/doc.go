// Package fs serves a Proxmox Backup Server datastore over FUSE
// (go-fuse's fs node API). It only translates: every format and every
// removal rule lives in package store.
//
// # Tree
//
//	MNT/<type>/<id>/<time>/…         groups and snapshots of the root namespace
//	MNT/ns/<name>/<type>/<id>/…      namespaces, nested as on disk
//	MNT/<type>/<id>/latest           symlink to the newest finished snapshot
//
// Inside a snapshot (modification time: the backup time):
//
//	index.json         the manifest as JSON
//	client.log         the decoded client log, when present
//	NAME               a blob archive NAME.blob, decoded (qemu-server.conf)
//	NAME               a fixed index NAME.fidx (drive-scsi0.img), or a
//	                   dynamic index that is not pxar, with random access
//	NAME.pxar/         a pxar archive (NAME.pxar.didx, or the
//	                   NAME.mpxar.didx + NAME.ppxar.didx pair) as the
//	                   directory of its root, with stored metadata,
//	                   hardlinks (one inode, counted nlink), xattrs,
//	                   POSIX ACLs and file capabilities
//
// The catalog is internal and not shown. Snapshots still being written
// (no manifest yet) are hidden until the backup finishes; a snapshot
// whose manifest does not parse, and an archive whose index does not
// parse or is missing, are hidden with a log line. Encrypted archives are
// listed, and opening them gives EACCES with a log line saying a key is
// needed. A corrupt or missing chunk makes reads of its byte range fail
// with EIO (logged with the digest); everything else keeps working.
//
// Inode numbers are a hash of the parent's inode number and the name,
// and inside an archive of the archive directory's number and the
// entry's offset (hardlinks resolved first), so they stay the same for
// the life of a mount and across remounts. The hierarchy is cached by
// the kernel for Options.HierarchyTimeout (1 s), archive contents for
// Options.ArchiveTimeout (1 h) and file pages are kept
// (FOPEN_KEEP_CACHE): archives never change. Listings of archive
// directories stream through the goodbye tables.
//
// Reads of an image inside one chunk are served straight from the
// store's decoded-chunk cache; a sequential reader has the next two
// chunks decoded in the background. pxar stores no link counts: the first
// stat of a regular file in an archive scans the archive's metadata once
// for hardlinks (about 40 ms for 50,000 entries). Listing a group reads
// the group directory and each snapshot's manifest (parsed once per
// manifest version and cached by the mount).
//
// # Pruning with rm
//
// Removal through the mount is PBS's forget (store.RemoveSnapshot): the
// exclusive snapshot lock (EBUSY while a backup, reader or verify holds
// it), the manifest lock, refusal of protected snapshots (EPERM), the
// RemovalObserver told before any file goes, then the directory, and the
// group too when it held the last snapshot. Nothing else writes: other
// operations get EROFS, and --read-only refuses removal as well.
//
//   - rmdir SNAPSHOT forgets the snapshot, although it is not empty.
//   - unlink of SNAPSHOT/index.json forgets the whole snapshot: without its
//     manifest a snapshot is not one. Unlinking another archive of a live
//     snapshot is refused with EPERM (archives are not removed alone), and
//     anything inside an archive with EROFS.
//   - rm -r SNAPSHOT works because a snapshot lists index.json first and
//     its pxar directories last. GNU rm reads the directory, unlinks
//     index.json, which forgets the snapshot, and then finds the rest as
//     "ghosts": the other files unlink successfully without doing
//     anything, and the archive directories list as empty, so rm never
//     walks an archive tree and the time does not depend on its size.
//     rm then removes the snapshot directory itself, which is gone
//     already, and exits 0.
//   - When the forget is refused (protected, locked), the refusal is
//     remembered for the refusing process for 30 s, and that process's
//     opendir of the snapshot's archive directories fails with the same
//     errno, so rm -r reports a few errors instead of walking the tree and
//     failing on every file. Other processes are not affected.
//   - rm -r GROUP: a group lists its snapshots oldest first and latest last.
//     rm forgets each snapshot as above (protected ones stay, with
//     errors); the unlink of latest succeeds once no snapshot is left;
//     rmdir GROUP is store.RemoveGroup (every unprotected snapshot, then
//     the group), and succeeds when the group is already gone.
//   - rmdir of a type directory succeeds once it has no groups left;
//     namespaces are not removed through the mount.
package fs
