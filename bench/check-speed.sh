#!/usr/bin/env bash
# Measures the checker's speed (schedules/s, decisions/s, CPU seconds per run) of this build
# against a baseline build, side by side: each round runs the same check once on each build, the
# order alternating from round to round, and the table gives the median and range of each.
#
#   bench/check-speed.sh BASELINE_REV [-- CHECK ARGS...]
#
# BASELINE_REV is any git revision of this repository (it is cloned and built under
# $CHECK_SPEED_DIR, default /tmp/blkstack-check-speed). Without CHECK ARGS the README's example
# runs: --stack split-memory --workload examples/check-split.workload --schedules 400.
#
# Environment: ROUNDS (default 3). Run it on a quiet machine: real time measures the share of
# the CPU the run gets.
set -euo pipefail

root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
[[ $# -ge 1 ]] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
base_rev=$1; shift
[[ ${1:-} == -- ]] && shift
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(--stack split-memory --workload "$root/examples/check-split.workload" --schedules 400)
rounds=${ROUNDS:-3}
dir=${CHECK_SPEED_DIR:-/tmp/blkstack-check-speed}

mkdir -p "$dir"
base="$dir/base-$(git -C "$root" rev-parse --short "$base_rev")"
if [[ ! -d $base ]]; then
    git clone -q "$root" "$base"
    git -C "$base" checkout -q "$(git -C "$root" rev-parse "$base_rev")"
fi
for build in "$base" "$root"; do
    "$build/blkstack" --help >/dev/null   # builds the jar if it is stale
done

results="$dir/results.tsv"
: > "$results"
run() {   # run NAME BUILD: one check, appends "name schedules/s decisions/s cpu-seconds"
    local name=$1 build=$2 out cpu
    out=$( { TIMEFORMAT='%U %S'; time "$build/blkstack" check "${args[@]}" --no-progress 2>/dev/null; } 2>&1 || true)
    cpu=$(tail -1 <<<"$out" | awk '{print $1 + $2}')
    awk -v n="$name" -v c="$cpu" '/ schedules\/s, / {
        for (i = 1; i <= NF; i++) { if ($(i+1) == "schedules/s,") s = $i; if ($(i+1) == "decisions/s,") d = $i }
        print n, s, d, c }' <<<"$out" >> "$results"
}
for ((r = 1; r <= rounds; r++)); do
    if ((r % 2)); then run baseline "$base"; run this "$root"; else run this "$root"; run baseline "$base"; fi
    echo "round $r of $rounds done" >&2
done

summary() {   # summary NAME COLUMN -> "median [min-max]"
    awk -v n="$1" -v c="$2" '$1 == n { print $c }' "$results" | sort -g |
        awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
               printf "%.1f [%.1f-%.1f]", m, v[1], v[NR] }'
}
echo "check ${args[*]}"
echo "| build | schedules/s median [range] | decisions/s median [range] | CPU s per run median [range] |"
echo "|---|---|---|---|"
for name in baseline this; do
    label=$name; [[ $name == baseline ]] && label="baseline ($base_rev)"
    echo "| $label | $(summary "$name" 2) | $(summary "$name" 3) | $(summary "$name" 4) |"
done
