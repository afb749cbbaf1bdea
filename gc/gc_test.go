package gc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/store"
)

func TestCutoff(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	pbs := PBSSafety()
	tests := []struct {
		name   string
		oldest time.Time
		safety Safety
		want   time.Time
	}{
		{"no writer", start, pbs, start.Add(-24*time.Hour - 5*time.Minute)},
		{"young writer", start.Add(-time.Hour), pbs, start.Add(-24*time.Hour - 5*time.Minute)},
		{"old writer", start.Add(-48 * time.Hour), pbs, start.Add(-48*time.Hour - 5*time.Minute)},
		// PBS 2025+ keeps start-cutoff here; the minimum is 2 minutes earlier.
		{"writer in the margin band", start.Add(-24*time.Hour - 2*time.Minute), pbs, start.Add(-24*time.Hour - 7*time.Minute)},
		{"short cutoff", start, Safety{Cutoff: 5 * time.Minute, WriterMargin: 5 * time.Minute}, start.Add(-5 * time.Minute)},
		{"short cutoff, writer", start.Add(-time.Minute), Safety{Cutoff: 5 * time.Minute, WriterMargin: 5 * time.Minute}, start.Add(-6 * time.Minute)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := cutoff(start, tc.oldest, tc.safety); !got.Equal(tc.want) {
				t.Errorf("cutoff = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSweepBands checks each band of the sweep and its statistics:
// referenced aged chunks stay (touched), unreferenced aged ones go,
// unreferenced young ones are pending, and .bad copies and stale temp
// files are handled as documented.
func TestSweepBands(t *testing.T) {
	ts := newTestStore(t)
	g := group("bands")
	used := ts.chunks(3)
	garbage := ts.chunks(2)
	young := ts.chunks(1)
	ts.snapshot(snapRef(g, 0), used)
	ts.age(3*days, used...)
	ts.age(3*days, garbage...)
	ts.age(time.Hour, young...)

	size := func(p string) uint64 {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return uint64(fi.Size())
	}
	oldBad := ts.Chunks().Path(garbage[0]) + ".0.bad"
	youngBad := ts.Chunks().Path(young[0]) + ".1.bad"
	tmpOld := ts.Chunks().Path(garbage[1]) + ".tmp_123456"
	for _, p := range []string{oldBad, youngBad, tmpOld} {
		if err := os.WriteFile(p, []byte("bad copy"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ts.agePath(oldBad, 3*days)
	ts.agePath(youngBad, time.Hour)
	ts.agePath(tmpOld, 3*days)

	var wantRemoved, wantPending uint64
	for _, d := range garbage {
		wantRemoved += size(ts.Chunks().Path(d))
	}
	wantRemoved += size(oldBad)
	wantPending = size(ts.Chunks().Path(young[0])) + size(youngBad)

	st := run(t, ts.collector(Options{}))
	if lost := ts.lost(used); len(lost) > 0 {
		t.Errorf("referenced chunks removed: %v", lost)
	}
	if lost := ts.lost(young); len(lost) > 0 {
		t.Errorf("young chunk removed: %v", lost)
	}
	for _, d := range garbage {
		if ts.exists(d) {
			t.Errorf("unreferenced aged chunk %s kept", d)
		}
	}
	for p, want := range map[string]bool{oldBad: false, youngBad: true, tmpOld: false} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s: exists=%v, want %v", filepath.Base(p), err == nil, want)
		}
	}
	for _, d := range used {
		info, err := ts.Chunks().Stat(context.Background(), d)
		if err != nil {
			t.Fatal(err)
		}
		if info.Atime.Before(st.Start.Add(-time.Second)) {
			t.Errorf("referenced chunk %s not touched: atime %v", d, info.Atime)
		}
	}
	want := Status{IndexFileCount: 1, IndexDataBytes: 3 * 512,
		DiskChunks:    4, // used + the zero chunk of the atime check
		RemovedChunks: 2, RemovedBytes: wantRemoved, RemovedBad: 1,
		PendingChunks: 1, PendingBytes: wantPending, StillBad: 1}
	got := st
	got.UPID, got.CacheStats, got.DiskBytes = nil, nil, 0
	want.Start, want.MinAtime, want.OldestWriter = st.Start, st.MinAtime, st.OldestWriter
	want.RemovedTemp, want.Touches = 1, 3
	want.MarkTime, want.SweepTime = st.MarkTime, st.SweepTime
	if got != want {
		t.Errorf("status:\n got %+v\nwant %+v", got, want)
	}
	if st.CacheStats == nil || st.CacheStats.Misses != 3 || st.CacheStats.Hits != 0 {
		t.Errorf("cache stats %+v, want 0 hits, 3 misses", st.CacheStats)
	}
}

// TestTouchOncePerRun checks the in-memory set: chunks shared by several
// indexes are touched once.
func TestTouchOncePerRun(t *testing.T) {
	ts := newTestStore(t)
	shared := ts.chunks(4)
	for i := range 5 {
		ts.snapshot(snapRef(group(fmt.Sprint("g", i)), 0), shared)
	}
	st := run(t, ts.collector(Options{}))
	if st.Touches != 4 || st.CacheStats.Misses != 4 || st.CacheStats.Hits != 16 {
		t.Errorf("touches %d, cache %+v; want 4 touches, 16 hits", st.Touches, st.CacheStats)
	}
	if st.IndexFileCount != 5 || st.IndexDataBytes != 5*4*512 {
		t.Errorf("index files %d bytes %d", st.IndexFileCount, st.IndexDataBytes)
	}
}

// TestCacheCapacity: a bounded set touches recurring chunks again, and
// still marks everything.
func TestCacheCapacity(t *testing.T) {
	ts := newTestStore(t)
	shared := ts.chunks(600)
	for i := range 3 {
		ts.snapshot(snapRef(group(fmt.Sprint("g", i)), 0), shared)
	}
	ts.age(3*days, shared...)
	st := run(t, ts.collector(Options{CacheCapacity: 256})) // one digest per shard
	if lost := ts.lost(shared); len(lost) > 0 {
		t.Fatalf("lost %d chunks", len(lost))
	}
	if st.Touches <= 600 || st.Touches > 1800 || st.CacheStats.Hits+st.CacheStats.Misses != 1800 {
		t.Errorf("touches %d, cache %+v; want more than 600 touches of 1800 references", st.Touches, st.CacheStats)
	}
}

func TestMissingChunkKeepsBad(t *testing.T) {
	ts := newTestStore(t)
	ds := ts.chunks(2)
	ts.snapshot(snapRef(group("missing"), 0), ds)
	gone := ts.Chunks().Path(ds[0])
	bad0, bad3 := gone+".0.bad", gone+".3.bad"
	for _, p := range []string{bad0, bad3} {
		if err := os.WriteFile(p, []byte("corrupt copy"), 0o644); err != nil {
			t.Fatal(err)
		}
		ts.agePath(p, 3*days)
	}
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	ts.age(3*days, ds[1])

	st := run(t, ts.collector(Options{}))
	for _, p := range []string{bad0, bad3} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf(".bad copy of a missing chunk removed: %v", err)
		}
	}
	if !ts.exists(ds[1]) {
		t.Error("referenced chunk removed")
	}
	if st.MissingChunks != 1 || st.StillBad != 0 || st.RemovedBad != 0 {
		t.Errorf("missing %d still-bad %d removed-bad %d", st.MissingChunks, st.StillBad, st.RemovedBad)
	}
	if !strings.Contains(ts.log.String(), "unable to access non-existent chunk") || !strings.Contains(ts.log.String(), ds[0].String()) {
		t.Errorf("no warning naming the missing chunk in log:\n%s", ts.log)
	}
}

func TestCorruptIndexAborts(t *testing.T) {
	tests := []struct {
		name    string
		content []byte
	}{
		{"garbage", []byte("not an index at all")},
		{"empty file", nil},
		{"bad magic", bytes.Repeat([]byte{0xaa}, 4096+40)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestStore(t)
			garbage := ts.chunks(2)
			ts.age(3*days, garbage...)
			ts.snapshot(snapRef(group("good"), 0), ts.chunks(1))
			bad := snapRef(group("bad"), 0)
			ts.mkSnapshot(bad)
			if err := os.WriteFile(ts.Path(path.Join(bad.Dir(), "drive-scsi0.img.fidx")), tc.content, 0o644); err != nil {
				t.Fatal(err)
			}
			ts.finish(bad)
			_, err := ts.collector(Options{}).Run(context.Background())
			if !errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("Run = %v, want ErrCorrupt", err)
			}
			if lost := ts.lost(garbage); len(lost) > 0 {
				t.Errorf("swept after an incomplete mark: %v", lost)
			}
			if _, err := os.Stat(ts.Path(".gc-status")); err == nil {
				t.Error(".gc-status written by a failed run")
			}
		})
	}
}

// TestSeedRace is PBS's race (spec §6.3): phase 1 lists a group; a new
// snapshot reusing the chunks of the newest listed one without touching
// them lands; the old one is removed outside the mount before phase 1
// reads its index. The relisting keeps the chunks; without it they go.
func TestSeedRace(t *testing.T) {
	tests := []struct {
		name     string
		off      safeguards
		wantLost bool
	}{
		{"relisting", safeguards{}, false},
		{"PBS rule only", safeguards{relistFinished: true}, false},
		{"no relisting", safeguards{relistNewest: true, relistFinished: true}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestStore(t)
			g := group("race")
			base := ts.chunks(5)
			s0, s1 := snapRef(g, 0), snapRef(g, 60)
			ts.snapshot(s0, base)
			ts.age(3*days, base...)
			hooks := Hooks{AfterGroupListed: func(ctx context.Context, lg store.GroupRef, snaps []store.SnapshotInfo, relists int) {
				if lg != g || relists != 0 {
					return
				}
				ts.snapshot(s1, base) // reuses without touching
				ts.removeOutside(s0)  // a PBS prune
			}}
			st, err := ts.collector(Options{Hooks: hooks, off: tc.off}).Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			lost := ts.lost(base)
			if tc.wantLost != (len(lost) == len(base)) {
				t.Errorf("lost %d of %d chunks still referenced by %s; want lost=%v", len(lost), len(base), s1, tc.wantLost)
			}
			if !tc.wantLost && st.IndexFileCount != 1 {
				t.Errorf("index files %d, want 1 (the new snapshot)", st.IndexFileCount)
			}
		})
	}
}

// TestInProgressWindow is the window PBS's fix leaves (spec §6.3, R3): the
// newest listed snapshot is a backup still running, so only its base can
// vanish. pbsfs relists then; PBS's rule alone loses the chunks.
func TestInProgressWindow(t *testing.T) {
	tests := []struct {
		name     string
		off      safeguards
		wantLost bool
	}{
		{"R3", safeguards{}, false},
		{"PBS rule only", safeguards{relistFinished: true}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestStore(t)
			g := group("window")
			base := ts.chunks(5)
			s0, s1 := snapRef(g, 0), snapRef(g, 60)
			ts.snapshot(s0, base)
			ts.age(3*days, base...)
			ts.mkSnapshot(s1) // the backup has started, no index yet
			hooks := Hooks{AfterGroupListed: func(ctx context.Context, lg store.GroupRef, snaps []store.SnapshotInfo, relists int) {
				if lg != g || relists != 0 {
					return
				}
				if len(snaps) != 2 || snaps[1].Finished || len(snaps[1].Files) != 0 {
					t.Errorf("listing %+v, want s0 and an empty s1", snaps)
				}
				ts.snapshot(s1, base) // finishes, reusing without touching
				ts.removeOutside(s0)  // then its base is pruned
			}}
			if _, err := ts.collector(Options{Hooks: hooks, off: tc.off}).Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			lost := ts.lost(base)
			if tc.wantLost != (len(lost) == len(base)) {
				t.Errorf("lost %d of %d chunks; want lost=%v", len(lost), len(base), tc.wantLost)
			}
		})
	}
}

