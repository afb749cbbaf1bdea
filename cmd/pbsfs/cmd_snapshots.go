package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/pbsfs/pbsfs/store"
	"github.com/spf13/pflag"
)

// snapshotsCmd lists snapshots, like proxmox-backup-client snapshots.
type snapshotsCmd struct {
	ns     string
	output outputFormat
}

func (c *snapshotsCmd) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.ns, "ns", "", "namespace (default: the root namespace)")
	outputFlag(fs, &c.output)
}

// snapshotItem is one row, with PBS's JSON keys.
type snapshotItem struct {
	NS         string   `json:"ns,omitempty"`
	BackupType string   `json:"backup-type"`
	BackupID   string   `json:"backup-id"`
	BackupTime int64    `json:"backup-time"`
	Files      []string `json:"files"`
	Size       uint64   `json:"size"`
	Protected  bool     `json:"protected"`
	Finished   bool     `json:"finished"`
	Owner      string   `json:"owner,omitempty"`
	Comment    string   `json:"comment,omitempty"`
	Verify     string   `json:"verification,omitempty"`
	// ManifestError says why index.json.blob exists but does not load
	// (then Finished is false).
	ManifestError string `json:"manifest-error,omitempty"`
	path          string
}

func (c *snapshotsCmd) run(ctx context.Context, e *env, args []string) error {
	if len(args) > 1 {
		return usagef("want at most one GROUP")
	}
	ns, err := store.ParseNamespace(c.ns)
	if err != nil {
		return usageError{err}
	}
	s, err := e.openStore()
	if err != nil {
		return err
	}
	defer s.Close()
	var groups []store.GroupRef
	if len(args) == 1 {
		g, err := parseGroupArg(ns, args[0])
		if err != nil {
			return err
		}
		groups = []store.GroupRef{g}
	} else {
		var problems []store.Problem
		groups, problems, err = s.Groups(ns)
		if err != nil {
			return err
		}
		warnProblems(e, problems)
	}
	items := []snapshotItem{}
	for _, g := range groups {
		snaps, problems, err := s.Snapshots(g)
		if err != nil {
			return err
		}
		warnProblems(e, problems)
		owner, _ := s.Owner(g)
		for _, si := range snaps {
			it := snapshotItem{NS: string(ns), BackupType: g.Type, BackupID: g.ID, BackupTime: si.Ref.Time.Unix(),
				Files: si.Files, Protected: si.Protected, Finished: si.Finished, Owner: owner, path: si.Ref.String()}
			if si.Finished {
				m, err := s.LoadManifest(si.Ref)
				if err != nil {
					// A manifest that does not load is not a finished
					// backup anyone can restore or verify.
					fmt.Fprintf(e.stderr, "warning: %v\n", err)
					it.Finished = false
					it.ManifestError = err.Error()
				} else {
					it.Size = m.TotalSize()
					it.Comment, _, _ = strings.Cut(m.Notes(), "\n")
					if v, ok := m.Verify(); ok {
						it.Verify = v.State
					}
				}
			}
			items = append(items, it)
		}
	}
	if c.output == outputJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(items)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SNAPSHOT\tSIZE\tFILES\tSTATE")
	for _, it := range items {
		state := "ok"
		switch {
		case it.ManifestError != "":
			state = "damaged (manifest unreadable)"
		case !it.Finished:
			state = "in progress"
		case it.Protected:
			state = "protected"
		}
		if it.Verify == "failed" {
			state += ", verify failed"
		}
		var names []string
		for _, f := range it.Files {
			if f != store.ManifestName {
				names = append(names, strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(f, ".blob"), ".fidx"), ".didx"))
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", it.path, humanBytes(it.Size), strings.Join(names, " "), state)
	}
	return tw.Flush()
}

func warnProblems(e *env, problems []store.Problem) {
	for _, p := range problems {
		fmt.Fprintf(e.stderr, "warning: skipped %s\n", p)
	}
}

// humanBytes formats n with a binary unit.
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
