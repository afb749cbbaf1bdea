package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pbsfs/pbsfs/store"
)

// TestRestoreMissingChunk: 40 files of 1 MB in a pxar archive (plain and
// split), one chunk of the archive deleted (or corrupted). pbsfs restore restores every
// intact file byte for byte, names every damaged one, leaves none of them
// behind and exits 1 with a summary; in the mount, ls lists every intact
// entry and each opens by its exact name.
func TestRestoreMissingChunk(t *testing.T) {
	for _, tc := range []struct {
		split, corrupt bool
	}{{false, false}, {true, false}, {false, true}} {
		split := tc.split
		t.Run(fmt.Sprintf("split=%v/corrupt=%v", split, tc.corrupt), func(t *testing.T) {
			e := newEnv(t)
			src := filepath.Join(t.TempDir(), "src")
			os.MkdirAll(src, 0o755)
			const n = 40
			for i := 0; i < n; i++ {
				randomFile(t, filepath.Join(src, fmt.Sprintf("f%02d", i)), 1<<20, uint64(i+1))
			}
			args := []string{"backup", "--no-progress", "--type", "host", "--id", "h", "--time", t0.UTC().Format("2006-01-02T15:04:05Z")}
			if split {
				args = append(args, "--split")
			}
			e.pbsfs(t, append(args, "root.pxar:"+src)...)
			snap := t0.UTC().Format("2006-01-02T15:04:05Z")

			// Delete a chunk from the middle of the stream holding the
			// contents, and work out which files it held.
			s := e.open(t)
			si, err := s.Snapshot(store.SnapshotRef{Group: store.GroupRef{Type: "host", ID: "h"}, Time: t0})
			if err != nil {
				t.Fatal(err)
			}
			a, err := s.OpenPxar(context.Background(), si, "root.pxar")
			if err != nil {
				t.Fatal(err)
			}
			stream := "root.pxar.didx"
			if split {
				stream = "root.ppxar.didx"
			}
			idx, err := s.OpenIndex(si.Ref, stream)
			if err != nil {
				t.Fatal(err)
			}
			d, cs, ce := idx.Chunk(idx.Len() / 2)
			r, err := a.OpenDir(a.Root())
			if err != nil {
				t.Fatal(err)
			}
			damaged := map[string]bool{}
			for i := 0; i < r.Len(); i++ {
				c, err := r.Next()
				if err != nil {
					t.Fatal(err)
				}
				lo, hi := c.FilenameOffset, c.End
				if split {
					lo, hi = c.PayloadOffset, c.PayloadOffset+16+int64(c.Size)
				}
				if lo < int64(ce) && hi > int64(cs) {
					damaged[c.Name()] = true
				}
			}
			if len(damaged) == 0 || len(damaged) > 8 {
				t.Fatalf("chunk %d of %d held %d files", idx.Len()/2, idx.Len(), len(damaged))
			}
			if tc.corrupt {
				// A flipped byte: the chunk no longer matches its digest.
				p := s.Chunks().Path(d)
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				b[len(b)/2] ^= 0x55
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
			} else if err := os.Remove(s.Chunks().Path(d)); err != nil {
				t.Fatal(err)
			}

			target := filepath.Join(t.TempDir(), "restore")
			out, err := e.try("restore", "host/h/"+snap, "root.pxar", target)
			if err == nil {
				t.Errorf("restore with a missing chunk exited 0:\n%s", out)
			}
			if !strings.Contains(out, fmt.Sprintf("%d entries damaged in the archive", len(damaged))) {
				t.Errorf("restore summary missing or wrong count (want %d):\n%s", len(damaged), out)
			}
			restored := 0
			for i := 0; i < n; i++ {
				name := fmt.Sprintf("f%02d", i)
				got, rerr := os.ReadFile(filepath.Join(target, name))
				if damaged[name] {
					if rerr == nil {
						t.Errorf("damaged %s left in the target (%d bytes)", name, len(got))
					}
					if !strings.Contains(out, "damaged, not restored: "+name+":") {
						t.Errorf("damaged %s not named:\n%s", name, out)
					}
					continue
				}
				want, _ := os.ReadFile(filepath.Join(src, name))
				if rerr != nil || !bytes.Equal(got, want) {
					t.Errorf("intact %s: %d bytes, %v; want the source's %d", name, len(got), rerr, len(want))
					continue
				}
				restored++
			}
			if !strings.Contains(out, fmt.Sprintf("restore incomplete: %d entries (", restored)) {
				t.Errorf("restore summary does not count %d restored entries:\n%s", restored, out)
			}
			t.Logf("restore: %d of %d files restored, %d named damaged; exit %v\n%s", restored, n, len(damaged), err, out)

			// The mount: ls lists every intact entry; exact names open.
			mnt, _ := e.mount(t)
			dir := filepath.Join(mnt, "host/h", snap, "root.pxar")
			ls, lsErr := runIn(dir, "ls", "-1")
			listed := map[string]bool{}
			for _, l := range strings.Split(ls, "\n") {
				listed[l] = true
			}
			for i := 0; i < n; i++ {
				name := fmt.Sprintf("f%02d", i)
				if !damaged[name] && !listed[name] {
					t.Errorf("ls does not list intact %s (ls: %v)\n%s", name, lsErr, ls)
				}
				got, rerr := os.ReadFile(filepath.Join(dir, name))
				want, _ := os.ReadFile(filepath.Join(src, name))
				switch {
				case damaged[name] && rerr == nil:
					t.Errorf("damaged %s read through the mount without error", name)
				case !damaged[name] && (rerr != nil || !bytes.Equal(got, want)):
					t.Errorf("intact %s through the mount: %v", name, rerr)
				}
			}
			t.Logf("ls: %d names, err %v", len(listed)-1, lsErr)
		})
	}
}
