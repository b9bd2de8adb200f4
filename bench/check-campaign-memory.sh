#!/usr/bin/env bash
# Long checker campaign under the default heap (issue 13): runs `blkstack check` on the legacy
# split-memory stack (seed 000's deadlock, most schedules end in a LIVELOCK finding) for N
# schedules with the GC log on, and reports the live heap after young collections at the start,
# the middle and the end, and the largest. A campaign keeps only the first findings of each kind
# in full, and a finding never keeps its kernel, so the live heap must stay flat however long the
# campaign runs; before that fix a 2,000-schedule legacy campaign ran out of heap.
#
# Usage: bench/check-campaign-memory.sh [SCHEDULES]     (default 100000)
#
# Environment:
#   BLKSTACK_BUILD_DIR   Maven build directory relative to the repository (default target)
#   CHECK_EXTRA          extra `blkstack check` options (e.g. "--strategy pct:3")
#
# Prints the check summary, then a line `heap after GC (MiB): first F, middle M, last L, median D,
# max X over N collections` (a single young collection in the middle of a heavy run may keep a few
# tens of MiB it frees at the next one; the median is the live heap). Exit status is blkstack's
# (3: findings, as expected of a legacy campaign).
set -uo pipefail

root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
schedules=${1:-100000}
out=$(mktemp -d "${TMPDIR:-/tmp}/check-memory.XXXXXX")
gclog="$out/gc.log"

echo "check-campaign-memory: $schedules schedules, GC log in $gclog" >&2
# shellcheck disable=SC2086
BLKSTACK_JAVA_OPTS="-Xlog:gc:file=$gclog ${BLKSTACK_JAVA_OPTS:-}" "$root/blkstack" check --stack split-memory \
    --workload "$root/examples/check-split.workload" --policy bioset-rescuer=legacy --schedules "$schedules" \
    --no-progress ${CHECK_EXTRA:-} > "$out/check.txt" 2>&1
status=$?
sed -n '1,12p' "$out/check.txt"

# "[12.3s][info][gc] GC(7) Pause Young (Normal) (G1 Evacuation Pause) 462M->208M(596M) 81.366ms"
awk '/Pause Young/ { if (match($0, /->[0-9]+M/)) { v = substr($0, RSTART + 2, RLENGTH - 3) + 0; a[n++] = v; if (v > max) max = v } }
     END { if (n == 0) { print "heap after GC: no young collection logged"; exit }
           for (i = 0; i < n; i++) s[i] = a[i]
           for (i = 1; i < n; i++) { x = s[i]; for (j = i - 1; j >= 0 && s[j] > x; j--) s[j + 1] = s[j]; s[j + 1] = x }
           printf "heap after GC (MiB): first %d, middle %d, last %d, median %d, max %d over %d collections\n",
                  a[0], a[int(n / 2)], a[n - 1], s[int(n / 2)], max, n }' "$gclog"
exit $status
