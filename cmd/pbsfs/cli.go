package main

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// flagError rewrites a pflag error for people: it names the closest flag
// to an unknown one and replaces Go's number-parsing errors with what is
// wanted.
func flagError(err error, fs *pflag.FlagSet) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "unknown flag: --"); ok {
		var names []string
		fs.VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
		for from := range flagAliases {
			names = append(names, from)
		}
		if s := closest(name, names); s != "" {
			return fmt.Errorf("%s (did you mean --%s?)", msg, s)
		}
		return err
	}
	if i := strings.Index(msg, ": strconv.Parse"); i >= 0 {
		return errors.New(msg[:i] + ": want a whole number")
	}
	return err
}

// closest returns the name in names nearest to s (at most two edits or a
// prefix of it), or "".
func closest(s string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		d := editDistance(s, n)
		if strings.HasPrefix(n, s) && len(s) >= 3 {
			d = min(d, 1)
		}
		if d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// printVersion prints the module version and the VCS revision the binary
// was built from, as the Go build info records them.
func printVersion(w io.Writer) {
	version, rev, when, modified := "(unknown)", "", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	fmt.Fprintf(w, "pbsfs %s", version)
	if rev != "" {
		fmt.Fprintf(w, " revision %s", rev)
		if when != "" {
			fmt.Fprintf(w, " (%s)", when)
		}
		if modified {
			fmt.Fprint(w, " with local changes")
		}
	}
	fmt.Fprintf(w, " %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// outputFormat is the value of --output (alias --output-format, the PBS
// client's name): text for people, json for programs.
type outputFormat string

const (
	outputText outputFormat = "text"
	outputJSON outputFormat = "json"
)

func (o *outputFormat) String() string { return string(*o) }
func (o *outputFormat) Type() string   { return "text|json" }
func (o *outputFormat) Set(s string) error {
	switch s {
	case "text":
		*o = outputText
	case "json", "json-pretty": // the PBS client's two JSON spellings
		*o = outputJSON
	default:
		return errors.New("want text or json")
	}
	return nil
}

// outputFlag registers --output on fs.
func outputFlag(fs *pflag.FlagSet, o *outputFormat) {
	*o = outputText
	fs.Var(o, "output", "output format: text or json (alias --output-format)")
}

// durationValue is a time.Duration flag whose error shows the format.
type durationValue time.Duration

func (d *durationValue) String() string { return time.Duration(*d).String() }
func (d *durationValue) Type() string   { return "duration" }
func (d *durationValue) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration such as 30m, 2h or 24h5m")
	}
	*d = durationValue(v)
	return nil
}

// durationFlag registers a duration flag on fs.
func durationFlag(fs *pflag.FlagSet, p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	fs.Var((*durationValue)(p), name, usage)
}
