#!/usr/bin/env bash
# Compares blkstack's NBD server with its peers on the same backing data, under the same fio jobs.
#
# Servers ("sides"), each on its own copy (made with cp) of one file of random data in the page
# cache, so no side's writes leave dirty pages and writeback to another, and every side's file was
# made the same way (see below):
#   blkstack   `serve` with one `linear` target over the file (export `default`), and a 4-level
#              stack of `linear` targets over the same file (export `deep`, for the stack4 job);
#              the page arena is serve's default
#   nbdkit     nbdkit's file plugin
#   qemu-nbd   qemu-nbd --cache=writeback --aio=threads (image locking off)
#   ceiling    fio on the file itself with the io_uring engine (libaio, then psync, if io_uring is
#              not permitted here; the table says which): what the file gives with no server at all
# plus, with BENCH_VARIANTS, more blkstack servers started with other serve options, each on its own
# copy of the file (blkstack locks its file), such as BENCH_VARIANTS="direct=--direct-issue=on".
#
# Jobs (fio's nbd engine, one connection per fio job, time-limited, ramp 1 s):
#   randread-4k, randwrite-4k        4 KiB random, iodepth 32
#   seqread-1m, seqwrite-1m          1 MiB sequential, iodepth 8
#   read-1m-4conn, write-1m-4conn    1 MiB sequential, iodepth 8, numjobs=4: four connections, each
#                                    on its own quarter of the file
#   mixed-64k                        64 KiB random, 70 % reads / 30 % writes, iodepth 16
#   randread-4k-stack4               as randread-4k, through blkstack's 4-level stack (the other
#                                    sides run their plain path: the row compares the stack with them)
# A warm-up pass runs every job on every side unmeasured (the JVM compiles its hot paths, all sides
# see the same page cache). Then each job runs BENCH_ROUNDS times on every side, the order of the
# sides rotating from round to round (drift in the machine's load hits every side alike). Prints,
# per job and side, the median IOPS and MiB/s with the slowest and fastest round, the ratio of the
# medians to blkstack's and to the ceiling's, and the range of the per-round ratios to blkstack;
# writes the medians as a PNG bar chart (`blkstack bench chart`, relative to the ceiling).
#
# Memory run (BENCH_MEMORY=1, the default): a second blkstack at the smallest page arena serve
# accepts for this stack (tried from 4 MiB up, doubling), on its own copy of the file, against the
# first one at the default arena: the 1 MiB and 4 KiB jobs, alternating, as a ratio, with the
# longest request each saw (fio's max latency).
#
# Every fio run passes --invalidate=0. fio's default drops a file's page cache before it runs on
# the file, so the ceiling's run used to leave the file cold for whichever side came next (blkstack's
# 4 KiB random reads fell from about 300 to 15-45 MiB/s in the rounds that followed the ceiling).
#
# Measures only; asserts nothing. Figures from a loaded machine are indications: read the ranges.
#
# Environment:
#   BENCH_SECONDS     runtime of each measured job (default 10)
#   BENCH_ROUNDS      rounds per job and side (default 3)
#   BENCH_JOBS        space-separated job names to run (default: all)
#   BENCH_WARMUP      seconds of each job's unmeasured warm-up per side (default 3; 0: none)
#   BENCH_NOISE       1: keep one core busy with a plain busy loop (a noisy neighbour) during every
#                     measured round, for every side alike (default 0)
#   BENCH_VARIANTS    extra blkstack servers: NAME=SERVE-OPTIONS entries separated by ';'
#   BENCH_MEMORY      1: also the memory run (default 1)
#   BENCH_CHART       the PNG to write (default: nbd-peers.png in the current directory)
#   BENCH_SIZE_MIB    backing file size (default 1024); the file is filled with random data first
#   BENCH_DIR         scratch directory (default: a new one under ${TMPDIR:-/tmp}, removed at exit)
#   BLKSTACK_BUILD_DIR, BLKSTACK_JAVA_OPTS   passed to ./blkstack
set -euo pipefail

root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
seconds=${BENCH_SECONDS:-10}
rounds=${BENCH_ROUNDS:-3}
size_mib=${BENCH_SIZE_MIB:-1024}
warmup=${BENCH_WARMUP:-3}
noise=${BENCH_NOISE:-0}
memory_run=${BENCH_MEMORY:-1}
chart=$(readlink -f "${BENCH_CHART:-nbd-peers.png}")
me=nbd-peers

