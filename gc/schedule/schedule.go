// Package schedule parses Proxmox Backup Server calendar events, the
// syntax of PBS's gc-schedule and other job schedules, and computes when
// they next occur.
//
// An event is
//
//	[WEEKDAY] [[YEARS-]MONTHS-DAYS] [HOURS:MINUTES[:SECONDS]]
//
// with at least one of the three parts. A missing weekday or date part
// matches every day; a missing time part means 00:00:00, missing seconds
// mean :00. Weekdays are mon, tue, wed, thu, fri, sat, sun (or the full
// English names, any case). Every field is a comma-separated list of
// values (05), ranges (01..10), repetitions (05/10: from 5 every 10;
// 8..17/2 bounds one) and * (every value). The words minutely, hourly,
// daily, weekly, monthly, yearly (annually), quarterly and semiannually
// (semi-annually) stand for the events PBS defines for them.
//
// Times are wall-clock times of a time zone (PBS uses the server's local
// zone). A time that a daylight saving change skips is taken as the
// instant the clock jumps over it (02:30 on a spring-forward day at 02:00
// happens at 03:30, as mktime normalizes it); a time that occurs twice
// when clocks go back matches both times.
package schedule

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Event is a parsed calendar event.
type Event struct {
	src      string
	weekdays uint8 // bit per time.Weekday; 0 means every day
	years    field
	months   field
	days     field
	hours    field
	minutes  field
	seconds  field
}

// field is the set of values one component of an event matches; nil items
// match every value.
type field struct {
	items []item
}

// item is one value, range or repetition: start, start..end, start/step or
// start..end/step. end < 0 means up to the field's maximum.
type item struct {
	start, end, step int
}

func (f field) match(v int) bool {
	if len(f.items) == 0 {
		return true
	}
	for _, it := range f.items {
		if it.match(v) {
			return true
		}
	}
	return false
}

func (it item) match(v int) bool {
	if v < it.start || (it.end >= 0 && v > it.end) {
		return false
	}
	if it.step == 0 {
		return it.end >= 0 || v == it.start
	}
	return (v-it.start)%it.step == 0
}

// specials are the named events (PBS's table of special values).
var specials = map[string]string{
	"minutely":      "*-*-* *:*:00",
	"hourly":        "*-*-* *:00:00",
	"daily":         "*-*-* 00:00:00",
	"weekly":        "mon *-*-* 00:00:00",
	"monthly":       "*-*-01 00:00:00",
	"yearly":        "*-01-01 00:00:00",
	"annually":      "*-01-01 00:00:00",
	"quarterly":     "*-01,04,07,10-01 00:00:00",
	"semiannually":  "*-01,07-01 00:00:00",
	"semi-annually": "*-01,07-01 00:00:00",
}

var weekdayNames = map[string]time.Weekday{
	"mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday, "thu": time.Thursday,
	"fri": time.Friday, "sat": time.Saturday, "sun": time.Sunday,
	"monday": time.Monday, "tuesday": time.Tuesday, "wednesday": time.Wednesday,
	"thursday": time.Thursday, "friday": time.Friday, "saturday": time.Saturday, "sunday": time.Sunday,
}

// weekdayOrder is PBS's (and systemd's) order of weekdays for ranges:
// Monday first.
func weekdayOrder(d time.Weekday) int { return (int(d) + 6) % 7 }

// Parse parses a calendar event.
func Parse(s string) (*Event, error) {
	e, err := parse(s)
	if err != nil {
		return nil, fmt.Errorf("calendar event %q: %w", s, err)
	}
	return e, nil
}

// MustParse is Parse for events known to be valid; it panics on an error.
func MustParse(s string) *Event {
	e, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return e
}

