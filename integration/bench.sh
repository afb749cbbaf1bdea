#!/usr/bin/env bash
# Mount benchmarks: pbsfs beside a go-fuse loopback mount of the raw files,
# measured in the same run; prints a table of ratios. Needs root and
# /dev/fuse. Measures cat cold and warm and 20,000 random 4 KiB preads
# cold and warm of a random, a text and a sparse file inside a plain and
# a split pxar archive and as images; find, du -sh, tar and grep -r over
# the small-file tree in both archives; the first stat in the plain
# archive; time from mount to the first listing; peak RSS. Scale down
# with PBSFS_BENCH_FILE_MIB (default 1024), PBSFS_BENCH_FILES (20000),
# PBSFS_BENCH_SNAPSHOTS (1000) and PBSFS_BENCH_PREADS (20000).
set -euo pipefail
cd "$(dirname "$0")/.."
PBSFS_BENCH=1 PBSFS_REQUIRE_FUSE=1 exec go test -count=1 -run '^TestBench$' -v -timeout 60m ./integration "$@"
