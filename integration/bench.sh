#!/usr/bin/env bash
# Mount benchmarks: pbsfs beside a go-fuse loopback mount of the raw files,
# measured in the same run; prints a table of ratios. Needs root and
# /dev/fuse. Scale down with PBSFS_BENCH_IMAGE_MIB (default 1024),
# PBSFS_BENCH_FILES (50000) and PBSFS_BENCH_SNAPSHOTS (1000).
set -euo pipefail
cd "$(dirname "$0")/.."
PBSFS_BENCH=1 PBSFS_REQUIRE_FUSE=1 exec go test -count=1 -run '^TestBench$' -v -timeout 60m ./integration "$@"
