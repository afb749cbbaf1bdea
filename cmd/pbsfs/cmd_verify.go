package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/pbsfs/pbsfs/store"
	"github.com/spf13/pflag"
)

// verifyCmd checks snapshots as PBS's verify job does.
type verifyCmd struct {
	ns             string
	maxDepth       int
	ignoreVerified bool
	outdatedAfter  int
	noProgress     bool
}

func (c *verifyCmd) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.ns, "ns", "", "namespace to start from (default: the root namespace)")
	fs.IntVar(&c.maxDepth, "max-depth", store.MaxNamespaceDepth, "namespace levels below --ns to include")
	fs.BoolVar(&c.ignoreVerified, "ignore-verified", false, "skip snapshots whose last verify passed")
	fs.IntVar(&c.outdatedAfter, "outdated-after", 0, "with --ignore-verified: recheck verifies older than this many days (0: never)")
	fs.BoolVar(&c.noProgress, "no-progress", false, "never show progress")
}

func (c *verifyCmd) run(ctx context.Context, e *env, args []string) error {
	if len(args) > 1 {
		return usagef("want at most one GROUP or SNAPSHOT")
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
	refs, err := c.snapshots(ctx, e, s, ns, args)
	if err != nil {
		return err
	}
	v := s.NewVerifier(store.VerifyOptions{Record: true, IgnoreVerified: c.ignoreVerified,
		OutdatedAfter: time.Duration(c.outdatedAfter) * 24 * time.Hour})
	start := time.Now()
	done := 0
	prog := startProgress(e.stderr, !c.noProgress, func() string {
		return fmt.Sprintf("%d/%d snapshots, %d chunks, %s", done, len(refs), v.Chunks.Load(), humanBytes(uint64(v.Bytes.Load())))
	})
	var ok, failed, skipped int
	for _, ref := range refs {
		r, err := v.Verify(ctx, ref)
		if err != nil {
			prog.stop()
			return err
		}
		done++
		switch {
		case r.Skipped != "":
			skipped++
		case r.OK():
			ok++
		default:
			failed++
			prog.stop()
			fmt.Fprintf(e.stdout, "%s: FAILED\n", pathOf(ref))
			for _, p := range r.Problems {
				fmt.Fprintf(e.stdout, "  %v\n", p)
			}
		}
	}
	prog.stop()
	el := time.Since(start)
	fmt.Fprintf(e.stdout, "verified %d snapshots: %d ok, %d failed, %d skipped; %d chunks, %s in %s (%s/s)\n",
		len(refs), ok, failed, skipped, v.Chunks.Load(), humanBytes(uint64(v.Bytes.Load())), el.Round(time.Millisecond),
		humanBytes(uint64(float64(v.Bytes.Load())/max(el.Seconds(), 1e-9))))
	if failed > 0 {
		return fmt.Errorf("%d snapshots failed verification", failed)
	}
	return nil
}

// snapshots lists the finished snapshots to verify: one snapshot, one
// group, or every group of the namespace tree.
func (c *verifyCmd) snapshots(ctx context.Context, e *env, s *store.Store, ns store.Namespace, args []string) ([]store.SnapshotRef, error) {
	if len(args) == 1 {
		if ref, err := store.ParseSnapshot(ns, args[0]); err == nil {
			return []store.SnapshotRef{ref}, nil
		}
	}
	var groups []store.GroupRef
	if len(args) == 1 {
		g, err := store.ParseGroup(ns, args[0])
		if err != nil {
			return nil, usageError{err}
		}
		groups = append(groups, g)
	} else {
		nss, problems, err := s.Namespaces(ctx, ns, c.maxDepth)
		if err != nil {
			return nil, err
		}
		warnProblems(e, problems)
		for _, n := range nss {
			gs, problems, err := s.Groups(n)
			if err != nil {
				return nil, err
			}
			warnProblems(e, problems)
			groups = append(groups, gs...)
		}
	}
	var refs []store.SnapshotRef
	for _, g := range groups {
		snaps, problems, err := s.Snapshots(g)
		if err != nil {
			return nil, err
		}
		warnProblems(e, problems)
		for _, si := range snaps {
			if si.Finished {
				refs = append(refs, si.Ref)
			}
		}
	}
	return refs, nil
}

// pathOf returns a snapshot's path with its namespace prefix.
func pathOf(ref store.SnapshotRef) string {
	if ref.Group.NS == "" {
		return ref.String()
	}
	return strings.TrimPrefix(ref.Dir(), "/")
}
