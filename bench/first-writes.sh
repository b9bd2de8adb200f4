#!/usr/bin/env bash
# First writes through thin and snapshot against linear, and a first copy into the default stack.
#
# Each round starts `blkstack serve` on fresh sparse files, so every measured write is a first
# write: nothing is provisioned in the thin volume and no chunk of the origin has an exception.
# The jobs (fio's nbd engine), each paired with the same job on a `linear` target over a fresh
# file of its own, the two run one after the other in an order that alternates between rounds:
#   thin-4k      4 KiB random writes, iodepth 32, one per 64 KiB thin block (blockalign=64k over
#                a 64 GiB volume, so a write rarely finds its block provisioned), against linear
#   origin-1m    1 MiB sequential writes, iodepth 8, through snapshot-origin with a persistent
#                snapshot of 8 KiB chunks (the default stack's), against linear
# and then, per round, `nbdcopy` of a file of random data into the embedded default stack
# (`blkstack serve` without a configuration: striped under snapshot-origin) in a fresh directory,
# twice: the first copy makes every exception, the second overwrites.
# Prints, per job, the medians of the rounds and the median and range of the per-round ratios
# (a ratio measured side by side holds on a loaded machine where absolute figures do not).
# Measures only; asserts nothing.
#
# Environment:
#   BENCH_SECONDS     runtime of each fio job (default 5)
#   BENCH_ROUNDS      rounds (default 3)
#   BENCH_WARMUP      seconds of unmeasured writes to another region of each export first, so the
#                     JVM compiles its paths (default 3; 0 skips)
#   BENCH_COPY_MIB    size of the nbdcopy source file (default 512; 0 skips the nbdcopy job)
#   BENCH_JOBS        space-separated subset of: thin-4k origin-1m nbdcopy (default: all)
#   BENCH_BLKSTACK    the launcher to measure (default: this repository's ./blkstack), so two
#                     builds can be compared with the same script
#   BENCH_DIR         scratch directory (default: a new one under ${TMPDIR:-/tmp}, removed at exit;
#                     one given is kept). On tmpfs (/dev/shm/NAME) a flush costs nothing, so the
#                     figures price the path without the disk: a thin pool flushes its data device
#                     before every commit (each second), a linear target never does
#   BENCH_KEEP        1 keeps each round's files (default: removed when the round ends, which on
#                     tmpfs gives the memory back)
#   BLKSTACK_BUILD_DIR, BLKSTACK_JAVA_OPTS   passed to ./blkstack
set -euo pipefail

root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
seconds=${BENCH_SECONDS:-5}
rounds=${BENCH_ROUNDS:-3}
warmup=${BENCH_WARMUP:-3}
copy_mib=${BENCH_COPY_MIB:-512}
blkstack=${BENCH_BLKSTACK:-$root/blkstack}
want() { [[ -z ${BENCH_JOBS:-} || " $BENCH_JOBS " == *" $1 "* ]]; }

for program in fio nbdcopy python3; do
    if ! command -v "$program" >/dev/null 2>&1; then
        echo "first-writes: $program is not installed" >&2
        exit 2
    fi
done
if ! fio --enghelp=nbd >/dev/null 2>&1; then
    echo "first-writes: this fio has no nbd engine" >&2
    exit 2
fi

if [[ -n ${BENCH_DIR:-} ]]; then
    work=$BENCH_DIR
    mkdir -p "$work"
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/first-writes.XXXXXX")
fi
serve_pid=
stop_serve() {
    if [[ -n $serve_pid ]]; then
        kill -TERM "$serve_pid" 2>/dev/null || true
        wait "$serve_pid" 2>/dev/null || true
        serve_pid=
    fi
}
cleanup() {
    stop_serve
    [[ -z ${BENCH_DIR:-} ]] && rm -rf "$work"
    return 0
}
trap cleanup EXIT

# Starts serve in directory $1 with the remaining arguments; sets serve_pid and port.
start_serve() {
    local dir=$1
    shift
    (cd "$dir" && exec "$blkstack" serve --listen 127.0.0.1:0 "$@" >serve.out 2>serve.err) &
    serve_pid=$!
    for _ in $(seq 1 1200); do
        grep -q '^blkstack serve: ready$' "$dir/serve.out" 2>/dev/null && break
        if ! kill -0 "$serve_pid" 2>/dev/null; then
            echo "first-writes: blkstack serve exited:" >&2
            cat "$dir/serve.err" >&2
            exit 2
        fi
        sleep 0.1
    done
    port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$dir/serve.out" | head -1 | cut -d: -f2)
    if [[ -z $port ]]; then
        echo "first-writes: blkstack serve did not get ready" >&2
        cat "$dir/serve.err" >&2
        exit 2
    fi
}

# The stack of one round: every volume on fresh sparse files.
write_stack() {
    cat >"$1/stack.yaml" <<'YAML'
memory: 64MiB
devices:
  meta: { file: meta.img, size: 64MiB }
  data: { file: data.img, size: 16GiB }
  lin4k: { file: lin4k.img, size: 64GiB }
  origin: { file: origin.img, size: 16GiB }
  cow: { file: cow.img, size: 16GiB }
  lin1m: { file: lin1m.img, size: 16GiB }
mapped:
  pool: |
    0 33554432 thin-pool meta data 128 0
  thin0: |
    0 134217728 thin pool 0
  linear4k: |
    0 134217728 linear lin4k 0
  origin0: |
    0 33554432 snapshot-origin origin
  snap0: |
    0 33554432 snapshot origin cow P 16
  linear1m: |
    0 33554432 linear lin1m 0
exports:
  thin0: { device: thin0 }
  linear4k: { device: linear4k }
  origin0: { device: origin0 }
  linear1m: { device: linear1m }
YAML
}

