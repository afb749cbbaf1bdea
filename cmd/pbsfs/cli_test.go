package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// cliStore makes a store with two snapshots of vm/100 (a config blob and
// a disk image) and one of host/web (a pxar archive), and returns the
// store directory and the flags that reach it.
func cliStore(t *testing.T) (string, []string) {
	t.Helper()
	dir, flags := newStore(t)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "disk.img"), bytes.Repeat([]byte("img"), 10000), 0o644)
	tree := filepath.Join(src, "tree")
	os.MkdirAll(filepath.Join(tree, "etc"), 0o755)
	os.WriteFile(filepath.Join(tree, "etc/hostname"), []byte("web\n"), 0o644)
	for i, ts := range []string{"2026-11-20T10:00:00Z", "2026-11-21T10:00:00Z"} {
		conf := filepath.Join(src, "vm.conf")
		os.WriteFile(conf, []byte("memory: "+string(rune('1'+i))+"\n"), 0o644)
		args := append([]string{"backup", "--type", "vm", "--id", "100", "--time", ts}, flags...)
		args = append(args, "qemu-server.conf:"+conf, "drive-scsi0.img:"+filepath.Join(src, "disk.img"))
		if code, _, errs := cli(t, args...); code != 0 {
			t.Fatalf("backup: %s", errs)
		}
	}
	args := append([]string{"backup", "--type", "host", "--id", "web", "--time", "2026-11-20T10:00:00Z"}, flags...)
	if code, _, errs := cli(t, append(args, "root.pxar:"+tree)...); code != 0 {
		t.Fatalf("backup: %s", errs)
	}
	return dir, flags
}

