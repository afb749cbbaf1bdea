package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"text/tabwriter"

	"github.com/pbsfs/pbsfs/store"
	"github.com/spf13/pflag"
)

// pruneCmd removes the snapshots a retention policy does not keep, as
// PBS's prune does (spec §7).
type pruneCmd struct {
	ns       string
	maxDepth int
	keep     store.KeepOptions
	dryRun   bool
	output   outputFormat
}

func (c *pruneCmd) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.ns, "ns", "", "namespace (default: the root namespace)")
	fs.IntVar(&c.maxDepth, "max-depth", store.MaxNamespaceDepth, "namespace levels below --ns to prune too, without GROUP (0: --ns only)")
	fs.IntVar(&c.keep.Last, "keep-last", 0, "keep the newest N snapshots")
	fs.IntVar(&c.keep.Hourly, "keep-hourly", 0, "keep the newest snapshot of each of the last N hours with backups")
	fs.IntVar(&c.keep.Daily, "keep-daily", 0, "keep the newest snapshot of each of the last N days with backups")
	fs.IntVar(&c.keep.Weekly, "keep-weekly", 0, "keep the newest snapshot of each of the last N ISO weeks with backups")
	fs.IntVar(&c.keep.Monthly, "keep-monthly", 0, "keep the newest snapshot of each of the last N months with backups")
	fs.IntVar(&c.keep.Yearly, "keep-yearly", 0, "keep the newest snapshot of each of the last N years with backups")
	fs.BoolVarP(&c.dryRun, "dry-run", "n", false, "only show what would be removed")
	outputFlag(fs, &c.output)
}

// pruneItem is one snapshot of the result, with PBS's JSON keys
// (backup-type, backup-id, backup-time, keep, protected) and ours.
type pruneItem struct {
	NS         string `json:"ns,omitempty"`
	BackupType string `json:"backup-type"`
	BackupID   string `json:"backup-id"`
	BackupTime int64  `json:"backup-time"`
	Keep       bool   `json:"keep"`
	Protected  bool   `json:"protected"`
	Reason     string `json:"reason,omitempty"`
	Removed    bool   `json:"removed"`
	Error      string `json:"error,omitempty"`
}

func (c *pruneCmd) run(ctx context.Context, e *env, args []string) error {
	if len(args) > 1 {
		return usagef("want at most one GROUP")
	}
	if c.maxDepth < 0 || c.maxDepth > store.MaxNamespaceDepth {
		return usagef("--max-depth %d: want 0 to %d", c.maxDepth, store.MaxNamespaceDepth)
	}
	for _, o := range []struct {
		name string
		n    int
	}{{"last", c.keep.Last}, {"hourly", c.keep.Hourly}, {"daily", c.keep.Daily},
		{"weekly", c.keep.Weekly}, {"monthly", c.keep.Monthly}, {"yearly", c.keep.Yearly}} {
		if o.n < 0 {
			return usagef("--keep-%s %d: want a count of at least 1", o.name, o.n)
		}
	}
	ns, err := store.ParseNamespace(c.ns)
	if err != nil {
		return usageError{err}
	}
	var groups []store.GroupRef
	if len(args) == 1 {
		g, err := parseGroupArg(ns, args[0])
		if err != nil {
			return err
		}
		groups = []store.GroupRef{g}
	}
	s, err := e.openStore()
	if err != nil {
		return err
	}
	defer s.Close()
	if groups == nil {
		if groups, err = allGroups(ctx, e, s, ns, c.maxDepth); err != nil {
			return err
		}
	}
	if !c.keep.KeepsSomething() {
		fmt.Fprintln(e.stderr, "pbsfs prune: no --keep option given: keeping every snapshot")
	}

	items := []pruneItem{}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	failed, removed, kept := 0, 0, 0
	for _, g := range groups {
		res, err := s.Prune(ctx, g, c.keep, c.dryRun, nil)
		if ctx.Err() != nil {
			return err
		}
		if err != nil {
			fmt.Fprintf(e.stderr, "pbsfs prune: %v\n", err)
			failed++
			continue
		}
		if c.output == outputText && len(res) > 0 {
			if len(items) > 0 {
				fmt.Fprintln(tw)
			}
			fmt.Fprintf(tw, "group %s\n", groupPath(g))
			fmt.Fprintln(tw, "SNAPSHOT\tACTION\tREASON")
		}
		for _, r := range res {
			it := pruneItem{NS: string(g.NS), BackupType: g.Type, BackupID: g.ID, BackupTime: r.Info.Ref.Time.Unix(),
				Keep: r.Keep, Protected: r.Info.Protected, Reason: r.Reason, Removed: r.Removed}
			action, note := "keep", r.Reason
			switch {
			case r.Keep:
				kept++
			case r.Err != nil:
				failed++
				it.Error = r.Err.Error()
				action, note = "remove", "failed: "+failure(r.Err)
				fmt.Fprintf(e.stderr, "pbsfs prune: %v\n", r.Err)
			default:
				action = "remove"
				if r.Removed {
					removed++
				}
			}
			items = append(items, it)
			if c.output == outputText {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", path.Join(g.NS.Dir(), r.Info.Ref.String()), action, note)
			}
		}
	}
	if c.output == outputJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(items); err != nil {
			return err
		}
	} else {
		if err := tw.Flush(); err != nil {
			return err
		}
		switch {
		case c.dryRun:
			fmt.Fprintf(e.stdout, "dry run: %d kept, %d to remove\n", kept, len(items)-kept)
		default:
			fmt.Fprintf(e.stdout, "%d kept, %d removed, %d failed\n", kept, removed, failed)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d removals or groups failed", failed)
	}
	return nil
}

// failure names why a removal failed, briefly, for the table; the
// whole error goes to stderr.
func failure(err error) string {
	switch {
	case errors.Is(err, store.ErrLocked):
		return "locked (in use by a backup, reader or verify)"
	case errors.Is(err, store.ErrProtected):
		return "protected"
	case errors.Is(err, store.ErrNotFound):
		return "already gone"
	}
	return err.Error()
}

// allGroups lists the groups of ns and of its namespaces down to
// maxDepth levels below it; listing problems are warnings.
func allGroups(ctx context.Context, e *env, s *store.Store, ns store.Namespace, maxDepth int) ([]store.GroupRef, error) {
	namespaces, problems, err := s.Namespaces(ctx, ns, maxDepth)
	if err != nil {
		return nil, err
	}
	warnProblems(e, problems)
	var groups []store.GroupRef
	for _, n := range namespaces {
		gs, problems, err := s.Groups(n)
		if err != nil {
			return nil, err
		}
		warnProblems(e, problems)
		groups = append(groups, gs...)
	}
	return groups, nil
}

// groupPath is a group's directory relative to the store root, with its
// ns/… prefix, as SNAPSHOT and GROUP arguments accept it.
func groupPath(g store.GroupRef) string {
	return path.Join(g.NS.Dir(), g.String())
}
