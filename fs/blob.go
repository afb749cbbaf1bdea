package fs

import (
	"context"
	"path"
	"sync"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/pbsfs/pbsfs/store"
)

// blobFile is a blob archive of a snapshot read as its decoded content
// (qemu-server.conf, client.log), or index.json, the manifest as JSON
// (file == ""). Blobs are small (store.MaxBlobSize at most) and decoded
// once per node.
type blobFile struct {
	roNode
	m         *mount
	snap      *snapshotNode
	file      string // blob file name; "" for the manifest
	encrypted bool   // locked: no key, or a bad signature (lockErr says)
	lockErr   error
	encSize   uint64     // the encoded size the manifest records
	cache     *blobCache // shared by the nodes made from one listing
}

// blobCache holds a decoded blob.
type blobCache struct {
	mu   sync.Mutex
	data []byte
	err  error
	done bool
}

// clone returns a fresh node for the same blob: go-fuse needs a new
// embedder for each inode it creates.
func (n *blobFile) clone() attrNode {
	if n.cache == nil {
		n.cache = &blobCache{}
	}
	return &blobFile{m: n.m, snap: n.snap, file: n.file, encrypted: n.encrypted, lockErr: n.lockErr, encSize: n.encSize, cache: n.cache}
}

var (
	_ = (fusefs.NodeOpener)((*blobFile)(nil))
	_ = (fusefs.NodeReader)((*blobFile)(nil))
	_ = (fusefs.NodeGetattrer)((*blobFile)(nil))
)

// content returns the decoded bytes.
func (n *blobFile) content() ([]byte, error) {
	if n.encrypted {
		return nil, lockedErr(n.lockErr, n.snap.ref, n.file)
	}
	if n.file == "" {
		// The manifest changes (notes, verify state): read it each time
		// through the mount's cache.
		man, err := n.m.manifest(n.snap.ref)
		if err != nil {
			return nil, err
		}
		return man.MarshalJSON()
	}
	c := n.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done {
		c.data, c.err = n.m.s.ReadBlob(n.snap.ref, n.file)
		c.done = true
	}
	return c.data, c.err
}

func (n *blobFile) fill(ctx context.Context, out *fuse.Attr) syscall.Errno {
	file := n.file
	if file == "" {
		file = store.ManifestName
	}
	p := n.m.hierPerm(path.Join(n.snap.ref.Dir(), file), false)
	p.mode &= 0o777
	if n.file != "" {
		// Decrypted with the mount's key: for its user alone (gate.go).
		if enc, err := n.m.s.BlobEncrypted(n.snap.ref, n.file); err != nil || enc {
			p = n.m.private(p)
		}
	}
	if n.encrypted {
		n.m.fileAttr(out, p, n.encSize, n.snap.ref.Time)
		return 0
	}
	b, err := n.content()
	if err != nil {
		// Listed, but empty; reading it gives the error.
		b = nil
	}
	n.m.fileAttr(out, p, uint64(len(b)), n.snap.ref.Time)
	return 0
}

func (n *blobFile) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(n.m.hierTTL)
	return n.fill(ctx, &out.Attr)
}

// blobHandle is an open blob: the content at open time.
type blobHandle struct{ data []byte }

func (n *blobFile) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if writeFlags(flags) {
		return nil, 0, syscall.EROFS
	}
	if n.snap.isRemoved() {
		return nil, 0, syscall.ENOENT
	}
	b, err := n.content()
	if err != nil {
		return nil, 0, n.m.toErrno(err, "open blob", snapAttr(n.snap.ref), "file", n.file)
	}
	var fl uint32
	if n.file != "" {
		fl = fuse.FOPEN_KEEP_CACHE // blobs never change
	}
	return &blobHandle{data: b}, fl, 0
}

func (n *blobFile) Read(ctx context.Context, f fusefs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := f.(*blobHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	if off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(h.data)))
	return fuse.ReadResultData(h.data[off:end]), 0
}
