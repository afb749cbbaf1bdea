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

// statusCmd shows a datastore's garbage collection and who serves it: the
// last collection (.gc-status and pbsfs's record of the run), one running
// now, the pbsfs mounts of the store and the registered writers.
type statusCmd struct {
	output outputFormat
}

func (c *statusCmd) flags(fs *pflag.FlagSet) { outputFlag(fs, &c.output) }

func (c *statusCmd) run(ctx context.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usagef("unexpected arguments %q", args)
	}
	s, err := e.openStore()
	if err != nil {
		return err
	}
	defer s.Close()
	st, err := gc.ReadStatus(s)
	if err != nil {
		return err
	}
	if c.output == outputJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(e.stdout, st)
	if cs, ok := s.ChunkStore().(interface{ Location() string }); ok && s.Remote() {
		fmt.Fprintf(e.stdout, "\nChunks in bucket: %s (metadata in %s)\n", cs.Location(), s.Root())
	}
	return nil
}

func printStatus(w io.Writer, st gc.StoreStatus) {
	ts := func(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05 MST") }
	fmt.Fprintf(w, "Datastore %s (%s; name from the %s)\n\n", st.Store, st.Path, st.StoreNameFrom)
	fmt.Fprintln(w, "Last garbage collection:")
	switch r := st.LastGC.Run; {
	case r != nil:
		fmt.Fprintf(w, "  %s, started %s, took %s (pid %d)\n", r.Result, ts(r.Start), r.End.Sub(r.Start).Round(time.Millisecond), r.PID)
		if r.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", r.Error)
		}
	case st.LastGC.Status != nil:
		fmt.Fprintf(w, "  finished %s (no pbsfs record of the run: by PBS, or before a reboot)\n", ts(st.LastGC.StatusTime))
	default:
		fmt.Fprintln(w, "  none")
	}
	if g := st.LastGC.Status; g != nil {
		if r := st.LastGC.Run; r != nil && r.Result != "ok" {
			fmt.Fprintf(w, "  .gc-status, from the run that finished %s:\n", ts(st.LastGC.StatusTime))
		}
		fmt.Fprintf(w, "  removed: %d chunks, %s; %d bad\n", g.RemovedChunks, humanBytes(g.RemovedBytes), g.RemovedBad)
		fmt.Fprintf(w, "  pending: %d chunks, %s\n", g.PendingChunks, humanBytes(g.PendingBytes))
		fmt.Fprintf(w, "  in use:  %d chunks, %s; %d index files, %s referenced (dedup %.2f)\n",
			g.DiskChunks, humanBytes(g.DiskBytes), g.IndexFileCount, humanBytes(g.IndexDataBytes), g.DedupFactor())
		errs := fmt.Sprintf("  errors:  %d bad chunks kept", g.StillBad)
		if r := st.LastGC.Run; r != nil {
			errs += fmt.Sprintf(", %d missing chunks", r.MissingChunks)
		}
		fmt.Fprintln(w, errs)
	}
	fmt.Fprintln(w, "\nRunning now:")
	if p := st.Running; p != nil {
		fmt.Fprintf(w, "  pid %d, %s", p.PID, p.Phase)
		switch p.Phase {
		case "marking":
			fmt.Fprintf(w, ": %d of %d index files", p.IndexFiles, p.IndexTotal)
		case "sweeping":
			fmt.Fprintf(w, ": %d%% of chunk directories, %d chunks (%s) removed", p.ChunkDirs*100/65536, p.Removed, humanBytes(uint64(p.RemovedB)))
		}
		if !p.Start.IsZero() {
			fmt.Fprintf(w, "; started %s", ts(p.Start))
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintln(w, "  none")
	}
	fmt.Fprintln(w, "\nMounts:")
	if len(st.Mounts) == 0 {
		fmt.Fprintln(w, "  none")
	}
	for _, m := range st.Mounts {
		fmt.Fprintf(w, "  pid %d on %s since %s", m.PID, m.Mountpoint, ts(m.Started))
		switch {
		case m.GCSchedule != "":
			fmt.Fprintf(w, "; gc schedule %q", m.GCSchedule)
		case m.GCInterval != "":
			fmt.Fprintf(w, "; gc every %s", m.GCInterval)
		default:
			fmt.Fprintf(w, "; no background gc")
		}
		if m.NextGC != nil {
			fmt.Fprintf(w, ", next %s", ts(*m.NextGC))
		}
		if m.Metrics != "" {
			fmt.Fprintf(w, "; metrics %s", m.Metrics)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "\nWriters:")
	if len(st.Writers) == 0 {
		fmt.Fprintln(w, "  none")
	}
	for _, wr := range st.Writers {
		fmt.Fprintf(w, "  pid %d since %s\n", wr.PID, ts(wr.Start))
	}
}
