#!/usr/bin/env bash
# Compares blkstack's NBD server with nbdkit's file plugin on the same backing file.
#
# blkstack serves the file through one `linear` target (a configuration written here); nbdkit
# serves it with its file plugin on another port. The same fio nbd-engine jobs run against each,
# one server at a time: 4 KiB random read and random write at iodepth 32, 1 MiB sequential read
# and write at iodepth 8, each time-limited. Each job runs BENCH_ROUNDS times on each server, the
# order alternating between rounds (so drift in the machine's load hits both sides alike); prints
# the median IOPS and bandwidth of each side, blkstack/nbdkit of the medians, and the lowest and
# highest ratio of a single round. Measures only; asserts nothing.
#
# Environment:
#   BENCH_SECONDS     runtime of each job (default 10)
#   BENCH_ROUNDS      rounds per job and server (default 3)
#   BENCH_JOBS        space-separated job names to run (default: all four)
#   BENCH_WARMUP      seconds of each job run unmeasured against both servers first (default 3):
#                     the JVM compiles its hot paths, both servers see the same page cache
#   BENCH_SIZE_MIB    backing file size (default 1024); the file is filled with random data first
#   BENCH_DIR         scratch directory (default: a new one under ${TMPDIR:-/tmp}, removed at exit)
#   BLKSTACK_BUILD_DIR, BLKSTACK_JAVA_OPTS   passed to ./blkstack
set -euo pipefail

root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
seconds=${BENCH_SECONDS:-10}
rounds=${BENCH_ROUNDS:-3}
size_mib=${BENCH_SIZE_MIB:-1024}

for program in fio nbdkit python3; do
    if ! command -v "$program" >/dev/null 2>&1; then
        echo "nbd-vs-nbdkit: $program is not installed" >&2
        exit 2
    fi
done
if ! fio --enghelp=nbd >/dev/null 2>&1; then
    echo "nbd-vs-nbdkit: this fio has no nbd engine" >&2
    exit 2
fi

if [[ -n ${BENCH_DIR:-} ]]; then
    work=$BENCH_DIR
    mkdir -p "$work"
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/nbd-vs-nbdkit.XXXXXX")
fi
blkstack_pid=
nbdkit_pid=
cleanup() {
    [[ -n $blkstack_pid ]] && kill -TERM "$blkstack_pid" 2>/dev/null && wait "$blkstack_pid" 2>/dev/null
    [[ -n $nbdkit_pid ]] && kill -TERM "$nbdkit_pid" 2>/dev/null && wait "$nbdkit_pid" 2>/dev/null
    [[ -z ${BENCH_DIR:-} ]] && rm -rf "$work"
    return 0
}
trap cleanup EXIT

disk=$work/disk.img
echo "nbd-vs-nbdkit: filling $disk with $size_mib MiB of random data" >&2
dd if=/dev/urandom of="$disk" bs=1M count="$size_mib" status=none
sectors=$((size_mib * 2048))
cat >"$work/stack.yaml" <<YAML
memory: 256MiB
devices:
  disk: { file: disk.img, size: ${size_mib}MiB }
mapped:
  linear0: |
    0 $sectors linear disk 0
exports:
  default: { device: linear0, description: "one file through one linear target" }
YAML

# blkstack on an ephemeral port; wait for its ready line and read the port.
"$root/blkstack" serve --config "$work/stack.yaml" --listen 127.0.0.1:0 >"$work/blkstack.out" 2>"$work/blkstack.err" &
blkstack_pid=$!
for _ in $(seq 1 600); do
    grep -q '^blkstack serve: ready$' "$work/blkstack.out" 2>/dev/null && break
    if ! kill -0 "$blkstack_pid" 2>/dev/null; then
        echo "nbd-vs-nbdkit: blkstack serve exited:" >&2
        cat "$work/blkstack.err" >&2
        exit 2
    fi
    sleep 0.1
done
blkstack_port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$work/blkstack.out" | head -1 | cut -d: -f2)
if [[ -z $blkstack_port ]]; then
    echo "nbd-vs-nbdkit: blkstack serve did not get ready" >&2
    cat "$work/blkstack.err" >&2
    exit 2
fi

