package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

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
	noProgress bool
}

func (c *restoreCmd) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.ns, "ns", "", "namespace (default: the root namespace)")
	fs.StringVar(&c.path, "path", "", "restore only this path of a pxar archive")
	fs.BoolVar(&c.overwrite, "overwrite", false, "replace existing files in TARGET")
	fs.BoolVar(&c.noOwners, "no-owners", false, "do not restore file owners")
	fs.BoolVar(&c.noXattrs, "no-xattrs", false, "do not restore xattrs, ACLs and capabilities")
	fs.BoolVar(&c.noProgress, "no-progress", false, "never show progress")
}

func (c *restoreCmd) run(ctx context.Context, e *env, args []string) error {
	if len(args) != 3 {
		return usagef("want SNAPSHOT ARCHIVE TARGET")
	}
	s, si, err := openSnapshot(e, c.ns, args[0])
	if err != nil {
		return err
	}
	defer s.Close()
	name, target := args[1], args[2]
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

func (c *restoreCmd) restorePxar(ctx context.Context, e *env, s *store.Store, si store.SnapshotInfo, name, target string) error {
	a, err := s.OpenPxar(ctx, si, name)
	if err != nil {
		return err
	}
	failed := 0
	opts := pxar.ExtractOptions{NoOwners: c.noOwners, NoXattrs: c.noXattrs, Overwrite: c.overwrite,
		OnError: func(path string, err error) error {
			failed++
			fmt.Fprintf(e.stderr, "warning: %s: %v\n", path, err)
			return nil
		}}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	if err := pxar.Extract(ctx, a, c.path, target, opts); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("restored with %d metadata errors", failed)
	}
	return nil
}
