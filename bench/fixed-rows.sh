#!/usr/bin/env bash
# The seed scenarios' fixed rows at full length (issue 13): every fixed row of every scenario
# (`blkstack scenario run all --policy fixed --engine sim`) runs SCHEDULES schedules (default
# 10^6) on the deterministic checker, in the background, with `scenario run`'s progress bar.
# A fixed row stops at its first finding; the report then gives its replay command, else
# "0 findings in N schedules". A row marked as expecting a finding (bioset-rescuer's
# depth-first-only, which the checker shows is not enough) is reported the same way.
#
# At 50-200 schedules/s a row of 10^6 schedules takes hours: start it and come back.
#
# Usage:
#   bench/fixed-rows.sh start [SCHEDULES]   start the run in the background (default 1000000)
#   bench/fixed-rows.sh status              is it running; the progress bar's latest line
#   bench/fixed-rows.sh report              per fixed row: 0 findings, or the first replay
#   bench/fixed-rows.sh stop                stop the run this script started
#   bench/fixed-rows.sh pause | resume      hold the run (SIGSTOP) while the machine is needed, e.g.
#                                           for a benchmark; resume continues it where it was
#
# Environment:
#   FIXED_ROWS_DIR   where the log, the pid and the table go (default target/fixed-rows)
#   FIXED_ROWS_SEED  master seed of the campaigns (default 1)
#   BLKSTACK         the launcher (default: ./blkstack of this repository)
#
# Exit codes: 0 done (report: every row as its policy promises: fixed rows clean, and
# depth-first-only finding its deadlock), 3 a row that did not, 1 usage, 2 the script could not run.
set -euo pipefail

root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
dir=${FIXED_ROWS_DIR:-$root/target/fixed-rows}
seed=${FIXED_ROWS_SEED:-1}
blkstack=${BLKSTACK:-$root/blkstack}
log=$dir/run.log
pidfile=$dir/pid

usage() {
    sed -n '12,17p' "${BASH_SOURCE[0]}" | sed 's/^# //' >&2
    exit 1
}

running() {
    [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# The run's text without the progress bar's redraws: each line's last carriage-return segment.
plain_log() {
    tr -d '\033' <"$log" | sed 's/.*\r\(.\)/\1/'
}

start() {
    local schedules=${1:-1000000}
    [[ $schedules =~ ^[0-9]+$ && $schedules -ge 1 ]] || { echo "fixed-rows: schedules must be a positive number: $schedules" >&2; exit 1; }
    if running; then
        echo "fixed-rows: already running (pid $(cat "$pidfile")); see 'bench/fixed-rows.sh status'" >&2
        exit 1
    fi
    command -v script >/dev/null || { echo "fixed-rows: needs 'script' (util-linux) for the progress bar" >&2; exit 2; }
    mkdir -p "$dir"
    : >"$log"
    # `script` gives the command a terminal, so scenario run draws its progress bar into the log.
    local cmd
    cmd=$(printf '%q ' "$blkstack" scenario run all --policy fixed --engine sim --schedules "$schedules" --seed "$seed")
    nohup script -qfec "$cmd" "$log" >/dev/null 2>&1 </dev/null &
    echo $! >"$pidfile"
    echo "fixed-rows: started $schedules schedules per fixed row (pid $!), log $log"
    echo "fixed-rows: 'bench/fixed-rows.sh status' for progress, 'bench/fixed-rows.sh report' when it is done"
}

status() {
    [[ -f $log ]] || { echo "fixed-rows: no run in $dir" >&2; exit 1; }
    if running && paused; then
        echo "paused (pid $(cat "$pidfile"); 'bench/fixed-rows.sh resume' to go on)"
    elif running; then
        echo "running (pid $(cat "$pidfile"))"
    else
        echo "not running"
    fi
    # The bar's latest redraw, and the rows finished so far.
    tr '\r' '\n' <"$log" | grep -a '^scenario *[0-9]*%' | tail -n 1 || true
    plain_log | grep -a ' sim: ' || true
}

report() {
    [[ -f $log ]] || { echo "fixed-rows: no run in $dir" >&2; exit 1; }
    if running; then
        echo "fixed-rows: still running; rows so far:" >&2
    fi
    while IFS= read -r line; do
        # "NAME VARIANT sim: OUTCOME — note", then "  replay: ..." for a finding
        local row=${line%% sim: *}
        local outcome=${line#* sim: }
        outcome=${outcome%% *}
        if [[ $outcome == OK ]]; then
            local schedules
            schedules=$(plain_log | awk -v r="${row%% *}" -v v="${row#* }" '$1 == r && $3 == v && $4 == "sim" {print $6}' | tail -n 1)
            echo "$row: 0 findings in ${schedules:-?} schedules"
        else
            local replay
            replay=$(plain_log | grep -a -A1 -F "$line" | grep -a 'replay:' | head -n 1 | sed 's/^ *//')
            echo "$row: $outcome — $replay"
        fi
    done < <(plain_log | grep -a ' sim: ' | grep -av 'legacy sim:')
    # Exit 3 when a row did not come out as its policy promises (the table's last column).
    if plain_log | awk '$4 == "sim" && $NF == "NO"' | grep -q .; then
        exit 3
    fi
}

stop() {
    if running; then
        local pid
        pid=$(cat "$pidfile")
        kill "$pid"
        resume_run "$pid" # a paused run must run on to take the signal and end
        echo "fixed-rows: stopped pid $pid"
    else
        echo "fixed-rows: not running"
    fi
}

# The processes under the run's `script` (the launcher's shell, the JVM). `script` follows its
# child: when the child stops it stops itself, and when it is continued it continues the child.
# So a pause stops only the processes under it (stopping `script` too would leave it to re-stop
# itself on the stale notice when continued), and a resume continues `script`, then them.
run_children() {
    local pid=$1 child
    for child in $(pgrep -P "$pid" || true); do
        echo "$child"
        run_children "$child"
    done
}

# A process may end between the listing and the signal: that is not an error.
pause() {
    running || { echo "fixed-rows: not running" >&2; exit 1; }
    local children
    children=$(run_children "$(cat "$pidfile")")
    # shellcheck disable=SC2086
    [[ -z $children ]] || kill -s STOP $children 2>/dev/null || true
    echo "fixed-rows: paused pid $(cat "$pidfile") (resume with 'bench/fixed-rows.sh resume')"
}

resume_run() {
    local pid=$1 children
    kill -s CONT "$pid" 2>/dev/null || true
    children=$(run_children "$pid")
    # shellcheck disable=SC2086
    [[ -z $children ]] || kill -s CONT $children 2>/dev/null || true
}

resume() {
    running || { echo "fixed-rows: not running" >&2; exit 1; }
    resume_run "$(cat "$pidfile")"
    echo "fixed-rows: resumed pid $(cat "$pidfile")"
}

# Whether the run is paused: a process under script is stopped.
paused() {
    local child
    for child in $(run_children "$(cat "$pidfile")"); do
        [[ $(ps -o stat= -p "$child" 2>/dev/null) == T* ]] && return 0
    done
    return 1
}

case ${1:-} in
    start) shift; start "$@" ;;
    pause) pause ;;
    resume) resume ;;
    status) status ;;
    report) report ;;
    stop) stop ;;
    *) usage ;;
esac
