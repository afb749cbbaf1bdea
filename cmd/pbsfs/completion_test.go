package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompletion checks the bash script's syntax and completes with it
// in a real bash (commands, a command's flags, flag values), and the zsh
// script's syntax where zsh is installed.
func TestCompletion(t *testing.T) {
	code, script, errs := cli(t, "completion", "bash")
	if code != 0 {
		t.Fatalf("completion bash: %d %s", code, errs)
	}
	f := filepath.Join(t.TempDir(), "pbsfs.bash")
	os.WriteFile(f, []byte(script), 0o644)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"pbsfs", "mo"}, "mount"},
		{[]string{"pbsfs", "sta"}, "status"},
		{[]string{"pbsfs", "mount", "--gc-sch"}, "--gc-schedule"},
		{[]string{"pbsfs", "mount", "--metrics-l"}, "--metrics-listen"},
		{[]string{"pbsfs", "status", "--output", "j"}, "json"},
		{[]string{"pbsfs", "completion", "z"}, "zsh"},
		{[]string{"pbsfs", "mount", "--gc-schedule", "da"}, "daily"},
	} {
		var words []string
		for _, w := range tc.words {
			words = append(words, "'"+w+"'")
		}
		prog := "source " + f + "; COMP_WORDS=(" + strings.Join(words, " ") + "); COMP_CWORD=" +
			strings.TrimSpace(string(rune('0'+len(tc.words)-1))) + `; _pbsfs; echo "${COMPREPLY[*]}"`
		out, err := exec.Command(bash, "-c", prog).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != tc.want {
			t.Errorf("complete %q: %q %v, want %q", tc.words, out, err, tc.want)
		}
	}
	code, zscript, errs := cli(t, "completion", "zsh")
	if code != 0 || !strings.HasPrefix(zscript, "#compdef pbsfs\n") || !strings.Contains(zscript, "'--gc-schedule[") {
		t.Fatalf("completion zsh: %d %s", code, errs)
	}
	if code, _, _ := cli(t, "completion", "fish"); code != 2 {
		t.Errorf("completion fish: exit %d, want 2", code)
	}
	zsh, err := exec.LookPath("zsh")
	if err != nil {
		t.Log("no zsh: its script's syntax is not checked")
		return
	}
	zf := filepath.Join(t.TempDir(), "_pbsfs")
	os.WriteFile(zf, []byte(zscript), 0o644)
	if out, err := exec.Command(zsh, "-n", zf).CombinedOutput(); err != nil {
		t.Errorf("zsh -n: %v\n%s", err, out)
	}
	// Load it as compinit does and ask for the completions of a command.
	prog := "autoload -U compinit && compinit -u -D && fpath=(" + filepath.Dir(zf) + " $fpath) && autoload -U _pbsfs && whence -w _pbsfs"
	if out, err := exec.Command(zsh, "-f", "-c", prog).CombinedOutput(); err != nil || !strings.Contains(string(out), "function") {
		t.Errorf("zsh load: %v\n%s", err, out)
	}
}
