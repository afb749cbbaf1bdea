// Package exclude matches paths against exclusion patterns the way the
// PBS client does for --exclude and .pxarexclude files (the pathpatterns
// crate it uses: git's wildmatch syntax).
//
// Syntax of one pattern:
//   - `*` matches any bytes but `/`, `?` one byte but `/`, `[...]` one byte
//     of a class (`[a-z]`, `[^0-9]`, `[[:digit:]]`, ...; never `/`), `\x`
//     the byte x literally.
//   - `**` delimited by slashes (`**/x`, `a/**/b`, `a/**`) matches across
//     directories, including none; elsewhere it is a `*`.
//   - A leading `!` makes the pattern re-include what earlier patterns
//     excluded; trailing slashes make it match directories only.
//   - A pattern matches a path if it matches the whole path or a complete
//     suffix of it (`*.tmp` and `tmp/x` match at any depth); a pattern
//     starting with `/` can only match from the root.
//
// In a list the last matching pattern decides. An excluded directory is
// not entered, so a file below it cannot be re-included alone.
package exclude

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// maxPattern bounds a pattern's length (a path is at most 4096 bytes).
const maxPattern = 8192

// Pattern is one parsed pattern.
type Pattern struct {
	raw      string // as given, without '!' and trailing slashes
	toks     []token
	include  bool // re-include (leading '!')
	dirOnly  bool // trailing '/': directories only
	anchored bool // matches the whole path only
}

type tokKind uint8

const (
	tLit tokKind = iota
	tQuestion
	tStar
	tStarStar      // any bytes, slashes too
	tStarStarSlash // "" or any bytes ending in '/' (zero or more directories)
	tClass
)

type token struct {
	kind  tokKind
	lit   byte
	class *class
}

type class struct {
	neg    bool
	set    [256]bool
	hasAny bool
}

// Parse parses one pattern (see the package doc). Empty patterns, NUL
// bytes, a trailing backslash and unclosed or malformed classes are
// errors.
func Parse(pattern string) (*Pattern, error) {
	p := &Pattern{}
	if strings.HasPrefix(pattern, "!") {
		p.include = true
		pattern = pattern[1:]
	}
	if pattern == "" {
		return nil, errors.New("empty pattern")
	}
	if len(pattern) > maxPattern {
		return nil, fmt.Errorf("pattern of %d bytes: too long", len(pattern))
	}
	if t := strings.TrimRight(pattern, "/"); t != pattern {
		p.dirOnly = true
		if t == "" {
			t = "/"
		}
		pattern = t
	}
	if strings.IndexByte(pattern, 0) >= 0 {
		return nil, fmt.Errorf("pattern %q: NUL byte", pattern)
	}
	p.raw = pattern
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; c {
		case '\\':
			i++
			if i == len(pattern) {
				return nil, fmt.Errorf("pattern %q: trailing backslash", pattern)
			}
			p.toks = append(p.toks, token{kind: tLit, lit: pattern[i]})
		case '?':
			p.toks = append(p.toks, token{kind: tQuestion})
		case '*':
			beg := i
			for i+1 < len(pattern) && pattern[i+1] == '*' {
				i++
			}
			if i == beg || !(beg == 0 || pattern[beg-1] == '/') {
				p.toks = append(p.toks, token{kind: tStar})
				continue
			}
			switch {
			case i+1 == len(pattern):
				p.toks = append(p.toks, token{kind: tStarStar})
			case pattern[i+1] == '/':
				i++
				p.toks = append(p.toks, token{kind: tStarStarSlash})
			default:
				p.toks = append(p.toks, token{kind: tStar})
			}
		case '[':
			cl, next, err := parseClass(pattern, i)
			if err != nil {
				return nil, err
			}
			p.toks = append(p.toks, token{kind: tClass, class: cl})
			i = next
		default:
			p.toks = append(p.toks, token{kind: tLit, lit: c})
		}
	}
	return p, nil
}

