package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// The mount helper form. mount(8) runs mount.fuse3 for a file system of
// type fuse.pbsfs (fstab or mount -t fuse.pbsfs), which runs
//
//	pbsfs SOURCE MOUNTPOINT -o OPTIONS
//
// pbsfs then mounts as `pbsfs mount` would, with every mount flag given as
// an option (gc-schedule=daily, allow_other, ro, ...), and returns once
// the mount answers, leaving the server in the background; a failure is
// an exit status and a message, with no process left behind.

// ignoredMountOptions are the generic options of mount(8) and fstab that
// mean nothing to pbsfs (or that the kernel or mount(8) handle).
var ignoredMountOptions = map[string]bool{
	"rw": true, "defaults": true, "auto": true, "noauto": true, "_netdev": true, "nofail": true,
	"user": true, "users": true, "nouser": true, "owner": true, "group": true,
	"exec": true, "noexec": true, "suid": true, "nosuid": true, "dev": true, "nodev": true,
	"async": true, "sync": true, "atime": true, "noatime": true, "relatime": true, "norelatime": true,
	"strictatime": true, "nodiratime": true, "lazytime": true, "nolazytime": true, "silent": true, "loud": true,
	"default_permissions": true, // implied by allow_other; the mount always sets it then
}

// isHelperForm reports whether args is the mount helper form: a first
// argument that is neither a command nor a flag, and a mount point.
func isHelperForm(args []string, cmds []commandInfo) bool {
	if len(args) < 2 || strings.HasPrefix(args[0], "-") || lookupCommand(cmds, args[0]) != nil {
		return false
	}
	return args[0] != "help" && args[0] != "version"
}

// helperArgs turns the helper form into the arguments of `pbsfs mount`
// and reports whether -f (stay in the foreground) was given.
func helperArgs(args []string, mountFlags *pflag.FlagSet) (out []string, foreground bool, err error) {
	var pos, opts []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o":
			if i+1 == len(args) {
				return nil, false, usagef("-o needs options")
			}
			opts = append(opts, args[i+1])
			i++
		case strings.HasPrefix(a, "-o"):
			opts = append(opts, a[2:])
		case a == "-f":
			foreground = true
		case a == "-n" || a == "-s" || a == "-v": // mount(8)'s no-mtab, sloppy, verbose
		case strings.HasPrefix(a, "-"):
			return nil, false, usagef("unknown option %s (mount options go after -o)", a)
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		return nil, false, usagef("want SOURCE MOUNTPOINT [-o OPTIONS], got %q", pos)
	}
	for _, list := range opts {
		for _, o := range strings.Split(list, ",") {
			flag, err := mountOption(o, mountFlags)
			if err != nil {
				return nil, false, err
			}
			if flag != "" {
				out = append(out, flag)
			}
		}
	}
	return append(out, pos...), foreground, nil
}

// mountOption maps one -o option to a flag of pbsfs mount ("" when it is
// ignored): ro is --read-only, name=value is --name=value and name is
// --name, with underscores read as dashes (allow_other).
func mountOption(o string, fs *pflag.FlagSet) (string, error) {
	o = strings.TrimSpace(o)
	name, value, hasValue := strings.Cut(o, "=")
	switch {
	case o == "" || ignoredMountOptions[name] || strings.HasPrefix(name, "x-") || name == "comment":
		return "", nil
	case name == "ro":
		return "--read-only", nil
	case name == "ready-fd" || name == "help" || name == "store":
		return "", usagef("mount option %s is not allowed", name)
	}
	name = strings.ReplaceAll(name, "_", "-")
	f := fs.Lookup(name)
	if f == nil {
		return "", usagef("unknown mount option %q", o)
	}
	if !hasValue {
		if f.Value.Type() != "bool" {
			return "", usagef("mount option %s needs a value (%s=...)", name, name)
		}
		return "--" + name, nil
	}
	return "--" + name + "=" + value, nil
}

