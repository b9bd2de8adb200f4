#!/usr/bin/env bash
# The seed scenarios' fixed rows at full length (issue 13): every fixed row of every seed scenario
# (`blkstack scenario list --variants`, the `fixed` rows of the seed shapes) runs SCHEDULES
# schedules (default 10^6) on the deterministic checker, in the background, one row at a time
# (`scenario run NAME --policy fixed --variant LABEL --engine sim`), each with its progress bar.
# A row stops at its first finding; the report then gives its replay command, else
# "0 findings in N schedules". A row marked as expecting a finding (bioset-rescuer's
# depth-first-only, which the checker shows is not enough) is reported the same way.
#
# At 500-1,700 schedules/s a row of 10^6 schedules takes 10-60 minutes and all of them hours,
# longer than a working session: each row's result is kept in the log as the row ends, and a
# `start` with the same SCHEDULES and seed resumes, skipping the rows already done.
#
# Usage:
#   bench/fixed-rows.sh start [SCHEDULES]   start (or resume) the run in the background (default 1000000)
#   bench/fixed-rows.sh status              is it running; the rows done; the progress bar's latest line
#   bench/fixed-rows.sh report              per fixed row: 0 findings, or the first replay
#   bench/fixed-rows.sh stop                stop the run this script started (start resumes it)
#   bench/fixed-rows.sh pause | resume      hold the run (SIGSTOP) while the machine is needed, e.g.
#                                           for a benchmark; resume continues it where it was
#
# Environment:
#   FIXED_ROWS_DIR   where the log, the pid and the parameters go (default target/fixed-rows)
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
params=$dir/params

usage() {
    sed -n '15,21p' "${BASH_SOURCE[0]}" | sed 's/^# //' >&2
    exit 1
}

running() {
    [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# The run's text without the progress bar's redraws: each line's last carriage-return segment,
# without the terminal's carriage return at its end.
plain_log() {
    tr -d '\033' <"$log" | sed 's/\r$//; s/.*\r\(.\)/\1/'
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
    if [[ -f $log && -f $params && $(cat "$params") == "$schedules $seed" ]]; then
        echo "fixed-rows: resuming: $(done_rows | wc -l) row(s) already done with $schedules schedules, seed $seed"
    else
        : >"$log"
        echo "$schedules $seed" >"$params"
    fi
    nohup "${BASH_SOURCE[0]}" _run "$schedules" >/dev/null 2>&1 </dev/null &
    echo $! >"$pidfile"
    echo "fixed-rows: started $schedules schedules per fixed row (pid $!), log $log"
    echo "fixed-rows: 'bench/fixed-rows.sh status' for progress, 'bench/fixed-rows.sh report' when it is done"
}

# The fixed rows of the seed scenarios, "NAME LABEL" per line.
fixed_rows() {
    "$blkstack" scenario list --variants | awk '$3 == "fixed" && $1 !~ /-hard$/ { print $1, $2 }'
}

# The rows whose result is in the log, "NAME LABEL" per line (the closing table's sim lines).
done_rows() {
    [[ -f $log ]] || return 0
    plain_log | awk '$4 == "sim" && ($NF == "yes" || $NF == "NO") { print $1, $3 }' | sort -u
}

# The background body: each row not yet done, one at a time, its bar and table appended to the log.
run_rows() {
    local schedules=$1 name label cmd
    fixed_rows | while read -r name label; do
        if done_rows | grep -qxF "$name $label"; then
            continue
        fi
        cmd=$(printf '%q ' "$blkstack" scenario run "$name" --policy fixed --variant "$label" --engine sim \
            --schedules "$schedules" --seed "$seed")
        # `script` gives the command a terminal, so scenario run draws its progress bar into the log.
        script -qfaec "$cmd" "$log" </dev/null >/dev/null 2>&1 || true
    done
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
    # The rows finished so far, and the bar's latest redraw (of the row under way).
    echo "rows done: $(done_rows | wc -l) of $(fixed_rows | wc -l)"
    plain_log | grep -a ' sim: ' || true
    tr '\r' '\n' <"$log" | grep -a '^scenario *[0-9]*%' | tail -n 1 || true
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
        local procs
        procs=$(descendants "$pid")
        kill "$pid" 2>/dev/null || true # the loop first, so no next row starts
        # shellcheck disable=SC2086
        [[ -z $procs ]] || kill $procs 2>/dev/null || true
        resume_all "$pid" "$procs" # a paused row must run on to take the signal and end
        # The JVM ends its row in a moment; wait for every process of the run (at most 30 s).
        local tries=0 proc alive
        while ((tries++ < 150)); do
            alive=0
            for proc in $pid $procs; do
                kill -0 "$proc" 2>/dev/null && alive=1
            done
            ((alive)) || break
            sleep 0.2
        done
        ((alive)) && echo "fixed-rows: pid $pid or a process under it is still ending" >&2
        echo "fixed-rows: stopped pid $pid ('bench/fixed-rows.sh start' resumes it)"
    else
        echo "fixed-rows: not running"
    fi
}

# Every process under PID (the loop's subshells, a row's `script`, the launcher's shell, the JVM).
descendants() {
    local pid=$1 child
    for child in $(pgrep -P "$pid" || true); do
        echo "$child"
        descendants "$child"
    done
}

# Whether PID is a `script` process. `script` follows its child: when the child stops it stops
# itself, and when it is continued it continues the child. So a pause stops every process of the
# run but `script` (stopping it too would leave it to re-stop itself on the stale notice when
# continued), and a resume continues `script` first, then the others.
is_script() {
    [[ $(ps -o comm= -p "$1" 2>/dev/null) == script ]]
}

# A process may end between the listing and the signal: that is not an error.
pause() {
    running || { echo "fixed-rows: not running" >&2; exit 1; }
    local pid proc
    pid=$(cat "$pidfile")
    for proc in $pid $(descendants "$pid"); do
        is_script "$proc" || kill -s STOP "$proc" 2>/dev/null || true
    done
    echo "fixed-rows: paused pid $pid (resume with 'bench/fixed-rows.sh resume')"
}

# Continues PID and PROCS (its descendants, listed): the `script` processes first.
resume_all() {
    local pid=$1 procs=$2 proc
    for proc in $procs; do
        if is_script "$proc"; then
            kill -s CONT "$proc" 2>/dev/null || true
        fi
    done
    for proc in $pid $procs; do
        kill -s CONT "$proc" 2>/dev/null || true
    done
}

resume() {
    running || { echo "fixed-rows: not running" >&2; exit 1; }
    local pid
    pid=$(cat "$pidfile")
    resume_all "$pid" "$(descendants "$pid")"
    echo "fixed-rows: resumed pid $pid"
}

# Whether the run is paused: one of its processes (not a script) is stopped.
paused() {
    local pid proc
    pid=$(cat "$pidfile")
    for proc in $pid $(descendants "$pid"); do
        if ! is_script "$proc" && [[ $(ps -o stat= -p "$proc" 2>/dev/null) == T* ]]; then
            return 0
        fi
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
    _run) shift; run_rows "$@" ;;
    *) usage ;;
esac
