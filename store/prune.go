package store

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// KeepOptions are the retention options of a prune (§7.1). Each field is
// the number of buckets its rule keeps; 0 (or less) leaves the rule unset.
// With every rule unset, prune keeps everything.
type KeepOptions struct {
	Last    int // the newest N snapshots
	Hourly  int // the newest snapshot of each of N local hours
	Daily   int // … of N local days
	Weekly  int // … of N ISO-8601 weeks (%G/%V), in local time
	Monthly int // … of N local months
	Yearly  int // … of N local years
}

// KeepsSomething reports whether any rule is set. Without one, prune
// removes nothing (PBS's keeps_something).
func (o KeepOptions) KeepsSomething() bool {
	return o.Last > 0 || o.Hourly > 0 || o.Daily > 0 || o.Weekly > 0 || o.Monthly > 0 || o.Yearly > 0
}

// Reasons a PruneMark gives for keeping a snapshot.
const (
	ReasonLast      = "keep-last"
	ReasonHourly    = "keep-hourly"
	ReasonDaily     = "keep-daily"
	ReasonWeekly    = "keep-weekly"
	ReasonMonthly   = "keep-monthly"
	ReasonYearly    = "keep-yearly"
	ReasonProtected = "protected"
	ReasonPartial   = "partial"  // the newest snapshot, still unfinished
	ReasonKeepAll   = "keep-all" // no rule set: everything stays
)

// PruneMark is the decision for one snapshot.
type PruneMark struct {
	Info SnapshotInfo
	// Keep reports that the snapshot stays.
	Keep bool
	// Reason names the rule that kept it (one of the Reason constants),
	// or is empty for a snapshot to remove.
	Reason string
}

// pruneRule is one retention rule: its option, its reason and the bucket
// a snapshot falls into.
type pruneRule struct {
	n      int
	reason string
	bucket func(SnapshotInfo, *time.Location) string
}

func pruneRules(o KeepOptions) []pruneRule {
	local := func(layout string) func(SnapshotInfo, *time.Location) string {
		return func(si SnapshotInfo, loc *time.Location) string { return si.Ref.Time.In(loc).Format(layout) }
	}
	return []pruneRule{
		// keep-last: every snapshot of a group has its own backup time.
		{o.Last, ReasonLast, func(si SnapshotInfo, _ *time.Location) string { return si.Ref.TimeString() }},
		{o.Hourly, ReasonHourly, local("2006/01/02/15")},
		{o.Daily, ReasonDaily, local("2006/01/02")},
		{o.Weekly, ReasonWeekly, func(si SnapshotInfo, loc *time.Location) string {
			// The ISO week-based year (%G), which differs from the calendar
			// year around New Year, and the ISO week (%V).
			y, w := si.Ref.Time.In(loc).ISOWeek()
			return fmt.Sprintf("%04d/%02d", y, w)
		}},
		{o.Monthly, ReasonMonthly, local("2006/01")},
		{o.Yearly, ReasonYearly, local("2006")},
	}
}

