#!/usr/bin/env bash
# Soak test of `blkstack serve` at the smallest page arena it accepts (issue 12): for each stack in
# turn (linear, thin, log-writes, the embedded default), finds the smallest --memory with which
# `serve` starts, then runs SOAK_CLIENTS fio clients (fio's nbd engine, one NBD connection each,
# random writes of 4 KiB up to 64 KiB checked with verify=crc32c and verify_backlog) against it
# for N minutes, each client in its own region of the export. Per stack it reports:
#
#   requests   requests served (reads and writes of all clients, from fio's totals)
#   wait max   the longest time any client waited for a request (fio's completion latency max)
#   stalls     times a client saw no completion for more than 5 s (gaps in its per-second IOPS
#              log, at the start and end of its run included); a run that does not end (fio
#              still running a minute after its runtime) or a server that does not stop counts too
#   verify     verify errors (data read back did not match what the client wrote)
#   errors     clients that ended with any other I/O error
#
# and exits 1 if any stack had a stall, a verify error or an I/O error (2 if the script itself
# could not run). On a hang it saves the server's threads (jstack) and its log under the results
# directory and prints where they are.
#
# Usage: bench/soak.sh [MINUTES]        MINUTES per stack (default 30; SOAK_MINUTES too)
#
# Environment:
#   SOAK_MINUTES      minutes per stack (default 30; the argument wins)
#   SOAK_STACKS       stacks to run, in order (default "linear thin log-writes default")
#   SOAK_CLIENTS      fio clients, one NBD connection each (default 64)
#   SOAK_IODEPTH      requests in flight per client (default 4)
#   SOAK_REGION_MIB   each client's region of the export (default 4)
#   SOAK_MEMORY       use this --memory (e.g. 8MiB) instead of searching for the smallest
#   SOAK_LOG_SIZE     size of the log-writes log file (default 8GiB, sparse; logging stops when
#                     it is full, as dm-log-writes does, and the data path carries on)
#   SOAK_DIR          keep data and results here (default: a new directory under ${TMPDIR:-/tmp};
#                     its data files are removed at exit, the results are kept if anything failed)
#   BLKSTACK_BUILD_DIR, BLKSTACK_JAVA_OPTS   passed to ./blkstack
set -euo pipefail

root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
minutes=${1:-${SOAK_MINUTES:-30}}
stacks=${SOAK_STACKS:-"linear thin log-writes default"}
clients=${SOAK_CLIENTS:-64}
iodepth=${SOAK_IODEPTH:-4}
region_mib=${SOAK_REGION_MIB:-4}
log_size=${SOAK_LOG_SIZE:-8GiB}
stall_ms=5000

if [[ ! $minutes =~ ^[0-9]+$ ]] || ((minutes < 1)); then
    echo "soak: minutes '$minutes' is not a positive whole number" >&2
    exit 2
fi
for program in fio nbdinfo python3; do
    if ! command -v "$program" >/dev/null 2>&1; then
        echo "soak: $program is not installed" >&2
        exit 2
    fi
done
if ! fio --enghelp=nbd >/dev/null 2>&1; then
    echo "soak: this fio has no nbd engine" >&2
    exit 2
fi
# shellcheck source=scripts/find-jdk.sh
source "$root/scripts/find-jdk.sh"
jdk=$(blkstack_find_jdk) || exit 2
jstack="$jdk/bin/jstack"

