package gc

import (
	"context"
	"errors"
	"fmt"
	"path"

	"github.com/pbsfs/pbsfs/store"
)

// WillRemove is called before snapshot ref is removed (the mount passes
// it to store.RemoveSnapshot and RemoveGroup as their store.RemoveHook).
// While a run is in phase 1 it marks the snapshot's indexes first, so
// that a newer snapshot reusing their chunks without touching them keeps
// them even if phase 1 has not read that newer snapshot's index; the chunks
// this run touched already cost nothing. Otherwise it returns at once: a
// run that has not started phase 1 lists the store after the removal, and
// one past phase 1 has marked everything the store held.
//
// An index that cannot be parsed does not stop the removal: it fails the
// run instead, which then sweeps nothing.
func (c *Collector) WillRemove(ctx context.Context, ref store.SnapshotRef) error {
	if c.opts.off.willRemove {
		return nil
	}
	c.phaseMu.RLock()
	defer c.phaseMu.RUnlock()
	if c.phase != PhaseMark || c.run == nil {
		return nil
	}
	r := c.run
	si, err := c.s.Snapshot(ref)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		r.fail(fmt.Errorf("snapshot %s removed during phase 1: %w", ref, err))
		return nil
	}
	for _, name := range si.Files {
		if k := store.KindOf(name); k != store.KindFixed && k != store.KindDynamic {
			continue
		}
		if _, err := r.markFile(ctx, c.s.Path(path.Join(ref.Dir(), name))); err != nil {
			if ctx.Err() != nil {
				return err // the removal was called off; the run goes on
			}
			r.fail(fmt.Errorf("snapshot %s removed during phase 1: %w", ref, err))
			return nil
		}
	}
	return nil
}

// Pin makes idx a root of every run until unpin is called: its chunks are
// marked at the end of each phase 1. The mount pins the index of every open
// file, so that a snapshot removed while one of its files is open stays
// readable until the last close; the parsed index must stay in memory,
// since its file may be gone.
//
// Pins live in this process: a collector in another process (`pbsfs gc`
// beside a mount) does not see them. Such a file then stays readable only
// while its chunks are younger than that collector's cutoff.
func (c *Collector) Pin(idx Index) (unpin func()) {
	c.pinMu.Lock()
	id := c.nextPin
	c.nextPin++
	c.pins[id] = idx
	c.pinMu.Unlock()
	return func() {
		c.pinMu.Lock()
		delete(c.pins, id)
		c.pinMu.Unlock()
	}
}

var _ store.RemoveHook = (*Collector)(nil).WillRemove
