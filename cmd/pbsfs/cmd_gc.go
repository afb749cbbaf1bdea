package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/pbsfs/pbsfs/gc"
	"github.com/spf13/pflag"
)

// gcCmd collects the garbage of a datastore once, like PBS's garbage
// collection job.
type gcCmd struct {
	dryRun         bool
	cutoff         time.Duration
	skipAtimeCheck bool
	noProgress     bool
}

func (c *gcCmd) flags(fs *pflag.FlagSet) {
	fs.BoolVarP(&c.dryRun, "dry-run", "n", false, "report what would be removed, remove nothing")
	fs.DurationVar(&c.cutoff, "cutoff", gc.PBSSafety().Cutoff,
		"keep unreferenced chunks touched within this time; below 24h5m only with the atime self-test")
	fs.BoolVar(&c.skipAtimeCheck, "skip-atime-check", false, "skip the access time self-test (then --cutoff must be at least 24h5m)")
	fs.BoolVar(&c.noProgress, "no-progress", false, "never show progress")
}

func (c *gcCmd) run(ctx context.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usagef("unexpected arguments %q", args)
	}
	if c.cutoff < gc.MinCutoff {
		return usagef("--cutoff %s: must be at least %s", c.cutoff, gc.MinCutoff)
	}
	s, err := e.openStore()
	if err != nil {
		return err
	}
	defer s.Close()
	safety := gc.PBSSafety()
	safety.Cutoff = c.cutoff
	col := gc.New(s, gc.Options{Safety: safety, DryRun: c.dryRun, SkipAtimeCheck: c.skipAtimeCheck, Logger: e.log})
	prog := startProgress(e.stderr, !c.noProgress, func() string {
		p := col.Progress()
		switch p.Phase {
		case gc.PhaseMark:
			return fmt.Sprintf("marking: %d of %d index files", p.IndexFiles, p.IndexTotal)
		case gc.PhaseSweep:
			return fmt.Sprintf("sweeping: %d%%, %d chunks (%s) removed", p.Prefixes*100/65536, p.Removed, humanBytes(uint64(p.RemovedBytes)))
		}
		return p.Phase.String()
	})
	st, err := col.Run(ctx)
	prog.stop()
	if err != nil {
		return err
	}
	printGCSummary(e.stdout, st)
	return nil
}

// printGCSummary prints the statistics the way PBS's task log does.
func printGCSummary(w io.Writer, st gc.Status) {
	removed := "Removed"
	if st.DryRun {
		removed = "Would remove"
		fmt.Fprintln(w, "Dry run: nothing was removed.")
	}
	fmt.Fprintf(w, "Index files marked: %d\n", st.IndexFileCount)
	if st.MissingChunks > 0 {
		fmt.Fprintf(w, "Missing chunks: %d (see warnings)\n", st.MissingChunks)
	}
	fmt.Fprintf(w, "%s garbage: %s\n", removed, humanBytes(st.RemovedBytes))
	fmt.Fprintf(w, "%s chunks: %d\n", removed, st.RemovedChunks)
	fmt.Fprintf(w, "%s bad chunks: %d\n", removed, st.RemovedBad)
	if st.RemovedTemp > 0 {
		fmt.Fprintf(w, "%s stale temporary files: %d\n", removed, st.RemovedTemp)
	}
	fmt.Fprintf(w, "Leftover bad chunks: %d\n", st.StillBad)
	fmt.Fprintf(w, "Pending removals: %s (in %d chunks)\n", humanBytes(st.PendingBytes), st.PendingChunks)
	fmt.Fprintf(w, "Original data usage: %s\n", humanBytes(st.IndexDataBytes))
	if st.IndexDataBytes > 0 {
		fmt.Fprintf(w, "On-Disk usage: %s (%.2f%%)\n", humanBytes(st.DiskBytes), float64(st.DiskBytes)*100/float64(st.IndexDataBytes))
	} else {
		fmt.Fprintf(w, "On-Disk usage: %s\n", humanBytes(st.DiskBytes))
	}
	fmt.Fprintf(w, "On-Disk chunks: %d\n", st.DiskChunks)
	fmt.Fprintf(w, "Deduplication factor: %.2f\n", st.DedupFactor())
	if st.DiskChunks > 0 {
		fmt.Fprintf(w, "Average chunk size: %s\n", humanBytes(st.AverageChunk()))
	}
	fmt.Fprintf(w, "Cutoff: atime before %s removed, before %s pending\n",
		st.MinAtime.UTC().Format(time.RFC3339), st.OldestWriter.UTC().Format(time.RFC3339))
}
