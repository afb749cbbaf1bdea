package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestVerifyRecordsAndRenames(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	t0 := time.Unix(1_800_000_000, 0)
	// Four groups, each with its own image, so each damage hits one snapshot;
	// a fifth stays intact. Images share no chunk.
	var refs []SnapshotRef
	for i := range 5 {
		g := GroupRef{Type: TypeVM, ID: string(rune('a' + i))}
		b, err := s.StartBackup(ctx, g, t0, BackupOptions{})
		if err != nil {
			t.Fatal(err)
		}
		img := xorshiftBytes(uint64(100+i), 5<<20)
		if err := b.AddImage(ctx, "d.img", bytes.NewReader(img), uint64(len(img))); err != nil {
			t.Fatal(err)
		}
		if err := b.AddBlob(ctx, "vm.conf", []byte("conf")); err != nil {
			t.Fatal(err)
		}
		if err := b.Finish(ctx); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, b.Ref())
	}
	chunk := func(i int) Digest {
		idx, err := s.OpenIndex(refs[i], "d.img.fidx")
		if err != nil {
			t.Fatal(err)
		}
		d, _, _ := idx.Chunk(0)
		return d
	}
	flipped, truncated, missing := chunk(0), chunk(1), chunk(2)
	b, _ := os.ReadFile(s.chunks.Path(flipped))
	b[len(b)/2] ^= 0x10
	os.WriteFile(s.chunks.Path(flipped), b, 0o644)
	b, _ = os.ReadFile(s.chunks.Path(truncated))
	os.WriteFile(s.chunks.Path(truncated), b[:len(b)-100], 0o644)
	os.Remove(s.chunks.Path(missing))
	blob := s.Path(refs[3].Dir() + "/vm.conf.blob")
	b, _ = os.ReadFile(blob)
	b[len(b)-1] ^= 1
	os.WriteFile(blob, b, 0o644)

	v := s.NewVerifier(VerifyOptions{Record: true})
	wantProblem := []string{flipped.String(), truncated.String(), missing.String(), "vm.conf.blob", ""}
	for i, ref := range refs {
		r, err := v.Verify(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if wantProblem[i] == "" {
			if !r.OK() {
				t.Errorf("%s: unexpected problems %v", ref, r.Problems)
			}
		} else if len(r.Problems) != 1 || !strings.Contains(r.Problems[0].Error(), wantProblem[i]) {
			t.Errorf("%s: problems %v, want one naming %s", ref, r.Problems, wantProblem[i])
		}
		m, _ := s.LoadManifest(ref)
		st, ok := m.Verify()
		want := map[bool]string{true: "ok", false: "failed"}[wantProblem[i] == ""]
		if !ok || st.State != want || !strings.HasPrefix(st.UPID, "UPID:") {
			t.Errorf("%s: verify_state %+v, want %s", ref, st, want)
		}
	}
	for _, d := range []Digest{flipped, truncated} {
		if _, err := os.Stat(s.chunks.Path(d)); !os.IsNotExist(err) {
			t.Errorf("corrupt chunk %s not renamed", d)
		}
		if _, err := os.Stat(s.chunks.Path(d) + ".0.bad"); err != nil {
			t.Errorf("no .0.bad for %s: %v", d, err)
		}
	}
	if v.Chunks.Load() != 10 {
		t.Errorf("checked %d chunks, want 10", v.Chunks.Load())
	}
	// IgnoreVerified skips the snapshot that passed and rechecks the others.
	v2 := s.NewVerifier(VerifyOptions{IgnoreVerified: true})
	if r, _ := v2.Verify(ctx, refs[4]); r.Skipped == "" {
		t.Errorf("verified snapshot not skipped")
	}
	if r, _ := v2.Verify(ctx, refs[0]); r.Skipped != "" || r.OK() {
		t.Errorf("failed snapshot: skipped %q ok %v", r.Skipped, r.OK())
	}
	// A new backup does not use a failed snapshot as its base, and writes
	// the renamed chunk again.
	img := xorshiftBytes(100, 5<<20)
	nb, err := s.StartBackup(ctx, refs[0].Group, t0.Add(time.Hour), BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := nb.Base(); ok {
		t.Error("failed snapshot used as base")
	}
	nb.AddImage(ctx, "d.img", bytes.NewReader(img), uint64(len(img)))
	if err := nb.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	if nb.Stats.NewChunks.Load() != 1 {
		t.Errorf("new backup wrote %d chunks, want the 1 renamed one", nb.Stats.NewChunks.Load())
	}
	verifyAll(t, s, nb.Ref())
	// A second corruption of the same chunk gets the next .bad name.
	b, _ = os.ReadFile(s.chunks.Path(flipped))
	b[20] ^= 1
	os.WriteFile(s.chunks.Path(flipped), b, 0o644)
	if r, _ := s.NewVerifier(VerifyOptions{Record: true}).Verify(ctx, nb.Ref()); r.OK() {
		t.Error("second corruption not found")
	}
	if _, err := os.Stat(s.chunks.Path(flipped) + ".1.bad"); err != nil {
		t.Errorf("no .1.bad: %v", err)
	}
	// A snapshot locked exclusively (a running backup) is skipped.
	g := refs[4].Group
	l, _ := s.locks.LockSnapshot(nil, g.Type, g.ID, refs[4].TimeString(), true)
	if r, _ := s.NewVerifier(VerifyOptions{}).Verify(ctx, refs[4]); r.Skipped == "" {
		t.Error("locked snapshot not skipped")
	}
	l.Unlock()
	if _, err := s.NewVerifier(VerifyOptions{}).Verify(ctx, SnapshotRef{Group: g, Time: t0.Add(time.Hour)}); err != nil && !errors.Is(err, ErrNotFound) {
		t.Error(err)
	}
}