var namedClasses = map[string]func(byte) bool{
	"alnum":  func(b byte) bool { return isAlpha(b) || isDigit(b) },
	"alpha":  isAlpha,
	"blank":  func(b byte) bool { return b == ' ' || b == '\t' },
	"cntrl":  func(b byte) bool { return b < 0x20 || b == 0x7f },
	"digit":  isDigit,
	"graph":  func(b byte) bool { return b > 0x20 && b < 0x7f },
	"lower":  func(b byte) bool { return b >= 'a' && b <= 'z' },
	"print":  func(b byte) bool { return b >= 0x20 && b <= 0x7f },
	"punct":  func(b byte) bool { return b > 0x20 && b < 0x7f && !isAlpha(b) && !isDigit(b) },
	"space":  func(b byte) bool { return b == ' ' || (b >= '\t' && b <= '\r') },
	"upper":  func(b byte) bool { return b >= 'A' && b <= 'Z' },
	"xdigit": func(b byte) bool { return isDigit(b) || (b|0x20 >= 'a' && b|0x20 <= 'f') },
}

func isAlpha(b byte) bool { return b|0x20 >= 'a' && b|0x20 <= 'z' }
func isDigit(b byte) bool { return b >= '0' && b <= '9' }

// parseClass parses the class starting at pattern[i] == '[' and returns
// the index of its closing ']'.
func parseClass(pattern string, begin int) (*class, int, error) {
	cl := &class{}
	i := begin + 1
	if i < len(pattern) && pattern[i] == '^' {
		cl.neg = true
		i++
	}
	prev := -1
	for ; i < len(pattern); i++ {
		c := pattern[i]
		cur := -1
		switch {
		case c == '[' && i+1 < len(pattern) && pattern[i+1] == ':':
			end := strings.Index(pattern[i+2:], ":]")
			if end < 0 {
				return nil, 0, fmt.Errorf("pattern %q: malformed class at %d", pattern, begin)
			}
			f, ok := namedClasses[pattern[i+2:i+2+end]]
			if !ok {
				return nil, 0, fmt.Errorf("pattern %q: unknown class %q", pattern, pattern[i+2:i+2+end])
			}
			for b := range 256 {
				if f(byte(b)) {
					cl.set[b] = true
				}
			}
			i += 2 + end + 1
		case c == ']':
			cl.hasAny = true
			return cl, i, nil
		case c == '\\':
			i++
			if i == len(pattern) {
				return nil, 0, fmt.Errorf("pattern %q: trailing backslash", pattern)
			}
			cl.set[pattern[i]] = true
			cur = int(pattern[i])
		case c == '-' && prev >= 0:
			i++
			if i == len(pattern) {
				return nil, 0, fmt.Errorf("pattern %q: unclosed class at %d", pattern, begin)
			}
			end := pattern[i]
			if end == '\\' {
				i++
				if i == len(pattern) {
					return nil, 0, fmt.Errorf("pattern %q: unclosed class at %d", pattern, begin)
				}
				end = pattern[i]
			}
			lo, hi := byte(prev), end
			if lo > hi {
				lo, hi = hi, lo
			}
			for b := int(lo); b <= int(hi); b++ {
				cl.set[b] = true
			}
		default:
			cl.set[c] = true
			cur = int(c)
		}
		prev = cur
	}
	return nil, 0, fmt.Errorf("pattern %q: unclosed class at %d", pattern, begin)
}

func (c *class) match(b byte) bool { return c.set[b] != c.neg }

// Include reports whether p re-includes (a '!' pattern).
func (p *Pattern) Include() bool { return p.include }

// String returns the pattern as it is written in .pxarexclude-cli and the
// prelude: '!' for re-includes, a trailing '/' for directories only.
func (p *Pattern) String() string {
	s := p.raw
	if p.include {
		s = "!" + s
	}
	if p.dirOnly && !strings.HasSuffix(s, "/") {
		s += "/"
	}
	return s
}