for program in fio nbdkit nbdinfo qemu-nbd python3; do
    if ! command -v "$program" >/dev/null 2>&1; then
        echo "$me: $program is not installed" >&2
        exit 2
    fi
done
if ! fio --enghelp=nbd >/dev/null 2>&1; then
    echo "$me: this fio has no nbd engine" >&2
    exit 2
fi
if ((size_mib < 64 || size_mib % 4 != 0)); then
    echo "$me: BENCH_SIZE_MIB must be a multiple of 4 and at least 64, not $size_mib" >&2
    exit 1
fi

if [[ -n ${BENCH_DIR:-} ]]; then
    work=$BENCH_DIR
    mkdir -p "$work"
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/$me.XXXXXX")
fi
pids=()
noise_pid=
stop_noise() {
    if [[ -n $noise_pid ]]; then
        kill -TERM "$noise_pid" 2>/dev/null || true
        wait "$noise_pid" 2>/dev/null || true
        noise_pid=
    fi
}
cleanup() {
    stop_noise
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    [[ -z ${BENCH_DIR:-} ]] && rm -rf "$work"
    return 0
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until an NBD server answers at URI, or fails naming the server.
wait_nbd() {
    local uri=$1 what=$2 pid=$3
    for _ in $(seq 1 300); do
        nbdinfo --size "$uri" >/dev/null 2>&1 && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$me: $what exited before serving" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "$me: $what did not answer at $uri" >&2
    return 1
}

disk=$work/disk.img
echo "$me: filling $disk with $size_mib MiB of random data" >&2
dd if=/dev/urandom of="$disk" bs=1M count="$size_mib" status=none
sectors=$((size_mib * 2048))

# Writes a blkstack configuration over FILE (relative to $work): linear0 (one level, export
# `default`) and deep1..deep4 (four linear levels, export `deep`); MEMORY is empty for the default.
write_config() {
    local config=$1 file=$2 memory=$3
    {
        [[ -n $memory ]] && echo "memory: $memory"
        cat <<YAML
devices:
  disk: { file: $file, size: ${size_mib}MiB }
mapped:
  linear0: |
    0 $sectors linear disk 0
  deep1: |
    0 $sectors linear disk 0
  deep2: |
    0 $sectors linear deep1 0
  deep3: |
    0 $sectors linear deep2 0
  deep4: |
    0 $sectors linear deep3 0
exports:
  default: { device: linear0, description: "one file through one linear target" }
  deep: { device: deep4, description: "the same file through four linear levels" }
YAML
    } >"$config"
}

# Starts `blkstack serve` for side NAME over FILE with MEMORY and extra OPTIONS; sets port_of[NAME].
# Returns 1 if serve refused to start (its error is in $work/NAME.err).
declare -A port_of
start_blkstack() {
    local name=$1 file=$2 memory=$3 options=$4
    write_config "$work/$name.yaml" "$file" "$memory"
    # Options are split into words on purpose.
    # shellcheck disable=SC2086
    "$root/blkstack" serve --config "$work/$name.yaml" --listen 127.0.0.1:0 --control "$work/$name.sock" $options \
        >"$work/$name.out" 2>"$work/$name.err" &
    local pid=$!
    pids+=("$pid")
    for _ in $(seq 1 1200); do
        grep -q '^blkstack serve: ready$' "$work/$name.out" 2>/dev/null && break
        if ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        sleep 0.1
    done
    local port
    port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$work/$name.out" | head -1 | cut -d: -f2)
    if [[ -z $port ]]; then
        echo "$me: blkstack ($name) did not get ready:" >&2
        cat "$work/$name.err" >&2
        exit 2
    fi
    port_of[$name]=$port
}

echo "$me: starting blkstack" >&2
# Every side, blkstack too, runs on a copy: on this machine (Linux 6.18, ext4) the file dd wrote took
# 4 KiB random writes at a third of the speed of its copy, for nbdkit as for blkstack (97 against
# 321 MiB/s), so a side on the original would be measured on other terms than the rest.
cp "$disk" "$work/disk-blkstack.img"
if ! start_blkstack blkstack disk-blkstack.img "" ""; then
    echo "$me: blkstack serve exited:" >&2
    cat "$work/blkstack.err" >&2
    exit 2
fi
sides=(blkstack)
declare -A variant_options
if [[ -n ${BENCH_VARIANTS:-} ]]; then
    IFS=';' read -ra entries <<<"$BENCH_VARIANTS"
    for entry in "${entries[@]}"; do
        name=${entry%%=*}
        options=${entry#*=}
        if [[ -z $name || $name == "$entry" || ! $name =~ ^[a-z0-9-]+$ ]]; then
            echo "$me: BENCH_VARIANTS entry '$entry' is not NAME=SERVE-OPTIONS (NAME: a-z, 0-9, -)" >&2
            exit 1
        fi
        case $name in
            blkstack | nbdkit | qemu-nbd | ceiling | small | disk)
                echo "$me: BENCH_VARIANTS name '$name' is taken by a side of the benchmark" >&2
                exit 1
                ;;
        esac
        cp "$disk" "$work/disk-$name.img"
        echo "$me: starting blkstack variant $name ($options)" >&2
        if ! start_blkstack "$name" "disk-$name.img" "" "$options"; then
            echo "$me: blkstack variant $name exited:" >&2
            cat "$work/$name.err" >&2
            exit 2
        fi
        variant_options[$name]=$options
        sides+=("$name")
    done
fi

# Each peer on its own copy, as each blkstack side is.
nbdkit_disk=$work/disk-nbdkit.img
qemu_disk=$work/disk-qemu-nbd.img
ceiling_disk=$work/disk-ceiling.img
cp "$disk" "$nbdkit_disk"
cp "$disk" "$qemu_disk"
cp "$disk" "$ceiling_disk"
nbdkit_port=$(free_port)
nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p "$nbdkit_port" file "$nbdkit_disk" 2>"$work/nbdkit.err" &
pids+=("$!")
wait_nbd "nbd://127.0.0.1:$nbdkit_port/" nbdkit "$!"
sides+=(nbdkit)

qemu_port=$(free_port)
qemu-nbd --persistent --shared=16 --bind=127.0.0.1 --port="$qemu_port" --cache=writeback --aio=threads \
    --image-opts "driver=raw,file.driver=file,file.filename=$qemu_disk,file.locking=off" 2>"$work/qemu-nbd.err" &
pids+=("$!")
wait_nbd "nbd://127.0.0.1:$qemu_port" qemu-nbd "$!"
sides+=(qemu-nbd)

# The ceiling: fio on the file itself, io_uring if this machine lets fio use it.
ceiling_engine=
for engine in io_uring libaio psync; do
    if fio --name=probe --ioengine="$engine" --filename="$ceiling_disk" --rw=read --bs=4k --size=64k --invalidate=0 \
        --output="$work/probe.out" >/dev/null 2>&1; then
        ceiling_engine=$engine
        break
    fi
done
if [[ -z $ceiling_engine ]]; then
    echo "$me: fio cannot read $ceiling_disk with io_uring, libaio or psync" >&2
    exit 2
fi
if [[ $ceiling_engine != io_uring ]]; then
    echo "$me: io_uring is not permitted here; the ceiling uses fio's $ceiling_engine engine" >&2
fi
sides+=(ceiling)

# name rw bs iodepth numjobs blkstack-export
jobs=(
    "randread-4k randread 4k 32 1 default"
    "randwrite-4k randwrite 4k 32 1 default"
    "seqread-1m read 1m 8 1 default"
    "seqwrite-1m write 1m 8 1 default"
    "read-1m-4conn read 1m 8 4 default"
    "write-1m-4conn write 1m 8 4 default"
    "mixed-64k randrw 64k 16 1 default"
    "randread-4k-stack4 randread 4k 32 1 deep"
)
selected() {
    [[ -z ${BENCH_JOBS:-} || " $BENCH_JOBS " == *" $1 "* ]]
}

# Runs one job on one side for RUNTIME seconds; prints "iops bytes_per_second max_latency_ns"
# (reads and writes added for the mixed job).
run_job() {
    local side=$1 rw=$2 bs=$3 depth=$4 numjobs=$5 export=$6 out=$7 runtime=$8
    local target=()
    case $side in
        nbdkit) target=(--ioengine=nbd --uri="nbd://127.0.0.1:$nbdkit_port/") ;;
        qemu-nbd) target=(--ioengine=nbd --uri="nbd://127.0.0.1:$qemu_port") ;;
        ceiling) target=(--ioengine="$ceiling_engine" --filename="$ceiling_disk") ;;
        *) target=(--ioengine=nbd --uri="nbd://127.0.0.1:${port_of[$side]}/$export") ;;
    esac
    local span=$size_mib extra=()
    if ((numjobs > 1)); then
        # Each job (its own connection) on its own part of the file.
        span=$((size_mib / numjobs))
        extra=(--numjobs="$numjobs" --offset_increment="${span}m" --group_reporting)
    fi
    if [[ $rw == randrw ]]; then
        extra+=(--rwmixread=70)
    fi
    fio --name=bench "${target[@]}" --rw="$rw" --bs="$bs" --iodepth="$depth" "${extra[@]}" \
        --size="${span}m" --time_based --runtime="$runtime" --ramp_time=1 --randrepeat=0 --invalidate=0 \
        --output-format=json --output="$out" >/dev/null
    python3 - "$out" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
