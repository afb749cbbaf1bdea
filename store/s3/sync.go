package s3

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// stateFile records, in a cache directory pbsfs fills from a bucket, the
// ETag and size of every object it downloaded, so that the next sync
// fetches only what changed and removes only what it brought.
const stateFile = ".pbsfs-s3-sync.json"

// syncLockFile serialises syncs of one cache directory across processes.
const syncLockFile = ".pbsfs-s3-sync.lock"

// objState is what the state file keeps of one object.
type objState struct {
	ETag string `json:"etag"`
	Size int64  `json:"size"`
}

// SyncStats tells what a sync did.
type SyncStats struct {
	Objects, Fetched, Removed int
	FetchedBytes              int64
}

// maxMetaObject bounds one metadata object (indexes of multi-TiB images
// are a few MiB; manifests at most 16 MiB).
const maxMetaObject = 1 << 30

// SyncMetadata makes dir, a datastore directory pbsfs keeps for a bucket,
// mirror the bucket's metadata: every object `<store>/.cnt/<path>` is the
// file dir/<path> (pbs4.md §A.2; a `.namespace` object is only its
// directory). Objects whose ETag and size are those of the last sync are
// not fetched again; files the last sync fetched whose object is gone
// are removed (a snapshot's manifest first, so it turns unfinished
// before its indexes go). Files are written through a temporary file,
// fsync and rename, and every snapshot's manifest after all other
// files, so an interrupted sync never shows a finished snapshot without
// its indexes. Keys that are not clean relative paths are skipped.
func SyncMetadata(ctx context.Context, c *Client, dir string) (SyncStats, error) {
	var st SyncStats
	if err := Prepare(dir); err != nil {
		return st, err
	}
	lk, err := os.OpenFile(filepath.Join(dir, syncLockFile), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return st, fmt.Errorf("s3 sync: %w", err)
	}
	defer lk.Close()
	if err := unix.Flock(int(lk.Fd()), unix.LOCK_EX); err != nil {
		return st, fmt.Errorf("s3 sync: lock %s: %w", lk.Name(), err)
	}
	old := map[string]objState{}
	if b, err := os.ReadFile(filepath.Join(dir, stateFile)); err == nil {
		if json.Unmarshal(b, &old) != nil {
			old = map[string]objState{} // damaged: fetch everything again
		}
	}
	cur := map[string]objState{}
	var fetch, manifests []ObjectInfo
	err = c.List(ctx, ".cnt/", func(o ObjectInfo) error {
		rel := strings.TrimPrefix(o.Rel, ".cnt/")
		if !cleanRel(rel) {
			return nil
		}
		st.Objects++
		if path.Base(rel) == ".namespace" {
			return os.MkdirAll(filepath.Join(dir, filepath.FromSlash(path.Dir(rel))), 0o755)
		}
		o.Rel = rel
		cur[rel] = objState{ETag: o.ETag, Size: o.Size}
		if s, ok := old[rel]; ok && s == cur[rel] {
			if fi, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(rel))); err == nil && fi.Mode().IsRegular() && fi.Size() == o.Size {
				return nil
			}
		}
		if path.Base(rel) == "index.json.blob" {
			manifests = append(manifests, o)
		} else {
			fetch = append(fetch, o)
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("s3 sync %s: %w", c.cfg.URL(), err)
	}
	// Gone from the bucket: remove what an earlier sync brought, the
	// manifests first.
	var gone []string
	for rel := range old {
		if _, ok := cur[rel]; !ok {
			gone = append(gone, rel)
		}
	}
	sort.Slice(gone, func(i, j int) bool {
		mi, mj := path.Base(gone[i]) == "index.json.blob", path.Base(gone[j]) == "index.json.blob"
		if mi != mj {
			return mi
		}
		return gone[i] < gone[j]
	})
	for _, rel := range gone {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return st, fmt.Errorf("s3 sync: %w", err)
		}
		st.Removed++
		removeEmptyParents(dir, filepath.Dir(p))
	}
	for _, batch := range [][]ObjectInfo{fetch, manifests} {
		n, bytes, err := fetchAll(ctx, c, dir, batch)
		st.Fetched += n
		st.FetchedBytes += bytes
		if err != nil {
			saveState(dir, old, cur, batch) // keep what is known so far
			return st, fmt.Errorf("s3 sync %s: %w", c.cfg.URL(), err)
		}
	}
	if err := writeJSON(filepath.Join(dir, stateFile), cur); err != nil {
		return st, fmt.Errorf("s3 sync: %w", err)
	}
	return st, nil
}

