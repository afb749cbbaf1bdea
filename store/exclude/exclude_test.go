package exclude

import (
	"strings"
	"testing"
)

func TestPatternMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		path    string
		dir     bool
		want    bool
	}{
		{"*.tmp", "a.tmp", false, true},
		{"*.tmp", "x/y/a.tmp", false, true},
		{"*.tmp", "a.tmpx", false, false},
		{"*.tmp", "x.tmp", true, true},
		{"tmp/", "tmp", true, true},
		{"tmp/", "a/tmp", true, true},
		{"tmp/", "tmp", false, false},
		{"tmp//", "tmp", true, true},
		{"/tmp", "tmp", false, true},
		{"/tmp", "a/tmp", false, false},
		{"a/b", "a/b", false, true},
		{"a/b", "x/a/b", false, true},
		{"a/b", "a/c/b", false, false},
		{"a/b", "xa/b", false, false},
		{"a/**/b", "a/b", false, true},
		{"a/**/b", "a/x/b", false, true},
		{"a/**/b", "a/x/y/b", false, true},
		{"a/**/b", "q/a/x/b", false, true},
		{"a/**/b", "a/xb", false, false},
		{"**/b", "b", false, true},
		{"**/b", "x/y/b", false, true},
		{"a/**", "a/x", false, true},
		{"a/**", "a/x/y", false, true},
		{"a/**", "a", true, false},
		{"a**b", "a/b", false, false},
		{"a**b", "axxb", false, true},
		{"a*b", "a/b", false, false},
		{"a*b", "ab", false, true},
		{"a*b*c", "aXbYbZc", false, true},
		{"[a-c]x", "bx", false, true},
		{"[a-c]x", "dx", false, false},
		{"[c-a]x", "bx", false, true},
		{"[^a]x", "bx", false, true},
		{"[^a]x", "ax", false, false},
		{"[[:digit:]]*", "5abc", false, true},
		{"[[:digit:]]*", "abc", false, false},
		{"[-a]", "-", false, true},
		{"x[/]y", "x/y", false, false},
		{`\*`, "*", false, true},
		{`\*`, "a", false, false},
		{"?", "a", false, true},
		{"a?b", "a/b", false, false},
		{"é", "é", false, true},
		{"/", "", true, true},
	} {
		p, err := Parse(tc.pattern)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.pattern, err)
			continue
		}
		if got := p.Match(tc.path, tc.dir); got != tc.want {
			t.Errorf("%q matches %q (dir %v) = %v, want %v", tc.pattern, tc.path, tc.dir, got, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, s := range []string{"", "!", `a\`, "[abc", "[[:bogus:]]", "[[:digit:", "a\x00b", "[a-", "[ab-]", strings.Repeat("a", maxPattern+1)} {
		if p, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", s, p)
		}
	}
}

func TestListLastMatchWins(t *testing.T) {
	var l List
	for _, s := range []string{"*.log", "!keep.log", "cache/", "!cache/"} {
		p, err := Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		l = append(l, p)
	}
	for path, want := range map[string]bool{"a.log": true, "keep.log": false, "x/keep.log": false, "x/a.log": true, "cache": false, "b": false} {
		if got := l.Excluded(path, path == "cache"); got != want {
			t.Errorf("Excluded(%q) = %v, want %v", path, got, want)
		}
	}
	if got, want := string(l.CLIFile()), "*.log\n!keep.log\ncache/\n!cache/\n"; got != want {
		t.Errorf("CLIFile = %q, want %q", got, want)
	}
}

func TestParseFile(t *testing.T) {
	data := []byte("# comment\n\n  *.o  \n/build\n!/build/keep\n\t!*.keep\r\n[bad\n")
	l, errs := ParseFile(data, "src/sub")
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "line 7") {
		t.Errorf("errors %v, want one on line 7", errs)
	}
	if len(l) != 4 {
		t.Fatalf("%d patterns, want 4", len(l))
	}
	for _, tc := range []struct {
		path string
		dir  bool
		want bool
	}{
		{"src/sub/a.o", false, true},
		{"src/sub/deep/a.o", false, true},
		{"src/sub/x.keep", false, false},
		{"src/sub/build", true, true},
		{"build", true, false},
		{"src/sub/x/build", true, false},
		{"src/sub/build/keep", false, false},
		{"src/sub/build/other", false, false},
	} {
		if got := l.Excluded(tc.path, tc.dir); got != tc.want {
			t.Errorf("Excluded(%q) = %v, want %v", tc.path, got, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"*.tmp", "a/**/b", "[[:digit:]-z]", `\`, "!/x/", "[^]", "**/", "a**b", "[", "[a-"} {
		f.Add(s, "a/b/c.tmp")
	}
	f.Fuzz(func(t *testing.T, pattern, path string) {
		p, err := Parse(pattern)
		if err != nil {
			return
		}
		p.Match(path, true)
		p.Match(path, false)
		if _, err := Parse(p.String()); err != nil && !strings.HasPrefix(p.raw, "!") {
			t.Errorf("String %q of %q does not parse: %v", p.String(), pattern, err)
		}
		l, _ := ParseFile([]byte(pattern+"\n"+path), "d")
		l.Excluded(path, false)
	})
}
