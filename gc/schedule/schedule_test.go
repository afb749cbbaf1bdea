package schedule

import (
	"testing"
	"time"
)

// base is Wednesday 2026-06-10 12:07:30 UTC.
var base = time.Date(2026, 6, 10, 12, 7, 30, 0, time.UTC)

// TestPBSExamples checks the examples of PBS's documentation (the table of
// "useful examples" and the special values of docs/calendarevents.rst),
// each with its documented alternative spelling, against the next run
// after base in UTC.
func TestPBSExamples(t *testing.T) {
	tests := []struct {
		event, alt string
		want       string // RFC 3339 in UTC; "" for never
	}{
		// Every working day at 00:00.
		{"mon,tue,wed,thu,fri", "mon..fri", "2026-06-11T00:00:00Z"},
		// Only on weekends at 00:00.
		{"sat,sun", "sat..sun", "2026-06-13T00:00:00Z"},
		// Monday, Wednesday, Friday at 00:00.
		{"mon,wed,fri", "", "2026-06-12T00:00:00Z"},
		// Every day at 12:05 PM.
		{"12:05", "", "2026-06-11T12:05:00Z"},
		// Every five minutes.
		{"*:00/5", "0/1:0/5", "2026-06-10T12:10:00Z"},
		// Monday, Tuesday, Wednesday 30, 40 and 50 minutes after every full hour.
		{"mon..wed *:30/10", "mon,tue,wed *:30/10", "2026-06-10T12:30:00Z"},
		// Every working day every 15 minutes between 8 AM and 6 PM and
		// between 10 PM and 11 PM.
		{"mon..fri 8..17,22:0/15", "", "2026-06-10T12:15:00Z"},
		// Friday at 12:05, 12:25, 12:45, 13:05, 13:25 and 13:45.
		{"fri 12..13:5/20", "fri 12,13:5/20", "2026-06-12T12:05:00Z"},
		// Every day starting at 12:05 until 22:05, every 2 hours.
		{"12,14,16,18,20,22:5", "12/2:5", "2026-06-10T14:05:00Z"},
		// Every minute (minimum interval).
		{"*:*", "0/1:0/1", "2026-06-10T12:08:00Z"},
		// On the 5th day of every month.
		{"*-05", "", "2026-07-05T00:00:00Z"},
		// First Saturday each month at 15:00.
		{"Sat *-1..7 15:00", "", "2026-07-04T15:00:00Z"},
		// 21st October 2015 at 00:00: past.
		{"2015-10-21", "", ""},
		// The special values.
		{"minutely", "*-*-* *:*:00", "2026-06-10T12:08:00Z"},
		{"hourly", "*-*-* *:00:00", "2026-06-10T13:00:00Z"},
		{"daily", "*-*-* 00:00:00", "2026-06-11T00:00:00Z"},
		{"weekly", "mon *-*-* 00:00:00", "2026-06-15T00:00:00Z"},
		{"monthly", "*-*-01 00:00:00", "2026-07-01T00:00:00Z"},
		{"yearly", "*-01-01 00:00:00", "2027-01-01T00:00:00Z"},
		{"annually", "yearly", "2027-01-01T00:00:00Z"},
		{"quarterly", "*-01,04,07,10-01 00:00:00", "2026-07-01T00:00:00Z"},
		{"semiannually", "*-01,07-01 00:00:00", "2026-07-01T00:00:00Z"},
		{"semi-annually", "semiannually", "2026-07-01T00:00:00Z"},
		// The examples and more.
		{"sat 18:15", "", "2026-06-13T18:15:00Z"},
		{"mon..fri 02:00", "", "2026-06-11T02:00:00Z"},
		{"*:0/30", "*:00,30", "2026-06-10T12:30:00Z"},
		{"*:*:0/20", "*:*:00,20,40", "2026-06-10T12:07:40Z"},
		{"2026-06-10 12:07:30", "", ""},
		{"2026-06-10 12:07:31", "", "2026-06-10T12:07:31Z"},
		{"2030-02-29", "", ""}, // no such day
		{"2028-02-29 1:2:3", "", "2028-02-29T01:02:03Z"},
		{"*-02-29", "", "2028-02-29T00:00:00Z"},
		{"fri *-*-13", "", "2026-11-13T00:00:00Z"},
		{"8..17/4:00", "8,12,16:0", "2026-06-10T16:00:00Z"},
	}
	for _, tc := range tests {
		for _, s := range []string{tc.event, tc.alt} {
			if s == "" {
				continue
			}
			e, err := Parse(s)
			if err != nil {
				t.Errorf("Parse(%q): %v", s, err)
				continue
			}
			got, ok := e.Next(base, time.UTC)
			if tc.want == "" {
				if ok {
					t.Errorf("%q: next after %s = %s, want never", s, base.Format(time.RFC3339), got.Format(time.RFC3339))
				}
				continue
			}
			if !ok || got.UTC().Format(time.RFC3339) != tc.want {
				t.Errorf("%q: next after %s = %s (%v), want %s", s, base.Format(time.RFC3339), got.UTC().Format(time.RFC3339), ok, tc.want)
			}
		}
	}
}

