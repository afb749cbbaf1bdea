package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/internal/testutil"
	"github.com/pbsfs/pbsfs/store"
	"golang.org/x/sys/unix"
)

// TestGCStress runs, round after round, two backups that reuse the
// previous round's chunks, an rm -r prune through the mount, a forget
// outside it and back-to-back garbage collections in the mount (cutoff one
// minute), all at once. Between rounds every chunk's atime is set three
// days back, so anything a collection fails to mark is really deleted.
// At the end every remaining snapshot is verified chunk by chunk: no chunk
// may be lost. PBSFS_STRESS_ROUNDS sets the number of rounds (default 20).
func TestGCStress(t *testing.T) {
	testutil.RequireFUSE(t)
	rounds := envInt("PBSFS_STRESS_ROUNDS", 20)
	e := newEnv(t)
	src := t.TempDir()
	tree := filepath.Join(src, "tree")
	genTree(t, tree, 300)
	imgA, imgB := filepath.Join(src, "a.img"), filepath.Join(src, "b.img")
	randomFile(t, imgA, 24<<20, 1)
	randomFile(t, imgB, 24<<20, 2)
	mnt, _ := e.mount(t, "--gc-interval", "50ms", "--gc-cutoff", "1m")
	gcLock := filepath.Join(e.run, "pbsfs", e.open(t).Name(), "gc.lock")

	when := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mountRemovals, outsideRemovals int
	for r := range rounds {
		// Each round changes one 4 MiB block of each image and a file of
		// the tree, so every backup has new chunks and reuses old ones.
		for i, img := range []string{imgA, imgB} {
			f, err := os.OpenFile(img, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt([]byte(fmt.Sprintf("round %d image %d", r, i)), int64((r%6)<<22))
			f.Close()
		}
		os.WriteFile(filepath.Join(tree, "round"), []byte(strconv.Itoa(r)), 0o644)
		when = when.Add(time.Hour)
		snapsA, snapsB := e.snapshots(t, "vm/100"), e.snapshots(t, "ct/200")

		var wg sync.WaitGroup
		errs := make(chan error, 8)
		step := func(name string, f func() error) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := f(); err != nil {
					errs <- fmt.Errorf("round %d %s: %w", r, name, err)
				}
			}()
		}
		step("backup A", func() error {
			out, err := e.try("backup", "--no-progress", "--type", "vm", "--id", "100", "--time", when.Format(time.RFC3339),
				"drive-scsi0.img:"+imgA, "root.pxar:"+tree)
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
		step("backup B", func() error {
			out, err := e.try("backup", "--no-progress", "--type", "ct", "--id", "200", "--time", when.Format(time.RFC3339),
				"drive-scsi0.img:"+imgB, "root.pxar:"+tree)
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
		if len(snapsA) > 2 { // keep the newest two, and the base of the running backup
			step("rm -r through the mount", func() error {
				mountRemovals++
				out, err := run("rm", "-r", filepath.Join(mnt, "vm/100", snapsA[0]))
				if err != nil {
					return fmt.Errorf("%v: %s", err, out)
				}
				return nil
			})
		}
		if len(snapsB) > 2 {
			step("forget outside the mount", func() error {
				outsideRemovals++
				out, err := e.try("forget", "ct/200/"+snapsB[0])
				if err != nil {
					return fmt.Errorf("%v: %s", err, out)
				}
				return nil
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		// Time passes: with no collection running, every chunk looks
		// three days old; only marking can save it now.
		ageChunks(t, e.store, gcLock, time.Now().Add(-72*time.Hour))
	}
	// A last collection after the final ageing, in this process's view.
	ageChunks(t, e.store, gcLock, time.Now().Add(-72*time.Hour))
	var out string
	for i := 0; ; i++ { // the mount's daemon may hold the gc lock for a moment
		var err error
		if out, err = e.try("gc", "--no-progress", "--cutoff", "1m"); err == nil {
			break
		}
		if i == 100 || !strings.Contains(out, "already running") {
			t.Fatalf("gc: %v\n%s", err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	verify, verr := e.try("verify", "--no-progress")
	if verr != nil || !strings.Contains(verify, " 0 failed") {
		t.Fatalf("verify after %d rounds: %v\n%s", rounds, verr, verify)
	}
	// Both ways wrong would show here: after the last collection the
	// store holds exactly the chunks the remaining snapshots reference.
	referenced, onDisk := referencedChunks(t, e), chunkFiles(t, e.store)
	t.Logf("%d rounds, %d removals through the mount, %d outside; %d chunks referenced, %d on disk, 0 lost; %s",
		rounds, mountRemovals, outsideRemovals, referenced, onDisk, strings.TrimSpace(verify))
	if onDisk != referenced {
		t.Errorf("%d chunk files on disk, %d referenced: the collection left garbage", onDisk, referenced)
	}
	if mountRemovals == 0 || outsideRemovals == 0 {
		t.Errorf("rounds removed nothing (%d through the mount, %d outside)", mountRemovals, outsideRemovals)
	}
}

// referencedChunks counts the distinct chunks of every remaining snapshot,
// and the one the collector keeps for its self-test.
func referencedChunks(t *testing.T, e *env) int {
	s := e.open(t)
	seen := map[store.Digest]bool{}
	groups, _, err := s.Groups("")
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		snaps, _, _ := s.Snapshots(g)
		for _, si := range snaps {
			for _, f := range si.Files {
				if store.KindOf(f) == store.KindBlob {
					continue
				}
				idx, err := s.OpenIndex(si.Ref, f)
				if err != nil {
					t.Fatal(err)
				}
				for i := range idx.Len() {
					d, _, _ := idx.Chunk(i)
					seen[d] = true
				}
			}
		}
	}
	// The atime self-test keeps the chunk of 4 MiB of zeros alive, as
	// PBS's does (spec §6.5).
	seen[store.DigestOf(make([]byte, 4<<20))] = true
	return len(seen)
}

func chunkFiles(t *testing.T, root string) int {
	n := 0
	filepath.WalkDir(filepath.Join(root, ".chunks"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// ageChunks sets the atime of every chunk file to when, holding the gc
// lock so no collection is between its mark and its sweep meanwhile.
func ageChunks(t *testing.T, root, gcLock string, when time.Time) {
	t.Helper()
	os.MkdirAll(filepath.Dir(gcLock), 0o755)
	f, err := os.OpenFile(gcLock, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	n, err := testutil.AgeChunks(root, when)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no chunk to age")
	}
}
