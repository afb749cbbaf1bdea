package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// diskModel follows a ChunkBatch's events the way a disk that loses
// everything not synced at a crash would: a temp file is durable once a
// sync started after its write completed (SyncFS covers the whole file
// system), a rename once a sync followed it.
type diskModel struct {
	mu         sync.Mutex // the hook runs on every upload worker
	t          *testing.T
	written    map[string]bool   // temp file → durable
	renamedTmp map[string]string // final name → temp file it came from
	tornAtName map[string]bool   // final name renamed from a non-durable temp
	nameDone   map[string]bool   // final name → rename durable
	syncs      int
	violations []string
}

func newDiskModel(t *testing.T) *diskModel {
	return &diskModel{t: t, written: map[string]bool{}, renamedTmp: map[string]string{},
		tornAtName: map[string]bool{}, nameDone: map[string]bool{}}
}

func (m *diskModel) event(ev BatchEvent) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch ev.Kind {
	case BatchWrite:
		m.written[ev.Temp] = false
	case BatchSync:
		m.syncs++
		for tmp := range m.written {
			m.written[tmp] = true
		}
		for name := range m.renamedTmp {
			m.nameDone[name] = true
		}
	case BatchRename:
		if !m.written[ev.Temp] {
			m.violations = append(m.violations, "renamed before its bytes were synced: "+filepath.Base(ev.Path))
			m.tornAtName[ev.Path] = true
		}
		m.renamedTmp[ev.Path] = ev.Temp
		delete(m.written, ev.Temp)
	case BatchDone:
		for name := range m.renamedTmp {
			if !m.nameDone[name] {
				m.violations = append(m.violations, "flush done before the rename was synced: "+filepath.Base(name))
			}
		}
	}
}

// crashImage copies the datastore at root to dst as a crash at this
// moment would leave it: temp files not synced are torn (half their
// bytes), as is any final-named chunk whose bytes were not synced before
// its rename. Renames wait meanwhile (their event is delivered before
// them); temp files being written are copied as found (they are never
// read).
func (m *diskModel) crashImage(root, dst string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // a temp file removed by an aborting worker
		}
		if err != nil {
			return err
		}
		if durable, ok := m.written[p]; (ok && !durable) || m.tornAtName[p] {
			data = data[:len(data)/2]
		}
		return os.WriteFile(out, data, 0o644)
	})
	if err != nil {
		m.t.Error(err) // not Fatal: this runs on an upload worker
	}
}

var errCrash = errors.New("injected crash")

