package integration

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/internal/testutil"
	"github.com/pbsfs/pbsfs/store"
	"golang.org/x/sys/unix"
)

// bin is the pbsfs binary built by TestMain.
var bin string

func TestMain(m *testing.M) {
	if p := os.Getenv("PBSFS_TEST_HOLDLOCK"); p != "" {
		os.Exit(holdLockMain(p))
	}
	dir, err := os.MkdirTemp("", "pbsfs-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if bin, err = testutil.Build(dir, "github.com/pbsfs/pbsfs/cmd/pbsfs"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	s3srv.Close()
	if s3Base.dir != "" {
		os.RemoveAll(s3Base.dir)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one datastore with its runtime directory.
type env struct {
	store, run string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{store: filepath.Join(t.TempDir(), "store"), run: t.TempDir()}
	// pbsfs init makes all 65536 chunk directories, which takes 10-30 s
	// here; tests use a lazy datastore made through the store package.
	s, err := store.Create(e.store, store.Options{RuntimeDir: e.run, LazyChunkDirs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	return e
}

// open opens the datastore in the test process.
func (e *env) open(t testing.TB) *store.Store {
	t.Helper()
	s, err := store.Open(e.store, store.Options{RuntimeDir: e.run})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// pbsfs runs the binary and fails the test on error.
func (e *env) pbsfs(t testing.TB, args ...string) string {
	t.Helper()
	out, err := e.try(args...)
	if err != nil {
		t.Fatalf("pbsfs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (e *env) try(args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "PBSFS_RUNTIME_DIR="+e.run, "PBSFS_STORE="+e.store)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// backup runs pbsfs backup of the given archives into group typ/id at t.
func (e *env) backup(t testing.TB, typ, id string, when time.Time, archives ...string) string {
	t.Helper()
	args := append([]string{"backup", "--no-progress", "--type", typ, "--id", id, "--time", when.UTC().Format(time.RFC3339)}, archives...)
	e.pbsfs(t, args...)
	return when.UTC().Format("2006-01-02T15:04:05Z")
}

func (e *env) snapshots(t testing.TB, group string) []string {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(e.store, group))
	var out []string
	for _, d := range ents {
		if d.IsDir() {
			out = append(out, d.Name())
		}
	}
	return out
}

// mount starts pbsfs mount in the background and returns the mountpoint
// once the mount is up. Cleanup stops it with SIGTERM, and detaches the
// mount if the process does not clean up.
func (e *env) mount(t testing.TB, extra ...string) (string, *exec.Cmd) {
	t.Helper()
	testutil.RequireFUSE(t)
	mnt := t.TempDir()
	args := append(append([]string{"mount"}, extra...), e.store, mnt)
	cmd := startMount(t, mnt, []string{"PBSFS_RUNTIME_DIR=" + e.run}, bin, args...)
	return mnt, cmd
}

// startMount runs a FUSE server program that mounts on mnt and waits
// until the mount is up. Cleanup sends SIGTERM and checks that the
// program unmounted and exited cleanly.
func startMount(t testing.TB, mnt string, env []string, prog string, args ...string) *exec.Cmd {
	t.Helper()
	var logs testutil.SyncBuffer
	cmd := exec.Command(prog, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s exited with %v\n%s", filepath.Base(prog), err, logs.String())
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not exit on SIGTERM\n%s", filepath.Base(prog), logs.String())
			cmd.Process.Kill()
		}
		if testutil.Mounted(mnt) {
			t.Errorf("%s still mounted after %s exited", mnt, filepath.Base(prog))
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !testutil.Mounted(mnt) {
		select {
		case err := <-done:
			t.Fatalf("%s exited: %v\n%s", filepath.Base(prog), err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mount did not come up\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", filepath.Base(prog), logs.String())
		}
	})
	return cmd
}

// run runs a tool and returns its combined output and error.
func run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func runIn(dir, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// randomFile writes n pseudo-random bytes (half compressible) to p.
func randomFile(t testing.TB, p string, n int64, seed uint64) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(seed, 1))
	w := bufio.NewWriterSize(f, 1<<20)
	var b [8]byte
	for i := int64(0); i < n; i += 8 {
		v := r.Uint64()
		if (i>>16)&1 == 1 {
			v &= 0x0f0f0f0f0f0f0f0f
		}
		for j := range b {
			b[j] = byte(v >> (8 * j))
		}
		k := min(8, n-i)
		w.Write(b[:k])
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}

// openChunks lets every user read the chunks of the store on disk:
// .chunks and each of its prefix directories 0755 (the mount closes an
// archive to whoever cannot search them, fs/gate.go).
func openChunks(t testing.TB, store string) {
	t.Helper()
	chunks := filepath.Join(store, ".chunks")
	dirs, _ := filepath.Glob(filepath.Join(chunks, "[0-9a-f][0-9a-f][0-9a-f][0-9a-f]"))
	for _, d := range append(dirs, chunks) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// daemon is a pbsfs mount process that a test stops itself (a signal,
// the last file closed), unlike startMount's: its exit status arrives on
// done, its output in logs unless the test redirects it before start.
type daemon struct {
	cmd  *exec.Cmd
	done chan error
	logs testutil.SyncBuffer
}

// newDaemon prepares pbsfs with args, the runtime directory of e and env
// in its environment; start runs it.
func (e *env) newDaemon(env []string, args ...string) *daemon {
	d := &daemon{cmd: exec.Command(bin, args...), done: make(chan error, 1)}
	d.cmd.Env = append(append(os.Environ(), "PBSFS_RUNTIME_DIR="+e.run), env...)
	d.cmd.Stdout, d.cmd.Stderr = &d.logs, &d.logs
	return d
}

// start runs d; cleanup kills it and detaches mnt if still mounted.
func (d *daemon) start(t testing.TB, mnt string) *daemon {
	t.Helper()
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		if testutil.Mounted(mnt) {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return d
}

// waitMounted waits up to 10 s for mnt to be mounted (or, with mounted
// false, to be gone); failing, it names what was awaited.
func (d *daemon) waitMounted(t testing.TB, mnt string, mounted bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); testutil.Mounted(mnt) != mounted; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s\n%s", what, d.logs.String())
		}
	}
}

// exit waits up to timeout for d to exit and returns its status;
// failing, it names what was awaited.
func (d *daemon) exit(t testing.TB, timeout time.Duration, what string) error {
	t.Helper()
	select {
	case err := <-d.done:
		return err
	case <-time.After(timeout):
		t.Fatalf("%s\n%s", what, d.logs.String())
		return nil
	}
}