// ComputePrune decides which snapshots of one group a prune with opts
// keeps, as PBS's compute_prune_info does (§7.2). Buckets (hours, days,
// ISO weeks, months, years) are taken in loc, the server's local time
// zone in PBS; nil means time.Local. The marks come newest first.
//
// Rules run in the order last, hourly, daily, weekly, monthly, yearly.
// Each walks the snapshots newest first and keeps the newest snapshot of
// each new bucket; an older snapshot in a bucket the rule already chose
// is marked for removal, and the rule stops at the first new bucket
// beyond its count. A bucket holding a snapshot that an earlier rule
// kept is skipped and does not count, and a snapshot an earlier rule
// decided is not looked at again. Protected snapshots are always kept
// and never count. An unfinished snapshot is kept only when it is the
// newest of all; older unfinished ones are removed. With no rule set,
// every snapshot is kept.
func ComputePrune(snaps []SnapshotInfo, opts KeepOptions, loc *time.Location) []PruneMark {
	if loc == nil {
		loc = time.Local
	}
	list := slices.Clone(snaps)
	slices.SortStableFunc(list, func(a, b SnapshotInfo) int { return b.Ref.Time.Compare(a.Ref.Time) })

	// decided[i] is set once a mark for list[i] is final.
	decided := make([]bool, len(list))
	keep := make([]bool, len(list))
	reason := make([]string, len(list))
	byRule := make([]bool, len(list)) // kept by a rule (PBS's Keep mark)

	// Incomplete snapshots: only one newer than every other snapshot stays.
	for i, si := range list {
		if si.Finished {
			continue
		}
		decided[i] = true
		if i == 0 {
			keep[i], reason[i] = true, ReasonPartial
		}
	}

	for _, r := range pruneRules(opts) {
		if r.n <= 0 {
			continue
		}
		covered := make(map[string]bool)
		for i, si := range list {
			if byRule[i] {
				covered[r.bucket(si, loc)] = true
			}
		}
		chosen := make(map[string]bool)
		for i, si := range list {
			if decided[i] {
				continue
			}
			if si.Protected {
				decided[i], keep[i], reason[i] = true, true, ReasonProtected
				continue
			}
			b := r.bucket(si, loc)
			if covered[b] {
				continue
			}
			if chosen[b] {
				decided[i] = true // older snapshot of a bucket this rule kept
				continue
			}
			if len(chosen) >= r.n {
				break
			}
			chosen[b] = true
			decided[i], keep[i], reason[i], byRule[i] = true, true, r.reason, true
		}
	}

	all := !opts.KeepsSomething()
	marks := make([]PruneMark, len(list))
	for i, si := range list {
		m := PruneMark{Info: si, Keep: keep[i], Reason: reason[i]}
		switch {
		case si.Protected:
			m.Keep, m.Reason = true, ReasonProtected
		case all:
			m.Keep = true
			if m.Reason == "" {
				m.Reason = ReasonKeepAll
			}
		}
		marks[i] = m
	}
	return marks
}

// PruneResult is the outcome of a prune for one snapshot.
type PruneResult struct {
	PruneMark
	// Removed reports that the snapshot was removed; it stays false for
	// kept snapshots and in a dry run.
	Removed bool
	// Err is why a snapshot marked for removal could not be removed
	// (ErrLocked, ErrProtected, …); nil otherwise.
	Err error
}

// Prune applies opts to group g (§7.3): it computes the marks in the
// local time zone and, unless dryRun is set, removes each snapshot marked
// for removal through RemoveSnapshot with hook, oldest first. A snapshot
// that cannot be removed is reported in its result and the others still
// go. The results come newest first. The error reports a failure to list
// the group, or cancellation, after which the remaining removals are not
// attempted.
func (s *Store) Prune(ctx context.Context, g GroupRef, opts KeepOptions, dryRun bool, hook RemoveHook) ([]PruneResult, error) {
	snaps, problems, err := s.Snapshots(g)
	if err != nil {
		return nil, err
	}
	for _, p := range problems {
		s.log.Warn("prune: snapshot skipped", "path", p.Path, "err", p.Err)
	}
	marks := ComputePrune(snaps, opts, time.Local)
	results := make([]PruneResult, len(marks))
	for i, m := range marks {
		results[i].PruneMark = m
	}
	if dryRun {
		return results, nil
	}
	for i := len(results) - 1; i >= 0; i-- {
		r := &results[i]
		if r.Keep {
			continue
		}
		if err := ctx.Err(); err != nil {
			return results, fmt.Errorf("prune group %s: %w", g, err)
		}
		if err := s.RemoveSnapshot(ctx, r.Info.Ref, hook); err != nil {
			r.Err = err
			continue
		}
		r.Removed = true
	}
	return results, nil
}
