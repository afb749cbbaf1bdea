package fs

import (
	"context"
	"os"
	"path"
	"path/filepath"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/store"
)

func TestGate(t *testing.T) {
	const backup, other = 34, 1000
	for _, tc := range []struct {
		name string
		p, q perm
		need uint32
		want uint32
	}{
		// PBS: index 0644 and .chunks 0750, both backup:backup.
		{"pbs", perm{backup, backup, 0o644}, perm{backup, backup, 0o750}, 1, 0o640},
		{"chunks open to all", perm{backup, backup, 0o644}, perm{backup, backup, 0o755}, 1, 0o644},
		{"chunks owner only", perm{backup, backup, 0o644}, perm{backup, backup, 0o700}, 1, 0o600},
		// .chunks of another group: p's group members may not be in it.
		{"other group", perm{backup, backup, 0o644}, perm{backup, other, 0o750}, 1, 0o600},
		// .chunks of another owner, group-searchable for p's group; p's
		// owner may not be in that group.
		{"other owner", perm{backup, backup, 0o644}, perm{other, backup, 0o750}, 1, 0o240},
		{"owner not in group", perm{other, backup, 0o644}, perm{backup, backup, 0o750}, 1, 0o240},
		// Directories: read and search go together.
		{"dir", perm{backup, backup, 0o755}, perm{backup, backup, 0o750}, 1, 0o750},
		// Write bits are left alone (the mount refuses writes anyway).
		{"write kept", perm{backup, backup, 0o666}, perm{backup, backup, 0o700}, 1, 0o622},
		// Payload index of a split archive: read needed.
		{"payload unreadable", perm{backup, backup, 0o644}, perm{backup, backup, 0o600}, 4, 0o600},
	} {
		if got := tc.p.gate(tc.q, tc.need); got.mode != tc.want || got.uid != tc.p.uid || got.gid != tc.p.gid {
			t.Errorf("%s: gate %o by %o = %o (%d:%d), want %o", tc.name, tc.p.mode, tc.q.mode, got.mode, got.uid, got.gid, tc.want)
		}
	}
}

// TestDiskPerms: hierarchy nodes take owner and mode from disk; archives
// are gated by .chunks; the root is closed to who cannot reach the store.
func TestDiskPerms(t *testing.T) {
	s := newStore(t, nil)
	ref := backup(t, s, snap{g: vm, t: t0, image: randomBytes(1, 1<<20), blobs: map[string][]byte{"qemu-server.conf": []byte("x")}})
	m := NewRoot(context.Background(), s, Options{}).(*nsNode).m
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chown(s.Path(ref.Group.Dir()), 34, 34))
	must(os.Chmod(s.Path(ref.Group.Dir()), 0o750))
	if p := m.hierPerm(ref.Group.Dir(), true); p != (perm{34, 34, 0o750}) {
		t.Errorf("group: %+v", p)
	}
	must(os.Chmod(s.Path(ref.Dir()+"/qemu-server.conf.blob"), 0o600))
	if p := m.hierPerm(path.Join(ref.Dir(), "qemu-server.conf.blob"), false); p.mode != 0o600 {
		t.Errorf("blob: %+v", p)
	}
	if p := m.archivePerm(ref.Dir(), false, "drive-scsi0.img.fidx"); p.mode != 0o640 {
		t.Errorf("image with .chunks 0750: %+v", p)
	}
	if p := m.archivePerm(ref.Dir(), true, "drive-scsi0.img.fidx"); p.mode != 0o750 {
		t.Errorf("archive directory with .chunks 0750: %+v", p)
	}
	// The store lies in a 0700 temp directory: only its owner reaches it.
	parent := filepath.Dir(s.Root())
	must(os.Chmod(parent, 0o700))
	if p := m.hierPerm("", true); p.mode != 0o700 {
		t.Errorf("root below a 0700 directory: %o", p.mode)
	}
	for d := parent; d != filepath.Clean(os.TempDir()); d = filepath.Dir(d) {
		must(os.Chmod(d, 0o755))
	}
	if p := m.hierPerm("", true); p.mode != 0o755 {
		t.Errorf("root below a 0755 directory: %o", p.mode)
	}
	// A removed snapshot: the mount's user alone.
	if p := m.hierPerm(ref.Dir()+"x", true); p.mode != 0o700 || p.uid != uint32(os.Getuid()) {
		t.Errorf("gone: %+v", p)
	}
}

