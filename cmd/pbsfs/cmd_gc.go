package main

import (
	"context"
	"encoding/json"
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
	output         outputFormat
}

func (c *gcCmd) flags(fs *pflag.FlagSet) {
	fs.BoolVarP(&c.dryRun, "dry-run", "n", false, "report what would be removed, remove nothing")
	gcSafetyFlags(fs, &c.cutoff, &c.skipAtimeCheck)
	fs.BoolVar(&c.noProgress, "no-progress", false, "never show progress")
	outputFlag(fs, &c.output)
}

// gcSafetyFlags registers the collector's safety flags, the same for gc
// and mount: --gc-cutoff (alias --cutoff) and --skip-atime-check.
func gcSafetyFlags(fs *pflag.FlagSet, cutoff *time.Duration, skipAtimeCheck *bool) {
	durationFlag(fs, cutoff, "gc-cutoff", gc.PBSSafety().Cutoff,
		"keep unused chunks touched within this time (alias --cutoff); below 24h5m only with the atime self-test")
	fs.BoolVar(skipAtimeCheck, "skip-atime-check", false, "skip the access time self-test (then --gc-cutoff must be at least 24h5m)")
}

// checkCutoff refuses a cutoff the collector would refuse and, for one
// below the writer margin, says on w what the collector keeps anyway.
func checkCutoff(w io.Writer, cutoff time.Duration, skipAtimeCheck bool) error {
	safety := gc.PBSSafety()
	if cutoff < gc.MinCutoff {
		return usagef("--gc-cutoff %s: must be at least %s", cutoff, gc.MinCutoff)
	}
	if skipAtimeCheck && cutoff < safety.Cutoff {
		return usagef("--gc-cutoff %s with --skip-atime-check: must be at least %s, since without the self-test access times may lag by a day (relatime)", cutoff, safety.Cutoff)
	}
	if cutoff < safety.WriterMargin {
		fmt.Fprintf(w, "note: --gc-cutoff %s: chunks touched in the last %s are kept anyway (as PBS does: the margin before the oldest running backup, or before this run when none runs); they are counted as pending and a later run removes them\n",
			cutoff, safety.WriterMargin)
	}
	return nil
}

func (c *gcCmd) run(ctx context.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usagef("unexpected arguments %q", args)
	}
	if err := checkCutoff(e.stderr, c.cutoff, c.skipAtimeCheck); err != nil {
		return err
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
	if c.output == outputJSON {
		return printGCJSON(e.stdout, st)
	}
	printGCSummary(e.stdout, st)
	return nil
}

// printGCJSON prints st as one JSON object: PBS's .gc-status keys and
// what this run adds (dry-run, cutoffs, missing chunks, times).
func printGCJSON(w io.Writer, st gc.Status) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		return err
	}
	obj["dry-run"] = st.DryRun
	obj["missing-chunks"] = st.MissingChunks
	obj["removed-temp"] = st.RemovedTemp
	obj["min-atime"] = st.MinAtime.Unix()
	obj["pending-before"] = st.OldestWriter.Unix()
	obj["mark-seconds"] = st.MarkTime.Seconds()
	obj["sweep-seconds"] = st.SweepTime.Seconds()
	if st.S3Requests != "" {
		obj["s3-objects"] = st.S3Objects
		obj["s3-delete-requests"] = st.S3DeleteCalls
		obj["s3-requests"] = st.S3Requests
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(obj)
}

// printGCSummary prints the statistics the way PBS's task log does.
func printGCSummary(w io.Writer, st gc.Status) {
	removed := "Removed"
	if st.DryRun {
		removed = "Would remove"
		fmt.Fprintln(w, "Dry run: nothing was removed.")
	}
	fmt.Fprintf(w, "Index files marked: %d\n", st.IndexFileCount)
	if st.S3Requests != "" {
		fmt.Fprintf(w, "Chunk objects listed: %d; DeleteObjects requests: %d; %s\n", st.S3Objects, st.S3DeleteCalls, st.S3Requests)
	}
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
	fmt.Fprintf(w, "Pending removals: %s (in %d chunks): unused, but touched after the cutoff; a later run removes them\n", humanBytes(st.PendingBytes), st.PendingChunks)
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
