package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// WeedVersion is the SeaweedFS module version .ci/build-weed.sh builds.
const WeedVersion = "v0.0.0-20261109003541-7506e5f91cd6"

// WeedBinary returns SeaweedFS's weed binary: $PBSFS_WEED, else where
// .ci/build-weed.sh caches it, else weed on $PATH.
func WeedBinary() (string, error) {
	if p := os.Getenv("PBSFS_WEED"); p != "" {
		return p, nil
	}
	cache := os.Getenv("PBSFS_WEED_CACHE")
	if cache == "" {
		cache = "/var/cache/pbsfs/weed-" + WeedVersion
	}
	if p := filepath.Join(cache, "weed"); isExecutable(p) {
		return p, nil
	}
	return exec.LookPath("weed")
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// RequireS3 returns the weed binary, or skips the test when there is
// none, unless PBSFS_REQUIRE_S3=1 (set by CI) asks for a failure.
func RequireS3(t testing.TB) string {
	t.Helper()
	p, err := WeedBinary()
	if err == nil {
		return p
	}
	if os.Getenv("PBSFS_REQUIRE_S3") == "1" {
		t.Fatalf("S3 test server required (PBSFS_REQUIRE_S3=1) but not found: %v (run .ci/build-weed.sh, set PBSFS_WEED)", err)
	}
	t.Skipf("no SeaweedFS weed binary (%v); run .ci/build-weed.sh and set PBSFS_WEED, or PBSFS_REQUIRE_S3=1 to fail instead", err)
	return ""
}

// S3Server is a SeaweedFS server (weed mini) serving S3 on the loopback
// with its data in a directory; every component listens on a free port
// of 127.0.0.1.
type S3Server struct {
	// Endpoint is 127.0.0.1:PORT of the S3 API (plain HTTP).
	Endpoint string
	// Bucket is the bucket made at start.
	Bucket string

	bin, dir string
	ports    []int
	mu       sync.Mutex
	cmd      *exec.Cmd
	log      *os.File
}

// weedPorts names the port flags of weed mini; each gets a free port.
var weedPorts = []string{"s3.port", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
	"filer.port", "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc", "debug.port",
	"webdav.port", "s3.debug.port"}

// StartS3 starts a server with its data in dir and a bucket named
// bucket, and waits until it answers.
func StartS3(bin, dir, bucket string) (*S3Server, error) {
	s := &S3Server{Bucket: bucket, bin: bin, dir: dir}
	for range weedPorts {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		s.ports = append(s.ports, p)
	}
	s.Endpoint = "127.0.0.1:" + strconv.Itoa(s.ports[0])
	return s, s.Start()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start starts the server again after Stop, on the same ports and data.
func (s *S3Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("s3 server already running")
	}
	args := []string{"mini", "-dir=" + s.dir, "-bucket=" + s.Bucket, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.port.legacy=0"}
	for i, name := range weedPorts {
		args = append(args, fmt.Sprintf("-%s=%d", name, s.ports[i]))
	}
	log, err := os.OpenFile(filepath.Join(s.dir, "weed.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = log, log
	// Without credentials of its own, weed mini accepts any: the tests
	// still sign every request with theirs.
	cmd.Env = os.Environ()
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} {
		cmd.Env = append(cmd.Env, v+"=")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	s.cmd, s.log = cmd, log
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(90 * time.Second)
	url := "http://" + s.Endpoint + "/" + s.Bucket
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK { // the bucket exists
				return nil
			}
		}
		select {
		case <-exited:
			s.stopLocked()
			b, _ := os.ReadFile(log.Name())
			return fmt.Errorf("weed mini exited at start:\n%s", tail(b, 4000))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stopLocked()
			b, _ := os.ReadFile(log.Name())
			return fmt.Errorf("weed mini did not answer on %s within 90 s:\n%s", url, tail(b, 4000))
		}
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Stop kills the server and its process group and waits for it.
func (s *S3Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *S3Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	for i := 0; i < 100 && syscall.Kill(s.cmd.Process.Pid, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond) // reaped by the Wait goroutine
	}
	s.log.Close()
	s.cmd, s.log = nil, nil
}

// Pid returns the server's process id (0 when stopped).
func (s *S3Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// SharedS3 starts one server for all the tests of a package that ask for
// it, on first use; the package's TestMain calls Close.
type SharedS3 struct {
	once sync.Once
	srv  *S3Server
	dir  string
	err  error
}

// Get returns the shared server, starting it on first use; it skips or
// fails the test as RequireS3 does when there is no weed binary.
func (sh *SharedS3) Get(t testing.TB) *S3Server {
	t.Helper()
	bin := RequireS3(t)
	sh.once.Do(func() {
		sh.dir, sh.err = os.MkdirTemp("", "pbsfs-s3-")
		if sh.err == nil {
			sh.srv, sh.err = StartS3(bin, sh.dir, "pbsfs-test")
		}
	})
	if sh.err != nil {
		t.Fatalf("S3 test server: %v", sh.err)
	}
	return sh.srv
}

// Close stops the shared server, if it was started, and removes its data.
func (sh *SharedS3) Close() {
	if sh.srv != nil {
		sh.srv.Stop()
	}
	if sh.dir != "" {
		os.RemoveAll(sh.dir)
	}
}

// CPUTime returns the CPU time (user and system) the server's process
// has used so far, 0 when it is stopped or /proc cannot tell: benchmarks
// use it to tell a server that starves for CPU from a slow client.
func (s *S3Server) CPUTime() time.Duration { return ProcessCPU(s.Pid()) }

// ProcessCPU returns the CPU time (user and system) process pid has
// used so far, from /proc; 0 when it cannot tell.
func ProcessCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name (which may hold spaces) in
	// parentheses: utime and stime are the 12th and 13th of them.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(ut+st) * time.Second / clockTicks
}

// clockTicks is the kernel's USER_HZ, the unit of /proc's CPU times (100
// on every Linux architecture Go supports).
const clockTicks = 100
