package gc

import (
	"context"
	"fmt"

	"github.com/pbsfs/pbsfs/store"
	"golang.org/x/sys/unix"
)

// zeroChunkDigest is the digest of 4 MiB of zeros, the chunk PBS 2025+
// uses for its access time self-test (spec §6.5).
const zeroChunkDigest = "bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8"

// atimeProbeAge is how far back the self-test sets the probe's atime.
const atimeProbeAge = 3600 // seconds

// checkAtime proves that a touch moves a chunk's access time on this file
// system, as PBS 2025+ does before each run (spec §6.5): it inserts the
// zero chunk (an existing one is kept), and then, where PBS sleeps a
// second and checks that the atime grew, it sets the atime an hour back,
// checks that this was stored, touches the chunk and checks that the atime
// is now at least the change time of the step before — the same proof
// without the sleep. If the file is replaced meanwhile, or a writer
// touches it between the steps, the test runs once more.
//
// The zero chunk is touched by every run and so never swept, as in PBS.
func (c *Collector) checkAtime(ctx context.Context) error {
	zeros := make([]byte, store.FixedChunkSize)
	d := store.DigestOf(zeros)
	if d.String() != zeroChunkDigest {
		return fmt.Errorf("zero chunk digest %s: %w", d, ErrAtimeCheck)
	}
	blob, err := c.s.Codec().Encode(zeros, true)
	if err != nil {
		return fmt.Errorf("atime check: %w", err)
	}
	// Through the chunk store: on S3 the object is put (if missing) and
	// the marker made, as PBS's self-test does.
	if _, err := c.s.ChunkStore().Insert(ctx, d, blob); err != nil {
		return fmt.Errorf("atime check: %w", err)
	}
	path := c.s.Chunks().Path(d)
	for try := 0; ; try++ {
		retry, err := c.probeAtime(path)
		if err == nil {
			return nil
		}
		if !retry || try == 1 {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
}

// probeAtime runs the self-test once. retry reports a failure that a
// concurrent writer may explain.
func (c *Collector) probeAtime(path string) (retry bool, err error) {
	var before, mid, after unix.Stat_t
	if err := unix.Lstat(path, &before); err != nil {
		return false, fmt.Errorf("atime check: %w", err)
	}
	old := unix.Timespec{Sec: before.Ctim.Sec - atimeProbeAge}
	ts := []unix.Timespec{old, {Nsec: unix.UTIME_OMIT}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false, fmt.Errorf("atime check: set atime: %w", err)
	}
	if err := unix.Lstat(path, &mid); err != nil {
		return false, fmt.Errorf("atime check: %w", err)
	}
	touch := c.opts.test.touch
	if touch == nil {
		touch = store.TouchPath
	}
	if err := touch(path); err != nil {
		return false, fmt.Errorf("atime check: touch: %w", err)
	}
	if err := unix.Lstat(path, &after); err != nil {
		return false, fmt.Errorf("atime check: %w", err)
	}
	if before.Ino != mid.Ino || mid.Ino != after.Ino {
		return true, fmt.Errorf("chunk replaced during the check: %w", ErrAtimeCheck)
	}
	if mid.Atim != old {
		return true, fmt.Errorf("an explicit atime was not stored (%d.%09d, want %d): %w",
			mid.Atim.Sec, mid.Atim.Nsec, old.Sec, ErrAtimeCheck)
	}
	if after.Atim.Sec < mid.Ctim.Sec || after.Atim.Sec == mid.Ctim.Sec && after.Atim.Nsec < mid.Ctim.Nsec {
		return false, fmt.Errorf("touching did not move the atime (%d.%09d, before %d.%09d): %w",
			after.Atim.Sec, after.Atim.Nsec, mid.Ctim.Sec, mid.Ctim.Nsec, ErrAtimeCheck)
	}
	return false, nil
}