# nbdkit's file plugin on a free port (ask the kernel for one).
nbdkit_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p "$nbdkit_port" file "$disk" 2>"$work/nbdkit.err" &
nbdkit_pid=$!
for _ in $(seq 1 100); do
    nbdinfo --size "nbd://127.0.0.1:$nbdkit_port" >/dev/null 2>&1 && break
    sleep 0.1
done

# name rw bs iodepth
jobs=(
    "randread-4k randread 4k 32"
    "randwrite-4k randwrite 4k 32"
    "seqread-1m read 1m 8"
    "seqwrite-1m write 1m 8"
)

blkstack_uri="nbd://127.0.0.1:$blkstack_port/default"
nbdkit_uri="nbd://127.0.0.1:$nbdkit_port/"

# Runs one job against one URI for some seconds; prints "iops bandwidth_bytes_per_second".
run_job() {
    local uri=$1 rw=$2 bs=$3 depth=$4 out=$5 runtime=$6
    fio --name=bench --ioengine=nbd --uri="$uri" --rw="$rw" --bs="$bs" --iodepth="$depth" \
        --size="${size_mib}m" --time_based --runtime="$runtime" --ramp_time=1 --randrepeat=0 \
        --output-format=json --output="$out" >/dev/null
    python3 - "$out" "$rw" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
side = job["read"] if "read" in sys.argv[2] else job["write"]
print(f'{side["iops"]:.0f} {side["bw_bytes"]}')
PY
}

warmup=${BENCH_WARMUP:-3}
if ((warmup > 0)); then
    echo "nbd-vs-nbdkit: warming up, $warmup s per job and server" >&2
    for job in "${jobs[@]}"; do
        read -r name rw bs depth <<<"$job"
        for uri in "$blkstack_uri" "$nbdkit_uri"; do
            run_job "$uri" "$rw" "$bs" "$depth" "$work/warmup.json" "$warmup" >/dev/null
        done
    done
fi

echo "nbd-vs-nbdkit: $size_mib MiB file, $seconds s per job, $rounds round(s); blkstack on :$blkstack_port, nbdkit on :$nbdkit_port" >&2
printf '%-14s %12s %12s %12s %12s %8s %13s\n' job "blkstack" "nbdkit" "blkstack" "nbdkit" "ratio" "round ratios"
printf '%-14s %12s %12s %12s %12s %8s %13s\n' "" "IOPS" "IOPS" "MiB/s" "MiB/s" "" "min-max"
for job in "${jobs[@]}"; do
    read -r name rw bs depth <<<"$job"
    if [[ -n ${BENCH_JOBS:-} && " $BENCH_JOBS " != *" $name "* ]]; then
        continue
    fi
    results=()
    for round in $(seq 1 "$rounds"); do
        # Odd rounds start with blkstack, even rounds with nbdkit.
        if ((round % 2 == 1)); then order="blkstack nbdkit"; else order="nbdkit blkstack"; fi
        for side in $order; do
            if [[ $side == blkstack ]]; then uri=$blkstack_uri; else uri=$nbdkit_uri; fi
            read -r iops bw < <(run_job "$uri" "$rw" "$bs" "$depth" "$work/$name-$side-$round.json" "$seconds")
            results+=("$round $side $iops $bw")
        done
    done
    printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
name = sys.argv[1]
runs = {"blkstack": {}, "nbdkit": {}}
for line in sys.stdin:
    rnd, side, iops, bw = line.split()
    runs[side][int(rnd)] = (float(iops), float(bw))
def median(side, i):
    return statistics.median(v[i] for v in runs[side].values())
bi, ni, bb, nb = median("blkstack", 0), median("nbdkit", 0), median("blkstack", 1), median("nbdkit", 1)
ratios = [runs["blkstack"][r][1] / runs["nbdkit"][r][1] for r in runs["blkstack"] if runs["nbdkit"][r][1]]
ratio = bb / nb if nb else float("nan")
print(f"{name:<14} {bi:12.0f} {ni:12.0f} {bb / 2**20:12.1f} {nb / 2**20:12.1f} {ratio:8.2f} {min(ratios):6.2f}-{max(ratios):.2f}")
' "$name"
done
