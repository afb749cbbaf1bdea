package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/pbsfs/pbsfs/store"
	"github.com/spf13/pflag"
)

// demoCmd builds a small datastore with a few real backups to try pbsfs on.
type demoCmd struct {
	imageMiB int
}

func (c *demoCmd) flags(fs *pflag.FlagSet) {
	fs.IntVar(&c.imageMiB, "image-mib", 64, "size of the demo disk image in MiB")
}

func (c *demoCmd) run(ctx context.Context, e *env, args []string) error {
	if len(args) > 1 {
		return usagef("want at most one DIR")
	}
	dir := ""
	if len(args) == 1 {
		dir = args[0]
	} else {
		tmp, err := os.MkdirTemp("", "pbsfs-demo-")
		if err != nil {
			return err
		}
		dir = filepath.Join(tmp, "store")
	}
	if e.runtimeDir == store.DefaultRuntimeDir && os.Geteuid() != 0 {
		e.runtimeDir = filepath.Join(filepath.Dir(dir), "run")
	}
	opts := e.storeOptions()
	opts.LazyChunkDirs = true // a demo need not wait for 65536 mkdirs
	s, err := store.Create(dir, opts)
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Fprintf(e.stdout, "demo datastore: %s\n", s.Root())
	e.storePath = s.Root()

	src, err := os.MkdirTemp("", "pbsfs-demo-src-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(src)
	img := filepath.Join(src, "disk.img")
	conf := filepath.Join(src, "qemu-server.conf")
	image := demoImage(c.imageMiB << 20)
	now := time.Now().Truncate(time.Second)
	for i, when := range []time.Time{now.Add(-48 * time.Hour), now.Add(-24 * time.Hour), now} {
		// Each day changes a few blocks of the disk and the config.
		copy(image[(i*7919%c.imageMiB)<<20:], bytes.Repeat([]byte{byte(i + 1)}, 4096))
		if err := os.WriteFile(img, image, 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(conf, fmt.Appendf(nil, "name: demo\nmemory: %d\nscsi0: local:100/disk.img\n", 2048*(i+1)), 0o644); err != nil {
			return err
		}
		bc := &backupCmd{typ: store.TypeVM, id: "100", time: when.Format(time.RFC3339), owner: store.DefaultOwner}
		if err := bc.run(ctx, e, []string{"drive-scsi0.img:" + img, "qemu-server.conf:" + conf}); err != nil {
			return err
		}
	}
	if err := (&snapshotsCmd{output: "text"}).run(ctx, e, nil); err != nil {
		return err
	}
	latest := store.SnapshotRef{Group: store.GroupRef{Type: store.TypeVM, ID: "100"}, Time: now}
	fmt.Fprintf(e.stdout, "\nTry:\n  export PBSFS_STORE=%s\n  go run ./cmd/pbsfs snapshots\n  go run ./cmd/pbsfs cat %s qemu-server.conf\n  go run ./cmd/pbsfs cat %s drive-scsi0.img | cmp - <(go run ./cmd/pbsfs cat %s drive-scsi0.img)\n",
		s.Root(), latest, latest, store.SnapshotRef{Group: latest.Group, Time: now.Add(-24 * time.Hour)})
	if e.runtimeDir != store.DefaultRuntimeDir {
		fmt.Fprintf(e.stdout, "  (as non-root, also export PBSFS_RUNTIME_DIR=%s)\n", e.runtimeDir)
	}
	return nil
}

// demoImage returns a disk image that compresses like a real one: runs of
// zeros, text and random blocks.
func demoImage(size int) []byte {
	img := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for off := 0; off < size; off += 64 << 10 {
		block := img[off:min(off+64<<10, size)]
		switch r.IntN(3) {
		case 0: // zeros
		case 1:
			for i := range block {
				block[i] = "the quick brown fox jumps over the lazy dog\n"[i%44]
			}
		case 2:
			for i := range block {
				block[i] = byte(r.Uint32())
			}
		}
	}
	return img
}
