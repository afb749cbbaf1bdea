package lock

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHoldersOf(t *testing.T) {
	const off = probeBase + 12345
	probe := "1: OFDLCK ADVISORY READ -1 00:27:257 4611686018427400249 4611686018427400249"
	self := "2: POSIX ADVISORY READ 100 00:27:257 0 EOF"
	tests := []struct {
		name    string
		lines   []string
		want    []Holder
		wantErr bool
	}{
		{"alone", []string{probe, self}, nil, false},
		{"foreign reader", []string{self, "3: POSIX ADVISORY READ 200 00:27:257 0 EOF", probe},
			[]Holder{{PID: 200, Kind: KindPOSIX, Type: TypeRead}}, false},
		// The probe names the file; the stat device (00:28 for a
		// subvolume) plays no part, and lines of other files are left out.
		{"other files", []string{probe, self, "3: POSIX ADVISORY READ 200 00:28:257 0 EOF", "4: POSIX ADVISORY READ 201 00:27:258 0 EOF"}, nil, false},
		{"other pbsfs probe", []string{probe, self, "5: OFDLCK ADVISORY READ -1 00:27:257 4611686018427387905 4611686018427387905"}, nil, false},
		{"foreign ofd lock", []string{probe, self, "5: OFDLCK ADVISORY READ -1 00:27:257 0 EOF"},
			[]Holder{{PID: -1, Kind: KindOFD, Type: TypeRead}}, false},
		{"waiter left out", []string{probe, self, "3: -> POSIX ADVISORY WRITE 300 00:27:257 0 EOF"}, nil, false},
		{"no probe", []string{self}, nil, true},
		{"two probes", []string{probe, self, strings.Replace(probe, "00:27", "00:30", 1)}, nil, true},
		{"own lock missing", []string{probe, "3: POSIX ADVISORY READ 200 00:27:257 0 EOF"}, nil, true},
		{"own lock on another file only", []string{probe, "2: POSIX ADVISORY READ 100 00:28:257 0 EOF"}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var entries []procLockEntry
			for _, l := range tc.lines {
				if e, ok := parseProcLockEntry(l); ok {
					entries = append(entries, e)
				}
			}
			got, err := holdersOf(entries, off, 100)
			if tc.wantErr {
				if !errors.Is(err, ErrUnverifiable) {
					t.Fatalf("err = %v, want ErrUnverifiable", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("holder %d: got %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestOtherHolders takes real locks: alone, nobody else is reported; a
// process holding a read lock is, by pid; one holding a lock on another
// file is not.
func TestOtherHolders(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ".lock")
	p, err := OpenProcessLocker(path)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.OtherHolders(); err == nil {
		t.Fatal("OtherHolders without a guard: no error")
	}
	g, err := p.Shared()
	if err != nil {
		t.Fatal(err)
	}
	defer g.Release()
	if hs, err := p.OtherHolders(); err != nil || len(hs) != 0 {
		t.Fatalf("alone: %+v, %v", hs, err)
	}
	other := filepath.Join(dir, "other")
	os.WriteFile(other, nil, 0o644)
	h1 := startHelper(t, "proc", "shared", other)
	if hs, err := p.OtherHolders(); err != nil || len(hs) != 0 {
		t.Fatalf("lock on another file: %+v, %v", hs, err)
	}
	h1.stop()
	h2 := startHelper(t, "proc", "shared", path)
	hs, err := p.OtherHolders()
	if err != nil || len(hs) != 1 || hs[0].PID != h2.pid() || hs[0].Kind != KindPOSIX {
		t.Fatalf("with a reader: %+v, %v; want pid %d", hs, err, h2.pid())
	}
	// The probe is released: the file has no lock in the probe range.
	entries, err := readProcLocks()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Kind == KindOFD && e.start >= probeBase && e.PID == -1 {
			t.Errorf("probe lock left behind: %+v", e)
		}
	}
}
