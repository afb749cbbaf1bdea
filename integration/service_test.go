package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/gc"
	"github.com/pbsfs/pbsfs/internal/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"
)

// TestSIGTERMOpenFile: SIGTERM with a file open detaches the mount, serves
// the file for --shutdown-wait, then exits 0; the open file then fails
// with ENOTCONN (or EIO), never returns wrong data.
func TestSIGTERMOpenFile(t *testing.T) {
	testutil.RequireFUSE(t)
	e := newEnv(t)
	conf := filepath.Join(t.TempDir(), "a.conf")
	os.WriteFile(conf, []byte("abc"), 0o644)
	snap := e.backup(t, "host", "h", t0, "a.conf:"+conf)
	mnt := t.TempDir()
	d := e.newDaemon(nil, "mount", "--shutdown-wait", "300ms", e.store, mnt).start(t, mnt)
	d.waitMounted(t, mnt, true, "mount did not come up")
	f, err := os.Open(filepath.Join(mnt, "host/h", snap, "a.conf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.exit(t, 10*time.Second, "pbsfs mount did not exit"); err != nil {
		t.Fatalf("pbsfs mount after SIGTERM with an open file: %v\n%s", err, d.logs.String())
	}
	if testutil.Mounted(mnt) {
		t.Errorf("still mounted")
	}
	buf := make([]byte, 3)
	n, err := f.ReadAt(buf, 0)
	if err == nil || !(errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.EIO)) {
		t.Errorf("read of a file open across the stop: %q, %v; want ENOTCONN or EIO", buf[:n], err)
	}
}

// helperBinary makes the pbsfs under test the one mount.fuse3 runs for
// type fuse.pbsfs. mount(8) clears PATH, so the shell mount.fuse3 starts
// searches the default one: the binary is linked as
// /usr/local/sbin/pbsfs for the test, under a lock shared with other test
// runs on this machine, and the previous entry is put back afterwards.
func helperBinary(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("mount.fuse3"); err != nil {
		if os.Getenv("PBSFS_REQUIRE_FUSE") == "1" {
			t.Fatalf("mount.fuse3 not installed: %v", err)
		}
		t.Skipf("mount.fuse3 not installed: %v", err)
	}
	lf, err := os.OpenFile("/run/lock/pbsfs-mount-helper-test.lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		lf, err = os.OpenFile(filepath.Join(os.TempDir(), "pbsfs-mount-helper-test.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	const link = "/usr/local/sbin/pbsfs"
	old, oldErr := os.Readlink(link)
	if oldErr != nil {
		if _, err := os.Lstat(link); err == nil {
			lf.Close()
			t.Skipf("%s is an installed pbsfs; not replacing it", link)
		}
	}
	os.MkdirAll(filepath.Dir(link), 0o755)
	os.Remove(link)
	if err := os.Symlink(bin, link); err != nil {
		lf.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(link)
		if oldErr == nil {
			os.Symlink(old, link)
		}
		lf.Close()
	})
}

// subreaper makes this process the reaper of orphans, so that the exit
// status of a server the mount helper left in the background can be
// collected.
func subreaper(t *testing.T) {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
}

// waitExit waits up to d for process pid, a child of this process after
// subreaper, and returns its exit status.
func waitExit(t *testing.T, pid int, d time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if err != nil {
			t.Fatalf("wait for pid %d: %v", pid, err)
		}
		if got == pid {
			if ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return ws.ExitStatus()
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d did not exit", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pbsfsProcesses lists the pids of processes whose command line
// mentions s.
func pbsfsProcesses(s string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) && bytes.Contains(b, []byte("pbsfs")) {
			if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && bytes.Contains(st, []byte(") Z ")) {
				continue // a zombie is gone already
			}
			out = append(out, pid)
		}
	}
	return out
}

func statusOf(t *testing.T, e *env) gc.StoreStatus {
	t.Helper()
	out := e.pbsfs(t, "status", "--output", "json")
	var st gc.StoreStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	return st
}

