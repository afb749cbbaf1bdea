// Command pbsfs works on Proxmox Backup Server datastores: it makes
// backups into them, lists and reads snapshots, mounts them over FUSE and
// collects their garbage.
//
// The command line is "pbsfs [global flags] COMMAND [flags] [args]"; the
// global flags (globalFlags) are accepted before or after the command.
// Every command is a struct holding its flags (command); the table of
// commands is commands().
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
	"github.com/pbsfs/pbsfs/store/crypto"
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
		{"status", "", "show the last and the running garbage collection, the mounts and the writers of a datastore", func() command { return &statusCmd{} }},
		{"completion", "bash|zsh", "print a shell completion script", func() command { return &completionCmd{} }},
		{"demo", "[DIR]", "build a demo datastore with a few backups", func() command { return &demoCmd{} }},
		{"key", "create|show|change-passphrase [PATH]", "manage encryption key files as the PBS client does", func() command { return &keyCmd{} }},
	}
}

// flagAliases maps old or foreign spellings of a flag to the one pbsfs
// documents, for every command: one idea, one name.
var flagAliases = map[string]string{
	"output-format": "output",    // proxmox-backup-client's name
	"cutoff":        "gc-cutoff", // gc's old name; mount's is gc-cutoff
}

// normalizeFlag applies flagAliases while pflag parses.
func normalizeFlag(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	if to, ok := flagAliases[name]; ok {
		return pflag.NormalizedName(to)
	}
	return pflag.NormalizedName(name)
}

// env is what every command shares: output streams and the global flags.
type env struct {
	stdout, stderr io.Writer
	storePath      string
	storeName      string
	runtimeDir     string
	log            *slog.Logger
	// logOut is where log writes: stderr, until a background mount
	// switches it to syslog.
	logOut *switchWriter
	// logLevel is the level of log; the mount raises it to Info.
	logLevel *slog.LevelVar
	// global holds the global flags; storeGiven reports --store/-s on the
	// command line (not from $PBSFS_STORE).
	global *pflag.FlagSet
	// keys are set by commands with --keyfile before openStore.
	keys *crypto.Keyring
	// s3 are the flags of S3 datastores.
	s3 s3Flags
	// ctx is the command's context (for opening a datastore in a bucket).
	ctx context.Context
}

func newEnv(stdout, stderr io.Writer) *env {
	e := &env{stdout: stdout, stderr: stderr, logLevel: new(slog.LevelVar), logOut: newSwitchWriter(stderr)}
	e.logLevel.Set(slog.LevelWarn)
	e.log = slog.New(slog.NewTextHandler(e.logOut, &slog.HandlerOptions{Level: e.logLevel}))
	e.global = e.globalFlags()
	return e
}

// globalFlags registers the flags every command accepts, before or after
// its name. Their defaults come from the environment.
func (e *env) globalFlags() *pflag.FlagSet {
	fs := pflag.NewFlagSet("pbsfs", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVarP(&e.storePath, "store", "s", os.Getenv("PBSFS_STORE"), "datastore directory, or s3://HOST[:PORT]/BUCKET/STORE (s3+http:// for plain HTTP) (env PBSFS_STORE)")
	fs.StringVar(&e.storeName, "store-name", os.Getenv("PBSFS_STORE_NAME"), "PBS datastore name for lock files (env PBSFS_STORE_NAME; default: the name /etc/proxmox-backup/datastore.cfg gives the path, else the base name and a hash of the path; env PBSFS_DATASTORE_CONFIG names another datastore.cfg)")
	fs.StringVar(&e.runtimeDir, "runtime-dir", envOr("PBSFS_RUNTIME_DIR", store.DefaultRuntimeDir), "PBS runtime directory holding lock files (env PBSFS_RUNTIME_DIR)")
	e.s3.register(fs)
	return fs
}

// storeGiven reports whether --store was given on the command line.
func (e *env) storeGiven() bool { return e.global.Changed("store") }

// storeArg takes the datastore from a positional argument, which wins
// over $PBSFS_STORE; an explicit, different --store is a usage error.
func (e *env) storeArg(arg string) error {
	if e.storeGiven() && e.storePath != arg {
		return usagef("datastore given twice: --store %s and %s", e.storePath, arg)
	}
	e.storePath = arg
	return nil
}

// usageError marks errors in the command line; they exit with status 2.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// openStore opens the datastore named by --store.
func (e *env) openStore() (*store.Store, error) {
	return e.openStoreWith(e.storeOptions())
}

// openStoreWith opens the datastore named by --store with opts: a
// directory, or a datastore in a bucket.
func (e *env) openStoreWith(opts store.Options) (*store.Store, error) {
	if e.storePath == "" {
		return nil, usagef("no datastore: give --store DIR (or -s DIR) or set PBSFS_STORE")
	}
	if e.isS3() {
		ctx := e.ctx
		if ctx == nil {
			ctx = context.Background()
		}
		return e.openS3(ctx, opts)
	}
	return store.Open(e.storePath, opts)
}

func (e *env) storeOptions() store.Options {
	return store.Options{Name: e.storeName, RuntimeDir: e.runtimeDir, Logger: e.log, Keys: e.keys,
		DatastoreConfig: os.Getenv("PBSFS_DATASTORE_CONFIG")}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// run executes the command line args and returns the exit status:
// 0 on success, 1 on failure, 2 on a usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if isHelperForm(args, cmds) {
		return runHelper(ctx, args, stdout, stderr)
	}
	e := newEnv(stdout, stderr)

	// Global flags may come before the command: parse up to its name.
	top := pflag.NewFlagSet("pbsfs", pflag.ContinueOnError)
	top.SetOutput(io.Discard)
	top.Usage = func() {}
	top.SetInterspersed(false)
	top.AddFlagSet(e.global)
	var help, version bool
	top.BoolVarP(&help, "help", "h", false, "show this help")
	top.BoolVar(&version, "version", false, "print the version")
	if err := top.Parse(args); err != nil {
		fmt.Fprintf(stderr, "pbsfs: %v\n\n", flagError(err, top))
		printUsage(stderr, e, cmds)
		return exitUsage
	}
	rest := top.Args()
	switch {
	case version:
		printVersion(stdout)
		return exitOK
	case help:
		printUsage(stdout, e, cmds)
		return exitOK
	case len(rest) == 0:
		printUsage(stderr, e, cmds)
		return exitUsage
	}
	name, rest := rest[0], rest[1:]
	switch name {
	case "help":
		if len(rest) == 0 {
			printUsage(stdout, e, cmds)
			return exitOK
		}
		info := lookupCommand(cmds, rest[0])
		if info == nil {
			return unknownCommand(stderr, e, cmds, rest[0])
		}
		c := newInvocation(e, info)
		c.usage(stdout)
		return exitOK
	case "version":
		printVersion(stdout)
		return exitOK
	}
	info := lookupCommand(cmds, name)
	if info == nil {
		return unknownCommand(stderr, e, cmds, name)
	}
	c := newInvocation(e, info)
	if err := c.fs.Parse(rest); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			c.usage(stdout)
			return exitOK
		}
		fmt.Fprintf(stderr, "pbsfs %s: %v\n\n", name, flagError(err, c.fs))
		c.usage(stderr)
		return exitUsage
	}
	e.ctx = ctx
	err := c.cmd.run(ctx, e, c.fs.Args())
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "pbsfs %s: %v\n\n", name, err)
		c.usage(stderr)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "pbsfs %s: %v\n", name, err)
		return exitFailure
	}
}