func parse(s string) (*Event, error) {
	e := &Event{src: s}
	text := strings.ToLower(strings.TrimSpace(s))
	if text == "" {
		return nil, fmt.Errorf("empty")
	}
	if exp, ok := specials[text]; ok {
		text = exp
	}
	parts := strings.Fields(text)
	stage := 0 // 0: weekday allowed, 1: date allowed, 2: time allowed, 3: done
	hasTime := false
	for _, p := range parts {
		switch {
		case stage <= 0 && isWeekdayList(p):
			if err := e.parseWeekdays(p); err != nil {
				return nil, err
			}
			stage = 1
		case stage <= 1 && strings.Contains(p, "-") && !strings.Contains(p, ":"):
			if err := e.parseDate(p); err != nil {
				return nil, err
			}
			stage = 2
		case stage <= 2 && strings.Contains(p, ":"):
			if err := e.parseTime(p); err != nil {
				return nil, err
			}
			hasTime = true
			stage = 3
		default:
			return nil, fmt.Errorf("unexpected %q", p)
		}
	}
	if !hasTime {
		e.hours = field{items: []item{{0, -1, 0}}}
		e.minutes = field{items: []item{{0, -1, 0}}}
		e.seconds = field{items: []item{{0, -1, 0}}}
	}
	return e, nil
}

// isWeekdayList reports whether p consists of letters, commas and "..".
func isWeekdayList(p string) bool {
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r == ',' || r == '.') {
			return false
		}
	}
	return true
}

func (e *Event) parseWeekdays(p string) error {
	for _, part := range strings.Split(p, ",") {
		lo, hi, isRange := strings.Cut(part, "..")
		a, ok := weekdayNames[lo]
		if !ok {
			return fmt.Errorf("weekday %q", lo)
		}
		if !isRange {
			e.weekdays |= 1 << a
			continue
		}
		b, ok := weekdayNames[hi]
		if !ok {
			return fmt.Errorf("weekday %q", hi)
		}
		if weekdayOrder(b) < weekdayOrder(a) {
			return fmt.Errorf("weekday range %q: end before start (weeks start on Monday)", part)
		}
		for o := weekdayOrder(a); o <= weekdayOrder(b); o++ {
			e.weekdays |= 1 << ((o + 1) % 7)
		}
	}
	return nil
}

func (e *Event) parseDate(p string) error {
	comps := strings.Split(p, "-")
	switch len(comps) {
	case 2:
		comps = append([]string{"*"}, comps...)
	case 3:
	default:
		return fmt.Errorf("date %q: want [YEARS-]MONTHS-DAYS", p)
	}
	var err error
	if e.years, err = parseField(comps[0], "year", 1970, 9999); err != nil {
		return err
	}
	if e.months, err = parseField(comps[1], "month", 1, 12); err != nil {
		return err
	}
	if e.days, err = parseField(comps[2], "day", 1, 31); err != nil {
		return err
	}
	return nil
}

func (e *Event) parseTime(p string) error {
	comps := strings.Split(p, ":")
	if len(comps) < 2 || len(comps) > 3 {
		return fmt.Errorf("time %q: want HOURS:MINUTES[:SECONDS]", p)
	}
	var err error
	if e.hours, err = parseField(comps[0], "hour", 0, 23); err != nil {
		return err
	}
	if e.minutes, err = parseField(comps[1], "minute", 0, 59); err != nil {
		return err
	}
	if len(comps) == 3 {
		e.seconds, err = parseField(comps[2], "second", 0, 59)
		return err
	}
	e.seconds = field{items: []item{{0, -1, 0}}}
	return nil
}

// parseField parses a comma-separated list of values, ranges and
// repetitions in [min, max].
func parseField(s, name string, min, max int) (field, error) {
	if s == "*" {
		return field{}, nil
	}
	var f field
	for _, part := range strings.Split(s, ",") {
		it, err := parseItem(part, min, max)
		if err != nil {
			return field{}, fmt.Errorf("%s %q: %w", name, part, err)
		}
		f.items = append(f.items, it)
	}
	return f, nil
}

