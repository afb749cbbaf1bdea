package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Vienna without the system's zoneinfo
)

// vienna is the pinned local zone of the prune tests: CET/CEST, with DST
// changes on the last Sundays of March and October.
func vienna(t testing.TB) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Vienna")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// pruneSnaps builds snapshot infos of group host/elsa from specs such as
// "2019-12-02T11:59:15Z", with " P" appended for a protected and " U" for
// an unfinished snapshot.
func pruneSnaps(t testing.TB, specs []string) []SnapshotInfo {
	t.Helper()
	g := GroupRef{Type: TypeHost, ID: "elsa"}
	var out []SnapshotInfo
	for _, spec := range specs {
		ts, flags, _ := strings.Cut(spec, " ")
		tm, err := ParseBackupTime(ts)
		if err != nil {
			t.Fatalf("spec %q: %v", spec, err)
		}
		si := SnapshotInfo{Ref: SnapshotRef{Group: g, Time: tm}, Finished: !strings.Contains(flags, "U"),
			Protected: strings.Contains(flags, "P")}
		if si.Finished {
			si.Files = []string{ManifestName}
		}
		out = append(out, si)
	}
	return out
}

type pruneCase struct {
	name  string
	snaps []string // oldest first
	opts  KeepOptions
	// want holds the reason of each snapshot, in the order of snaps;
	// "" means removed.
	want []string
}

// checkPrune runs ComputePrune on tc in loc and compares every mark.
func checkPrune(t *testing.T, tc pruneCase, loc *time.Location) {
	t.Helper()
	if len(tc.want) != len(tc.snaps) {
		t.Fatalf("bad case: %d snaps, %d wants", len(tc.snaps), len(tc.want))
	}
	snaps := pruneSnaps(t, tc.snaps)
	// Feed them in a scrambled order: ComputePrune sorts.
	in := slices.Clone(snaps)
	rand.New(rand.NewPCG(1, uint64(len(in)))).Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
	marks := ComputePrune(in, tc.opts, loc)
	if len(marks) != len(snaps) {
		t.Fatalf("%d marks for %d snapshots", len(marks), len(snaps))
	}
	for i := 1; i < len(marks); i++ {
		if !marks[i-1].Info.Ref.Time.After(marks[i].Info.Ref.Time) {
			t.Errorf("marks not newest first at %d", i)
		}
	}
	got := map[string]PruneMark{}
	for _, m := range marks {
		got[m.Info.Ref.TimeString()] = m
	}
	for i, si := range snaps {
		m, ok := got[si.Ref.TimeString()]
		if !ok {
			t.Errorf("%s: no mark", tc.snaps[i])
			continue
		}
		if m.Reason != tc.want[i] || m.Keep != (tc.want[i] != "") {
			t.Errorf("%s: keep=%v reason %q, want %q", tc.snaps[i], m.Keep, m.Reason, tc.want[i])
		}
	}
}

const (
	rm  = ""
	kl  = ReasonLast
	kh  = ReasonHourly
	kd  = ReasonDaily
	kw  = ReasonWeekly
	km  = ReasonMonthly
	ky  = ReasonYearly
	kp  = ReasonProtected
	kpa = ReasonPartial
	ka  = ReasonKeepAll
)