# One fio run; prints "iops bandwidth_bytes_per_second". Arguments: uri rw bs depth offset size runtime out [extra...]
run_fio() {
    local uri=$1 rw=$2 bs=$3 depth=$4 offset=$5 size=$6 runtime=$7 out=$8
    shift 8
    fio --name=bench --ioengine=nbd --uri="$uri" --rw="$rw" --bs="$bs" --iodepth="$depth" \
        --offset="$offset" --size="$size" --time_based --runtime="$runtime" --randrepeat=0 "$@" \
        --output-format=json --output="$out" >/dev/null
    python3 - "$out" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
w = json.loads(text[text.index("{"):])["jobs"][0]["write"]  # fio may print a warning line first
print(f'{w["iops"]:.0f} {w["bw_bytes"]}')
PY
}

# name  first-write export  baseline export  rw  bs  depth  measured size  warm-up offset  extra fio options
jobs=(
    "thin-4k thin0 linear4k randwrite 4k 32 32g 48g --blockalign=64k --norandommap"
    "origin-1m origin0 linear1m write 1m 8 12g 12g"
)

results=$work/results.txt
: >"$results"
for round in $(seq 1 "$rounds"); do
    if want thin-4k || want origin-1m; then
        dir=$work/round$round
        rm -rf "$dir"
        mkdir -p "$dir"
        write_stack "$dir"
        start_serve "$dir" --config stack.yaml
        for job in "${jobs[@]}"; do
            read -r name first base rw bs depth size warm_offset extra <<<"$job"
            want "$name" || continue
            if ((warmup > 0)); then
                for export in "$first" "$base"; do
                    run_fio "nbd://127.0.0.1:$port/$export" "$rw" "$bs" "$depth" "$warm_offset" 4g "$warmup" \
                        "$dir/warmup.json" ${extra:-} >/dev/null
                done
            fi
            if ((round % 2 == 1)); then order="$first $base"; else order="$base $first"; fi
            for export in $order; do
                read -r iops bw < <(run_fio "nbd://127.0.0.1:$port/$export" "$rw" "$bs" "$depth" 0 "$size" \
                    "$seconds" "$dir/$name-$export.json" ${extra:-})
                side=first
                [[ $export == "$base" ]] && side=base
                echo "$name $round $side $iops $bw" >>"$results"
            done
        done
        stop_serve
        [[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf "$dir"
    fi
    if want nbdcopy && ((copy_mib > 0)); then
        src=$work/copy-source.img
        [[ -f $src ]] || dd if=/dev/urandom of="$src" bs=1M count="$copy_mib" status=none
        dir=$work/copy$round
        rm -rf "$dir"
        mkdir -p "$dir"
        start_serve "$dir"
        for pass in first base; do
            t0=$(date +%s.%N)
            nbdcopy "$src" "nbd://127.0.0.1:$port/default"
            t1=$(date +%s.%N)
            secs=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
            # For the copy, "iops" is unused and the figure is bytes per second.
            echo "nbdcopy $round $pass 0 $(python3 -c "print(int($copy_mib * 2**20 / ($t1 - $t0)))")" >>"$results"
            echo "first-writes: round $round nbdcopy $pass pass: $secs s" >&2
        done
        stop_serve
        [[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf "$dir"
    fi
done

echo "first-writes: $rounds round(s), $seconds s per fio job, nbdcopy of $copy_mib MiB; launcher $blkstack" >&2
python3 - "$results" "$copy_mib" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, rnd, side, iops, bw = line.split()
    runs.setdefault(name, {}).setdefault(int(rnd), {})[side] = (float(iops), float(bw))
copy_mib = float(sys.argv[2])
labels = {
    "thin-4k": ("thin IOPS", "linear IOPS", 0),
    "origin-1m": ("origin MiB/s", "linear MiB/s", 1),
    "nbdcopy": ("1st copy s", "2nd copy s", 1),
}
print(f'{"job":<10} {"first writes":>14} {"baseline":>14} {"ratio":>7} {"round ratios":>13}')
for name, rounds in runs.items():
    first_label, base_label, i = labels[name]
    both = [r for r in rounds.values() if "first" in r and "base" in r]
    ratios = [r["first"][1] / r["base"][1] for r in both]
    def figure(side):
        values = [r[side][i] for r in both]
        if name == "nbdcopy":
            values = [copy_mib * 2**20 / r[side][1] for r in both]  # seconds
        elif i == 1:
            values = [v / 2**20 for v in values]
        return statistics.median(values)
    print(f'{name:<10} {figure("first"):14.1f} {figure("base"):14.1f} {statistics.median(ratios):7.3f} '
          f'{min(ratios):6.3f}-{max(ratios):.3f}   ({first_label} / {base_label}; ratio of throughputs)')
PY