// invocation is one command with its flag set (its own flags and the
// global ones).
type invocation struct {
	info *commandInfo
	cmd  command
	own  *pflag.FlagSet // the command's flags alone, for the usage
	fs   *pflag.FlagSet // what is parsed: own and global flags
	e    *env
}

func newInvocation(e *env, info *commandInfo) *invocation {
	c := &invocation{info: info, cmd: info.new(), e: e}
	c.own = pflag.NewFlagSet("pbsfs "+info.name, pflag.ContinueOnError)
	c.own.SortFlags = false
	c.cmd.flags(c.own)
	c.fs = pflag.NewFlagSet("pbsfs "+info.name, pflag.ContinueOnError)
	c.fs.SortFlags = false
	c.fs.SetOutput(io.Discard)
	c.fs.Usage = func() {}
	c.fs.SetNormalizeFunc(normalizeFlag)
	c.fs.AddFlagSet(c.own)
	c.fs.AddFlagSet(e.global)
	return c
}

// usage prints the command's usage, flags and global flags.
func (c *invocation) usage(w io.Writer) {
	args := ""
	if c.info.args != "" {
		args = " " + c.info.args
	}
	fmt.Fprintf(w, "Usage: pbsfs %s [flags]%s\n\n%s.\n", c.info.name, args, capitalize(c.info.summary))
	if u := c.own.FlagUsages(); u != "" {
		fmt.Fprintf(w, "\nFlags:\n%s", u)
	}
	fmt.Fprintf(w, "\nGlobal flags (before or after the command):\n%s", c.e.global.FlagUsages())
	fmt.Fprintf(w, "  -h, --help                 show this help\n")
}

func lookupCommand(cmds []commandInfo, name string) *commandInfo {
	for i := range cmds {
		if cmds[i].name == name {
			return &cmds[i]
		}
	}
	return nil
}

func unknownCommand(stderr io.Writer, e *env, cmds []commandInfo, name string) int {
	var names []string
	for _, c := range cmds {
		names = append(names, c.name)
	}
	msg := fmt.Sprintf("pbsfs: unknown command %q", name)
	if s := closest(name, names); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	fmt.Fprintf(stderr, "%s\n\n", msg)
	printUsage(stderr, e, cmds)
	return exitUsage
}

func printUsage(w io.Writer, e *env, cmds []commandInfo) {
	fmt.Fprintf(w, "pbsfs: browse, back up into and collect Proxmox Backup Server datastores.\n\nUsage: pbsfs [global flags] COMMAND [flags] [args]\n\nCommands:\n")
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nGlobal flags (before or after the command):\n%s", e.global.FlagUsages())
	fmt.Fprintf(w, "  -h, --help                 show this help\n      --version              print the version\n")
	fmt.Fprintf(w, "\nRun 'pbsfs help COMMAND' (or 'pbsfs COMMAND --help') for a command's flags.\n")
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
