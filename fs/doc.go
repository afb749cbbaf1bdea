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
//	                   POSIX ACLs, file capabilities and holes
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
// (FOPEN_KEEP_CACHE): archives never change; with Options.DropBehind
// (S3 datastores) those a sequential reader has gone past are dropped
// (see dropBehind). Listings of archive
// directories stream through the goodbye tables.
//
// Listing a group reads the group directory and each snapshot's manifest
// (parsed once per manifest version and cached by the mount).
//
// # Reading
//
// Every read of archive bytes, images and files in plain and split pxar
// archives alike, goes through the store's read engine (store.Reader, one
// per open file): a request inside one chunk is answered with a slice of
// the decoded chunk (no copy); a sequential reader has the next 24 MiB of
// chunks (two chunks at least) decoding in the background, one chunk per
// core at a time (the mount raises the kernel's read-ahead of its files
// to 1 MiB, so reads arrive as 1 MiB requests instead of 128 KiB ones,
// and runs two Go processors beyond one per core, so serving a request
// does not wait for a decode to yield); the
// decoded-chunk cache (pbsfs mount --cache-size, 256 MiB by default) keeps
// chunks read twice outside a sequential scan in a protected segment, so
// one cat of a large file cannot flush the working set of a random reader,
// and chunks of sequential scans in a segment of a quarter of it (at
// least 96 MiB) whose memory the scan reuses: fresh memory costs more to
// fault in than a chunk costs to verify on virtual machines.
//
// Opening an archive reads its first chunk (the root entry) and its last
// (the root's goodbye table), decoded on two cores at once; nothing else
// is read before the root lists.
//
// Metadata is exact: modes (0000, set-id and sticky bits included),
// owners, times, sizes and link counts are those stored; go-fuse's
// defaulting of empty permission bits is off (NullPermissions).
//
// Link counts. pxar stores none. The first stat of a regular file in an
// archive finds the archive's hardlinks once (store.HardlinkCounts): for a
// plain archive from the snapshot's catalog (catalog.pcat1), which names
// every hardlink by path, then one directory lookup per hardlink for its
// target; nothing of the archive's file data is read, so that stat costs
// its directory lookup plus the catalog, whatever the archive's size
// (TestFirstStatReadsItsDirectoryOnly). A split archive's metadata stream,
// which holds no file data, is scanned instead. Only a plain archive
// without a catalog is scanned whole (logged). Every name of a file is
// one inode with the true link count, so du, cp -a, rsync -H and tar see
// hardlinks as on disk.
//
// Holes. Every all-zero chunk of a given length has the same digest, so
// a chunk whose digest is that of zeros is a hole without being read:
// reads of it return zeros without loading anything (even when its file
// is gone), lseek SEEK_DATA/SEEK_HOLE report it as a hole, and st_blocks
// counts only the other chunks, so cp --sparse, qemu-img convert and du
// see a sparse file.
//
// # What is verified, and when
//
// The mount never returns bytes that were not checked against the
// chunk's digest:
//
//   - A chunk is decoded whole the first time it is needed: the file's
//     CRC, then zstd decompression for a compressed chunk, then the
//     SHA-256 of the plaintext against the digest the index names, and
//     its length against the index. Only then are its bytes served or
//     cached; a failure is EIO for the byte ranges of that chunk alone
//     (and is not cached: the next read tries again).
//   - A chunk of an encrypted archive is authenticated first (its
//     AES-256-GCM tag, over the IV and every ciphertext byte), then
//     decompressed if so marked, then its plaintext's keyed digest
//     (SHA-256 of the plaintext and the key's id key) is checked against
//     the index, and its length. Its CRC is not computed on this path:
//     the tag covers every byte the CRC does, with a key; only when the
//     tag fails is the file read again and its CRC checked, to name the
//     failure (damage or another key). Nothing of a chunk whose tag
//     fails is served: the decryption happens in place and the buffer
//     goes back unused.
//   - A chunk stored uncompressed (random data, much of a disk image)
//     that passed that check keeps the descriptor it was read through
//     open (up to 4096 of them). Later reads of it that miss the cache,
//     random or sequential, of any size, are served by pread of just the
//     requested range from that descriptor, without decoding the chunk
//     again (a second cat of a file pays a copy, not a SHA-256). The bytes
//     come from the very file (inode) whose whole content matched the
//     digest; PBS and pbsfs never write a chunk file in place (a new
//     chunk is written to a temporary file and renamed, so a rename
//     replaces the name, not our inode), so the bytes read are the
//     verified ones. What this does not cover is the storage medium
//     changing the bytes of that inode after the check (bit rot between
//     the check and the read), the same exposure a decoded copy in
//     memory has; a file that shrank is detected and decoded afresh. A
//     chunk removed by the collector stays readable through the open
//     descriptor; its space is freed when the descriptor is dropped.
//   - The same holds for a chunk of an encrypted archive stored without
//     compression (MagicEncrypted), once its tag and keyed digest passed
//     with the archive's key: a later read of a range preads just that
//     range of the ciphertext from the same descriptor and decrypts it
//     alone (AES-GCM is AES in counter mode: the key stream of a range
//     follows from the blob's IV and the offset, see crypto.BlobStream).
//     The tag cannot be checked for a range, so what makes the bytes
//     the verified ones is, as above, that they come from the inode whose
//     whole ciphertext was authenticated, which nothing writes in place;
//     the exposure is again the medium changing bytes after the check
//     (a flipped ciphertext bit flips the same plaintext bit, as a
//     flipped bit of a plain chunk's file does). Only the key that
//     verified the chunk reads it this way; the plaintext never touches
//     the disk.
//   - A chunk of an unencrypted archive stored compressed, decoded and
//     checked as above, is written to the mount's spill file
//     (--spill-size, default 2 GiB in --spill-dir /var/tmp; 0 turns it
//     off): at once when a random read decoded it, in the background
//     (from the cached chunk, referenced until the write is done) when
//     a sequential scan did. The same goes for any chunk of an
//     unencrypted archive fetched from an S3 bucket, except that a
//     sequential scan spills it only when it fetches it a second time
//     (a first pass, a restore or a copy, mostly reads each chunk once).
//     Later reads of it that miss the cache are
//     preads of its range there (a sequential reader's read-ahead reads
//     the whole chunk back into the cache), so a second cat of a file
//     reads the decoded bytes back instead of decompressing and hashing
//     every chunk again. Blocks of 64 KiB of zeros are punched
//     out as holes instead of written, and read back as zeros by the
//     file system. The file is made with O_TMPFILE|O_EXCL: it never has
//     a name and cannot be given one, only the mount's process holds
//     it, and nothing but the verified bytes of a decoded chunk is
//     written to it (a hole only where those bytes are zeros). A range
//     is read only after its chunk's write completed, and a chunk is
//     never overwritten while a read of it runs (the ring skips such a
//     write), so the bytes read are those verified. The exposure is
//     that of the verified chunk files above: the medium changing the
//     file's bytes after they were written. Chunks of encrypted
//     archives never go there: their plaintext stays off the disk.
//   - The memory of decoded chunks is used again (see store's chunkMem):
//     a read served from a cached chunk holds a reference to it until
//     go-fuse has written the reply to the kernel (the reply's Done), and
//     a chunk's buffer is given to another chunk only once the chunk left
//     the cache and no reference is held (TestHeldChunkSurvivesEviction).
//     A buffer being filled is never visible: the cache takes a chunk
//     only after its checks passed.
//   - A hole is never read: its content (zeros of the index's length) is
//     the only content with that digest, so there is nothing to check.
//     A missing or damaged file of an all-zero chunk does not make its
//     range fail.
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
//     already, and exits 0. That last rmdir walks the whole path again,
//     and when the kernel's entries expired meanwhile (a busy machine, a
//     reader revalidating) it looks up the snapshot, its group and the
//     type directory anew, all of which the forget took away; so a name a
//     removal through the mount took away less than two minutes ago stays
//     reachable by lookup (never listed, never cached) while the kernel
//     still has its node, and rm -r of a snapshot that goes away succeeds.
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
//   - With --allow-other a removal asks for what removing the same
//     directories on disk would (gate.go, mayRemove): write and search
//     permission on the group directory as well as on the snapshot
//     directory (and on each snapshot directory of a group removed by
//     rmdir GROUP), with the sticky bit's rule, against the caller's
//     uid, groups and capabilities. A refusal is EACCES (EPERM for a
//     sticky bit) and is remembered like the others. The names the
//     removal took away keep their modes while rm -r finishes with them.
//   - rmdir of a type directory succeeds once it has no groups left;
//     namespaces are not removed through the mount.
package fs
