package store

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// stallingMirror is a mirror whose upload of an index file cancels the
// backup's context and then waits for that context to end (a bucket
// that stopped answering while the backup was cancelled).
type stallingMirror struct {
	cancel context.CancelFunc
	put    []string
}

func (m *stallingMirror) PutFile(ctx context.Context, rel string, data []byte) error {
	m.put = append(m.put, rel)
	if !strings.HasSuffix(rel, ".fidx") {
		return nil
	}
	m.cancel()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return errors.New("the upload did not get the backup's context: still waiting 30 s after its cancel")
	}
}

func (m *stallingMirror) RemoveFile(ctx context.Context, rel string) error { return nil }
func (m *stallingMirror) RemoveDir(ctx context.Context, rel string) error  { return nil }

// TestMirrorUploadsTakeTheCallersContext: the metadata uploads of a
// backup into a bucket (Options.Mirror) run under the backup's context,
// so that cancelling the backup ends an upload that hangs.
func TestMirrorUploadsTakeTheCallersContext(t *testing.T) {
	m := &stallingMirror{}
	s, err := Create(filepath.Join(t.TempDir(), "ds"), Options{RuntimeDir: t.TempDir(), LazyChunkDirs: true, Mirror: m})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m.cancel = cancel
	b, err := s.StartBackup(ctx, GroupRef{Type: TypeVM, ID: "1"}, time.Unix(1700000000, 0), BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	img := xorshiftBytes(1, 1<<20)
	err = b.AddImage(ctx, "drive-scsi0.img", bytes.NewReader(img), uint64(len(img)))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("AddImage with its index upload cancelled: %v, want context.Canceled (uploads: %v)", err, m.put)
	}
	if len(m.put) == 0 || !strings.HasSuffix(m.put[len(m.put)-1], "drive-scsi0.img.fidx") {
		t.Fatalf("uploads %v: the index was not uploaded", m.put)
	}
}