// TestCLIMessages runs every kind of command-line mistake and help
// request and checks the exit code, which stream the text went to and
// that it says what is expected.
func TestCLIMessages(t *testing.T) {
	t.Setenv("PBSFS_STORE", "")
	_, flags := cliStore(t)
	exists := filepath.Join(t.TempDir(), "full")
	os.MkdirAll(exists, 0o755)
	os.WriteFile(filepath.Join(exists, "keep"), []byte("mine"), 0o644)
	for _, tc := range []struct {
		args      []string
		code      int
		stdout    []string // substrings of stdout
		stderr    []string // substrings of stderr; nil: stderr must be empty
		withStore bool
	}{
		// Flag errors: the error, then the command's usage, exit 2.
		{args: []string{"snapshots", "--ouput", "json"}, code: 2, stderr: []string{"unknown flag: --ouput (did you mean --output?)", "Usage: pbsfs snapshots", "--output text|json"}},
		{args: []string{"gc", "--output", "yaml"}, code: 2, stderr: []string{`invalid argument "yaml" for "--output" flag: want text or json`, "Usage: pbsfs gc"}},
		{args: []string{"prune", "--keep-last", "abc"}, code: 2, stderr: []string{`"--keep-last"`, "Usage: pbsfs prune"}},
		{args: []string{"backup", "--time"}, code: 2, stderr: []string{"flag needs an argument: --time", "Usage: pbsfs backup"}},
		{args: []string{"gc", "--cutoff", "1x"}, code: 2, stderr: []string{`invalid argument "1x" for "--gc-cutoff" flag: want a duration such as 30m, 2h or 24h5m`}},
		{args: []string{"mount", "--gc-cutoff", "30s", "a", "b"}, code: 2, stderr: []string{"--gc-cutoff 30s: must be at least 1m0s"}},
		{args: []string{"gc", "--cutoff", "1h", "--skip-atime-check"}, code: 2, stderr: []string{"must be at least 24h5m0s", "relatime"}},
		{args: []string{"snaphots"}, code: 2, stderr: []string{`unknown command "snaphots" (did you mean "snapshots"?)`, "Commands:"}},
		{args: []string{"--bogus"}, code: 2, stderr: []string{"unknown flag: --bogus", "Commands:"}},
		{args: nil, code: 2, stderr: []string{"Commands:"}},
		// Help and version on stdout, exit 0.
		{args: []string{"--help"}, code: 0, stdout: []string{"Commands:", "--store", "--version"}},
		{args: []string{"-h"}, code: 0, stdout: []string{"Commands:"}},
		{args: []string{"help"}, code: 0, stdout: []string{"Commands:"}},
		{args: []string{"help", "mount"}, code: 0, stdout: []string{"Usage: pbsfs mount [flags] STORE MOUNTPOINT", "--gc-cutoff", "Global flags", "--runtime-dir"}},
		{args: []string{"mount", "--help"}, code: 0, stdout: []string{"Usage: pbsfs mount [flags] STORE MOUNTPOINT"}},
		{args: []string{"gc", "-h"}, code: 0, stdout: []string{"Usage: pbsfs gc", "--gc-cutoff", "alias --cutoff"}},
		{args: []string{"help", "nope"}, code: 2, stderr: []string{`unknown command "nope"`}},
		{args: []string{"--version"}, code: 0, stdout: []string{"pbsfs ", "go1."}},
		{args: []string{"version"}, code: 0, stdout: []string{"pbsfs "}},
		// Snapshot arguments: GROUP and GROUP/latest are the latest
		// snapshot; mistakes show the format.
		{args: []string{"cat", "vm/100", "qemu-server.conf"}, code: 0, stdout: []string{"memory: 2\n"}, withStore: true},
		{args: []string{"cat", "vm/100/latest", "qemu-server.conf"}, code: 0, stdout: []string{"memory: 2\n"}, withStore: true},
		{args: []string{"cat", "vm/100/2026-11-20T10:00:00Z", "qemu-server.conf"}, code: 0, stdout: []string{"memory: 1\n"}, withStore: true},
		{args: []string{"cat", "vm", "qemu-server.conf"}, code: 2, stderr: []string{`snapshot "vm": want TYPE/ID/TIME (e.g. vm/100/2026-11-20T10:00:00Z), TYPE/ID/latest, or TYPE/ID`}, withStore: true},
		{args: []string{"cat", "vm/100/2026-11-20T10:00:00", "qemu-server.conf"}, code: 2, stderr: []string{`"2026-11-20T10:00:00" is not a snapshot time: want YYYY-MM-DDTHH:MM:SSZ`, "pbsfs snapshots vm/100"}, withStore: true},
		{args: []string{"cat", "vm/100/2026-11-22T10:00:00Z", "qemu-server.conf"}, code: 1, stderr: []string{"snapshot vm/100/2026-11-22T10:00:00Z not found; 'pbsfs snapshots vm/100' lists"}, withStore: true},
		{args: []string{"cat", "vm/101", "qemu-server.conf"}, code: 1, stderr: []string{"group vm/101 not found"}, withStore: true},
		{args: []string{"forget", "vm/100/latest"}, code: 2, stderr: []string{"forget removes one snapshot named by its time"}, withStore: true},
		{args: []string{"snapshots", "vm"}, code: 2, stderr: []string{`group "vm": want TYPE/ID, e.g. vm/100`}, withStore: true},
		{args: []string{"verify", "vm/100/latest", "--output", "json"}, code: 0, stdout: []string{`"ok": 1`, `"backup-time": 1795255200`}, withStore: true},
		{args: []string{"restore", "host/web", "root.pxar", exists}, code: 1, stderr: []string{"exists and is not empty", "--overwrite"}, withStore: true},
		// What gc says about a short cutoff and about pending chunks.
		{args: []string{"gc", "--cutoff", "1m", "--no-progress"}, code: 0, stdout: []string{"Pending removals: 0 B (in 0 chunks): unused, but touched after the cutoff; a later run removes them"},
			stderr: []string{"note: --gc-cutoff 1m0s: chunks touched in the last 5m0s are kept anyway", "counted as pending"}, withStore: true},
	} {
		args := tc.args
		if tc.withStore {
			args = append(append([]string{}, args...), flags...)
		}
		code, out, errs := cli(t, args...)
		if code != tc.code {
			t.Errorf("pbsfs %q: exit %d, want %d\nstdout: %s\nstderr: %s", tc.args, code, tc.code, out, errs)
			continue
		}
		for _, want := range tc.stdout {
			if !strings.Contains(out, want) {
				t.Errorf("pbsfs %q: stdout lacks %q:\n%s", tc.args, want, out)
			}
		}
		if tc.stderr == nil && errs != "" {
			t.Errorf("pbsfs %q: unexpected stderr %q", tc.args, errs)
		}
		for _, want := range tc.stderr {
			if !strings.Contains(errs, want) {
				t.Errorf("pbsfs %q: stderr lacks %q:\n%s", tc.args, want, errs)
			}
		}
		if tc.code != 0 && tc.stdout == nil && out != "" {
			t.Errorf("pbsfs %q: failure wrote to stdout: %q", tc.args, out)
		}
	}
	if b, err := os.ReadFile(filepath.Join(exists, "keep")); err != nil || string(b) != "mine" {
		t.Errorf("restore refused, yet the target's file changed: %q %v", b, err)
	}
}