// saveState records after a failed sync the objects that are certainly
// in place: those unchanged and those fetched before the failure are
// told apart by the file's size only, so an unknown ETag is recorded
// empty and the next sync fetches it again.
func saveState(dir string, old, cur map[string]objState, failed []ObjectInfo) {
	keep := map[string]objState{}
	for rel, s := range old {
		if c, ok := cur[rel]; ok && c == s {
			keep[rel] = s
		}
	}
	for _, o := range failed {
		delete(keep, o.Rel)
	}
	writeJSON(filepath.Join(dir, stateFile), keep)
}

// fetchAll downloads objs into dir, as many at once as the client allows.
func fetchAll(ctx context.Context, c *Client, dir string, objs []ObjectInfo) (int, int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		first error
		n     int
		bytes int64
		wg    sync.WaitGroup
	)
	jobs := make(chan ObjectInfo)
	for range c.cfg.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for o := range jobs {
				err := fetchOne(ctx, c, dir, o)
				mu.Lock()
				if err != nil && first == nil {
					first = err
					cancel()
				} else if err == nil {
					n++
					bytes += o.Size
				}
				mu.Unlock()
			}
		}()
	}
	for _, o := range objs {
		select {
		case jobs <- o:
			continue
		case <-ctx.Done():
		}
		break
	}
	close(jobs)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return n, bytes, first
}

func fetchOne(ctx context.Context, c *Client, dir string, o ObjectInfo) error {
	b, info, err := c.Get(ctx, ".cnt/"+o.Rel, maxMetaObject)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil // removed since the listing
		}
		return err
	}
	if info.Size != int64(len(b)) {
		return fmt.Errorf("get %s: %d bytes, listed with %d: %w", c.Key(".cnt/"+o.Rel), len(b), info.Size, ErrSizeMismatch)
	}
	p := filepath.Join(dir, filepath.FromSlash(o.Rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return writeFile(p, b)
}

// cleanRel reports whether rel is a relative path of clean components
// that stays inside the directory.
func cleanRel(rel string) bool {
	if rel == "" || len(rel) > 4096 || strings.ContainsRune(rel, 0) {
		return false
	}
	for _, c := range strings.Split(rel, "/") {
		if c == "" || c == "." || c == ".." || len(c) > 255 {
			return false
		}
	}
	return true
}

// removeEmptyParents removes empty directories from d up to (not
// including) root.
func removeEmptyParents(root, d string) {
	for d != root && strings.HasPrefix(d, root+string(filepath.Separator)) {
		if os.Remove(d) != nil {
			return
		}
		d = filepath.Dir(d)
	}
}

// writeFile writes data to p through a temporary file, fsync and rename,
// then fsyncs the directory.
func writeFile(p string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(p), filepath.Base(p)+".tmp_")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", p, err)
	}
	d, err := os.Open(filepath.Dir(p))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func writeJSON(p string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeFile(p, b)
}

// Prepare makes dir a datastore directory if it is not one: the
// directory, `.chunks` (its prefix directories are made on demand) and
// `.lock`.
func Prepare(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, ".chunks"), 0o750); err != nil {
		return fmt.Errorf("s3 cache %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("s3 cache %s: %w", dir, err)
	}
	return f.Close()
}