if [[ -n ${SOAK_DIR:-} ]]; then
    work=$SOAK_DIR
    mkdir -p "$work"
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/blkstack-soak.XXXXXX")
fi
server_pid=
fio_pid=
failed=0
cleanup() {
    [[ -n $fio_pid ]] && kill -KILL "$fio_pid" 2>/dev/null
    [[ -n $server_pid ]] && kill -KILL "$server_pid" 2>/dev/null
    # the data files are large (sparse) and worth nothing afterwards; the results may be
    find "$work" -name '*.img' -delete 2>/dev/null
    rm -rf "$work"/*/blkstack-data
    if [[ -z ${SOAK_DIR:-} && $failed == 0 ]]; then
        rm -rf "$work"
    else
        echo "soak: results kept in $work" >&2
    fi
    return 0
}
trap cleanup EXIT

# Builds the jar once up front, so no start below waits for Maven.
"$root/blkstack" --version >/dev/null

# Writes stack $1's configuration into its directory (nothing for the embedded default stack).
write_config() {
    local stack=$1 dir=$work/$1
    mkdir -p "$dir"
    case $stack in
        linear) cat >"$dir/stack.yaml" <<'YAML'
devices:
  disk: { file: disk.img, size: 1GiB }
mapped:
  linear0: |
    0 2097152 linear disk 0
exports:
  soak: { device: linear0 }
YAML
            ;;
        thin) cat >"$dir/stack.yaml" <<'YAML'
devices:
  meta: { file: meta.img, size: 16MiB }
  data: { file: data.img, size: 1GiB }
mapped:
  pool: |
    0 2097152 thin-pool meta data 128 1024
  vol: |
    0 2097152 thin pool 0
exports:
  soak: { device: vol }
YAML
            ;;
        log-writes) cat >"$dir/stack.yaml" <<YAML
devices:
  data: { file: data.img, size: 1GiB }
  log: { file: log.img, size: $log_size }
mapped:
  logged: |
    0 2097152 log-writes data log
exports:
  soak: { device: logged }
YAML
            ;;
        default) ;;
        *)
            echo "soak: unknown stack '$stack' (linear, thin, log-writes, default)" >&2
            exit 2
            ;;
    esac
}

export_of() {
    [[ $1 == default ]] && echo default || echo soak
}

# Starts `serve` for stack $1 with --memory $2 in the stack's directory. Sets server_pid and
# server_port and returns 0 once it is ready; returns 1 (server gone) if it refused to start.
start_server() {
    local stack=$1 memory=$2 dir=$work/$1
    local args=(serve --listen 127.0.0.1:0 --memory "$memory")
    [[ $stack != default ]] && args+=(--config stack.yaml)
    # Emptied here, before the server starts: the background job's own redirection may run after
    # the first check below, which would then read the previous server's "ready" and port.
    : >"$dir/serve.out"
    : >"$dir/serve.err"
    (cd "$dir" && exec "$root/blkstack" "${args[@]}") >>"$dir/serve.out" 2>>"$dir/serve.err" &
    server_pid=$!
    for _ in $(seq 1 1200); do
        if grep -q '^blkstack serve: ready$' "$dir/serve.out" 2>/dev/null; then
            server_port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$dir/serve.out" | head -1 | cut -d: -f2)
            return 0
        fi
        if ! kill -0 "$server_pid" 2>/dev/null; then
            wait "$server_pid" 2>/dev/null || true
            server_pid=
            return 1
        fi
        sleep 0.1
    done
    echo "soak: $stack: serve --memory $memory neither got ready nor exited within 120 s (counted as" \
        "refused); server threads in $dir/jstack-start-$memory.txt" >&2
    "$jstack" "$server_pid" >"$dir/jstack-start-$memory.txt" 2>&1 || true
    kill -KILL "$server_pid" 2>/dev/null
    server_pid=
    failed=1
    return 1
}

# Stops the server (SIGTERM, which drains); a server still running after 60 s counts as a hang:
# its threads are saved and it is killed. Returns 1 then.
stop_server() {
    local stack=$1 dir=$work/$1
    [[ -z $server_pid ]] && return 0
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 600); do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            wait "$server_pid" 2>/dev/null || true
            server_pid=
            return 0
        fi
        sleep 0.1
    done
    echo "soak: $stack: serve did not stop within 60 s of SIGTERM; threads in $dir/jstack-stop.txt" >&2
    "$jstack" "$server_pid" >"$dir/jstack-stop.txt" 2>&1 || true
    kill -KILL "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    return 1
}

# Sets memory to the smallest --memory (in KiB, a multiple of 64) with which stack $1 starts,
# searching 64KiB..64MiB; SOAK_MEMORY short-cuts it.
find_smallest_memory() {
    local stack=$1
    if [[ -n ${SOAK_MEMORY:-} ]]; then
        memory=$SOAK_MEMORY
        return
    fi
    local lo=1 hi=1024 mid # in units of 64 KiB
    if ! start_server "$stack" "$((hi * 64))KiB"; then
        echo "soak: $stack: serve does not start even with --memory 64MiB:" >&2
        cat "$work/$stack/serve.err" >&2
        exit 2
    fi
    stop_server "$stack" >/dev/null || true
    while ((lo < hi)); do
        mid=$(((lo + hi) / 2))
        if start_server "$stack" "$((mid * 64))KiB"; then
            stop_server "$stack" || true
            hi=$mid
        else
            lo=$((mid + 1))
        fi
    done
    memory="$((lo * 64))KiB"
}

# Writes the fio job file for stack $1 against port $2 with maximum block size $3.
# serialize_overlap=1: fio otherwise may issue a verify_backlog READ while the WRITE it checks,
# or a WRITE of the next pass over the same blocks, is still in flight (fio issues #792 and #335);
# NBD does not order overlapping requests, so such a READ may see a half-landed write and report
# a crc32c mismatch under a good header. Seen once in 33.8 million requests (log-writes, a 4 MiB
# arena), with every job still ending without error.
write_job() {
    local stack=$1 port=$2 bs_max=$3 dir=$work/$1
    cat >"$dir/soak.fio" <<FIO
[global]
ioengine=nbd
uri=nbd://127.0.0.1:$port/$(export_of "$stack")
rw=randwrite
bsrange=4k-$bs_max
verify=crc32c
verify_backlog=16
verify_state_save=0
serialize_overlap=1
iodepth=$iodepth
size=${region_mib}m
offset_increment=${region_mib}m
numjobs=$clients
time_based
runtime=$((minutes * 60))
randrepeat=0
write_iops_log=$dir/clients
log_avg_msec=1000

[soak]
FIO
}

# Prints "requests wait_max_ms stalls verify_errors io_errors" from fio's JSON output, its
# per-client IOPS logs and its stderr.
summarize() {
    local dir=$1
    python3 - "$dir" "$stall_ms" <<'PY'
import glob, json, os, re, sys
d, stall_ms = sys.argv[1], int(sys.argv[2])
try:
    jobs = json.load(open(os.path.join(d, "fio.json")))["jobs"]
except (OSError, ValueError):
    jobs = []
requests = sum(j["read"]["total_ios"] + j["write"]["total_ios"] for j in jobs)
wait_ns = max([max(j["read"]["clat_ns"]["max"], j["write"]["clat_ns"]["max"]) for j in jobs] or [0])
verify_lines = 0
try:
    for line in open(os.path.join(d, "fio.err"), errors="replace"):
        if re.search(r"verify: bad|verify failed|bad magic header|bad header", line):
            verify_lines += 1
except OSError:
    pass
EILSEQ = 84
verify_jobs = sum(1 for j in jobs if j.get("error") == EILSEQ)
io_errors = sum(1 for j in jobs if j.get("error") not in (0, EILSEQ))
# Stalls: per client, a gap of more than stall_ms between seconds with completions (an entry at
# t covers completions in (t-1000, t]), and the same at the start and the end of its run.
stalls = 0
for i, j in enumerate(jobs, start=1):
    end_ms = j.get("job_runtime", 0)
    times = set()
    for path in glob.glob(os.path.join(d, f"clients_iops.{i}.log")):
        for line in open(path):
            fields = line.split(",")
            if len(fields) >= 2 and int(fields[1]) > 0:
                times.add(int(fields[0]))
    points = [0] + sorted(times) + [end_ms + 1000]
    for a, b in zip(points, points[1:]):
        if b - a - 1000 > stall_ms:
            stalls += 1
print(requests, round(wait_ns / 1e6, 1), stalls, max(verify_lines, verify_jobs), io_errors, len(jobs))
PY
}

seconds=$((minutes * 60))
printf 'soak: %d client(s) x iodepth %d, %d MiB each, %d min per stack, results in %s\n' \
    "$clients" "$iodepth" "$region_mib" "$minutes" "$work" >&2
results=()
for stack in $stacks; do
    dir=$work/$stack
    write_config "$stack"
    if [[ -z ${SOAK_MEMORY:-} ]]; then
        echo "soak: $stack: searching for the smallest --memory serve accepts" >&2
    fi
    find_smallest_memory "$stack"
    if ! start_server "$stack" "$memory"; then
        echo "soak: $stack: serve --memory $memory did not start a second time:" >&2
        cat "$dir/serve.err" >&2
        failed=1
        results+=("$stack $memory - - - - - - FAILED:start")
        continue
    fi
    uri="nbd://127.0.0.1:$server_port/$(export_of "$stack")"
    # nbdinfo negotiates and reads the first sectors (content detection): the first requests.
    if ! timeout 60 nbdinfo --json "$uri" >"$dir/nbdinfo.json" 2>"$dir/nbdinfo.err"; then
        echo "soak: $stack: nbdinfo got no answer within 60 s (--memory $memory): the server hangs on its" \
            "first requests; server threads in $dir/jstack-first-request.txt" >&2
        "$jstack" "$server_pid" >"$dir/jstack-first-request.txt" 2>&1 || true
        failed=1
        stop_server "$stack" || true
        results+=("$stack $memory - - - 1 - - FAILED:hang-on-first-request")
        continue
    fi
    bs_max=$(python3 -c '
import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
print(min(65536, e.get("block_size_maximum", 65536)))' "$dir/nbdinfo.json")
    if ((bs_max < 4096)); then
        echo "soak: $stack: the server advertises a maximum block size of $bs_max bytes, below 4 KiB" >&2
        failed=1
        stop_server "$stack" || true
        results+=("$stack $memory $bs_max - - - - - FAILED:block-size")
        continue
    fi
    bs_max_kib=$((bs_max / 1024))
    write_job "$stack" "$server_port" "${bs_max_kib}k"
    echo "soak: $stack: --memory $memory, $uri, blocks 4k-${bs_max_kib}k, $minutes min" >&2
    fio --output-format=json --output="$dir/fio.json" "$dir/soak.fio" >"$dir/fio.out" 2>"$dir/fio.err" &
    fio_pid=$!
    hang=0
    # fio ends by itself after its runtime; a minute past that it is stuck on a request.
    deadline=$((SECONDS + seconds + 60))
    while kill -0 "$fio_pid" 2>/dev/null; do
        if ((SECONDS > deadline)); then
            hang=1
            echo "soak: $stack: fio still running 60 s after its runtime: requests are stuck;" \
                "server threads in $dir/jstack-hang.txt" >&2
            "$jstack" "$server_pid" >"$dir/jstack-hang.txt" 2>&1 || true
            kill -INT "$fio_pid" 2>/dev/null || true # fio gives stuck jobs 60 s, then exits
            for _ in $(seq 1 1200); do
                kill -0 "$fio_pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$fio_pid" 2>/dev/null || true
            break
        fi
        sleep 1
    done
    wait "$fio_pid" 2>/dev/null || true
    fio_pid=
    stopped=0
    stop_server "$stack" || stopped=1
    read -r requests wait_ms stalls verify io_errors njobs < <(summarize "$dir")
    stalls=$((stalls + hang + stopped))
    verdict=ok
    if ((njobs == 0)); then
        # fio was killed before it wrote its report: nothing to count but the hang
        results+=("$stack $memory ${bs_max_kib}KiB - - $stalls - - FAILED:hang")
        failed=1
        continue
    fi
    if ((njobs != clients)); then
        io_errors=$((io_errors + clients - njobs))
    fi
    if ((stalls > 0 || verify > 0 || io_errors > 0)); then
        verdict=FAILED
        failed=1
    fi
    results+=("$stack $memory ${bs_max_kib}KiB $requests $wait_ms $stalls $verify $io_errors $verdict")
done

printf '\n%-11s %9s %9s %12s %12s %7s %7s %7s  %s\n' stack memory "max block" requests "wait max ms" stalls verify errors result
for r in "${results[@]}"; do
    # shellcheck disable=SC2086
    printf '%-11s %9s %9s %12s %12s %7s %7s %7s  %s\n' $r
done
exit $failed