func parseItem(s string, min, max int) (item, error) {
	num := func(t string) (int, error) {
		if t == "" || len(t) > 4 {
			return 0, fmt.Errorf("not a number")
		}
		v, err := strconv.Atoi(t)
		if err != nil || v < 0 {
			return 0, fmt.Errorf("not a number")
		}
		if v < min || v > max {
			return 0, fmt.Errorf("out of range %d..%d", min, max)
		}
		return v, nil
	}
	base, stepText, hasStep := strings.Cut(s, "/")
	it := item{end: -1}
	lo, hi, isRange := strings.Cut(base, "..")
	var err error
	if lo == "*" && hasStep && !isRange {
		it.start = min
	} else if it.start, err = num(lo); err != nil {
		return item{}, err
	}
	if isRange {
		if it.end, err = num(hi); err != nil {
			return item{}, err
		}
		if it.end < it.start {
			return item{}, fmt.Errorf("range end before start")
		}
	}
	if hasStep {
		st, err := strconv.Atoi(stepText)
		if err != nil || st <= 0 {
			return item{}, fmt.Errorf("repetition %q: want a positive number", stepText)
		}
		it.step = st
	} else if !isRange {
		it.end = it.start
	}
	return it, nil
}

// String returns the event as it was given.
func (e *Event) String() string { return e.src }

// maxYear bounds the search: no event occurs after it.
const maxYear = 9999

// Next returns the first time after t (strictly later, in whole seconds)
// at which e occurs in loc, and false if it never occurs again. The
// result is in loc.
//
// Wall-clock times are searched from t's own: each is taken once, at its
// first instant after t. Like PBS, an event of the hour that clocks going
// back repeat is therefore not run again in the repetition (hourly runs
// at 02:00 summer time and next at 03:00 winter time), and a daily 02:30
// runs once.
func (e *Event) Next(t time.Time, loc *time.Location) (time.Time, bool) {
	after := t.Truncate(time.Second)
	c := civil(after.In(loc)).Add(time.Second)
	for {
		m, ok := e.nextCivil(c)
		if !ok {
			return time.Time{}, false
		}
		for _, abs := range instants(m, loc) {
			if abs.After(after) {
				return abs, true
			}
		}
		c = m.Add(time.Second)
	}
}

// civil returns t's wall-clock fields as a time in UTC.
func civil(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, time.UTC)
}

// instants returns the instants at which the wall clock of loc shows c,
// earliest first: one usually, two in an hour that clocks going back
// repeat, and for a time that clocks going forward skip, the instant the
// clock jumps past it (c read with the offset in force before the jump,
// as mktime normalizes it).
func instants(c time.Time, loc *time.Location) []time.Time {
	t1 := time.Date(c.Year(), c.Month(), c.Day(), c.Hour(), c.Minute(), c.Second(), 0, loc)
	_, before := t1.Add(-3 * time.Hour).Zone()
	_, at := t1.Zone()
	_, after := t1.Add(3 * time.Hour).Zone()
	var out []time.Time
	for i, off := range []int{before, at, after} {
		if (i == 1 && off == before) || (i == 2 && (off == before || off == at)) {
			continue
		}
		cand := c.Add(-time.Duration(off) * time.Second).In(loc)
		if civil(cand).Equal(c) {
			out = append(out, cand)
		}
	}
	if len(out) == 0 {
		out = append(out, c.Add(-time.Duration(before)*time.Second).In(loc))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

// nextCivil returns the first wall-clock time at or after c (fields in
// UTC) that e matches.
func (e *Event) nextCivil(c time.Time) (time.Time, bool) {
	for c.Year() <= maxYear {
		y, mo, d := c.Date()
		switch {
		case !e.years.match(y):
			c = time.Date(y+1, 1, 1, 0, 0, 0, 0, time.UTC)
		case !e.months.match(int(mo)):
			c = time.Date(y, mo+1, 1, 0, 0, 0, 0, time.UTC)
		case !e.days.match(d) || (e.weekdays != 0 && e.weekdays&(1<<c.Weekday()) == 0):
			c = time.Date(y, mo, d+1, 0, 0, 0, 0, time.UTC)
		case !e.hours.match(c.Hour()):
			c = time.Date(y, mo, d, c.Hour()+1, 0, 0, 0, time.UTC)
		case !e.minutes.match(c.Minute()):
			c = time.Date(y, mo, d, c.Hour(), c.Minute()+1, 0, 0, time.UTC)
		case !e.seconds.match(c.Second()):
			c = c.Add(time.Second)
		default:
			return c, true
		}
	}
	return time.Time{}, false
}