iops = job["read"]["iops"] + job["write"]["iops"]
bw = job["read"]["bw_bytes"] + job["write"]["bw_bytes"]
lat = max(job["read"]["lat_ns"]["max"], job["write"]["lat_ns"]["max"])
print(f"{iops:.0f} {bw} {lat:.0f}")
PY
}

results=$work/results.txt
: >"$results"
# Runs every selected job ROUNDS times on each of the given sides, rotating the order; appends
# "job side round iops bw maxlat" to $results. The first argument is a label for the log.
measure() {
    local label=$1
    shift
    local these=("$@")
    local count=${#these[@]}
    for job in "${jobs[@]}"; do
        read -r name rw bs depth numjobs export <<<"$job"
        selected "$name" || continue
        for round in $(seq 1 "$rounds"); do
            local order=()
            for ((i = 0; i < count; i++)); do
                order+=("${these[$(((i + round - 1) % count))]}")
            done
            echo "$me: $label $name round $round: ${order[*]}" >&2
            for side in "${order[@]}"; do
                read -r iops bw lat < <(run_job "$side" "$rw" "$bs" "$depth" "$numjobs" "$export" \
                    "$work/$name-$side-$round.json" "$seconds")
                echo "$name $side $round $iops $bw $lat" >>"$results"
            done
        done
    done
}

if ((warmup > 0)); then
    echo "$me: warming up, $warmup s per job and side" >&2
    for job in "${jobs[@]}"; do
        read -r name rw bs depth numjobs export <<<"$job"
        selected "$name" || continue
        for side in "${sides[@]}"; do
            run_job "$side" "$rw" "$bs" "$depth" "$numjobs" "$export" "$work/warmup.json" "$warmup" >/dev/null
        done
    done
fi

start_noise() {
    if [[ $noise == 1 ]]; then
        bash -c 'while :; do :; done' &
        noise_pid=$!
        echo "$me: noise: a busy loop (pid $noise_pid) keeps one core busy during the rounds" >&2
    fi
}

start_noise
measure "" "${sides[@]}"
stop_noise

# ---- the memory run ---------------------------------------------------------------------------
small_memory=
if [[ $memory_run == 1 ]]; then
    cp "$disk" "$work/disk-small.img"
    for mib in 4 8 16 32 64; do
        if start_blkstack small disk-small.img "${mib}MiB" ""; then
            small_memory=${mib}MiB
            break
        fi
        echo "$me: serve refuses a ${mib} MiB arena for this stack: $(tail -1 "$work/small.err")" >&2
    done
    if [[ -z $small_memory ]]; then
        echo "$me: no arena up to 64 MiB was accepted; memory run skipped" >&2
    else
        echo "$me: memory run: blkstack at $small_memory against the default arena" >&2
        jobs_all=("${jobs[@]}")
        jobs=()
        for job in "${jobs_all[@]}"; do
            case $job in
                randread-4k\ * | randwrite-4k\ * | seqread-1m\ * | seqwrite-1m\ *) jobs+=("$job") ;;
            esac
        done
        for job in "${jobs[@]}"; do
            read -r name rw bs depth numjobs export <<<"$job"
            if selected "$name" && ((warmup > 0)); then
                run_job small "$rw" "$bs" "$depth" "$numjobs" "$export" "$work/warmup.json" "$warmup" >/dev/null
            fi
        done
        results_main=$results
        results=$work/results-memory.txt
        : >"$results"
        start_noise
        measure "memory" blkstack small
        stop_noise
        results=$results_main
    fi
