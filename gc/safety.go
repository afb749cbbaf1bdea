package gc

import "time"

// Safety holds the time margins the sweep decides by. Every field is a
// duration back from a moment the collector measured; a chunk file is
// removed only when its access time lies before all of them.
type Safety struct {
	// Cutoff is how long an unmarked chunk is kept after its last touch:
	// min_atime = phase-1 start − Cutoff. PBS uses 24 h 5 min, because
	// relatime may delay implicit atime updates by a day (spec §6.4); a
	// shorter cutoff is accepted only while the atime self-test runs
	// (Options.SkipAtimeCheck unset), which proves that explicit touches
	// land on this file system.
	Cutoff time.Duration
	// WriterMargin is kept before the start of the oldest active writer:
	// min_atime is never later than oldest_writer − WriterMargin, so a
	// chunk a long-running backup wrote or touched early survives until its
	// index lands. PBS uses 5 min.
	WriterMargin time.Duration
}

// PBSSafety returns the margins of Proxmox Backup Server: a cutoff of
// 24 h 5 min and 5 min before the oldest writer.
func PBSSafety() Safety {
	return Safety{Cutoff: 24*time.Hour + 5*time.Minute, WriterMargin: 5 * time.Minute}
}

// MinCutoff is the shortest Safety.Cutoff the collector accepts. PBS's
// gc-atime-cutoff tuning option counts in whole minutes from 1.
const MinCutoff = time.Minute

// cutoff returns min_atime, the access time below which an unmarked chunk
// is removed, for a run whose phase 1 started at start while the oldest
// active writer started at oldestWriter (start itself when there is none).
//
// The race it prevents: a writer that started at oldestWriter wrote or
// touched chunks from then on, but its index appears only when it
// finishes, so phase 1 cannot see those chunks. Their atimes are at least
// oldestWriter, so nothing at or after oldestWriter − WriterMargin may go.
// Everything else that is still referenced was touched in phase 1, at or
// after start, so start − Cutoff is safe for it as long as touches update
// atime (the self-test) — Cutoff only guards against file systems whose
// atimes lag.
//
// PBS 2025+ computes start − Cutoff and, only when oldestWriter lies
// before that, oldestWriter − 5 min; when oldestWriter falls in the last
// five minutes before start − Cutoff that keeps start − Cutoff, later than
// oldestWriter − 5 min. Taking the minimum of both, as here, is never
// later than PBS and matches it everywhere else.
func cutoff(start, oldestWriter time.Time, s Safety) time.Time {
	min := start.Add(-s.Cutoff)
	if w := oldestWriter.Add(-s.WriterMargin); w.Before(min) {
		min = w
	}
	return min
}