// TestChunkBatchCrash crashes a backup at each step of its chunk batches
// (after a temp write, at a sync, at a rename, at the end of a flush),
// takes the image a power loss at that instant would leave (unsynced
// bytes torn), and shows that no chunk under its final name is torn,
// that no index exists before its chunks are durable, and that a backup
// restarted on the image completes and verifies. It also counts the
// syncs: one per batch and one per flush, not one per chunk.
func TestChunkBatchCrash(t *testing.T) {
	ctx := context.Background()
	data := xorshiftBytes(7, 6*FixedChunkSize)
	data = append(data, bytes.Repeat(data[:FixedChunkSize], 2)...) // duplicates within the backup
	data = append(data, xorshiftBytes(8, 12345)...)
	size := uint64(len(data))
	g := GroupRef{Type: TypeVM, ID: "1"}
	backup := func(s *Store, when int64, hook func(BatchEvent) error) (*Backup, error) {
		b, err := s.StartBackup(ctx, g, time.Unix(when, 0), BackupOptions{BatchBytes: 2 * FixedChunkSize, batchHook: hook})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.AddImage(ctx, "disk.img", bytes.NewReader(data), size); err != nil {
			b.Abort()
			return b, err
		}
		return b, b.Finish(ctx)
	}

	// A clean run: the order of events and the number of syncs.
	s := newTestStore(t)
	m := newDiskModel(t)
	first := true
	b, err := backup(s, 1_800_000_000, func(ev BatchEvent) error {
		if ev.Kind == BatchDone && first {
			first = false
			if _, err := os.Stat(s.Path(b2dir(g, 1_800_000_000) + "/disk.img.fidx")); err == nil {
				t.Error("index written before its chunks were durable")
			}
		}
		m.event(ev)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range m.violations {
		t.Error(v)
	}
	verifyAll(t, s, b.Ref())
	chunks := b.Stats.NewChunks.Load()
	// 7 new chunks (six of 4 MiB, one of 12 KiB) in batches of 8 MiB:
	// three full batches, then at Flush a sync before the renames of the
	// rest (if any: the workers finish in any order, so the small chunk
	// may have joined a full batch) and one after the last rename.
	if chunks != 7 || b.Syncs() < 4 || b.Syncs() > 5 || int64(m.syncs) != b.Syncs() {
		t.Errorf("%d new chunks, %d syncs (model %d); want 7 chunks and 4 or 5 syncs", chunks, b.Syncs(), m.syncs)
	}
	if dup := b.Stats.ReusedChunks.Load(); dup != 2 {
		t.Errorf("%d duplicates within the backup; want 2", dup)
	}
	t.Logf("clean run: %d new chunks, %d syncs", chunks, b.Syncs())

	// Crash at every step.
	var kinds = []string{"write", "sync", "rename", "done"}
	// Every third event (each kind is among them), to keep the test short.
	for step := 0; ; step += 3 {
		s := newTestStore(t)
		m := newDiskModel(t)
		image := filepath.Join(t.TempDir(), "image")
		n := 0
		crashed := ""
		_, err := backup(s, 1_800_000_000, func(ev BatchEvent) error {
			m.mu.Lock()
			n++
			crash := n-1 == step
			m.mu.Unlock()
			if crash {
				m.mu.Lock()
				crashed = kinds[ev.Kind]
				m.mu.Unlock()
				m.crashImage(s.Root(), image)
				return errCrash
			}
			m.event(ev)
			return nil
		})
		if crashed == "" {
			if err != nil {
				t.Fatal(err)
			}
			if step < 15 {
				t.Fatalf("only %d events", step)
			}
			break
		}
		if !errors.Is(err, errCrash) {
			t.Fatalf("step %d (%s): backup error %v, want the injected crash", step, crashed, err)
		}
		for _, v := range m.violations {
			t.Errorf("step %d (%s): %s", step, crashed, v)
		}
		// Every chunk under its final name in the image is whole.
		s2, err := Open(image, Options{RuntimeDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		names, torn := 0, 0
		for p := range 1 << 16 {
			infos, _ := s2.chunks.ListPrefix(ctx, uint16(p))
			for _, ci := range infos {
				names++
				d, _ := ParseDigest(ci.Name)
				blob, err := s2.chunks.Get(ctx, d)
				if err == nil {
					_, err = s2.plain.Decode(nil, blob, d)
				}
				if err != nil {
					torn++
					t.Errorf("step %d (%s): chunk %s in the crash image: %v", step, crashed, ci.Name, err)
				}
			}
		}
		// A restarted backup completes and verifies.
		b, err := backup(s2, 1_800_000_060, nil)
		if err != nil {
			t.Fatalf("step %d (%s): restarted backup: %v", step, crashed, err)
		}
		r := verifyAll(t, s2, b.Ref())
		if strings.Contains(fmt.Sprint(r.Problems), "chunk") {
			t.Errorf("step %d: %v", step, r.Problems)
		}
		s2.Close()
		t.Logf("crash at event %d (%s): %d chunks under final names in the image, %d torn; restarted backup ok (%d new, %d reused)",
			step, crashed, names, torn, b.Stats.NewChunks.Load(), b.Stats.ReusedChunks.Load())
	}
}

// b2dir is the directory of the snapshot of g at unix time when.
func b2dir(g GroupRef, when int64) string {
	return SnapshotRef{Group: g, Time: time.Unix(when, 0).UTC()}.Dir()
}

// TestChunkBatchDirect writes chunks of awkward sizes (below, at and
// around the O_DIRECT alignment, large, from an unaligned buffer) through
// a batch and reads each back byte for byte.
func TestChunkBatchDirect(t *testing.T) {
	for _, buffered := range []bool{false, true} {
		t.Run(fmt.Sprintf("buffered=%v", buffered), func(t *testing.T) { testChunkBatchDirect(t, buffered) })
	}
}

func testChunkBatchDirect(t *testing.T, buffered bool) {
	ctx := context.Background()
	s := newTestStore(t)
	s.chunks.noDirect.Store(buffered) // as after a file system refused O_DIRECT
	codec := NewCodec()
	batch := s.chunks.NewBatch(0, 0, SyncFS)
	var digests []Digest
	var blobs [][]byte
	for i, n := range []int{1, 4095 - 12, 4096 - 12, 4097 - 12, 3<<20 + 5, 1 << 20} {
		data := xorshiftBytes(uint64(i+100), n)
		blob, err := codec.Encode(data, false)
		if err != nil {
			t.Fatal(err)
		}
		if i == 5 {
			blob = append(make([]byte, 1, len(blob)+1), blob...)[1:] // unaligned start
		}
		d := DigestOf(data)
		if _, err := batch.Insert(ctx, d, blob); err != nil {
			t.Fatal(err)
		}
		digests, blobs = append(digests, d), append(blobs, blob)
	}
	if err := batch.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i, d := range digests {
		got, err := s.chunks.Get(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, blobs[i]) {
			t.Errorf("chunk %d (%d bytes) reads back differently (%d bytes)", i, len(blobs[i]), len(got))
		}
	}
	t.Logf("O_DIRECT used: %v; %d syncs", !s.chunks.noDirect.Load(), batch.Syncs())
}

// TestSplitArchiveOneFlush backs up a tree as a split pxar archive and
// follows the chunk batch: both streams' chunks are made durable by one
// flush (one wait for the disk, not one per stream), and neither index
// exists before that flush is done.
func TestSplitArchiveOneFlush(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for i := range 6 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), xorshiftBytes(uint64(i+1), 900_000+i*1000), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := newTestStore(t)
	g := GroupRef{Type: TypeHost, ID: "h"}
	when := int64(1_800_000_000)
	snap := s.Path(b2dir(g, when))
	m := newDiskModel(t)
	var mu sync.Mutex
	dones := 0
	b, err := s.StartBackup(ctx, g, time.Unix(when, 0), BackupOptions{batchHook: func(ev BatchEvent) error {
		mu.Lock()
		defer mu.Unlock()
		for _, name := range []string{"root.mpxar.didx", "root.ppxar.didx"} {
			if _, err := os.Stat(filepath.Join(snap, name)); err == nil && dones == 0 {
				t.Errorf("%s written before its chunks were durable", name)
			}
		}
		if ev.Kind == BatchDone {
			dones++
		}
		m.event(ev)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddPxar(ctx, "root.pxar", dir, PxarOptions{Split: true}); err != nil {
		b.Abort()
		t.Fatal(err)
	}
	mu.Lock()
	if dones != 1 {
		t.Errorf("%d flushes for the two streams, want 1", dones)
	}
	mu.Unlock()
	if err := b.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	for _, v := range m.violations {
		t.Error(v)
	}
	if n := b.Stats.NewChunks.Load(); n < 2 {
		t.Errorf("%d new chunks, want both streams' chunks", n)
	}
	verifyAll(t, s, b.Ref())
	t.Logf("%d new chunks, %d syncs", b.Stats.NewChunks.Load(), b.Syncs())
}