fi

# ---- the report ---------------------------------------------------------------------------------
describe="$size_mib MiB file, $seconds s per job, $rounds round(s), ceiling: fio $ceiling_engine on the file"
[[ $noise == 1 ]] && describe+=", noise: one core kept busy"
for name in "${!variant_options[@]}"; do
    describe+=", $name = blkstack ${variant_options[$name]}"
done
echo "$me: $describe"
python3 - "$results" "$work/medians.tsv" "${sides[@]}" <<'PY'
import statistics, sys
results, tsv, sides = sys.argv[1], sys.argv[2], sys.argv[3:]
runs = {}
jobs = []
for line in open(results):
    job, side, rnd, iops, bw, lat = line.split()
    if job not in jobs:
        jobs.append(job)
    runs.setdefault(job, {}).setdefault(side, {})[int(rnd)] = (float(iops), float(bw))
MIB = 2 ** 20
print(f"{'job':<19} {'server':<10} {'IOPS':>8} {'MiB/s':>8} {'(min-max)':>15} {'/blkstack':>9} {'(rounds)':>11} {'/ceiling':>8}")
with open(tsv, "w") as out:
    for job in jobs:
        base = runs[job].get("blkstack", {})
        ceiling = runs[job].get("ceiling", {})
        base_bw = statistics.median(v[1] for v in base.values()) if base else 0
        ceil_bw = statistics.median(v[1] for v in ceiling.values()) if ceiling else 0
        for i, side in enumerate(s for s in sides if s in runs[job]):
            r = runs[job][side]
            iops = statistics.median(v[0] for v in r.values())
            bws = [v[1] for v in r.values()]
            bw = statistics.median(bws)
            per_round = [r[k][1] / base[k][1] for k in r if k in base and base[k][1]]
            vs_base = f"{bw / base_bw:9.2f}" if base_bw else f"{'-':>9}"
            spread = f"{min(per_round):.2f}-{max(per_round):.2f}" if per_round and side != "blkstack" else ""
            vs_ceil = f"{bw / ceil_bw:8.2f}" if ceil_bw else f"{'-':>8}"
            label = job if i == 0 else ""
            rng = f"({min(bws) / MIB:.1f}-{max(bws) / MIB:.1f})"
            print(f"{label:<19} {side:<10} {iops:8.0f} {bw / MIB:8.1f} {rng:>15} {vs_base} {spread:>11} {vs_ceil}")
            out.write(f"{job}\t{side}\t{bw / MIB:.3f}\t{min(bws) / MIB:.3f}\t{max(bws) / MIB:.3f}\n")
    one = runs.get("randread-4k", {}).get("blkstack")
    deep = runs.get("randread-4k-stack4", {}).get("blkstack")
    if one and deep:
        m1 = statistics.median(v[1] for v in one.values())
        m4 = statistics.median(v[1] for v in deep.values())
        print(f"blkstack 4-level stack / 1 level (4 KiB random read): {m4 / m1:.2f}")
