package integration

import (
	"bytes"
	"fmt"
	"github.com/pbsfs/pbsfs/internal/testutil"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentReadersBackupPrune runs 8 readers of different files
// through the mount while a backup lands (pbsfs backup, another process)
// and a snapshot is pruned through the mount (rm -r). Readers must see no
// error, and listings must show the new snapshot and lose the pruned one.
func TestConcurrentReadersBackupPrune(t *testing.T) {
	testutil.RequireFUSE(t)
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	genTree(t, src, 2000)
	img := filepath.Join(t.TempDir(), "disk.img")
	randomFile(t, img, 20<<20, 3)
	old := e.backup(t, "ct", "100", t0, "root.pxar:"+src)
	keep := e.backup(t, "ct", "100", t0.Add(time.Hour), "root.pxar:"+src, "drive-scsi0.img:"+img)
	mnt, _ := e.mount(t)

	var files []string
	filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			rel, _ := filepath.Rel(src, p)
			files = append(files, rel)
		}
		return nil
	})
	const readers = 8
	var (
		stop   atomic.Bool
		passes [readers]atomic.Int64
		errs   = make(chan error, readers)
		wg     sync.WaitGroup
	)
	firstPass := make(chan struct{}, readers)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for pass := 0; !stop.Load() || pass < 2; pass++ {
				for j := i; j < len(files); j += readers {
					want, _ := os.ReadFile(filepath.Join(src, files[j]))
					got, err := os.ReadFile(filepath.Join(mnt, "ct/100", keep, "root.pxar", files[j]))
					if err != nil || !bytes.Equal(got, want) {
						errs <- fmt.Errorf("reader %d: %s: %d bytes, %v", i, files[j], len(got), err)
						return
					}
				}
				if i == 0 { // one reader also reads the image
					got, err := os.ReadFile(filepath.Join(mnt, "ct/100", keep, "drive-scsi0.img"))
					want, _ := os.ReadFile(img)
					if err != nil || !bytes.Equal(got, want) {
						errs <- fmt.Errorf("image: %d bytes, %v", len(got), err)
						return
					}
				}
				passes[i].Add(1)
				if pass == 0 {
					firstPass <- struct{}{}
				}
			}
		}()
	}
	// Every reader is inside the tree before the store changes.
	for range readers {
		select {
		case <-firstPass:
		case err := <-errs:
			t.Fatal(err)
		}
	}
	var changers sync.WaitGroup
	newSnap := t0.Add(2 * time.Hour).Format("2006-01-02T15:04:05Z")
	var rmOut, backupOut string
	var rmErr, backupErr error
	changers.Add(2)
	go func() {
		defer changers.Done()
		backupOut, backupErr = e.try("backup", "--no-progress", "--type", "ct", "--id", "100", "--time", newSnap, "root.pxar:"+src)
	}()
	go func() {
		defer changers.Done()
		rmOut, rmErr = run("rm", "-r", filepath.Join(mnt, "ct/100", old))
	}()
	changers.Wait()
	stop.Store(true) // each reader finishes two more passes after this
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if backupErr != nil {
		t.Errorf("backup during reads: %v\n%s", backupErr, backupOut)
	}
	if rmErr != nil {
		t.Errorf("rm -r during reads: %v\n%s", rmErr, rmOut)
	}
	for i := range readers {
		if passes[i].Load() < 2 {
			t.Errorf("reader %d made %d passes", i, passes[i].Load())
		}
	}
	ents, err := os.ReadDir(filepath.Join(mnt, "ct/100"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range ents {
		names = append(names, d.Name())
	}
	if want := []string{keep, newSnap, "latest"}; !slices.Equal(names, want) {
		t.Errorf("listing after backup and prune: %q, want %q", names, want)
	}
	if got, _ := os.Readlink(filepath.Join(mnt, "ct/100/latest")); got != newSnap {
		t.Errorf("latest -> %q, want %s", got, newSnap)
	}
	if out, err := run("diff", "-r", "--no-dereference", "-x", "fifo-*", "-x", "dev-*", "-x", "sock-*", src, filepath.Join(mnt, "ct/100/latest/root.pxar")); err != nil {
		t.Errorf("new snapshot differs: %v\n%.1000s", err, strings.TrimSpace(out))
	}
}
