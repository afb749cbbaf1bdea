// Package integration holds end-to-end tests of pbsfs: the real binary
// makes backups and mounts the datastore, and real tools (ls, cat, cmp,
// diff, stat, rm, rmdir, getfattr, getfacl) look at the mount. The tests
// need root and /dev/fuse; without them they skip, unless
// PBSFS_REQUIRE_FUSE=1 turns the skip into a failure.
//
// bench.sh runs the mount benchmarks beside a go-fuse loopback mount of
// the raw files (PBSFS_BENCH=1 go test -run TestBench).
package integration
