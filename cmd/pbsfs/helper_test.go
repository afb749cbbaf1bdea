package main

import (
	"io"
	"strings"
	"testing"
)

// TestHelperArgs maps the mount helper form to pbsfs mount's flags.
func TestHelperArgs(t *testing.T) {
	inv := newInvocation(newEnv(io.Discard, io.Discard), lookupCommand(commands(), "mount"))
	for _, tc := range []struct {
		args []string
		want string // the mount arguments, or "error: ..." for a substring of the error
		fg   bool
	}{
		{[]string{"/srv/ds", "/mnt/pbs", "-o", "ro,allow_other,gc-schedule=daily"},
			"--read-only --allow-other --gc-schedule=daily /srv/ds /mnt/pbs", false},
		{[]string{"/srv/ds", "/mnt/pbs", "-o", "rw,noauto,_netdev,nofail,x-systemd.automount,x-systemd.requires=network.target,default_permissions,defaults,nosuid,nodev,relatime"},
			"/srv/ds /mnt/pbs", false},
		{[]string{"/srv/ds", "/mnt/pbs", "-o", "gc_interval=24h,gc-cutoff=1h,keyfile=/etc/pbs.key", "-o", "metrics_listen=127.0.0.1:9750,store-name=ds1,runtime-dir=/run/x,log-format=json,skip_atime_check,read_only,nonempty"},
			"--gc-interval=24h --gc-cutoff=1h --keyfile=/etc/pbs.key --metrics-listen=127.0.0.1:9750 --store-name=ds1 --runtime-dir=/run/x --log-format=json --skip-atime-check --read-only --nonempty /srv/ds /mnt/pbs", false},
		{[]string{"/srv/ds", "/mnt/pbs", "-f", "-oro"}, "--read-only /srv/ds /mnt/pbs", true},
		{[]string{"/srv/ds", "/mnt/pbs", "-o", "bogus"}, `error: unknown mount option "bogus"`, false},
		{[]string{"/srv/ds", "/mnt/pbs", "-o", "gc-schedule"}, "error: needs a value", false},
		{[]string{"/srv/ds", "/mnt/pbs", "-o", "ready-fd=3"}, "error: not allowed", false},
		{[]string{"/srv/ds", "-o", "ro"}, "error: want SOURCE MOUNTPOINT", false},
		{[]string{"/srv/ds", "/mnt/pbs", "-x"}, "error: unknown option -x", false},
	} {
		got, fg, err := helperArgs(tc.args, inv.fs)
		if e, ok := strings.CutPrefix(tc.want, "error: "); ok {
			if err == nil || !strings.Contains(err.Error(), e) {
				t.Errorf("%q: %q %v, want an error with %q", tc.args, got, err, e)
			}
			continue
		}
		if err != nil || strings.Join(got, " ") != tc.want || fg != tc.fg {
			t.Errorf("%q: %q (foreground %v) %v, want %q", tc.args, got, fg, err, tc.want)
		}
	}
	if !isHelperForm([]string{"/srv/ds", "/mnt"}, commands()) || isHelperForm([]string{"mount", "/srv/ds", "/mnt"}, commands()) ||
		isHelperForm([]string{"--store", "x", "status"}, commands()) {
		t.Error("isHelperForm")
	}
}