// pbsPruneCases are the cases of PBS's tests/prune.rs (the expected keep
// and remove sets; the reasons are ours). PBS runs them in the build
// machine's zone; whole-hour offsets such as CET leave them unchanged.
var pbsPruneCases = func() []pruneCase {
	simple := []string{"2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z", "2019-12-04T12:59:15Z"}
	simple2 := []string{"2018-11-15T11:59:15Z", "2019-11-15T11:59:15Z", "2019-11-21T11:59:15Z", "2019-11-22T11:59:15Z",
		"2019-11-29T11:59:15Z", "2019-12-01T11:59:15Z", "2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z"}
	hourly := []string{"2019-11-15T09:39:15Z", "2019-11-15T10:49:15Z", "2019-11-15T10:59:15Z",
		"2019-11-15T11:39:15Z", "2019-11-15T11:49:15Z", "2019-11-15T11:59:15Z"}
	protected := []string{"2019-11-15T09:39:15Z P", "2019-11-15T10:39:15Z", "2019-11-15T10:49:15Z", "2019-11-15T10:59:15Z P"}
	return []pruneCase{
		{"protected/last=1", protected, KeepOptions{Last: 1}, []string{kp, rm, kl, kp}},
		{"protected/hourly=1", protected, KeepOptions{Hourly: 1}, []string{kp, rm, kh, kp}},
		{"hourly/hourly=3", hourly, KeepOptions{Hourly: 3}, []string{kh, rm, kh, rm, rm, kh}},
		{"hourly/hourly=2", hourly, KeepOptions{Hourly: 2}, []string{rm, rm, kh, rm, rm, kh}},
		{"simple2/daily=1", simple2, KeepOptions{Daily: 1}, []string{rm, rm, rm, rm, rm, rm, rm, rm, kd}},
		{"simple2/last=1,daily=1", simple2, KeepOptions{Last: 1, Daily: 1}, []string{rm, rm, rm, rm, rm, rm, rm, kd, kl}},
		{"simple2/daily=1,weekly=1", simple2, KeepOptions{Daily: 1, Weekly: 1}, []string{rm, rm, rm, rm, rm, kw, rm, rm, kd}},
		{"simple2/daily=1,weekly=1,monthly=1", simple2, KeepOptions{Daily: 1, Weekly: 1, Monthly: 1},
			[]string{rm, rm, rm, km, rm, kw, rm, rm, kd}},
		{"simple2/monthly=1,yearly=1", simple2, KeepOptions{Monthly: 1, Yearly: 1}, []string{ky, rm, rm, rm, rm, rm, rm, rm, km}},
		{"simple/last=4", simple, KeepOptions{Last: 4}, []string{kl, kl, kl, kl}},
		{"simple/last=3", simple, KeepOptions{Last: 3}, []string{rm, kl, kl, kl}},
		{"simple/last=2", simple, KeepOptions{Last: 2}, []string{rm, rm, kl, kl}},
		{"simple/last=1", simple, KeepOptions{Last: 1}, []string{rm, rm, rm, kl}},
		// prune.rs calls compute_prune_info with keep-last=0 directly and
		// expects every mark to be remove. No PBS command removes anything
		// then: the API wants N >= 1, and without a rule that keeps
		// something, prune keeps all (keeps_something). 0 is unset here.
		{"simple/last=0", simple, KeepOptions{Last: 0}, []string{ka, ka, ka, ka}},
		{"simple/last=2,daily=2", simple, KeepOptions{Last: 2, Daily: 2}, []string{kd, kd, kl, kl}},
		{"simple/daily=3", simple, KeepOptions{Daily: 3}, []string{kd, kd, rm, kd}},
		{"simple/daily=2", simple, KeepOptions{Daily: 2}, []string{rm, kd, rm, kd}},
		{"simple/weekly=5", simple, KeepOptions{Weekly: 5}, []string{rm, rm, rm, kw}},
		{"simple/daily=1,weekly=5", simple, KeepOptions{Daily: 1, Weekly: 5}, []string{rm, rm, rm, kd}},
		{"simple/monthly=6", simple, KeepOptions{Monthly: 6}, []string{rm, rm, rm, km}},
		{"simple/yearly=7", simple, KeepOptions{Yearly: 7}, []string{rm, rm, rm, ky}},
		{"simple/weekly=5,monthly=6,yearly=7", simple, KeepOptions{Weekly: 5, Monthly: 6, Yearly: 7}, []string{rm, rm, rm, kw}},
	}
}()

