package gc

import (
	"path/filepath"
	"time"

	"github.com/pbsfs/pbsfs/store"
)

// ScheduleState is what a scheduled daemon keeps between runs of the
// process, as PBS keeps a job state: when the last scheduled collection
// started. It lives in <runtime>/pbsfs/<store>/gc-schedule.json.
type ScheduleState struct {
	// LastRun is the start of the last scheduled collection.
	LastRun time.Time `json:"last-run"`
}

// scheduleStatePath is the state file of store s.
func scheduleStatePath(s *store.Store) string {
	return filepath.Join(s.RuntimeDir(), "pbsfs", s.Name(), "gc-schedule.json")
}

// LoadScheduleState reads the schedule state of s; a missing file gives
// the zero state.
func LoadScheduleState(s *store.Store) (ScheduleState, error) {
	var st ScheduleState
	if _, err := readJSON(scheduleStatePath(s), &st); err != nil {
		return ScheduleState{}, err
	}
	return st, nil
}

// SaveScheduleState writes the schedule state of s atomically.
func SaveScheduleState(s *store.Store, st ScheduleState) error {
	return writeJSON(scheduleStatePath(s), st)
}