// sequence returns the next n runs of event after from, in loc, as
// RFC 3339 strings in UTC.
func sequence(t *testing.T, event string, from time.Time, loc *time.Location, n int) []string {
	t.Helper()
	e := MustParse(event)
	var out []string
	at := from
	for range n {
		next, ok := e.Next(at, loc)
		if !ok {
			break
		}
		if !next.After(at) {
			t.Fatalf("%q: Next(%s) = %s, not after", event, at, next)
		}
		out = append(out, next.UTC().Format(time.RFC3339))
		at = next
	}
	return out
}

func TestSequence(t *testing.T) {
	got := sequence(t, "fri 12..13:5/20", base, time.UTC, 7)
	want := []string{"2026-06-12T12:05:00Z", "2026-06-12T12:25:00Z", "2026-06-12T12:45:00Z",
		"2026-06-12T13:05:00Z", "2026-06-12T13:25:00Z", "2026-06-12T13:45:00Z", "2026-06-19T12:05:00Z"}
	check(t, "fri 12..13:5/20", got, want)
}

func check(t *testing.T, event string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%q: got %v, want %v", event, got, want)
		return
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("%q: run %d at %s, want %s (all: %v)", event, i, got[i], want[i], got)
		}
	}
}

// TestDST runs events across the daylight saving changes of
// Europe/Vienna (2026-03-29 02:00 CET → 03:00 CEST; 2026-10-25 03:00 CEST
// → 02:00 CET) and America/New_York (2026-03-08 02:00 EST → 03:00 EDT;
// 2026-11-01 02:00 EDT → 01:00 EST).
func TestDST(t *testing.T) {
	vienna, err := time.LoadLocation("Europe/Vienna")
	if err != nil {
		t.Skipf("no tzdata: %v", err)
	}
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Skipf("no tzdata: %v", err)
	}
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		event string
		loc   *time.Location
		from  string
		want  []string
	}{
		// Midnight local is 23:00Z in winter, 22:00Z in summer.
		{"daily", vienna, "2026-03-28T11:00:00Z", []string{"2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z", "2026-03-30T22:00:00Z"}},
		{"daily", vienna, "2026-10-24T11:00:00Z", []string{"2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z"}},
		// 02:30 does not exist on 2026-03-29: it runs when the clock jumps
		// past it, at 03:30 CEST.
		{"02:30", vienna, "2026-03-28T12:00:00Z", []string{"2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z"}},
		// 02:30 happens twice on 2026-10-25: one run, at the first.
		{"02:30", vienna, "2026-10-24T12:00:00Z", []string{"2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"}},
		// Started inside the repeated hour (02:10 CET): the second 02:30.
		{"02:30", vienna, "2026-10-25T01:10:00Z", []string{"2026-10-25T01:30:00Z", "2026-10-26T01:30:00Z"}},
		// Hourly over the spring gap: 01:00 CET, then 03:00 CEST.
		{"hourly", vienna, "2026-03-28T23:30:00Z", []string{"2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"}},
		// Hourly over the autumn change: 02:00 CEST, 03:00 CET.
		{"hourly", vienna, "2026-10-24T23:30:00Z", []string{"2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z", "2026-10-25T03:00:00Z"}},
		{"sat 18:15", vienna, "2026-03-25T00:00:00Z", []string{"2026-03-28T17:15:00Z", "2026-04-04T16:15:00Z"}},
		{"mon..fri 02:00", ny, "2026-03-06T00:00:00Z", []string{"2026-03-06T07:00:00Z", "2026-03-09T06:00:00Z"}},
		{"*:0/30", ny, "2026-03-08T06:10:00Z", []string{"2026-03-08T06:30:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z"}},
		{"*:0/30", ny, "2026-11-01T05:10:00Z", []string{"2026-11-01T05:30:00Z", "2026-11-01T07:00:00Z", "2026-11-01T07:30:00Z"}},
		{"weekly", ny, "2026-10-28T00:00:00Z", []string{"2026-11-02T05:00:00Z"}},
	}
	for _, tc := range tests {
		got := sequence(t, tc.event, at(tc.from), tc.loc, len(tc.want))
		check(t, tc.event+" in "+tc.loc.String(), got, tc.want)
	}
}

func TestParseErrors(t *testing.T) {
	for _, s := range []string{
		"", "foo", "mon..", "fri..mon", "25:00", "12:60", "12:00:60", "*-13-01", "*-*-32",
		"12:00 mon", "*-01-01 mon", "1:2:3:4", "*:0/0", "*:5..1", "mon mon", "12", "1-2-3-4",
		"*:*/x", "-1:00",
	} {
		if e, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) = %v, want an error", s, e)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"daily", "mon..fri 8..17,22:0/15", "Sat *-1..7 15:00", "*:*:0/20", "2015-10-21"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := Parse(s)
		if err != nil {
			return
		}
		if next, ok := e.Next(base, time.UTC); ok && !next.After(base) {
			t.Fatalf("%q: next %s not after %s", s, next, base)
		}
	})
}
