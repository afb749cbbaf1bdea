// Command pbsfs works on Proxmox Backup Server datastores: it makes
// backups into them, lists and reads snapshots, mounts them over FUSE and
// collects their garbage.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/pbsfs/pbsfs/store"
	"github.com/spf13/pflag"
)

// command is one subcommand: its flags are fields of the struct.
type command interface {
	// flags registers the command's own flags.
	flags(fs *pflag.FlagSet)
	// run executes the command with its positional arguments.
	run(ctx context.Context, env *env, args []string) error
}

// commandInfo describes a subcommand for the command table and --help.
type commandInfo struct {
	name, args, summary string
	new                 func() command
}

// commands returns the command table.
func commands() []commandInfo {
	return []commandInfo{
		{"init", "STORE", "create an empty datastore", func() command { return &initCmd{} }},
		{"backup", "ARCHIVE...", "back up files, images and trees into a new snapshot", func() command { return &backupCmd{} }},
		{"snapshots", "[GROUP]", "list snapshots", func() command { return &snapshotsCmd{} }},
		{"cat", "SNAPSHOT ARCHIVE", "write an archive's decoded bytes to stdout", func() command { return &catCmd{} }},
		{"restore", "SNAPSHOT ARCHIVE TARGET", "restore an archive, or a path of a pxar archive", func() command { return &restoreCmd{} }},
		{"verify", "[GROUP|SNAPSHOT]", "check snapshots and their chunks, as PBS verify does", func() command { return &verifyCmd{} }},
		{"prune", "[GROUP]", "remove the snapshots a retention policy does not keep", func() command { return &pruneCmd{} }},
		{"forget", "SNAPSHOT", "remove one snapshot", func() command { return &forgetCmd{} }},
		{"protect", "SNAPSHOT", "protect a snapshot from prune and forget", func() command { return &protectCmd{protect: true} }},
		{"unprotect", "SNAPSHOT", "remove a snapshot's protection", func() command { return &protectCmd{} }},
		{"notes", "SNAPSHOT", "print a snapshot's notes, or set them with --set", func() command { return &notesCmd{} }},
		{"gc", "", "collect garbage: remove chunks no snapshot uses", func() command { return &gcCmd{} }},
		{"mount", "STORE MOUNTPOINT", "serve the datastore over FUSE; rm -r of a snapshot forgets it", func() command { return &mountCmd{} }},
		{"demo", "[DIR]", "build a demo datastore with a few backups", func() command { return &demoCmd{} }},
	}
}

// env is what every command shares: output streams and the store flags.
type env struct {
	stdout, stderr io.Writer
	storePath      string
	storeName      string
	runtimeDir     string
	log            *slog.Logger
}

// usageError marks errors in the command line; they exit with status 2.
type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// openStore opens the datastore named by --store.
func (e *env) openStore() (*store.Store, error) {
	if e.storePath == "" {
		return nil, usagef("no datastore: give --store or set PBSFS_STORE")
	}
	return store.Open(e.storePath, e.storeOptions())
}

func (e *env) storeOptions() store.Options {
	return store.Options{Name: e.storeName, RuntimeDir: e.runtimeDir, Logger: e.log}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args and returns the exit status:
// 0 on success, 1 on failure, 2 on a usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stdout, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	var info *commandInfo
	for i := range cmds {
		if cmds[i].name == args[0] {
			info = &cmds[i]
		}
	}
	if info == nil {
		fmt.Fprintf(stderr, "pbsfs: unknown command %q\n", args[0])
		printUsage(stderr, cmds)
		return 2
	}
	e := &env{stdout: stdout, stderr: stderr,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	cmd := info.new()
	fs := pflag.NewFlagSet("pbsfs "+info.name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: pbsfs %s [flags] %s\n\n%s.\n\nFlags:\n%s", info.name, info.args, capitalize(info.summary), fs.FlagUsages())
	}
	fs.SortFlags = false
	if info.name != "init" {
		fs.StringVarP(&e.storePath, "store", "s", os.Getenv("PBSFS_STORE"), "datastore directory (env PBSFS_STORE)")
	}
	fs.StringVar(&e.storeName, "store-name", os.Getenv("PBSFS_STORE_NAME"), "PBS datastore name for lock files (default: the directory's base name)")
	fs.StringVar(&e.runtimeDir, "runtime-dir", envOr("PBSFS_RUNTIME_DIR", store.DefaultRuntimeDir), "PBS runtime directory holding lock files")
	cmd.flags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	err := cmd.run(ctx, e, fs.Args())
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "pbsfs %s: %v\n", info.name, err)
		fs.Usage()
		return 2
	default:
		fmt.Fprintf(stderr, "pbsfs %s: %v\n", info.name, err)
		return 1
	}
}

func printUsage(w io.Writer, cmds []commandInfo) {
	fmt.Fprintf(w, "pbsfs: browse, back up into and collect Proxmox Backup Server datastores.\n\nUsage: pbsfs COMMAND [flags] [args]\n\nCommands:\n")
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'pbsfs COMMAND --help' for a command's flags. The datastore flag --store/-s\ndefaults to $PBSFS_STORE.\n")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