// TestGlobalFlagsAnywhere gives --store and --runtime-dir before and
// after the command, and the PBS client's --output-format spelling.
func TestGlobalFlagsAnywhere(t *testing.T) {
	dir, flags := cliStore(t)
	rt := flags[3]
	for _, args := range [][]string{
		{"-s", dir, "--runtime-dir", rt, "snapshots", "--output", "json"},
		{"--store", dir, "snapshots", "--runtime-dir", rt, "--output-format", "json"},
		{"snapshots", "--output-format=json", "-s", dir, "--runtime-dir=" + rt},
	} {
		code, out, errs := cli(t, args...)
		var items []map[string]any
		if code != 0 || json.Unmarshal([]byte(out), &items) != nil || len(items) != 3 {
			t.Errorf("pbsfs %q: exit %d, %d items\n%s%s", args, code, len(items), out, errs)
		}
	}
}

// TestOutputJSON checks that every reporting command prints one valid
// JSON document with --output json.
func TestOutputJSON(t *testing.T) {
	_, flags := cliStore(t)
	for _, tc := range []struct {
		args []string
		key  string
	}{
		{[]string{"snapshots"}, ""},
		{[]string{"prune", "--keep-last", "1", "--dry-run"}, ""},
		{[]string{"verify"}, "snapshots"},
		{[]string{"gc", "--dry-run"}, "removed-chunks"},
	} {
		code, out, errs := cli(t, append(append(tc.args, "--output", "json"), flags...)...)
		var v any
		if code != 0 || json.Unmarshal([]byte(out), &v) != nil {
			t.Errorf("pbsfs %q --output json: exit %d\n%s%s", tc.args, code, out, errs)
			continue
		}
		if tc.key != "" {
			if m, ok := v.(map[string]any); !ok || m[tc.key] == nil {
				t.Errorf("pbsfs %q --output json: no %q in %s", tc.args, tc.key, out)
			}
		}
	}
}

// TestStoreFromEnvironment: $PBSFS_STORE is a default that a positional
// STORE overrides; only an explicit --store conflicts with it.
func TestStoreFromEnvironment(t *testing.T) {
	envStore, _ := newStore(t)
	t.Setenv("PBSFS_STORE", envStore)
	t.Setenv("PBSFS_RUNTIME_DIR", t.TempDir())
	// (init OTHER itself is not run here: it makes 65536 directories.)
	other := filepath.Join(t.TempDir(), "other")
	missing := filepath.Join(t.TempDir(), "missing")
	if code, _, errs := cli(t, "mount", other, missing); code != 1 || strings.Contains(errs, "given twice") || strings.Contains(errs, "PBSFS_STORE") || !strings.Contains(errs, missing) {
		t.Errorf("mount OTHER MNT with PBSFS_STORE set: exit %d %s", code, errs)
	}
	if code, _, errs := cli(t, "--store", envStore, "init", other); code != 2 || !strings.Contains(errs, "datastore given twice") {
		t.Errorf("--store A init B: exit %d %s", code, errs)
	}
	if code, out, errs := cli(t, "snapshots"); code != 0 || !strings.Contains(out, "SNAPSHOT") {
		t.Errorf("snapshots from PBSFS_STORE: exit %d %s%s", code, out, errs)
	}
}

// TestCatBinaryToTerminal: cat refuses to write a pxar archive or an
// image to a terminal, and says what to do instead; a config is fine.
func TestCatBinaryToTerminal(t *testing.T) {
	_, flags := cliStore(t)
	tty := openPty(t)
	for _, tc := range []struct {
		snap, name string
		code       int
		want       string
	}{
		{"host/web", "root.pxar", 1, "root.pxar of host/web/2026-11-20T10:00:00Z is a pxar archive: not writing its raw bytes to a terminal; redirect them (pbsfs cat host/web root.pxar > FILE), extract it (pbsfs restore host/web root.pxar DIR)"},
		{"vm/100", "drive-scsi0.img", 1, "is a disk image"},
		{"vm/100", "qemu-server.conf", 0, ""},
	} {
		var errb bytes.Buffer
		code := run(context.Background(), append([]string{"cat", tc.snap, tc.name}, flags...), tty, &errb)
		if code != tc.code || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("cat %s %s to a terminal: exit %d, %s", tc.snap, tc.name, code, errb.String())
		}
	}
	// Redirected, the same archive is written.
	code, out, errs := cli(t, append([]string{"cat", "host/web", "root.pxar"}, flags...)...)
	if code != 0 || len(out) == 0 {
		t.Errorf("cat root.pxar to a pipe: exit %d, %d bytes, %s", code, len(out), errs)
	}
}

// openPty opens a pseudo-terminal and returns its terminal side.
func openPty(t *testing.T) *os.File {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { ptm.Close() })
	if err := unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptm.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pts.Close() })
	// Drain what cat may write so it never blocks on a full terminal.
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := ptm.Read(buf); err != nil {
				return
			}
		}
	}()
	return pts
}
