package main

import (
	"context"
	"encoding/json"
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
	output         outputFormat
	keys           keyOpts
}

// verifyItem is one snapshot of the JSON output, with PBS's keys.
type verifyItem struct {
	NS         string   `json:"ns,omitempty"`
	BackupType string   `json:"backup-type"`
	BackupID   string   `json:"backup-id"`
	BackupTime int64    `json:"backup-time"`
	State      string   `json:"state"` // ok, failed or skipped
	Skipped    string   `json:"skipped,omitempty"`
	Problems   []string `json:"problems,omitempty"`
}

// verifySummary is the JSON output of verify.
type verifySummary struct {
	Snapshots []verifyItem `json:"snapshots"`
	OK        int          `json:"ok"`
	Failed    int          `json:"failed"`
	Skipped   int          `json:"skipped"`
	Chunks    int64        `json:"chunks"`
	Bytes     int64        `json:"bytes"`
	Seconds   float64      `json:"seconds"`
}

func (c *verifyCmd) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.ns, "ns", "", "namespace to start from (default: the root namespace)")
	fs.IntVar(&c.maxDepth, "max-depth", store.MaxNamespaceDepth, "namespace levels below --ns to include")
	fs.BoolVar(&c.ignoreVerified, "ignore-verified", false, "skip snapshots whose last verify passed")
	fs.IntVar(&c.outdatedAfter, "outdated-after", 0, "with --ignore-verified: recheck verifies older than this many days (0: never)")
	fs.BoolVar(&c.noProgress, "no-progress", false, "never show progress")
	outputFlag(fs, &c.output)
	c.keys.addFlags(fs, "key file: encrypted snapshots it opens are checked fully, signatures verified (repeatable; without one, encrypted chunks get CRC and size checks)")
}

func (c *verifyCmd) run(ctx context.Context, e *env, args []string) error {
	if len(args) > 1 {
		return usagef("want at most one GROUP or SNAPSHOT")
	}
	ns, err := store.ParseNamespace(c.ns)
	if err != nil {
		return usageError{err}
	}
	if e.keys, err = c.keys.load(ctx, e); err != nil {
		return err
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
	sum := verifySummary{Snapshots: []verifyItem{}}
	for _, ref := range refs {
		r, err := v.Verify(ctx, ref)
		if err != nil {
			prog.stop()
			return err
		}
		done++
		it := verifyItem{NS: string(ref.Group.NS), BackupType: ref.Group.Type, BackupID: ref.Group.ID, BackupTime: ref.Time.Unix()}
		switch {
		case r.Skipped != "":
			sum.Skipped++
			it.State, it.Skipped = "skipped", r.Skipped
		case r.OK():
			sum.OK++
			it.State = "ok"
		default:
			sum.Failed++
			it.State = "failed"
			for _, p := range r.Problems {
				it.Problems = append(it.Problems, p.Error())
			}
			if c.output == outputText {
				prog.stop()
				fmt.Fprintf(e.stdout, "%s: FAILED\n", pathOf(ref))
				for _, p := range r.Problems {
					fmt.Fprintf(e.stdout, "  %v\n", p)
				}
			}
		}
		sum.Snapshots = append(sum.Snapshots, it)
	}
	prog.stop()
	el := time.Since(start)
	ok, failed, skipped := sum.OK, sum.Failed, sum.Skipped
	if c.output == outputJSON {
		sum.Chunks, sum.Bytes, sum.Seconds = v.Chunks.Load(), v.Bytes.Load(), el.Seconds()
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(sum); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(e.stdout, "verified %d snapshots: %d ok, %d failed, %d skipped; %d chunks, %s in %s (%s/s)\n",
			len(refs), ok, failed, skipped, v.Chunks.Load(), humanBytes(uint64(v.Bytes.Load())), el.Round(time.Millisecond),
			humanBytes(uint64(float64(v.Bytes.Load())/max(el.Seconds(), 1e-9))))
	}
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
		if strings.HasSuffix(strings.TrimRight(args[0], "/"), "/latest") {
			a, err := parseSnapshotArg(ns, args[0])
			if err != nil {
				return nil, err
			}
			si, err := a.resolve(s)
			if err != nil {
				return nil, err
			}
			return []store.SnapshotRef{si.Ref}, nil
		}
	}
	var groups []store.GroupRef
	if len(args) == 1 {
		g, err := store.ParseGroup(ns, args[0])
		if err != nil {
			if _, serr := parseSnapshotArg(ns, args[0]); serr != nil {
				return nil, serr
			}
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
