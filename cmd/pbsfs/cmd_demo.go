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

// demoCmd builds a small datastore with a few real backups, made the way
// pbsfs backup makes them, and mounts it to try pbsfs on.
type demoCmd struct {
	imageMiB int
	noMount  bool
}

func (c *demoCmd) flags(fs *pflag.FlagSet) {
	fs.IntVar(&c.imageMiB, "image-mib", 64, "size of the demo disk image in MiB")
	fs.BoolVar(&c.noMount, "no-mount", false, "only build the datastore")
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
	tree := filepath.Join(src, "etc")
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
		bc := &backupCmd{typ: store.TypeVM, id: "100", time: when.Format(time.RFC3339), owner: store.DefaultOwner, noProgress: true}
		if err := bc.run(ctx, e, []string{"drive-scsi0.img:" + img, "qemu-server.conf:" + conf}); err != nil {
			return err
		}
		if err := demoTree(tree, i); err != nil {
			return err
		}
		bc = &backupCmd{typ: store.TypeHost, id: "web1", time: when.Format(time.RFC3339), owner: store.DefaultOwner, noProgress: true}
		if err := bc.run(ctx, e, []string{"root.pxar:" + tree}); err != nil {
			return err
		}
	}
	if err := (&snapshotsCmd{output: "text"}).run(ctx, e, nil); err != nil {
		return err
	}
	if c.noMount {
		fmt.Fprintf(e.stdout, "\nTry:\n  export PBSFS_STORE=%s\n  go run ./cmd/pbsfs snapshots\n  go run ./cmd/pbsfs cat vm/100/%s qemu-server.conf\n",
			s.Root(), store.FormatBackupTime(now))
		if e.runtimeDir != store.DefaultRuntimeDir {
			fmt.Fprintf(e.stdout, "  (as non-root, also export PBSFS_RUNTIME_DIR=%s)\n", e.runtimeDir)
		}
		return nil
	}
	mnt := filepath.Join(filepath.Dir(s.Root()), "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, `
Mounting it on %[1]s. In another shell, try:
  ls %[1]s/vm/100 %[1]s/host/web1            # groups and snapshots, latest -> newest
  ls -l %[1]s/host/web1/latest/root.pxar/     # a pxar archive as a directory tree
  cat %[1]s/host/web1/latest/root.pxar/hosts
  cmp %[1]s/vm/100/latest/drive-scsi0.img %[2]s && echo same   # random-access disk image
  cat %[1]s/vm/100/latest/qemu-server.conf    # a blob, decoded
  rm -r %[1]s/vm/100/%[3]s             # forget the oldest snapshot, as PBS prune does
Stop with Ctrl-C (the store stays in %[4]s).

`, mnt, img, store.FormatBackupTime(now.Add(-48*time.Hour)), s.Root())
	return defaultMountCmd().run(ctx, e, []string{s.Root(), mnt})
}

// defaultMountCmd returns the mount command with every flag at its
// default, as `pbsfs mount` without flags has it.
func defaultMountCmd() *mountCmd {
	m := &mountCmd{}
	m.flags(pflag.NewFlagSet("mount", pflag.ContinueOnError))
	return m
}

// demoTree writes (or updates, for day i) a small /etc-like tree with
// every common entry kind.
func demoTree(root string, day int) error {
	for _, d := range []string{"", "ssh", "nginx/sites", "cron.d", "empty"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	files := map[string]string{
		"hosts":               "127.0.0.1 localhost\n10.0.0.5 web1\n",
		"hostname":            "web1\n",
		"ssh/sshd_config":     "PermitRootLogin no\nPasswordAuthentication no\n",
		"nginx/nginx.conf":    "worker_processes auto;\n",
		"nginx/sites/default": fmt.Sprintf("server { listen 80; root /srv/www; } # revision %d\n", day),
		"cron.d/backup":       "0 3 * * * root pbsfs backup --type host --id web1 root.pxar:/etc\n",
		"motd":                fmt.Sprintf("Welcome to web1, day %d of the demo.\n", day+1),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	for i := range 200 {
		name := filepath.Join(root, "nginx/sites", fmt.Sprintf("site%03d.conf", i))
		if err := os.WriteFile(name, fmt.Appendf(nil, "server { server_name site%d.example; }\n", i), 0o644); err != nil {
			return err
		}
	}
	os.Chmod(filepath.Join(root, "ssh/sshd_config"), 0o600)
	os.Remove(filepath.Join(root, "localtime"))
	os.Remove(filepath.Join(root, "hostname.link"))
	if err := os.Symlink("/usr/share/zoneinfo/Etc/UTC", filepath.Join(root, "localtime")); err != nil {
		return err
	}
	return os.Link(filepath.Join(root, "hostname"), filepath.Join(root, "hostname.link"))
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
