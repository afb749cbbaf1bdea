#!/usr/bin/env bash
# Change detection on a real tree: a copy of SRC (default /usr/share; SRC
# itself is never modified) is backed up (metadata mode), then 1 % of its
# regular files are touched (every 100th in sorted order gets a new mtime;
# one in ten of those also gets a byte appended) and the copy is backed up
# again from the same base in metadata mode (the PBS client's padding
# rule: an unchanged file is read again when the old chunks holding it
# would be more than 10 % bytes no unchanged file needs), in metadata mode
# with --max-padding 100 (no unchanged file is read) and in data mode,
# each into its own copy of the base store, ROUNDS times, rotating which
# runs first. Prints each run's pbsfs summary (files read, files and chunks
# reused, time) and peak RSS (/usr/bin/time), then restores both second
# snapshots and compares them with the tree: diff -r, and a listing of
# every entry's type, owner, group, mode, mtime (ns), size and symlink
# target, plus every xattr (getfattr). The copy gets a few owners, modes
# and xattrs that /usr/share lacks so that the comparison can fail.
#
# Usage: integration/changedetect.sh [SRC]   (root; env ROUNDS=3,
# COLD=1 drops the page cache before each backup, WORK=dir)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:-/usr/share}
ROUNDS=${ROUNDS:-3}
COLD=${COLD:-0}
WORK=${WORK:-$(mktemp -d /tmp/changedetect.XXXXXX)}
BIN=$WORK/pbsfs
trap 'rm -rf "$WORK"' EXIT
go build -o "$BIN" ./cmd/pbsfs

tree=$WORK/tree
cp -a "$SRC" "$tree"
# Metadata /usr/share does not have, so that the comparison can fail.
n=0
while IFS= read -r -d '' f; do
	case $((n % 4)) in
	0) chown 65534:65534 "$f" ;;
	1) chmod 0600 "$f" ;;
	2) setfattr -n user.pbsfs.test -v "v$n" "$f" ;;
	3) ln -s "target-$n" "$f.link" ;;
	esac
	n=$((n + 1))
	[ $n -ge 40 ] && break
done < <(find "$tree" -type f -print0 | sort -z)

backup() { # STORE MODE TIME -> prints the summary and the peak RSS
	local mode=$2 extra=()
	if [ "$mode" = padding100 ]; then mode=metadata extra=(--max-padding 100); fi
	if [ "$COLD" = 1 ]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
	/usr/bin/time -f "peak RSS %M KiB, wall %e s, cpu %U+%S s" \
		"$BIN" backup --no-progress --store "$1" --type host --id share --time "$3" \
		--change-detection-mode "$mode" "${extra[@]}" root.pxar:"$tree" 2>&1
}
"$BIN" init "$WORK/base" >/dev/null
echo "== backup #1 (metadata mode) of $(find "$tree" -type f | wc -l) files, $(du -sh "$tree" | cut -f1)"
backup "$WORK/base" metadata 2026-12-01T00:00:00Z

mapfile -d '' files < <(find "$tree" -type f -print0 | sort -z)
touched=0
for ((i = 0; i < ${#files[@]}; i += 100)); do
	touch -m -d '2026-12-01 12:00:00' "${files[i]}"
	if ((touched % 10 == 0)); then printf x >> "${files[i]}"; fi
	touched=$((touched + 1))
done
echo "== touched $touched of ${#files[@]} files ($((touched / 10 + (touched % 10 > 0))) with a byte appended)"

for ((r = 1; r <= ROUNDS; r++)); do
	case $((r % 3)) in
	1) order="metadata padding100 data" ;;
	2) order="padding100 data metadata" ;;
	0) order="data metadata padding100" ;;
	esac
	for mode in $order; do
		rm -rf "$WORK/$mode"
		cp -a "$WORK/base" "$WORK/$mode"
		echo "== round $r: backup #2, $mode"
		backup "$WORK/$mode" "$mode" 2026-12-02T00:00:00Z
	done
done

# What the listing compares: type, owner, group, mode, mtime, size, target.
listing() { (cd "$1" && find . \( -type d -printf '%y %U %G %m %T@ %p\n' \) -o -printf '%y %U %G %m %T@ %s %p -> %l\n' | sort); }
xattrs() { (cd "$1" && getfattr -R -h -d -m - . 2>/dev/null | sed '/^$/d'); }
status=0
for mode in metadata padding100 data; do
	out=$WORK/restore-$mode
	"$BIN" restore --no-progress --store "$WORK/$mode" host/share/2026-12-02T00:00:00Z root.pxar "$out" >/dev/null
	if diff -r --no-dereference "$tree" "$out" >/dev/null; then d=same; else d=DIFFERENT; status=1; fi
	if diff <(listing "$tree") <(listing "$out") >/dev/null; then m=same; else m=DIFFERENT; status=1; diff <(listing "$tree") <(listing "$out") | head -5; fi
	if diff <(xattrs "$tree") <(xattrs "$out") >/dev/null; then x=same; else x=DIFFERENT; status=1; fi
	echo "== restore of the $mode snapshot: diff -r $d; type/owner/mode/mtime/size/symlinks $m ($(listing "$out" | wc -l) entries); xattrs $x ($(xattrs "$tree" | grep -c '^user\.' || true) user xattrs)"
done
exit $status