// Match reports whether p matches the entry at path (relative to the
// archive root, "/"-separated, without a leading slash), a directory if
// isDir.
func (p *Pattern) Match(path string, isDir bool) bool {
	if p.dirOnly && !isDir {
		return false
	}
	text := "/" + path
	if p.anchored {
		return p.matchExact(text)
	}
	for i := len(text) - 1; i >= 0; i-- {
		if text[i] == '/' && p.matchExact(text[i+1:]) {
			return true
		}
	}
	return p.matchExact(text)
}

// matchExact matches the whole text: a set of reachable text positions
// advanced token by token (linear in the text per token, never
// exponential).
func (p *Pattern) matchExact(text string) bool {
	n := len(text)
	cur := make([]bool, n+1)
	next := make([]bool, n+1)
	cur[0] = true
	for _, t := range p.toks {
		clear(next)
		any := false
		switch t.kind {
		case tLit, tQuestion, tClass:
			for i := 0; i < n; i++ {
				if !cur[i] {
					continue
				}
				b := text[i]
				ok := false
				switch t.kind {
				case tLit:
					ok = b == t.lit
				case tQuestion:
					ok = b != '/'
				case tClass:
					ok = b != '/' && t.class.match(b)
				}
				if ok {
					next[i+1], any = true, true
				}
			}
		case tStar:
			on := false
			for i := 0; i <= n; i++ {
				if cur[i] {
					on = true
				}
				if on {
					next[i], any = true, true
				}
				if i < n && text[i] == '/' {
					on = false
				}
			}
		case tStarStar:
			on := false
			for i := 0; i <= n; i++ {
				on = on || cur[i]
				if on {
					next[i], any = true, true
				}
			}
		case tStarStarSlash:
			on := false
			for i := 0; i <= n; i++ {
				if cur[i] {
					next[i], any = true, true
				}
				if on && i > 0 && text[i-1] == '/' {
					next[i], any = true, true
				}
				on = on || cur[i]
			}
		}
		if !any {
			return false
		}
		cur, next = next, cur
	}
	return cur[n]
}

// List is an ordered list of patterns; the last one matching decides.
type List []*Pattern

// Excluded reports whether the entry at path (see Pattern.Match) is
// excluded: the last pattern matching it excludes.
func (l List) Excluded(path string, isDir bool) bool {
	for i := len(l) - 1; i >= 0; i-- {
		if l[i].Match(path, isDir) {
			return !l[i].include
		}
	}
	return false
}

// ParseFile parses the contents of a .pxarexclude file found in directory
// dir (relative to the archive root, "" for the root), as the PBS client
// reads it: one pattern per line, ASCII whitespace around it dropped,
// empty lines and lines starting with '#' ignored; a pattern starting
// with '/' (or "!/") is anchored at dir. Lines that do not parse are
// returned as errors and left out.
func ParseFile(data []byte, dir string) (List, []error) {
	var l List
	var errs []error
	for n, line := range bytes.Split(data, []byte{'\n'}) {
		s := strings.TrimFunc(string(line), func(r rune) bool { return r < 0x80 && (r == ' ' || (r >= '\t' && r <= '\r')) })
		if s == "" || s[0] == '#' {
			continue
		}
		anchored := false
		switch {
		case strings.HasPrefix(s, "/"):
			s, anchored = "/"+join(dir, s[1:]), true
		case strings.HasPrefix(s, "!/"):
			s, anchored = "!/"+join(dir, s[2:]), true
		}
		p, err := Parse(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", n+1, err))
			continue
		}
		p.anchored = anchored
		l = append(l, p)
	}
	return l, errs
}

func join(dir, rest string) string {
	if dir == "" {
		return rest
	}
	return dir + "/" + rest
}

// CLIFile returns the patterns of l one per line, as the PBS client
// writes them into .pxarexclude-cli and the split-archive prelude.
func (l List) CLIFile() []byte {
	var b []byte
	for _, p := range l {
		b = append(append(b, p.String()...), '\n')
	}
	return b
}
