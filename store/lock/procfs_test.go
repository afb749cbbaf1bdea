package lock

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseProcLocks(t *testing.T) {
	const table = `1: OFDLCK ADVISORY  READ -1 fe:00:9979884 0 EOF
2: FLOCK  ADVISORY  READ 5256 fe:00:9979883 0 EOF
3: POSIX  ADVISORY  WRITE 5256 fe:00:9979882 0 EOF
3: -> POSIX  ADVISORY  WRITE 5300 fe:00:9979882 0 EOF
4: POSIX  ADVISORY  READ 77 103:0a:9979882 0 EOF
5: POSIX  ADVISORY  READ 78 fe:00:9979882 0 EOF
6: LEASE  ACTIVE    READ 79 fe:00:9979882 0 EOF
7: POSIX  ADVISORY  READ 80 <none>:0 0 EOF
garbage
8: POSIX ADVISORY READ notapid fe:00:9979882 0 EOF
9: POSIX ADVISORY READ 81 fe:zz:9979882 0 EOF
`
	tests := []struct {
		name         string
		major, minor uint32
		ino          uint64
		want         []Holder
	}{
		{"posix file", 0xfe, 0, 9979882, []Holder{
			{PID: 5256, Kind: KindPOSIX, Type: TypeWrite},
			{PID: 78, Kind: KindPOSIX, Type: TypeRead},
			{PID: 79, Kind: "LEASE", Type: TypeRead},
		}},
		{"flock file", 0xfe, 0, 9979883, []Holder{{PID: 5256, Kind: KindFlock, Type: TypeRead}}},
		{"ofd file", 0xfe, 0, 9979884, []Holder{{PID: -1, Kind: KindOFD, Type: TypeRead}}},
		{"other device", 0x103, 0x0a, 9979882, []Holder{{PID: 77, Kind: KindPOSIX, Type: TypeRead}}},
		{"no locks", 0xfe, 0, 1, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			entries, err := parseProcLocks(strings.NewReader(table))
			if err != nil {
				t.Fatal(err)
			}
			got := holdersOfFile(entries, procFileID{tc.major, tc.minor, tc.ino})
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
	long := strings.Repeat("x", maxProcLocksLine+1)
	if _, err := parseProcLocks(strings.NewReader(long)); !errors.Is(err, errProcLocks) {
		t.Errorf("over-long line: %v, want errProcLocks", err)
	}
}

func FuzzParseProcLocks(f *testing.F) {
	f.Add([]byte("3: POSIX  ADVISORY  WRITE 5256 fe:00:9979882 0 EOF\n"), uint64(9979882))
	f.Add([]byte("3: -> FLOCK  ADVISORY  WRITE 5300 fe:00:1 0 EOF\n1: OFDLCK ADVISORY  READ -1 fe:00:1 0 EOF"), uint64(1))
	f.Add([]byte("1:\n: : :\n1: a b c d e:f:g h"), uint64(0))
	f.Fuzz(func(t *testing.T, data []byte, ino uint64) {
		entries, err := parseProcLocks(strings.NewReader(string(data)))
		hs := holdersOfFile(entries, procFileID{0xfe, 0, ino})
		if err == nil && len(hs) > strings.Count(string(data), "\n")+1 {
			t.Fatalf("%d holders from %d lines", len(hs), strings.Count(string(data), "\n")+1)
		}
	})
}

// TestLockHolders: /proc/locks shows another process's fcntl lock on
// .lock, and ours, without our opening the file.
func TestLockHolders(t *testing.T) {
	path := newLockPath(t)
	h := startHelper(t, "proc", "shared", path)
	if h.reply != replyOK {
		t.Fatalf("helper: %s %s", h.reply, h.detail)
	}
	hs, err := LockHolders(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 || hs[0] != (Holder{PID: h.pid(), Kind: KindPOSIX, Type: TypeRead}) {
		t.Fatalf("holders %+v, want the other process's POSIX READ", hs)
	}

	p := openLocker(t, path)
	g := takeGuard(t, p, "shared")
	hs, err = LockHolders(path)
	if err != nil {
		t.Fatal(err)
	}
	pids := map[int]bool{}
	for _, x := range hs {
		if x.Kind != KindPOSIX || x.Type != TypeRead {
			t.Errorf("unexpected holder %+v", x)
		}
		pids[x.PID] = true
	}
	if len(hs) != 2 || !pids[h.pid()] || !pids[os.Getpid()] {
		t.Errorf("holders %+v, want %d and %d", hs, h.pid(), os.Getpid())
	}

	h.stop()
	x := takeGuard(t, p, "exclusive")
	hs, err = LockHolders(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 || hs[0] != (Holder{PID: os.Getpid(), Kind: KindPOSIX, Type: TypeWrite}) {
		t.Errorf("holders %+v, want our POSIX WRITE", hs)
	}
	release(t, x)
	release(t, g)
	if hs, err = LockHolders(path); err != nil || len(hs) != 0 {
		t.Errorf("after release: %+v, %v", hs, err)
	}
	if _, err := LockHolders(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
