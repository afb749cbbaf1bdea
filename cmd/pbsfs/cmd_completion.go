package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/pflag"
)

// completionCmd prints a shell completion script for pbsfs, made from the
// command table and each command's flags.
type completionCmd struct{}

func (c *completionCmd) flags(*pflag.FlagSet) {}

func (c *completionCmd) run(_ context.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usagef("want bash or zsh")
	}
	cmds := completionTable()
	switch args[0] {
	case "bash":
		writeBashCompletion(e.stdout, cmds)
	case "zsh":
		writeZshCompletion(e.stdout, cmds)
	default:
		return usagef("shell %q: want bash or zsh", args[0])
	}
	return nil
}

// completedCommand is a command with the flags completion offers.
type completedCommand struct {
	name, summary string
	flags         []*pflag.Flag
}

func completionTable() []completedCommand {
	var out []completedCommand
	for _, info := range commands() {
		inv := newInvocation(newEnv(io.Discard, io.Discard), &info)
		cc := completedCommand{name: info.name, summary: info.summary}
		inv.fs.VisitAll(func(f *pflag.Flag) {
			if !f.Hidden {
				cc.flags = append(cc.flags, f)
			}
		})
		sort.Slice(cc.flags, func(i, j int) bool { return cc.flags[i].Name < cc.flags[j].Name })
		out = append(out, cc)
	}
	return out
}

func flagWords(fl []*pflag.Flag) string {
	var w []string
	for _, f := range fl {
		w = append(w, "--"+f.Name)
		if f.Shorthand != "" {
			w = append(w, "-"+f.Shorthand)
		}
	}
	return strings.Join(w, " ")
}

func writeBashCompletion(w io.Writer, cmds []completedCommand) {
	var names []string
	for _, c := range cmds {
		names = append(names, c.name)
	}
	fmt.Fprintf(w, `# bash completion for pbsfs; load with: source <(pbsfs completion bash)
_pbsfs() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local cmds="%s help version"
    local cmd="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case " $cmds " in *" ${COMP_WORDS[i]} "*) cmd=${COMP_WORDS[i]}; break ;; esac
    done
    case $prev in
        --output|--output-format) COMPREPLY=($(compgen -W "text json" -- "$cur")); return ;;
        --log-format) COMPREPLY=($(compgen -W "text json" -- "$cur")); return ;;
        --gc-schedule) COMPREPLY=($(compgen -W "minutely hourly daily weekly monthly yearly quarterly semiannually" -- "$cur")); return ;;
    esac
    local flags=""
    case $cmd in
        "") COMPREPLY=($(compgen -W "$cmds --store --store-name --runtime-dir --help --version" -- "$cur")); return ;;
        completion) COMPREPLY=($(compgen -W "bash zsh" -- "$cur")); return ;;
`, strings.Join(names, " "))
	for _, c := range cmds {
		fmt.Fprintf(w, "        %s) flags=%q ;;\n", c.name, flagWords(c.flags)+" --help")
	}
	fmt.Fprintf(w, `    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
complete -o filenames -o bashdefault -F _pbsfs pbsfs
`)
}

// zshQuote escapes text for a zsh _arguments or _describe spec.
func zshQuote(s string) string {
	r := strings.NewReplacer("'", `'\''`, "[", `\[`, "]", `\]`, ":", `\:`)
	return r.Replace(s)
}

func writeZshCompletion(w io.Writer, cmds []completedCommand) {
	fmt.Fprintf(w, "#compdef pbsfs\n# zsh completion for pbsfs; put it on $fpath as _pbsfs, or: source <(pbsfs completion zsh)\n\n_pbsfs() {\n    local -a cmds\n    cmds=(\n")
	for _, c := range cmds {
		fmt.Fprintf(w, "        '%s:%s'\n", c.name, zshQuote(c.summary))
	}
	fmt.Fprintf(w, "    )\n    if (( CURRENT == 2 )); then\n        _describe 'command' cmds\n        return\n    fi\n    case ${words[2]} in\n")
	fmt.Fprintf(w, "        completion) _values 'shell' bash zsh ;;\n")
	for _, c := range cmds {
		fmt.Fprintf(w, "        %s) _arguments -s \\\n", c.name)
		for _, f := range c.flags {
			usage := zshQuote(strings.SplitN(f.Usage, "\n", 2)[0])
			val := ""
			if f.Value.Type() != "bool" {
				val = ":" + zshQuote(f.Name) + ":"
				switch f.Name {
				case "output", "log-format":
					val += "(text json)"
				case "store", "runtime-dir", "keyfile":
					val += "_files"
				}
			}
			if f.Shorthand != "" {
				fmt.Fprintf(w, "            '(-%s --%s)'{-%s,--%s}'[%s]%s' \\\n", f.Shorthand, f.Name, f.Shorthand, f.Name, usage, val)
			} else {
				fmt.Fprintf(w, "            '--%s[%s]%s' \\\n", f.Name, usage, val)
			}
		}
		fmt.Fprintf(w, "            '*:file:_files' ;;\n")
	}
	fmt.Fprintf(w, "    esac\n}\n\nif [[ $zsh_eval_context[-1] == loadautofunc ]]; then\n    _pbsfs \"$@\"\nelse\n    compdef _pbsfs pbsfs\nfi\n")
}
