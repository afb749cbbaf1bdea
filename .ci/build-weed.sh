#!/usr/bin/env bash
# Builds SeaweedFS's weed binary once per machine into a cache outside the repository.
set -euo pipefail
V="${WEED_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
CACHE="${PBSFS_WEED_CACHE:-/var/cache/pbsfs/weed-$V}"
if [ -x "$CACHE/weed" ]; then echo "$CACHE/weed"; exit 0; fi
mkdir -p "$CACHE"
dir=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "github.com/seaweedfs/seaweedfs@$V" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
work=$(mktemp -d)
cp -r "$dir/." "$work/src"; chmod -R u+w "$work/src"
(cd "$work/src" && go build -o "$CACHE/weed.tmp" ./weed)
mv "$CACHE/weed.tmp" "$CACHE/weed"; rm -rf "$work"
echo "$CACHE/weed"