// TestOldPruneNoRelist checks that removing an old snapshot, nobody's
// base, does not make phase 1 list the group again.
func TestOldPruneNoRelist(t *testing.T) {
	ts := newTestStore(t)
	g := group("old")
	for i := range 3 {
		ts.snapshot(snapRef(g, int64(i)), ts.chunks(1))
	}
	listings := 0
	hooks := Hooks{
		AfterGroupListed: func(context.Context, store.GroupRef, []store.SnapshotInfo, int) { listings++ },
		BeforeIndexOpen: func(_ context.Context, p string) {
			if strings.Contains(p, snapRef(g, 0).TimeString()) {
				ts.removeOutside(snapRef(g, 0))
			}
		},
	}
	run(t, ts.collector(Options{Hooks: hooks}))
	if listings != 1 {
		t.Errorf("group listed %d times, want 1", listings)
	}
}

// TestWillRemoveDuringMark: the same race with the removal made through
// the mount, which calls WillRemove. Relisting is off in both cases, so
// that only the observer is tested.
func TestWillRemoveDuringMark(t *testing.T) {
	tests := []struct {
		name     string
		off      safeguards
		wantLost bool
	}{
		{"observer", safeguards{relistNewest: true, relistFinished: true}, false},
		{"no observer", safeguards{relistNewest: true, relistFinished: true, willRemove: true}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestStore(t)
			g := group("observed")
			base := ts.chunks(5)
			s0, s1 := snapRef(g, 0), snapRef(g, 60)
			ts.snapshot(s0, base)
			ts.age(3*days, base...)
			var c *Collector
			hooks := Hooks{AfterGroupListed: func(ctx context.Context, lg store.GroupRef, snaps []store.SnapshotInfo, relists int) {
				if lg != g || relists != 0 {
					return
				}
				ts.snapshot(s1, base)
				if err := ts.RemoveSnapshot(ctx, s0, c.WillRemove); err != nil { // rm -r through the mount
					t.Error(err)
				}
			}}
			c = ts.collector(Options{Hooks: hooks, off: tc.off})
			run(t, c)
			lost := ts.lost(base)
			if tc.wantLost != (len(lost) == len(base)) {
				t.Errorf("lost %d of %d chunks; want lost=%v", len(lost), len(base), tc.wantLost)
			}
		})
	}
}

