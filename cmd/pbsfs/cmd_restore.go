package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/pbsfs/pbsfs/store"
	"github.com/pbsfs/pbsfs/store/pxar"
	"github.com/spf13/pflag"
)

// restoreCmd extracts an archive of a snapshot, like
// proxmox-backup-client restore.
type restoreCmd struct {
	ns         string
	path       string
	overwrite  bool
	noOwners   bool
	noXattrs   bool
	noDevices  bool
	noFifos    bool
	noSockets  bool
	noProgress bool
	keys       keyOpts
}

func (c *restoreCmd) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.ns, "ns", "", "namespace (default: the root namespace)")
	fs.StringVar(&c.path, "path", "", "restore only this path of a pxar archive")
	fs.BoolVar(&c.overwrite, "overwrite", false, "replace existing files in TARGET")
	fs.BoolVar(&c.noOwners, "no-owners", false, "do not restore file owners (set-uid and set-gid bits are dropped, as tar does)")
	fs.BoolVar(&c.noOwners, "ignore-ownership", false, "the same as --no-owners (proxmox-backup-client's name)")
	fs.BoolVar(&c.noXattrs, "no-xattrs", false, "do not restore xattrs, ACLs and capabilities")
	fs.BoolVar(&c.noXattrs, "ignore-xattrs", false, "the same as --no-xattrs (proxmox-backup-client's name)")
	fs.BoolVar(&c.noDevices, "no-device-nodes", false, "do not restore block and character devices")
	fs.BoolVar(&c.noFifos, "no-fifos", false, "do not restore FIFOs")
	fs.BoolVar(&c.noSockets, "no-sockets", false, "do not restore sockets")
	fs.BoolVar(&c.noProgress, "no-progress", false, "never show progress")
	c.keys.addFlags(fs, "key file for an encrypted snapshot")
}

func (c *restoreCmd) run(ctx context.Context, e *env, args []string) error {
	if len(args) != 3 {
		return usagef("want SNAPSHOT ARCHIVE TARGET")
	}
	var err error
	if e.keys, err = c.keys.load(ctx, e); err != nil {
		return err
	}
	s, si, err := openSnapshot(e, c.ns, args[0])
	if err != nil {
		return err
	}
	defer s.Close()
	name, target := args[1], args[2]
	if !c.overwrite {
		if ents, err := os.ReadDir(target); err == nil && len(ents) > 0 {
			return fmt.Errorf("%s exists and is not empty: restore into a new or empty directory, or add --overwrite to replace what is there", target)
		}
	}
	if _, _, err := store.PxarFiles(si, name); err == nil {
		return c.restorePxar(ctx, e, s, si, name, target)
	}
	file, err := s.ResolveArchive(si, name)
	if err != nil {
		return err
	}
	if c.path != "" {
		return usagef("--path applies to pxar archives only")
	}
	var data []byte
	if store.KindOf(file) == store.KindBlob {
		if data, err = s.ReadBlob(si.Ref, file); err != nil {
			return err
		}
		return c.writeFile(target, func(f *os.File) error { _, err := f.Write(data); return err })
	}
	a, err := s.OpenArchive(ctx, si.Ref, file)
	if err != nil {
		return err
	}
	return c.writeFile(target, func(f *os.File) error { _, err := a.WriteTo(f); return err })
}

// writeFile writes an image or blob to target through a temporary file.
func (c *restoreCmd) writeFile(target string, fill func(*os.File) error) error {
	if _, err := os.Lstat(target); err == nil && !c.overwrite {
		return fmt.Errorf("%s exists (use --overwrite)", target)
	}
	f, err := os.CreateTemp(filepath.Dir(target), ".pbsfs-restore-*")
	if err != nil {
		return err
	}
	err = fill(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), target)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// restorePxar extracts a pxar archive. Entries whose data is damaged
// (missing or corrupt chunks) are named on stderr as they are met and
// left out, every intact entry is restored, and the command fails at the
// end with a summary.
func (c *restoreCmd) restorePxar(ctx context.Context, e *env, s *store.Store, si store.SnapshotInfo, name, target string) error {
	a, err := s.OpenPxar(ctx, si, name)
	if err != nil {
		return err
	}
	failed, damaged := 0, 0
	var entries, bytes atomic.Int64
	opts := pxar.ExtractOptions{NoOwners: c.noOwners, NoXattrs: c.noXattrs, Overwrite: c.overwrite,
		NoDevices: c.noDevices, NoFifos: c.noFifos, NoSockets: c.noSockets,
		OnError: func(path string, err error) error {
			failed++
			fmt.Fprintf(e.stderr, "warning: %s: %v\n", path, err)
			return nil
		},
		OnDamaged: func(path string, err error) error {
			damaged++
			var de *pxar.DamagedError
			if errors.As(err, &de) {
				err = de.Err
			}
			fmt.Fprintf(e.stderr, "damaged, not restored: %s: %v\n", path, err)
			return nil
		},
		Names: s.CatalogNames(ctx, si, name),
		OnExtracted: func(path string, x *pxar.Entry) {
			entries.Add(1)
			if x.Kind == pxar.KindFile {
				bytes.Add(int64(x.Size))
			}
		},
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	prog := startProgress(e.stderr, !c.noProgress, func() string {
		return fmt.Sprintf("%d entries, %s restored", entries.Load(), humanBytes(uint64(bytes.Load())))
	})
	err = pxar.Extract(ctx, a, c.path, target, opts)
	prog.stop()
	if err != nil {
		return err
	}
	restored := fmt.Sprintf("%d entries (%s) restored", entries.Load(), humanBytes(uint64(bytes.Load())))
	switch {
	case damaged > 0 && failed > 0:
		return fmt.Errorf("restore incomplete: %s; %d entries damaged in the archive (not restored, named above); %d metadata errors", restored, damaged, failed)
	case damaged > 0:
		return fmt.Errorf("restore incomplete: %s; %d entries damaged in the archive (not restored, named above)", restored, damaged)
	case failed > 0:
		return fmt.Errorf("restored with %d metadata errors", failed)
	}
	return nil
}