func TestComputePrunePBSCases(t *testing.T) {
	for _, loc := range []*time.Location{time.UTC, vienna(t)} {
		for _, tc := range pbsPruneCases {
			t.Run(loc.String()+"/"+tc.name, func(t *testing.T) { checkPrune(t, tc, loc) })
		}
	}
}

// interplay is a group whose snapshots every rule has a share of (times
// at 12:00 and 18:00 UTC, the same days in UTC and Vienna).
var interplay = []string{
	"2024-06-15T12:00:00Z", // S1
	"2025-03-10T12:00:00Z", // S2
	"2025-11-20T12:00:00Z", // S3
	"2026-01-05T12:00:00Z", // S4: ISO week 2026/02
	"2026-01-20T12:00:00Z", // S5: 2026/04
	"2026-02-02T12:00:00Z", // S6: Monday of 2026/06
	"2026-02-04T12:00:00Z", // S7
	"2026-02-05T12:00:00Z", // S8
	"2026-02-06T12:00:00Z", // S9
	"2026-02-07T12:00:00Z", // S10
	"2026-02-07T18:00:00Z", // S11
}

func withFlag(specs []string, i int, flag string) []string {
	out := slices.Clone(specs)
	out[i] += " " + flag
	return out
}

var ownPruneCases = []pruneCase{
	{"no options keeps all", []string{"2026-01-01T00:00:00Z U", "2026-01-02T00:00:00Z P", "2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z U"},
		KeepOptions{}, []string{ka, kp, ka, kpa}},
	{"negative is unset", []string{"2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"},
		KeepOptions{Last: -1, Daily: -3}, []string{ka, ka}},
	{"empty group", nil, KeepOptions{Last: 3}, nil},
	{"last larger than the group", []string{"2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"},
		KeepOptions{Last: 10}, []string{kl, kl}},

	// Rules in order; buckets covered by earlier rules are skipped.
	{"interplay", interplay, KeepOptions{Last: 2, Daily: 2, Weekly: 2, Monthly: 2, Yearly: 2},
		[]string{ky, km, km, kw, kw, rm, rm, kd, kd, kl, kl}},
	{"interplay, protected S9 counts for no rule", withFlag(interplay, 8, "P"),
		KeepOptions{Last: 2, Daily: 2, Weekly: 2, Monthly: 2, Yearly: 2},
		[]string{ky, km, km, kw, kw, rm, kd, kd, kp, kl, kl}},
	{"interplay, newest unfinished counts for no rule", append(slices.Clone(interplay), "2026-02-08T09:00:00Z U"),
		KeepOptions{Last: 2, Daily: 2, Weekly: 2, Monthly: 2, Yearly: 2},
		[]string{ky, km, km, kw, kw, rm, rm, kd, kd, kl, kl, kpa}},
	{"interplay, yearly only", interplay, KeepOptions{Yearly: 3}, []string{ky, rm, ky, rm, rm, rm, rm, rm, rm, rm, ky}},
	{"interplay, monthly only", interplay, KeepOptions{Monthly: 4}, []string{rm, km, km, rm, km, rm, rm, rm, rm, rm, km}},
	// keep-last=1 and keep-daily=2: the newest plus the newest of the two
	// previous days with backups; the day of the newest does not count.
	{"days without backups do not count", []string{"2026-05-01T08:00:00Z", "2026-05-05T08:00:00Z", "2026-05-08T08:00:00Z",
		"2026-05-10T07:00:00Z", "2026-05-10T08:00:00Z"},
		KeepOptions{Last: 1, Daily: 2}, []string{rm, kd, kd, rm, kl}},
	{"hourly then daily", []string{"2026-05-04T08:00:00Z", "2026-05-06T08:00:00Z",
		"2026-05-07T08:00:00Z", "2026-05-07T09:10:00Z", "2026-05-07T09:40:00Z"},
		KeepOptions{Hourly: 1, Daily: 2}, []string{kd, kd, rm, rm, kh}},
	// A snapshot a rule never reached (it stopped first) is free for a
	// later rule; one the rule marked for removal stays removed. ISO week
	// 2026/27 runs from 29 June to 5 July: 30 June is removed by
	// keep-weekly, so keep-monthly takes 20 June for June.
	{"unreached is rescued, removed is not", []string{"2026-06-20T12:00:00Z", "2026-06-30T12:00:00Z", "2026-07-02T12:00:00Z"},
		KeepOptions{Weekly: 1, Monthly: 2}, []string{km, rm, kw}},
	{"hourly then weekly", []string{"2026-05-04T08:00:00Z", "2026-05-11T08:00:00Z", "2026-05-12T08:00:00Z",
		"2026-05-12T09:00:00Z", "2026-05-12T09:30:00Z"},
		KeepOptions{Hourly: 2, Weekly: 2}, []string{kw, rm, kh, rm, kh}},

	// Protected snapshots are kept, count for nothing and cover no bucket.
	{"protected does not count for last", []string{"2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z",
		"2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z P"},
		KeepOptions{Last: 2}, []string{rm, kl, kl, kp}},
	{"protected covers no bucket", []string{"2026-01-02T10:00:00Z", "2026-01-03T10:00:00Z", "2026-01-03T11:00:00Z P"},
		KeepOptions{Daily: 1}, []string{rm, kd, kp}},
	{"protected old beyond every rule", []string{"2020-01-01T00:00:00Z P", "2021-01-01T00:00:00Z", "2026-01-01T00:00:00Z"},
		KeepOptions{Last: 1}, []string{kp, rm, kl}},
	{"protected unfinished", []string{"2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z U P", "2026-01-03T00:00:00Z"},
		KeepOptions{Last: 5}, []string{kl, kp, kl}},
	{"protected newest unfinished", []string{"2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z U P"},
		KeepOptions{Last: 1}, []string{kl, kp}},

	// Only an unfinished snapshot newer than every other one stays.
	{"newest unfinished kept, older unfinished removed", []string{"2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z U",
		"2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z U"},
		KeepOptions{Last: 5}, []string{kl, rm, kl, kpa}},
	{"unfinished older than a finished one", []string{"2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z U", "2026-01-03T00:00:00Z"},
		KeepOptions{Last: 5, Yearly: 5}, []string{kl, rm, kl}},
	{"two newest unfinished", []string{"2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z U", "2026-01-03T00:00:00Z U"},
		KeepOptions{Daily: 5}, []string{kd, rm, kpa}},
	{"only unfinished", []string{"2026-01-02T00:00:00Z U", "2026-01-03T00:00:00Z U"},
		KeepOptions{Last: 1}, []string{rm, kpa}},
	{"unfinished does not cover its bucket", []string{"2026-01-03T08:00:00Z", "2026-01-03T09:00:00Z U"},
		KeepOptions{Daily: 1}, []string{kd, kpa}},

	// ISO weeks across New Year (%G/%V, not the calendar year).
	{"week 53 spans New Year", []string{"2026-12-28T12:00:00Z", "2026-12-31T12:00:00Z", "2027-01-03T12:00:00Z",
		"2027-01-04T12:00:00Z"},
		KeepOptions{Weekly: 2}, []string{rm, rm, kw, kw}},
	{"week 1 starts in December", []string{"2025-12-28T12:00:00Z", "2025-12-29T12:00:00Z", "2026-01-01T12:00:00Z"},
		KeepOptions{Weekly: 2}, []string{kw, rm, kw}},
	{"yearly is the calendar year", []string{"2025-12-28T12:00:00Z", "2025-12-29T12:00:00Z", "2026-01-01T12:00:00Z"},
		KeepOptions{Yearly: 2}, []string{rm, ky, ky}},
	{"weekly then yearly across New Year", []string{"2024-06-01T12:00:00Z", "2025-12-28T12:00:00Z", "2025-12-29T12:00:00Z",
		"2026-01-01T12:00:00Z"},
		KeepOptions{Weekly: 1, Yearly: 2}, []string{ky, ky, rm, kw}},
	{"week 53 of 2020", []string{"2020-12-27T12:00:00Z", "2020-12-31T12:00:00Z", "2021-01-03T12:00:00Z",
		"2021-01-04T12:00:00Z"},
		KeepOptions{Weekly: 3}, []string{kw, rm, kw, kw}},
}

