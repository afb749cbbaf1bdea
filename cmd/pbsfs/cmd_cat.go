package main

import (
	"bufio"
	"context"

	"github.com/pbsfs/pbsfs/store"
	"github.com/spf13/pflag"
)

// catCmd writes an archive's decoded bytes to stdout.
type catCmd struct{ ns string }

func (c *catCmd) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.ns, "ns", "", "namespace (default: the root namespace, or an ns/… prefix of SNAPSHOT)")
}

func (c *catCmd) run(ctx context.Context, e *env, args []string) error {
	if len(args) != 2 {
		return usagef("want SNAPSHOT and ARCHIVE")
	}
	s, si, err := openSnapshot(e, c.ns, args[0])
	if err != nil {
		return err
	}
	defer s.Close()
	file, err := s.ResolveArchive(si, args[1])
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(e.stdout, 1<<20)
	if store.KindOf(file) == store.KindBlob {
		data, err := s.ReadBlob(si.Ref, file)
		if err != nil {
			return err
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
		return w.Flush()
	}
	a, err := s.OpenArchive(ctx, si.Ref, file)
	if err != nil {
		return err
	}
	if _, err := a.WriteTo(w); err != nil {
		return err
	}
	return w.Flush()
}

// openSnapshot opens the store and the snapshot named by arg.
func openSnapshot(e *env, nsFlag, arg string) (*store.Store, store.SnapshotInfo, error) {
	ns, err := store.ParseNamespace(nsFlag)
	if err != nil {
		return nil, store.SnapshotInfo{}, usageError{err}
	}
	ref, err := store.ParseSnapshot(ns, arg)
	if err != nil {
		return nil, store.SnapshotInfo{}, usageError{err}
	}
	s, err := e.openStore()
	if err != nil {
		return nil, store.SnapshotInfo{}, err
	}
	si, err := s.Snapshot(ref)
	if err != nil {
		s.Close()
		return nil, store.SnapshotInfo{}, err
	}
	return s, si, nil
}
