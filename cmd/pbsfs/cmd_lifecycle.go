package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/pbsfs/pbsfs/store"
	"github.com/spf13/pflag"
)

// forgetCmd removes one snapshot, as PBS's forget does (spec §7.3): it
// fails while a backup, reader or verify holds the snapshot, or while the
// snapshot is protected.
type forgetCmd struct{ ns string }

func (c *forgetCmd) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.ns, "ns", "", "namespace (default: the root namespace, or an ns/… prefix of SNAPSHOT)")
}

func (c *forgetCmd) run(ctx context.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usagef("want one SNAPSHOT")
	}
	ns, err := store.ParseNamespace(c.ns)
	if err != nil {
		return usageError{err}
	}
	if a, err := parseSnapshotArg(ns, args[0]); err != nil {
		return err
	} else if a.latest {
		return usagef("forget removes one snapshot named by its time, not %q (which could be another snapshot by the time it runs); 'pbsfs snapshots %s' lists them", args[0], groupPath(a.group))
	}
	s, si, err := openSnapshot(e, c.ns, args[0])
	if err != nil {
		return err
	}
	defer s.Close()
	return s.RemoveSnapshot(ctx, si.Ref, nil)
}

// protectCmd sets (protect) or clears (unprotect) a snapshot's
// protection, which prune and forget respect.
type protectCmd struct {
	ns      string
	protect bool
}

func (c *protectCmd) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.ns, "ns", "", "namespace (default: the root namespace, or an ns/… prefix of SNAPSHOT)")
}

func (c *protectCmd) run(ctx context.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usagef("want one SNAPSHOT")
	}
	s, si, err := openSnapshot(e, c.ns, args[0])
	if err != nil {
		return err
	}
	defer s.Close()
	return s.SetProtected(si.Ref, c.protect)
}

// notesCmd prints a snapshot's notes, or replaces them with --set. The
// notes live in the manifest's unprotected part (spec §4).
type notesCmd struct {
	ns  string
	set string
	fs  *pflag.FlagSet
}

func (c *notesCmd) flags(fs *pflag.FlagSet) {
	c.fs = fs
	fs.StringVar(&c.ns, "ns", "", "namespace (default: the root namespace, or an ns/… prefix of SNAPSHOT)")
	fs.StringVar(&c.set, "set", "", "replace the notes with TEXT (\"\" clears them)")
}

func (c *notesCmd) run(ctx context.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usagef("want one SNAPSHOT")
	}
	s, si, err := openSnapshot(e, c.ns, args[0])
	if err != nil {
		return err
	}
	defer s.Close()
	if c.fs != nil && c.fs.Changed("set") {
		return s.SetSnapshotNotes(ctx, si.Ref, c.set)
	}
	if !si.Finished {
		return fmt.Errorf("snapshot %s: unfinished, no manifest to hold notes: %w", si.Ref, store.ErrNotFound)
	}
	m, err := s.LoadManifest(si.Ref)
	if err != nil {
		return err
	}
	notes := m.Notes()
	if notes != "" && !strings.HasSuffix(notes, "\n") {
		notes += "\n"
	}
	_, err = fmt.Fprint(e.stdout, notes)
	return err
}
