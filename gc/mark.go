package gc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/pbsfs/pbsfs/store"
	"github.com/pbsfs/pbsfs/store/lock"
)

// maxRelists is how often phase 1 lists a group again before it takes the
// group's lock; one more relist after that aborts the run (spec §6.3).
const maxRelists = 10

// mark is phase 1 as PBS 2025+ runs it (spec §6.3), with the relisting
// rule widened to close the in-progress window (see the package doc).
func (c *Collector) mark(ctx context.Context, r *runState) error {
	walked, err := c.walkIndexes(ctx)
	if err != nil {
		return err
	}
	// WillRemove may mark files already (the phase is PhaseMark).
	r.mu.Lock()
	for _, p := range walked {
		if _, done := r.processed[p]; !done {
			r.unprocessed[p] = struct{}{}
		}
	}
	r.mu.Unlock()
	c.prog.indexTotal.Store(int64(len(walked)))

	nss, problems, err := c.s.Namespaces(ctx, "", -1)
	if err != nil {
		return fmt.Errorf("list namespaces: %w", err)
	}
	if len(problems) > 0 {
		// PBS's namespace iterator fails on a bad name, and that fails the GC.
		return fmt.Errorf("list namespaces: %s: %w", problems[0], problems[0].Err)
	}
	for _, ns := range nss {
		groups, _, err := c.s.Groups(ns)
		if err != nil {
			if _, serr := os.Lstat(c.s.Path(ns.Dir())); errors.Is(serr, fs.ErrNotExist) {
				continue // the namespace went away
			}
			return fmt.Errorf("list groups of namespace %q: %w", ns, err)
		}
		for _, g := range groups {
			if err := c.markGroup(ctx, r, g); err != nil {
				return err
			}
		}
	}

	// Index files outside the expected layout, or in groups that appeared
	// in the walk but not in the iteration.
	strange := 0
	for _, p := range walked {
		r.mu.Lock()
		_, left := r.unprocessed[p]
		r.mu.Unlock()
		if !left {
			continue
		}
		vanished, err := r.markFile(ctx, p)
		if err != nil {
			return err
		}
		if !vanished {
			strange++
			c.log.Warn("marked unexpected index file", "path", p)
		}
	}
	if strange > 0 {
		c.log.Warn("index files outside the snapshot layout", "count", strange)
	}
	return nil
}

// markGroup marks every index of group g, newest snapshot first. When an
// index that may hold the only reference to chunks a newer, unlisted
// snapshot reuses has vanished, the group is listed again.
func (c *Collector) markGroup(ctx context.Context, r *runState, g store.GroupRef) error {
	var gl *lock.FileLock
	defer func() { gl.Unlock() }()
	for relists := 0; ; relists++ {
		if relists == maxRelists {
			l, err := c.s.Locks().LockGroup(g.NS.Components(), g.Type, g.ID, true)
			if err != nil {
				return fmt.Errorf("group %s: listed %d times, and its lock: %w", g, relists, err)
			}
			gl = l
		}
		if relists > maxRelists {
			return fmt.Errorf("group %s: %w", g, ErrRelists)
		}
		snaps, _, err := c.s.Snapshots(g)
		if err != nil {
			if _, serr := os.Lstat(c.s.Path(g.Dir())); errors.Is(serr, fs.ErrNotExist) {
				return nil // the group went away
			}
			return fmt.Errorf("list snapshots: %w", err)
		}
		if h := c.opts.Hooks.AfterGroupListed; h != nil {
			h(ctx, g, snaps, relists)
		}
		relist, err := c.markSnapshots(ctx, r, snaps)
		if err != nil {
			return err
		}
		if !relist {
			return nil
		}
		c.log.Debug("group changed while marking, listing it again", "group", g.String(), "relists", relists+1)
	}
}

// markSnapshots marks the indexes of snaps (oldest first) from the newest
// on and reports whether the group must be listed again.
//
// PBS 2025+ relists when an index of the newest listed snapshot vanished.
// pbsfs also relists when one of the newest finished listed snapshot
// vanished, or of any snapshot newer than that: a backup that was still
// running at listing time may meanwhile have finished, referencing its
// base's chunks without touching them, and its base may since have been
// pruned (the window of spec §6.3; R3). Indexes of older snapshots are
// nobody's base any more and vanish without a relist.
func (c *Collector) markSnapshots(ctx context.Context, r *runState, snaps []store.SnapshotInfo) (bool, error) {
	newestFinished := -1
	for i, si := range snaps {
		if si.Finished {
			newestFinished = i
		}
	}
	for i := len(snaps) - 1; i >= 0; i-- {
		si := snaps[i]
		for _, name := range si.Files {
			if k := store.KindOf(name); k != store.KindFixed && k != store.KindDynamic {
				continue
			}
			vanished, err := r.markFile(ctx, c.s.Path(path.Join(si.Ref.Dir(), name)))
			if err != nil {
				return false, err
			}
			if !vanished {
				continue
			}
			if i == len(snaps)-1 && !c.opts.off.relistNewest {
				return true, nil
			}
			if i >= newestFinished && !c.opts.off.relistFinished {
				return true, nil
			}
		}
	}
	return false, nil
}

// walkIndexes lists every .fidx and .didx file below the store root,
// skipping names that start with a dot, as PBS's list of index files does
// (spec §6.3). It follows no symlinks. Entries that vanish are skipped;
// EPERM is tolerated only on lost+found at the top.
func (c *Collector) walkIndexes(ctx context.Context) ([]string, error) {
	root := c.s.Root()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if err != nil {
			switch {
			case errors.Is(err, fs.ErrNotExist) && p != root:
				return nil
			case errors.Is(err, fs.ErrPermission) && d != nil && d.Name() == "lost+found" && depth(root, p) <= 1:
				return fs.SkipDir
			}
			return fmt.Errorf("list index files: %w", err)
		}
		if p == root {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() {
			if ext := filepath.Ext(d.Name()); ext == ".fidx" || ext == ".didx" {
				out = append(out, p)
			}
		}
		return nil
	})
	return out, err
}

func depth(root, p string) int {
	rel, err := filepath.Rel(root, p)
	if err != nil {
		return 0
	}
	return strings.Count(rel, string(filepath.Separator)) + 1
}
