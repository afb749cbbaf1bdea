package fs

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/store"
	"golang.org/x/sys/unix"
)

// TestExactModes checks that every stored mode shows as stored through
// stat and statx, among them those without permission bits, which go-fuse
// would fill with a default.
func TestExactModes(t *testing.T) {
	src := t.TempDir()
	files := map[string]uint32{
		"m0000": 0, "m4000": 0o4000, "m2000": 0o2000, "m1000": 0o1000,
		"m7777": 0o7777, "m0644": 0o644, "m0001": 0o001,
	}
	dirs := map[string]uint32{"d0000": 0, "d1777": 0o1777, "d2000": 0o2000}
	for name := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(name), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for name := range dirs {
		if err := os.Mkdir(filepath.Join(src, name), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// Chmod last: directories without x cannot be filled.
	for name, m := range files {
		if err := unix.Chmod(filepath.Join(src, name), m); err != nil {
			t.Fatal(err)
		}
	}
	for name, m := range dirs {
		if err := unix.Chmod(filepath.Join(src, name), m); err != nil {
			t.Fatal(err)
		}
	}
	s := newStore(t, nil)
	plain := backup(t, s, snap{g: ct, t: t0, pxarDir: src})
	split := backup(t, s, snap{g: ct, t: t0.Add(time.Hour), pxarDir: src, split: true})
	mnt, _ := mountStore(t, s, Options{})
	for _, ref := range []store.SnapshotRef{plain, split} {
		root := filepath.Join(mnt, "ct/200", ref.TimeString(), "root.pxar")
		check := func(name string, want uint32) {
			t.Helper()
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(root, name), &st); err != nil {
				t.Errorf("%s: %v", name, err)
				return
			}
			if st.Mode != want {
				t.Errorf("%s %s: stat mode %o, want %o", ref.TimeString(), name, st.Mode, want)
			}
			var sx unix.Statx_t
			if err := unix.Statx(unix.AT_FDCWD, filepath.Join(root, name), unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &sx); err != nil {
				t.Errorf("%s: statx: %v", name, err)
				return
			}
			if uint32(sx.Mode) != want {
				t.Errorf("%s %s: statx mode %o, want %o", ref.TimeString(), name, sx.Mode, want)
			}
		}
		for name, m := range files {
			check(name, syscall.S_IFREG|m)
		}
		for name, m := range dirs {
			check(name, syscall.S_IFDIR|m)
		}
	}
}
