package crypto

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// PasswordEnv is the base name of the environment variables the PBS
// client reads a key file's password from (§2.6).
const PasswordEnv = "PBS_ENCRYPTION_PASSWORD"

// EnvSecret reads a secret the way the PBS client does, from the first of
// these that is set: $BASE itself, a file descriptor number in $BASE_FD,
// a file named by $BASE_FILE, or the standard output of the command line
// in $BASE_CMD (split into words like a shell, not run by one). Only the
// first line counts, without its line ending. ok is false when none is
// set. lookup is os.LookupEnv when nil.
func EnvSecret(ctx context.Context, base string, lookup func(string) (string, bool)) (secret []byte, ok bool, err error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	if v, ok := lookup(base); ok {
		return firstLine([]byte(v)), true, nil
	}
	if v, ok := lookup(base + "_FD"); ok {
		fd, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || fd < 0 {
			return nil, true, fmt.Errorf("unable to parse file descriptor in %s_FD: %q", base, v)
		}
		f := os.NewFile(uintptr(fd), base+"_FD")
		if f == nil {
			return nil, true, fmt.Errorf("%s_FD: bad file descriptor %d", base, fd)
		}
		defer f.Close()
		line, err := readFirstLine(f)
		if err != nil {
			return nil, true, fmt.Errorf("reading %s_FD: %w", base, err)
		}
		return line, true, nil
	}
	if v, ok := lookup(base + "_FILE"); ok {
		f, err := os.Open(v)
		if err != nil {
			return nil, true, fmt.Errorf("unable to open file in %s_FILE: %w", base, err)
		}
		defer f.Close()
		line, err := readFirstLine(f)
		if err != nil {
			return nil, true, fmt.Errorf("reading %s_FILE: %w", base, err)
		}
		return line, true, nil
	}
	if v, ok := lookup(base + "_CMD"); ok {
		args, err := ShellWords(v)
		if err != nil || len(args) == 0 {
			return nil, true, fmt.Errorf("%s_CMD %q: not a command line", base, v)
		}
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, true, fmt.Errorf("%s_CMD %q failed: %v %s", base, v, err, strings.TrimSpace(stderr.String()))
		}
		return firstLine(out), true, nil
	}
	return nil, false, nil
}

// firstLine returns b up to its first line ending (\n or \r\n).
func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	return bytes.TrimSuffix(b, []byte("\r"))
}

// readFirstLine reads up to the first line ending (at most 64 KiB).
func readFirstLine(r io.Reader) ([]byte, error) {
	br := bufio.NewReader(io.LimitReader(r, 64<<10))
	line, err := br.ReadBytes('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return firstLine(line), nil
}

// ShellWords splits a command line into words as a POSIX shell would,
// honouring single quotes, double quotes and backslashes, without any
// expansion.
func ShellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\\':
			if i+1 >= len(s) {
				return nil, errors.New("trailing backslash")
			}
			i++
			cur.WriteByte(s[i])
			inWord = true
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated single quote")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`\n", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated double quote")
			}
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