func TestComputePrune(t *testing.T) {
	for _, loc := range []*time.Location{time.UTC, vienna(t)} {
		for _, tc := range ownPruneCases {
			t.Run(loc.String()+"/"+tc.name, func(t *testing.T) { checkPrune(t, tc, loc) })
		}
	}
}

// TestComputePruneLocalTime pins cases whose buckets differ between UTC
// and Vienna: local midnight, the week boundary, and the DST changes of
// 2026 (29 March: 02:00 CET → 03:00 CEST; 25 October: 03:00 CEST → 02:00
// CET, so 02:xx happens twice).
func TestComputePruneLocalTime(t *testing.T) {
	vie := vienna(t)
	for _, tc := range []struct {
		pruneCase
		loc *time.Location
	}{
		// 21:30Z is 23:30 CEST on the 10th; 22:30Z is 00:30 on the 11th.
		{pruneCase{"midnight", []string{"2026-06-10T21:30:00Z", "2026-06-10T22:30:00Z"}, KeepOptions{Daily: 2},
			[]string{kd, kd}}, vie},
		{pruneCase{"midnight", []string{"2026-06-10T21:30:00Z", "2026-06-10T22:30:00Z"}, KeepOptions{Daily: 2},
			[]string{rm, kd}}, time.UTC},
		// 2027-01-03T23:30Z is Monday 00:30 in Vienna: ISO week 2027/01.
		{pruneCase{"week boundary", []string{"2027-01-03T12:00:00Z", "2027-01-03T23:30:00Z"}, KeepOptions{Weekly: 2},
			[]string{kw, kw}}, vie},
		{pruneCase{"week boundary", []string{"2027-01-03T12:00:00Z", "2027-01-03T23:30:00Z"}, KeepOptions{Weekly: 2},
			[]string{rm, kw}}, time.UTC},
		// New Year's Eve 23:30Z is 00:30 on 1 January in Vienna.
		{pruneCase{"year boundary", []string{"2025-12-31T12:00:00Z", "2025-12-31T23:30:00Z"}, KeepOptions{Yearly: 2, Monthly: 1},
			[]string{ky, km}}, vie},
		{pruneCase{"year boundary", []string{"2025-12-31T12:00:00Z", "2025-12-31T23:30:00Z"}, KeepOptions{Yearly: 2, Monthly: 1},
			[]string{rm, km}}, time.UTC},
		// Fall back: 00:30Z (02:30 CEST) and 01:30Z (02:30 CET) share the
		// local hour 02; 02:30Z is 03:30 CET, 23:30Z the day before 01:30.
		{pruneCase{"DST end, repeated hour", []string{"2026-10-24T23:30:00Z", "2026-10-25T00:30:00Z",
			"2026-10-25T01:30:00Z", "2026-10-25T02:30:00Z"}, KeepOptions{Hourly: 3},
			[]string{kh, rm, kh, kh}}, vie},
		{pruneCase{"DST end, repeated hour", []string{"2026-10-24T23:30:00Z", "2026-10-25T00:30:00Z",
			"2026-10-25T01:30:00Z", "2026-10-25T02:30:00Z"}, KeepOptions{Hourly: 3},
			[]string{rm, kh, kh, kh}}, time.UTC},
		// The 25-hour day is one bucket: 22:30Z on the 24th is 00:30 CEST
		// on the 25th, 22:30Z on the 25th is 23:30 CET on the 25th.
		{pruneCase{"DST end, 25-hour day", []string{"2026-10-24T12:00:00Z", "2026-10-24T22:30:00Z",
			"2026-10-25T22:30:00Z"}, KeepOptions{Daily: 2},
			[]string{kd, rm, kd}}, vie},
		// Spring forward: the 23-hour day from 23:00Z on the 28th (00:00
		// CET) to 22:00Z on the 29th (24:00 CEST) is one bucket.
		{pruneCase{"DST start, 23-hour day", []string{"2026-03-28T12:00:00Z", "2026-03-28T23:30:00Z",
			"2026-03-29T21:30:00Z"}, KeepOptions{Daily: 2},
			[]string{kd, rm, kd}}, vie},
		{pruneCase{"DST start, 23-hour day", []string{"2026-03-28T12:00:00Z", "2026-03-28T23:30:00Z",
			"2026-03-29T21:30:00Z"}, KeepOptions{Daily: 2},
			[]string{rm, kd, kd}}, time.UTC},
		// 00:59Z is 01:59 CET and 01:00Z is 03:00 CEST: the missing hour
		// 02 is no bucket, the two are adjacent local hours.
		{pruneCase{"DST start, missing hour", []string{"2026-03-29T00:30:00Z", "2026-03-29T00:59:00Z",
			"2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z"}, KeepOptions{Hourly: 2},
			[]string{rm, kh, rm, kh}}, vie},
	} {
		t.Run(tc.loc.String()+"/"+tc.name, func(t *testing.T) { checkPrune(t, tc.pruneCase, tc.loc) })
	}
}