// TestChunkPrefixGate: an archive one of whose chunks lies in a prefix
// directory (.chunks/XXXX) that others cannot search on disk is closed to
// them like one behind .chunks itself; an archive whose chunks all lie in
// open prefix directories keeps its index's mode. The prefix directory is
// looked at once per mount, and only with --allow-other: without it no
// prefix directory (nor the index) is looked at.
func TestChunkPrefixGate(t *testing.T) {
	s := newStore(t, nil)
	a := backup(t, s, snap{g: vm, t: t0, image: randomBytes(11, 1<<20)})
	b := backup(t, s, snap{g: vm, t: t0.Add(time.Hour), image: randomBytes(12, 1<<20)})
	prefixOf := func(ref store.SnapshotRef) string {
		idx, err := s.OpenIndex(ref, "drive-scsi0.img.fidx")
		if err != nil {
			t.Fatal(err)
		}
		d, _, _ := idx.Chunk(0)
		return d.String()[:4]
	}
	pa, pb := prefixOf(a), prefixOf(b)
	if pa == pb {
		t.Skip("both images' chunks share a prefix directory")
	}
	chunks := s.Path(".chunks")
	if err := os.Chmod(chunks, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{pa, pb} {
		os.Chmod(filepath.Join(chunks, p), 0o755)
	}
	os.Chmod(s.Path(a.Dir()+"/drive-scsi0.img.fidx"), 0o644)
	os.Chmod(s.Path(b.Dir()+"/drive-scsi0.img.fidx"), 0o644)
	m := NewRoot(context.Background(), s, Options{AllowOther: true}).(*nsNode).m
	if p := m.archivePerm(a.Dir(), false, "drive-scsi0.img.fidx"); p.mode != 0o644 {
		t.Errorf("image, its prefix directory 0755: %o", p.mode)
	}
	if err := os.Chmod(filepath.Join(chunks, pa), 0o700); err != nil {
		t.Fatal(err)
	}
	own := NewRoot(context.Background(), s, Options{}).(*nsNode).m
	if p := own.archivePerm(a.Dir(), false, "drive-scsi0.img.fidx"); p.mode != 0o644 {
		t.Errorf("image without --allow-other, its prefix directory 0700: %o", p.mode)
	}
	if n := len(own.prefixPerms) + len(own.chunkGates); n != 0 {
		t.Errorf("without --allow-other %d prefix directories or indexes looked at", n)
	}
	m = NewRoot(context.Background(), s, Options{AllowOther: true}).(*nsNode).m
	for range 2 {
		if p := m.archivePerm(a.Dir(), false, "drive-scsi0.img.fidx"); p.mode != 0o600 {
			t.Errorf("image, its prefix directory 0700: %o", p.mode)
		}
		if p := m.archivePerm(a.Dir(), true, "drive-scsi0.img.fidx"); p.mode != 0o700 {
			t.Errorf("archive directory, its prefix directory 0700: %o", p.mode)
		}
		if p := m.archivePerm(b.Dir(), false, "drive-scsi0.img.fidx"); p.mode != 0o644 {
			t.Errorf("other image, its prefix directory 0755: %o", p.mode)
		}
	}
	// Looked at once: a change after the first look is not seen by this
	// mount (a new mount sees it).
	os.Chmod(filepath.Join(chunks, pa), 0o755)
	if p := m.archivePerm(a.Dir(), false, "drive-scsi0.img.fidx"); p.mode != 0o600 {
		t.Errorf("prefix directory looked at again: %o", p.mode)
	}
	if n := len(m.prefixPerms); n != 2 {
		t.Errorf("%d prefix directories looked at, want 2", n)
	}
}