// runHelper runs the mount helper form: it starts `pbsfs mount` in the
// background (a new session, output to the null device once the mount is
// up) and waits until the mount answers or the server fails. With -f the
// mount runs in this process.
func runHelper(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := newEnv(stdout, stderr)
	info := lookupCommand(commands(), "mount")
	inv := newInvocation(e, info)
	margs, foreground, err := helperArgs(args, inv.fs)
	if err != nil {
		fmt.Fprintf(stderr, "pbsfs: %v\n", err)
		return exitUsage
	}
	if foreground {
		return run(ctx, append([]string{"mount"}, margs...), stdout, stderr)
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "pbsfs: %v\n", err)
		return exitFailure
	}
	ready, readyW, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "pbsfs: %v\n", err)
		return exitFailure
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "pbsfs: %v\n", err)
		return exitFailure
	}
	cmd := exec.Command(exe, append([]string{"mount", "--ready-fd", "3"}, margs...)...)
	cmd.ExtraFiles = []*os.File{readyW}
	cmd.Stderr = errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "pbsfs: start the server: %v\n", err)
		return exitFailure
	}
	readyW.Close()
	errW.Close()
	copied := make(chan struct{})
	go func() { io.Copy(stderr, errR); close(copied) }()
	line, _ := bufio.NewReader(ready).ReadString('\n')
	if line == "ready\n" {
		return exitOK // the server goes on; its output now goes to the null device
	}
	// The server failed before the mount was up: its message is on our
	// stderr, its exit status is ours.
	err = cmd.Wait()
	<-copied
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		return ee.ExitCode()
	}
	if err != nil {
		fmt.Fprintf(stderr, "pbsfs: server: %v\n", err)
	}
	return exitFailure
}

// detachOutput points stdout and stderr at the null device: the helper
// that started this server has exited, and a write to its pipe would kill
// the process. Logs go to syslog where there is one.
func detachOutput(e *env) {
	if null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0); err == nil {
		unix.Dup2(int(null.Fd()), 1)
		unix.Dup2(int(null.Fd()), 2)
		null.Close()
	}
	if w, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_INFO, "pbsfs"); err == nil {
		e.logOut.set(w)
	}
}

// signalReady tells whoever waits that the mount answers: the helper
// that started this server (--ready-fd), and systemd (NOTIFY_SOCKET, for
// Type=notify units).
func signalReady(e *env, readyFD int) {
	if readyFD > 0 {
		detachOutput(e)
		f := os.NewFile(uintptr(readyFD), "ready")
		f.WriteString("ready\n")
		f.Close()
	}
	sdNotify("READY=1\nMAINPID=" + strconv.Itoa(os.Getpid()))
}

// sdNotify sends state to systemd's notification socket, if there is one.
func sdNotify(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write([]byte(state))
}

// mountAnswers checks that mnt is a FUSE mount that answers a statfs.
func mountAnswers(mnt string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		return fmt.Errorf("mount %s does not answer: %w", mnt, err)
	}
	const fuseSuperMagic = 0x65735546
	if st.Type != fuseSuperMagic {
		return fmt.Errorf("%s is not a FUSE mount after mounting (type %#x)", mnt, st.Type)
	}
	return nil
}

// switchWriter is an io.Writer whose target can change while loggers use
// it.
type switchWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func newSwitchWriter(w io.Writer) *switchWriter { return &switchWriter{w: w} }

func (s *switchWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *switchWriter) set(w io.Writer) {
	s.mu.Lock()
	s.w = w
	s.mu.Unlock()
}

// newLogHandler returns the handler of a daemon's log: text or json, on
// w, without timestamps when stderr is systemd's journal (JOURNAL_STREAM
// names it), which stamps every line itself.
func newLogHandler(w io.Writer, format string, level slog.Leveler) (slog.Handler, error) {
	opts := &slog.HandlerOptions{Level: level}
	if toJournal() {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	switch format {
	case "text", "":
		return slog.NewTextHandler(w, opts), nil
	case "json":
		return slog.NewJSONHandler(w, opts), nil
	}
	return nil, usagef("--log-format %q: want text or json", format)
}

// toJournal reports whether stderr is the journal stream systemd set up
// (JOURNAL_STREAM is "device:inode" of it).
func toJournal() bool {
	js := os.Getenv("JOURNAL_STREAM")
	if js == "" {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(2, &st); err != nil {
		return false
	}
	return js == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}