// referencePrune is §7.2's pseudo-code written out literally, with maps
// keyed by snapshot and strftime-style bucket strings, as a second
// implementation to compare ComputePrune with.
func referencePrune(list []SnapshotInfo, o KeepOptions, loc *time.Location) map[SnapshotRef]string {
	list = slices.Clone(list)
	slices.SortFunc(list, func(a, b SnapshotInfo) int { return b.Ref.Time.Compare(a.Ref.Time) })
	const keepMark, removeMark = "keep", "remove"
	mark := map[SnapshotRef]string{}
	seenAny := false
	for _, s := range list {
		if !s.Finished {
			if seenAny {
				mark[s.Ref] = removeMark
			} else {
				mark[s.Ref] = ReasonPartial
			}
		}
		seenAny = true
	}
	rule := map[SnapshotRef]string{}
	for _, r := range []struct {
		n      int
		reason string
		key    func(time.Time) string
	}{
		{o.Last, ReasonLast, func(t time.Time) string { return t.UTC().String() }},
		{o.Hourly, ReasonHourly, func(t time.Time) string { return fmt.Sprint(t.Year(), t.YearDay(), t.Hour()) }},
		{o.Daily, ReasonDaily, func(t time.Time) string { return fmt.Sprint(t.Year(), t.YearDay()) }},
		{o.Weekly, ReasonWeekly, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprint(y, "W", w) }},
		{o.Monthly, ReasonMonthly, func(t time.Time) string { return fmt.Sprint(t.Year(), t.Month()) }},
		{o.Yearly, ReasonYearly, func(t time.Time) string { return fmt.Sprint(t.Year()) }},
	} {
		if r.n <= 0 {
			continue
		}
		covered, chosen := map[string]bool{}, map[string]bool{}
		for _, s := range list {
			if mark[s.Ref] == keepMark {
				covered[r.key(s.Ref.Time.In(loc))] = true
			}
		}
		for _, s := range list {
			if _, ok := mark[s.Ref]; ok {
				continue
			}
			if s.Protected {
				mark[s.Ref] = ReasonProtected
				continue
			}
			k := r.key(s.Ref.Time.In(loc))
			if covered[k] {
				continue
			}
			if !chosen[k] {
				if len(chosen) >= r.n {
					break
				}
				chosen[k] = true
				mark[s.Ref], rule[s.Ref] = keepMark, r.reason
			} else {
				mark[s.Ref] = removeMark
			}
		}
	}
	out := map[SnapshotRef]string{}
	for _, s := range list {
		switch m := mark[s.Ref]; {
		case s.Protected:
			out[s.Ref] = ReasonProtected
		case !o.KeepsSomething():
			out[s.Ref] = ReasonKeepAll
			if m == ReasonPartial {
				out[s.Ref] = m
			}
		case m == keepMark:
			out[s.Ref] = rule[s.Ref]
		case m == ReasonPartial:
			out[s.Ref] = m
		default:
			out[s.Ref] = ""
		}
	}
	return out
}