// TestWillRemoveIdle checks that WillRemove outside phase 1 touches nothing.
func TestWillRemoveIdle(t *testing.T) {
	ts := newTestStore(t)
	ds := ts.chunks(1)
	ref := snapRef(group("idle"), 0)
	ts.snapshot(ref, ds)
	ts.age(3*days, ds...)
	before, _ := ts.Chunks().Stat(context.Background(), ds[0])
	if err := ts.collector(Options{}).WillRemove(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
	after, _ := ts.Chunks().Stat(context.Background(), ds[0])
	if !after.Atime.Equal(before.Atime) {
		t.Errorf("idle WillRemove touched a chunk")
	}
}

// TestWillRemoveCorruptFailsRun: an unparsable index of a snapshot the
// mount removes during phase 1 lets the removal go and fails the run.
func TestWillRemoveCorruptFailsRun(t *testing.T) {
	ts := newTestStore(t)
	garbage := ts.chunks(1)
	ts.age(3*days, garbage...)
	g := group("corrupt")
	ref := snapRef(g, 0)
	ts.mkSnapshot(ref)
	p := ts.Path(path.Join(ref.Dir(), "x.fidx"))
	var c *Collector
	hooks := Hooks{AfterGroupListed: func(ctx context.Context, lg store.GroupRef, _ []store.SnapshotInfo, _ int) {
		if lg != g {
			return
		}
		if err := os.WriteFile(p, []byte("junk"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := ts.RemoveSnapshot(ctx, ref, c.WillRemove); err != nil {
			t.Errorf("removal refused: %v", err)
		}
	}}
	c = ts.collector(Options{Hooks: hooks})
	if _, err := c.Run(context.Background()); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("Run = %v, want ErrCorrupt", err)
	}
	if !ts.exists(garbage[0]) {
		t.Error("swept after a failed mark")
	}
}

// TestRelistBound: a group whose newest snapshot keeps vanishing is
// relisted 10 times, then locked, then the run fails.
func TestRelistBound(t *testing.T) {
	ts := newTestStore(t)
	g := group("churn")
	for i := range 13 {
		ts.snapshot(snapRef(g, int64(i)), ts.chunks(1))
	}
	lockedAt := -1
	hooks := Hooks{
		AfterGroupListed: func(_ context.Context, _ store.GroupRef, _ []store.SnapshotInfo, relists int) {
			l, err := ts.Locks().LockGroup(nil, g.Type, g.ID, true)
			if err == nil {
				l.Unlock()
			} else if errors.Is(err, store.ErrLocked) && lockedAt < 0 {
				lockedAt = relists
			}
		},
		BeforeIndexOpen: func(_ context.Context, p string) {
			os.RemoveAll(filepath.Dir(p)) // the snapshot vanishes just before it is read
		},
	}
	_, err := ts.collector(Options{Hooks: hooks}).Run(context.Background())
	if !errors.Is(err, ErrRelists) {
		t.Fatalf("Run = %v, want ErrRelists", err)
	}
	if lockedAt != maxRelists {
		t.Errorf("group lock taken at relist %d, want %d", lockedAt, maxRelists)
	}
}

// TestConcurrentInsertDuringSweep: an insert of a chunk that finds it
// present and reuses it, while the sweep has condemned it. The prefix lock
// makes the insert wait and write it again; without it the reused chunk
// is lost.
func TestConcurrentInsertDuringSweep(t *testing.T) {
	tests := []struct {
		name     string
		off      safeguards
		wantLost bool
	}{
		{"prefix lock", safeguards{}, false},
		{"no prefix lock", safeguards{prefixLock: true}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestStore(t)
			data := []byte("a chunk a concurrent backup reuses")
			d := store.DigestOf(data)
			blob, _ := ts.Codec().Encode(data, false)
			if _, err := ts.Chunks().Insert(context.Background(), d, blob); err != nil {
				t.Fatal(err)
			}
			ts.age(3*days, d)

			chunks := ts.Chunks()
			orig := chunks.PrefixLock
			locking := make(chan struct{}, 1)
			chunks.PrefixLock = func(p uint16, excl bool) (func(), error) {
				locking <- struct{}{}
				return orig(p, excl)
			}
			type result struct {
				dup bool
				err error
			}
			done := make(chan result, 1)
			test := testHooks{beforeUnlink: func(p string) {
				if p != chunks.Path(d) {
					return
				}
				go func() {
					dup, err := chunks.Insert(context.Background(), d, blob)
					done <- result{dup, err}
				}()
				<-locking // the insert is at its prefix lock
				if tc.off.prefixLock {
					<-done // nothing holds it back: it reuses the chunk
					done <- result{true, nil}
				}
			}}
			run(t, ts.collector(Options{off: tc.off, test: test}))
			res := <-done
			if res.err != nil {
				t.Fatal(res.err)
			}
			if lost := !ts.exists(d); lost != tc.wantLost {
				t.Errorf("chunk lost=%v (insert reported dup=%v), want lost=%v", lost, res.dup, tc.wantLost)
			}
		})
	}
}

func TestSecondGCInProcess(t *testing.T) {
	tests := []struct {
		name    string
		off     safeguards
		wantErr bool
	}{
		{"gc lock", safeguards{}, true},
		{"no gc lock", safeguards{gcLock: true}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestStore(t)
			entered, release := make(chan struct{}), make(chan struct{})
			first := true
			hooks := Hooks{BeforeSweep: func(context.Context) {
				if first {
					first = false
					close(entered)
					<-release
				}
			}}
			c1 := ts.collector(Options{Hooks: hooks, off: tc.off})
			errc := make(chan error, 1)
			go func() { _, err := c1.Run(context.Background()); errc <- err }()
			<-entered
			_, err := ts.collector(Options{off: tc.off}).Run(context.Background())
			close(release)
			if err1 := <-errc; err1 != nil {
				t.Fatal(err1)
			}
			if got := errors.Is(err, ErrRunning); got != tc.wantErr {
				t.Fatalf("second Run = %v, want ErrRunning=%v", err, tc.wantErr)
			}
			if tc.wantErr && !strings.Contains(err.Error(), fmt.Sprintf("pid %d (this process)", os.Getpid())) {
				t.Errorf("error does not name the holder: %v", err)
			}
		})
	}
}