// TestMountHelper is the service as an admin sets it up: mount(8) with
// type fuse.pbsfs and options, as an fstab line does. The mount returns
// once the mount answers, with the server in the background; reading,
// rm -r of a snapshot and a scheduled collection (every minute, a short
// cutoff after the atime self-test) work; the metrics the server serves
// agree with .gc-status; umount ends the server with status 0 and leaves
// the mount point clean. A mount of a bad store path fails with a message
// and a non-zero status, leaving no process behind.
func TestMountHelper(t *testing.T) {
	testutil.RequireFUSE(t)
	helperBinary(t)
	subreaper(t)
	e := newEnv(t)
	src := t.TempDir()
	randomFile(t, filepath.Join(src, "disk.img"), 6<<20, 7)
	conf := filepath.Join(src, "vm.conf")
	os.WriteFile(conf, []byte("memory: 512\n"), 0o644)
	old := e.backup(t, "vm", "100", t0, "drive-scsi0.img:"+filepath.Join(src, "disk.img"))
	randomFile(t, filepath.Join(src, "small.img"), 5<<20, 8)
	keep := e.backup(t, "vm", "100", t0.Add(time.Hour), "drive-scsi0.img:"+filepath.Join(src, "small.img"), "qemu-server.conf:"+conf)
	mnt := t.TempDir()
	opts := "allow_other,gc-schedule=minutely,gc-cutoff=1m,metrics-listen=127.0.0.1:0,runtime-dir=" + e.run + ",noauto,_netdev,x-systemd.automount,nofail"
	out, err := run("mount", "-t", "fuse.pbsfs", e.store, mnt, "-o", opts)
	if err != nil {
		t.Fatalf("mount -t fuse.pbsfs: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if testutil.Mounted(mnt) {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	if !testutil.Mounted(mnt) {
		t.Fatalf("mount returned before the mount was up")
	}
	st := statusOf(t, e)
	if len(st.Mounts) != 1 || st.Mounts[0].Mountpoint != mnt || st.Mounts[0].GCSchedule != "minutely" {
		t.Fatalf("status mounts: %+v", st.Mounts)
	}
	server := st.Mounts[0].PID
	metricsURL := st.Mounts[0].Metrics
	t.Logf("server pid %d, next collection %v, metrics %s", server, st.Mounts[0].NextGC, metricsURL)

	// Read.
	got, err := os.ReadFile(filepath.Join(mnt, "vm/100", old, "drive-scsi0.img"))
	want, _ := os.ReadFile(filepath.Join(src, "disk.img"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read through the mount: %v", err)
	}
	// Prune with rm -r.
	if out, err := run("rm", "-r", filepath.Join(mnt, "vm/100", old)); err != nil {
		t.Fatalf("rm -r: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(e.store, "vm/100", old)); err == nil {
		t.Fatal("snapshot still in the store after rm -r")
	}
	// Time passes: every chunk looks three days old. The scheduled
	// collection must mark what the kept snapshot needs, and removes what
	// only the removed one held.
	old3 := time.Now().Add(-72 * time.Hour)
	filepath.WalkDir(filepath.Join(e.store, ".chunks"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			os.Chtimes(p, old3, old3)
		}
		return nil
	})
	agedAt := time.Now()
	// The scheduled collection (a full minute).
	for deadline := time.Now().Add(150 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		st = statusOf(t, e)
		if r := st.LastGC.Run; r != nil && r.Start.After(agedAt) && st.Running == nil {
			if r.Result != "ok" || r.PID != server {
				t.Fatalf("scheduled collection: %+v", r)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no scheduled collection: %+v", st)
		}
	}
	g := st.LastGC.Status
	if g == nil || g.RemovedChunks < 2 || g.DiskChunks < 3 || g.IndexFileCount != 1 {
		t.Errorf(".gc-status after the scheduled collection: %+v", g)
	}
	if out, err := e.try("verify", "--no-progress"); err != nil {
		t.Errorf("verify after the collection: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(mnt, "vm/100", keep, "drive-scsi0.img")); len(b) != 5<<20 {
		t.Errorf("kept snapshot reads %d bytes", len(b))
	}
	// Metrics, parsed with Prometheus's text parser.
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	sample := func(name, label, value string) float64 {
		f := fams[name]
		if f == nil {
			return -1
		}
		for _, m := range f.Metric {
			ok := label == ""
			for _, lp := range m.Label {
				ok = ok || (lp.GetName() == label && lp.GetValue() == value)
			}
			if !ok {
				continue
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
		return -1
	}
	if v := sample("pbsfs_gc_runs_total", "result", "success"); v < 1 {
		t.Errorf("pbsfs_gc_runs_total{result=success} = %v", v)
	}
	if v := sample("pbsfs_gc_last_run", "figure", "removed_chunks"); v != float64(g.RemovedChunks) {
		t.Errorf("pbsfs_gc_last_run{figure=removed_chunks} = %v, .gc-status %d", v, g.RemovedChunks)
	}
	if v := sample("pbsfs_read_bytes_total", "", ""); v < float64(len(want)) {
		t.Errorf("pbsfs_read_bytes_total = %v, read %d", v, len(want))
	}
	if v := sample("pbsfs_snapshot_removals_total", "result", "accepted"); v != 1 {
		t.Errorf("pbsfs_snapshot_removals_total{result=accepted} = %v", v)
	}

	// umount ends the server cleanly.
	if out, err := run("umount", mnt); err != nil {
		t.Fatalf("umount: %v\n%s", err, out)
	}
	if code := waitExit(t, server, 20*time.Second); code != 0 {
		t.Errorf("server exited %d after umount", code)
	}
	if testutil.Mounted(mnt) {
		t.Errorf("%s still mounted", mnt)
	}
	if ents, err := os.ReadDir(mnt); err != nil || len(ents) != 0 {
		t.Errorf("mount point after umount: %v %v", ents, err)
	}
	if st := statusOf(t, e); len(st.Mounts) != 0 {
		t.Errorf("status after umount: %+v", st.Mounts)
	}

	// A bad store path: an exit status, a message, no process left.
	mnt2 := t.TempDir()
	bad := filepath.Join(t.TempDir(), "no-such-store")
	out, err = run("mount", "-t", "fuse.pbsfs", bad, mnt2, "-o", "gc-schedule=daily,runtime-dir="+e.run)
	if err == nil {
		t.Errorf("mount of a bad store path succeeded:\n%s", out)
	}
	if !strings.Contains(out, "pbsfs") || !strings.Contains(out, "no-such-store") {
		t.Errorf("mount of a bad store path says %q", out)
	}
	if testutil.Mounted(mnt2) {
		t.Errorf("%s mounted after a failed mount", mnt2)
	}
	if ps := pbsfsProcesses(mnt2); len(ps) != 0 {
		t.Errorf("processes left behind by a failed mount: %v", ps)
	}
	// A bad option: usage status 2 from the helper itself.
	out, err = run("mount", "-t", "fuse.pbsfs", e.store, mnt2, "-o", "no_such_option=1")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(out, `unknown mount option "no_such_option=1"`) {
		t.Errorf("mount with an unknown option: %v %q", err, out)
	}
	if ps := pbsfsProcesses(mnt2); len(ps) != 0 || testutil.Mounted(mnt2) {
		t.Errorf("a failed mount left %v (mounted %v)", ps, testutil.Mounted(mnt2))
	}
}

// TestSystemdUnit checks the unit we ship with systemd-analyze verify,
// where systemd's tools are installed, pointing it at the binary under
// test.
func TestSystemdUnit(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	b, err := os.ReadFile("../contrib/systemd/pbsfs-mount.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.ReplaceAll(string(b), "/usr/local/bin/pbsfs", bin)
	dir := t.TempDir()
	for _, d := range []string{"srv/ds", "mnt/pbs"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	unit = strings.ReplaceAll(unit, "/srv/ds", filepath.Join(dir, "srv/ds"))
	unit = strings.ReplaceAll(unit, "/mnt/pbs", filepath.Join(dir, "mnt/pbs"))
	p := filepath.Join(dir, "pbsfs-mount.service")
	os.WriteFile(p, []byte(unit), 0o644)
	out, err := exec.Command(sa, "verify", "--man=no", p).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(line, "pbsfs-mount.service") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
}

// TestSystemdNotify runs the mount as a Type=notify unit would: READY=1
// on $NOTIFY_SOCKET once the mount answers, STOPPING=1 on SIGTERM, exit
// 0; with stderr as the journal ($JOURNAL_STREAM) and --log-format=json,
// log lines are JSON without their own timestamps.
func TestSystemdNotify(t *testing.T) {
	testutil.RequireFUSE(t)
	e := newEnv(t)
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	logf, err := os.Create(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	var st unix.Stat_t
	unix.Fstat(int(logf.Fd()), &st)
	mnt := t.TempDir()
	d := e.newDaemon([]string{"NOTIFY_SOCKET=" + sock, fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino)},
		"mount", "--log-format=json", e.store, mnt)
	d.cmd.Stdout, d.cmd.Stderr = nil, logf
	cmd := d.start(t, mnt).cmd
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	if msg := string(buf[:n]); !strings.Contains(msg, "READY=1") || !strings.Contains(msg, fmt.Sprintf("MAINPID=%d", cmd.Process.Pid)) {
		t.Errorf("notification %q", msg)
	}
	if !testutil.Mounted(mnt) {
		t.Errorf("READY=1 before the mount was up")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	if n, err := conn.Read(buf); err != nil || !strings.Contains(string(buf[:n]), "STOPPING=1") {
		t.Errorf("stop notification: %q %v", buf[:n], err)
	}
	if err := d.exit(t, 15*time.Second, "no exit after SIGTERM"); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	if testutil.Mounted(mnt) {
		t.Error("still mounted")
	}
	b, _ := os.ReadFile(logf.Name())
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	jsonLines := 0
	for _, l := range lines {
		if !strings.HasPrefix(l, "{") {
			continue // the mount's own messages, not the log
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("log line is not JSON: %q", l)
			continue
		}
		jsonLines++
		if _, ok := m["time"]; ok {
			t.Errorf("log line has its own timestamp under the journal: %q", l)
		}
		if m["level"] == nil || m["msg"] == nil {
			t.Errorf("log line lacks level or msg: %q", l)
		}
	}
	if jsonLines == 0 {
		t.Errorf("no JSON log lines:\n%s", b)
	}
}