// TestComputePruneRandom compares ComputePrune with referencePrune on
// random groups and checks the invariants: each rule keeps at most its N
// snapshots, in distinct buckets; protected snapshots are always kept;
// with a rule set, only the newest snapshot may be partial and nothing is
// kept for no reason.
func TestComputePruneRandom(t *testing.T) {
	loc := vienna(t)
	rng := rand.New(rand.NewPCG(42, 6))
	gaps := []time.Duration{time.Minute, 37 * time.Minute, 3 * time.Hour, 23 * time.Hour, 4 * 24 * time.Hour, 40 * 24 * time.Hour}
	opt := func() int {
		if rng.IntN(2) == 0 {
			return 0
		}
		return 1 + rng.IntN(4)
	}
	for iter := range 3000 {
		n := rng.IntN(25)
		tm := time.Date(2024, 12, 20, 0, 0, 0, 0, time.UTC).Add(time.Duration(rng.IntN(400*24)) * time.Hour)
		var specs []string
		for range n {
			tm = tm.Add(time.Duration(1+rng.IntN(int(gaps[rng.IntN(len(gaps))]/time.Second))) * time.Second)
			spec := FormatBackupTime(tm)
			switch rng.IntN(10) {
			case 0:
				spec += " P"
			case 1:
				spec += " U"
			}
			specs = append(specs, spec)
		}
		o := KeepOptions{opt(), opt(), opt(), opt(), opt(), opt()}
		snaps := pruneSnaps(t, specs)
		want := referencePrune(snaps, o, loc)
		marks := ComputePrune(snaps, o, loc)
		perRule := map[string]map[string]bool{}
		for i, m := range marks {
			if got := m.Reason; got != want[m.Info.Ref] || m.Keep != (got != "") {
				t.Fatalf("iter %d %+v %q: %s keep=%v %q, reference %q", iter, o, specs, m.Info.Ref, m.Keep, got, want[m.Info.Ref])
			}
			switch {
			case m.Info.Protected && !m.Keep:
				t.Fatalf("iter %d: protected %s removed", iter, m.Info.Ref)
			case m.Reason == ReasonPartial && i != 0:
				t.Fatalf("iter %d: partial %s is not the newest", iter, m.Info.Ref)
			case m.Reason == ReasonKeepAll && o.KeepsSomething():
				t.Fatalf("iter %d: keep-all with options", iter)
			}
			for _, r := range pruneRules(o) {
				if m.Reason == r.reason {
					if perRule[r.reason] == nil {
						perRule[r.reason] = map[string]bool{}
					}
					b := r.bucket(m.Info, loc)
					if perRule[r.reason][b] {
						t.Fatalf("iter %d: %s keeps two in bucket %s", iter, r.reason, b)
					}
					perRule[r.reason][b] = true
					if len(perRule[r.reason]) > r.n {
						t.Fatalf("iter %d: %s keeps more than %d", iter, r.reason, r.n)
					}
				}
			}
		}
	}
}