PY
if [[ -n $small_memory ]]; then
    echo "$me: memory run: blkstack at the smallest arena it accepts ($small_memory) against the default arena"
    python3 - "$work/results-memory.txt" <<'PY'
import statistics, sys
runs = {}
jobs = []
for line in open(sys.argv[1]):
    job, side, rnd, iops, bw, lat = line.split()
    if job not in jobs:
        jobs.append(job)
    runs.setdefault(job, {}).setdefault(side, {})[int(rnd)] = (float(bw), float(lat))
MIB = 2 ** 20
print(f"{'job':<14} {'small MiB/s':>12} {'default MiB/s':>14} {'small/default':>14} {'(rounds)':>11} {'max latency small/default ms':>29}")
for job in jobs:
    small, default = runs[job]["small"], runs[job]["blkstack"]
    s = statistics.median(v[0] for v in small.values())
    d = statistics.median(v[0] for v in default.values())
    per_round = [small[k][0] / default[k][0] for k in small if k in default and default[k][0]]
    spread = f"{min(per_round):.2f}-{max(per_round):.2f}"
    lat_s = max(v[1] for v in small.values()) / 1e6
    lat_d = max(v[1] for v in default.values()) / 1e6
    print(f"{job:<14} {s / MIB:12.1f} {d / MIB:14.1f} {s / d:14.2f} {spread:>11} {lat_s:14.1f} / {lat_d:.1f}")
PY
fi

title="NBD servers on one file, medians of $rounds x $seconds s"
[[ $noise == 1 ]] && title+=", one core busy"
if "$root/blkstack" bench chart --relative-to ceiling --title "$title (1.0 = fio $ceiling_engine on the file)" \
    "$work/medians.tsv" "$chart" >/dev/null; then
    echo "$me: chart written to $chart"
else
    echo "$me: the chart could not be written" >&2
    exit 2
fi