func TestDryRun(t *testing.T) {
	ts := newTestStore(t)
	garbage := ts.chunks(3)
	ts.age(3*days, garbage...)
	st := run(t, ts.collector(Options{DryRun: true}))
	if lost := ts.lost(garbage); len(lost) > 0 {
		t.Errorf("dry run removed %d chunks", len(lost))
	}
	if st.RemovedChunks != 3 || !st.DryRun {
		t.Errorf("dry run reports %d removable chunks, want 3", st.RemovedChunks)
	}
	if _, err := os.Stat(ts.Path(".gc-status")); err == nil {
		t.Error("dry run wrote .gc-status")
	}
}

// TestGCStatusFile checks .gc-status: one line of JSON with PBS's keys in
// PBS's order (spec §1.6) and the values of the run.
func TestGCStatusFile(t *testing.T) {
	ts := newTestStore(t)
	ts.snapshot(snapRef(group("st"), 0), ts.chunks(2))
	ts.age(3*days, ts.chunks(1)...)
	st := run(t, ts.collector(Options{}))
	b, err := os.ReadFile(ts.Path(".gc-status"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.ContainsAny(b, "\n ") {
		t.Errorf(".gc-status is not one compact line: %q", b)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var keys []string
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' {
				depth++
			} else if v == '}' {
				depth--
			}
		case string:
			if depth == 1 && len(keys)%1 == 0 {
				keys = append(keys, v)
				if dec.More() {
					// skip the value
					var raw json.RawMessage
					if err := dec.Decode(&raw); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
	want := []string{"upid", "index-file-count", "index-data-bytes", "disk-bytes", "disk-chunks",
		"removed-bytes", "removed-chunks", "pending-bytes", "pending-chunks", "removed-bad", "still-bad", "cache-stats"}
	if strings.Join(keys, ",") != strings.Join(want, ",") {
		t.Errorf("keys\n got %v\nwant %v", keys, want)
	}
	var back Status
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.UPID != nil || back.IndexFileCount != 1 || back.RemovedChunks != 1 || back.DiskChunks != st.DiskChunks ||
		back.DiskBytes != st.DiskBytes || *back.CacheStats != *st.CacheStats {
		t.Errorf(".gc-status %s does not match the run %+v", b, st)
	}
	if !bytes.HasPrefix(b, []byte(`{"upid":null,"index-file-count":1,`)) {
		t.Errorf(".gc-status starts %q", b[:40])
	}
}

func TestShortCutoff(t *testing.T) {
	ts := newTestStore(t)
	short := Safety{Cutoff: 5 * time.Minute, WriterMargin: 5 * time.Minute}
	if _, err := ts.collector(Options{Safety: short, SkipAtimeCheck: true}).Run(context.Background()); !errors.Is(err, ErrUnsafeCutoff) {
		t.Fatalf("short cutoff without the self-test: %v, want ErrUnsafeCutoff", err)
	}
	if _, err := ts.collector(Options{Safety: Safety{Cutoff: time.Second}}).Run(context.Background()); !errors.Is(err, ErrUnsafeCutoff) {
		t.Fatalf("cutoff of a second: %v, want ErrUnsafeCutoff", err)
	}
	old, fresh := ts.chunks(1), ts.chunks(1)
	ts.age(10*time.Minute, old...)
	ts.age(time.Minute, fresh...)
	st := run(t, ts.collector(Options{Safety: short}))
	if ts.exists(old[0]) || !ts.exists(fresh[0]) || st.PendingChunks != 1 {
		t.Errorf("5 min cutoff: old kept=%v fresh kept=%v pending=%d", ts.exists(old[0]), ts.exists(fresh[0]), st.PendingChunks)
	}
}

func TestAtimeCheckFails(t *testing.T) {
	ts := newTestStore(t)
	garbage := ts.chunks(1)
	ts.age(3*days, garbage...)
	noop := testHooks{touch: func(string) error { return nil }} // a file system ignoring atime updates
	_, err := ts.collector(Options{test: noop}).Run(context.Background())
	if !errors.Is(err, ErrAtimeCheck) {
		t.Fatalf("Run = %v, want ErrAtimeCheck", err)
	}
	if !ts.exists(garbage[0]) {
		t.Error("swept although the atime check failed")
	}
	// The zero chunk of the check exists and has PBS's digest.
	d, _ := store.ParseDigest(zeroChunkDigest)
	if !ts.exists(d) {
		t.Error("zero chunk missing")
	}
}

// TestPin: an index pinned by the mount (a removed snapshot whose file is
// still open) keeps its chunks; unpinned they go.
func TestPin(t *testing.T) {
	tests := []struct {
		name     string
		off      safeguards
		wantLost bool
	}{
		{"pins", safeguards{}, false},
		{"no pins", safeguards{pins: true}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestStore(t)
			ds := ts.chunks(3)
			ref := snapRef(group("open"), 0)
			ts.snapshot(ref, ds)
			idx, err := ts.OpenIndex(ref, "root.pxar.didx")
			if err != nil {
				t.Fatal(err)
			}
			c := ts.collector(Options{off: tc.off})
			unpin := c.Pin(idx)
			ts.removeOutside(ref)
			ts.age(3*days, ds...)
			run(t, c)
			if lost := ts.lost(ds); (len(lost) == len(ds)) != tc.wantLost {
				t.Fatalf("lost %d of %d pinned chunks, want lost=%v", len(lost), len(ds), tc.wantLost)
			}
			if tc.wantLost {
				return
			}
			// The open file of the removed snapshot reads to the end.
			var buf bytes.Buffer
			if n, err := ts.NewArchive(context.Background(), idx).WriteTo(&buf); err != nil || n != int64(len(ds))*512 {
				t.Errorf("reading the pinned archive after the run: %d bytes, %v", n, err)
			}
			unpin()
			ts.age(3*days, ds...)
			run(t, c)
			if lost := ts.lost(ds); len(lost) != len(ds) {
				t.Errorf("unpinned chunks kept: %d of %d lost", len(lost), len(ds))
			}
		})
	}
}

func TestNamespacesAndStrayIndexes(t *testing.T) {
	ts := newTestStore(t)
	ns := store.Namespace("a/b")
	if err := ts.CreateNamespace(ns); err != nil {
		t.Fatal(err)
	}
	inNS := ts.chunks(2)
	g := store.GroupRef{NS: ns, Type: store.TypeVM, ID: "100"}
	ts.snapshot(store.SnapshotRef{Group: g, Time: time.Unix(1_700_000_000, 0).UTC()}, inNS)
	stray := ts.chunks(2)
	ts.age(3*days, append(inNS, stray...)...)
	// An index outside the snapshot layout: only the initial walk finds it.
	if err := os.MkdirAll(ts.Path("stray"), 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := store.CreateDynamicIndex(ts.Path("stray/x.didx"))
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range stray {
		w.Append(uint64(i+1)*512, d)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	st := run(t, ts.collector(Options{}))
	if lost := ts.lost(append(inNS, stray...)); len(lost) > 0 {
		t.Errorf("lost %d chunks", len(lost))
	}
	if st.IndexFileCount != 2 || !strings.Contains(ts.log.String(), "unexpected index file") {
		t.Errorf("index files %d; log:\n%s", st.IndexFileCount, ts.log)
	}
}

func TestBackupsSurvive(t *testing.T) {
	ctx := context.Background()
	// Real backups through the store: everything referenced survives an
	// aged sweep and reads back.
	ts := newTestStore(t)
	g := group("real")
	data := bytes.Repeat([]byte("pbsfs garbage collection "), 40000)
	for i := range 2 {
		b, err := ts.StartBackup(ctx, g, time.Unix(1_700_000_000+int64(i), 0), store.BackupOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.AddStream(ctx, "data.pxar", bytes.NewReader(data[i:]), 1<<12); err != nil {
			t.Fatal(err)
		}
		if err := b.Finish(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ageAll(t, ts, 3*days)
	run(t, ts.collector(Options{}))
	snaps, _, err := ts.Snapshots(g)
	if err != nil {
		t.Fatal(err)
	}
	for _, si := range snaps {
		a, err := ts.OpenArchive(ctx, si.Ref, "data.pxar.didx")
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := a.WriteTo(&buf); err != nil {
			t.Fatalf("%s after GC: %v", si.Ref, err)
		}
	}
}

// ageAll ages every chunk file of ts.
func ageAll(t *testing.T, ts *testStore, ago time.Duration) {
	t.Helper()
	filepath.WalkDir(ts.Chunks().Dir(), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			ts.agePath(p, ago)
		}
		return nil
	})
}

func TestDaemon(t *testing.T) {
	ts := newTestStore(t)
	garbage := ts.chunks(1)
	ts.age(3*days, garbage...)
	ticks := make(chan time.Time)
	waits := make(chan time.Duration, 10)
	ran := make(chan error)
	blocker := ts.collector(Options{})
	d := &Daemon{
		Collector:  ts.collector(Options{}),
		Interval:   time.Hour,
		FirstDelay: time.Minute,
		After: func(d time.Duration) <-chan time.Time {
			waits <- d
			return ticks
		},
		Ran: func(_ Status, err error) { ran <- err },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()

	if w := <-waits; w != time.Minute {
		t.Errorf("first wait %v, want 1m", w)
	}
	ticks <- time.Now()
	if err := <-ran; err != nil {
		t.Fatalf("scheduled run: %v", err)
	}
	if ts.exists(garbage[0]) {
		t.Error("scheduled run removed nothing")
	}
	if w := <-waits; w != time.Hour {
		t.Errorf("second wait %v, want 1h", w)
	}
	// Another collection holds the store: the daemon skips quietly.
	gl, err := acquireGCLock(blocker.lockPath())
	if err != nil {
		t.Fatal(err)
	}
	ticks <- time.Now()
	if err := <-ran; !errors.Is(err, ErrRunning) {
		t.Errorf("run beside another GC: %v, want ErrRunning", err)
	}
	gl.release()
	<-waits
	cancel()
	if err := <-done; err != nil {
		t.Errorf("daemon returned %v", err)
	}
	if strings.Contains(ts.log.String(), "level=ERROR") {
		t.Errorf("skip logged as an error:\n%s", ts.log)
	}
	if err := (&Daemon{Collector: d.Collector}).Run(context.Background()); err != nil {
		t.Errorf("daemon with interval 0: %v", err)
	}
}

func TestProgress(t *testing.T) {
	ts := newTestStore(t)
	ts.snapshot(snapRef(group("p"), 0), ts.chunks(2))
	var during Progress
	var c *Collector
	c = ts.collector(Options{Hooks: Hooks{BeforeSweep: func(context.Context) { during = c.Progress() }}})
	run(t, c)
	after := c.Progress()
	if during.Phase != PhaseSweep || during.IndexFiles != 1 || during.IndexTotal != 1 {
		t.Errorf("progress before the sweep: %+v", during)
	}
	if after.Phase != PhaseIdle || after.Prefixes != 65536 {
		t.Errorf("progress after the run: %+v", after)
	}
}