func TestComputePruneNilLocation(t *testing.T) {
	snaps := pruneSnaps(t, []string{"2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"})
	marks := ComputePrune(snaps, KeepOptions{Last: 1}, nil)
	if len(marks) != 2 || !marks[0].Keep || marks[1].Keep {
		t.Errorf("marks %+v", marks)
	}
	if snaps[0].Ref.Time.After(snaps[1].Ref.Time) {
		t.Error("input reordered")
	}
}

// TestPrune runs a prune on a real store: oldest removals first, a
// locked snapshot reported while the others go, dry run removing none,
// and cancellation stopping the removals.
func TestPrune(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	g := GroupRef{Type: TypeVM, ID: "100"}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var refs []SnapshotRef
	for i := range 6 {
		refs = append(refs, backupOne(t, s, g, t0.Add(time.Duration(i)*time.Hour)))
	}
	if err := s.SetProtected(refs[1], true); err != nil {
		t.Fatal(err)
	}

	// Dry run: marks, nothing removed, hook never called.
	hook := func(context.Context, SnapshotRef) error { t.Error("hook called in a dry run"); return nil }
	res, err := s.Prune(ctx, g, KeepOptions{Last: 2}, true, hook)
	if err != nil {
		t.Fatal(err)
	}
	wantReason := []string{kl, kl, rm, rm, kp, rm} // newest first
	for i, r := range res {
		if r.Info.Ref != refs[5-i] || r.Reason != wantReason[i] || r.Removed || r.Err != nil {
			t.Errorf("dry run %d: %+v", i, r)
		}
	}
	if snaps, _, _ := s.Snapshots(g); len(snaps) != 6 {
		t.Fatalf("dry run removed: %d left", len(snaps))
	}

	// refs[3] is read by someone: its removal fails, the others go, and
	// they go oldest first.
	rl, err := s.Locks().LockSnapshot(nil, g.Type, g.ID, refs[3].TimeString(), false)
	if err != nil {
		t.Fatal(err)
	}
	var order []SnapshotRef
	res, err = s.Prune(ctx, g, KeepOptions{Last: 2}, false, func(_ context.Context, ref SnapshotRef) error {
		order = append(order, ref)
		return nil
	})
	rl.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, []SnapshotRef{refs[0], refs[2]}) {
		t.Errorf("removal order %v", order)
	}
	for i, r := range res {
		ref := refs[5-i]
		wantRemoved := ref == refs[0] || ref == refs[2]
		if r.Removed != wantRemoved || (ref == refs[3]) != errors.Is(r.Err, ErrLocked) {
			t.Errorf("%s: removed %v err %v", ref, r.Removed, r.Err)
		}
		if _, err := os.Stat(s.Path(ref.Dir())); (err == nil) == wantRemoved {
			t.Errorf("%s: on disk: %v, removed %v", ref, err, wantRemoved)
		}
	}

	// No option: nothing goes.
	res, err = s.Prune(ctx, g, KeepOptions{}, false, nil)
	if err != nil || len(res) != 4 {
		t.Fatalf("keep all: %v %d", err, len(res))
	}
	for _, r := range res {
		if !r.Keep || r.Removed {
			t.Errorf("keep all: %+v", r)
		}
	}

	// Cancelled: no removal is attempted.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Prune(cctx, g, KeepOptions{Last: 1}, false, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if snaps, _, _ := s.Snapshots(g); len(snaps) != 4 {
		t.Errorf("cancelled prune removed: %d left", len(snaps))
	}

	// Keep one: everything but the protected one and the newest goes,
	// and the group stays.
	res, err = s.Prune(ctx, g, KeepOptions{Last: 1}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	snaps, _, err := s.Snapshots(g)
	if err != nil || len(snaps) != 2 || snaps[0].Ref != refs[1] || snaps[1].Ref != refs[5] {
		t.Errorf("after prune: %v %v", snaps, err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Errorf("%s: %v", r.Info.Ref, r.Err)
		}
	}

	// A missing group is an error.
	if _, err := s.Prune(ctx, GroupRef{Type: TypeVM, ID: "999"}, KeepOptions{Last: 1}, false, nil); err == nil {
		t.Error("prune of a missing group succeeded")
	}
}
