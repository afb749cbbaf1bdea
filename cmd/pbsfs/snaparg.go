package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/pbsfs/pbsfs/store"
	"golang.org/x/term"
)

// snapshotFormat tells what a SNAPSHOT argument looks like.
const snapshotFormat = "want TYPE/ID/TIME (e.g. vm/100/2026-11-20T10:00:00Z), TYPE/ID/latest, or TYPE/ID for the group's latest snapshot, after ns/NAME/ for a namespace; 'pbsfs snapshots' lists them"

// snapshotArg is a parsed SNAPSHOT argument: one snapshot, or the latest
// finished snapshot of a group (GROUP or GROUP/latest), as the PBS client
// accepts a group where it wants a snapshot.
type snapshotArg struct {
	arg    string
	ref    store.SnapshotRef // when !latest
	group  store.GroupRef
	latest bool
}

// parseSnapshotArg parses arg in namespace ns; its errors are usage
// errors that show the expected format.
func parseSnapshotArg(ns store.Namespace, arg string) (snapshotArg, error) {
	s := strings.Trim(arg, "/")
	if rest, ok := strings.CutSuffix(s, "/latest"); ok {
		g, err := store.ParseGroup(ns, rest)
		if err != nil {
			return snapshotArg{}, usagef("snapshot %q: %v; %s", arg, err, snapshotFormat)
		}
		return snapshotArg{arg: arg, group: g, latest: true}, nil
	}
	if ref, err := store.ParseSnapshot(ns, s); err == nil {
		return snapshotArg{arg: arg, ref: ref, group: ref.Group}, nil
	}
	if g, err := store.ParseGroup(ns, s); err == nil {
		return snapshotArg{arg: arg, group: g, latest: true}, nil
	}
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		if _, err := store.ParseGroup(ns, s[:i]); err == nil {
			return snapshotArg{}, usagef("snapshot %q: %q is not a snapshot time: want YYYY-MM-DDTHH:MM:SSZ in UTC (e.g. 2026-11-20T10:00:00Z) or latest; 'pbsfs snapshots %s' lists them", arg, s[i+1:], s[:i])
		}
	}
	return snapshotArg{}, usagef("snapshot %q: %s", arg, snapshotFormat)
}

// resolve finds the snapshot a names in s.
func (a snapshotArg) resolve(s *store.Store) (store.SnapshotInfo, error) {
	if !a.latest {
		si, err := s.Snapshot(a.ref)
		if errors.Is(err, store.ErrNotFound) {
			return si, fmt.Errorf("snapshot %s not found; 'pbsfs snapshots %s' lists the group's snapshots: %w", pathOf(a.ref), groupPath(a.group), err)
		}
		return si, err
	}
	snaps, problems, err := s.Snapshots(a.group)
	if errors.Is(err, store.ErrNotFound) {
		return store.SnapshotInfo{}, fmt.Errorf("group %s not found; 'pbsfs snapshots' lists the groups: %w", groupPath(a.group), err)
	}
	if err != nil {
		return store.SnapshotInfo{}, err
	}
	for i := len(snaps) - 1; i >= 0; i-- {
		if snaps[i].Finished {
			return snaps[i], nil
		}
	}
	if len(problems) > 0 {
		return store.SnapshotInfo{}, fmt.Errorf("group %s: no readable finished snapshot (%s): %w", groupPath(a.group), problems[0], store.ErrNotFound)
	}
	return store.SnapshotInfo{}, fmt.Errorf("group %s has no finished snapshot: %w", groupPath(a.group), store.ErrNotFound)
}

// openSnapshot opens the store and the snapshot named by arg (a snapshot,
// GROUP or GROUP/latest).
func openSnapshot(e *env, nsFlag, arg string) (*store.Store, store.SnapshotInfo, error) {
	ns, err := store.ParseNamespace(nsFlag)
	if err != nil {
		return nil, store.SnapshotInfo{}, usageError{err}
	}
	a, err := parseSnapshotArg(ns, arg)
	if err != nil {
		return nil, store.SnapshotInfo{}, err
	}
	s, err := e.openStore()
	if err != nil {
		return nil, store.SnapshotInfo{}, err
	}
	si, err := a.resolve(s)
	if err != nil {
		s.Close()
		return nil, store.SnapshotInfo{}, err
	}
	return s, si, nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// parseGroupArg parses a GROUP argument in namespace ns; its error shows
// the expected format.
func parseGroupArg(ns store.Namespace, arg string) (store.GroupRef, error) {
	g, err := store.ParseGroup(ns, arg)
	if err != nil {
		return g, usagef("group %q: want TYPE/ID, e.g. vm/100 or host/web, after ns/NAME/ for a namespace; 'pbsfs snapshots' lists the snapshots of every group", arg)
	}
	return g, nil
}
