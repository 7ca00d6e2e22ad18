# shellcheck shell=bash
# Shared by the scripts in bench/: sourced, never run. Sets `set -euo
# pipefail`, a temporary folder `$dir` removed on exit with every process
# whose pid is in `pids`, and the build to measure in `$bin`.
#
# Every script takes `--quick` as its first argument: each measurement runs
# once, briefly, on the debug build that `cargo test` already made. It
# shows the harness still works (CI runs it); its numbers mean nothing.
# Without it the script builds and measures the release build.
#
# A script reports each measurement as one line
#   ROW {"measure": …, "ours": …, "peer": …, "ratio": …, "goal": …, "met": …}
# (see `row` below); bench/run gathers them into one table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=false
if [ "${1:-}" = --quick ]; then
    quick=true
    shift
fi
dir=$(mktemp -d)
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

# build TARGET…: builds the given cargo targets (e.g. --bin beredskab
# --example mqtt_ingest) and sets $bin to the folder holding them.
# BENCH_BIN=FOLDER measures the build already in FOLDER instead (the
# layout of target/release: the binary, and examples/ beside it), for
# comparing two builds in turns.
#
# The release daemon is built on its own, as `cargo build --release`
# makes it: built in one go with the examples, its dependencies would take
# the dev-dependencies' features, their symbols other names, and
# link/idle-order.txt (see build.rs) would not match them.
build() {
    if [ -n "${BENCH_BIN:-}" ]; then
        bin=$BENCH_BIN
    elif $quick; then
        cargo build -q "$@"
        bin=target/debug
    else
        local rest=()
        while [ $# -gt 0 ]; do
            if [ "$1" = --bin ] && [ "${2:-}" = beredskab ]; then
                shift 2
                continue
            fi
            rest+=("$1")
            shift
        done
        cargo build --release -q --bin beredskab
        if [ ${#rest[@]} -gt 0 ]; then
            cargo build --release -q "${rest[@]}"
        fi
        bin=target/release
    fi
}

# pick QUICK FULL: the first in quick mode, else the second.
pick() { if $quick; then echo "$1"; else echo "$2"; fi; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# need COMMAND PACKAGE: fails loudly when a peer is missing (bench/run
# installs them; a script run alone says which package to install).
need() {
    if ! command -v "$1" >/dev/null && ! [ -x "/usr/sbin/$1" ] && ! [ -x "/usr/bin/$1" ]; then
        echo "bench: $1 is missing: apt-get install $2 (or run bench/run, which installs it)" >&2
        exit 1
    fi
}

# mosquitto_conf SETTINGS PORT FOLDER: writes a broker configuration to
# stdout, listening on 127.0.0.1:PORT with anonymous access and its files
# in FOLDER, with
# - SETTINGS=shipped: every other line of deploy/mosquitto/mosquitto.conf;
# - SETTINGS=off: the same with persistence off.
mosquitto_conf() {
    local settings=$1 port=$2 folder=$3
    grep -v -E '^\s*(#|$|listener|allow_anonymous|persistence_location|log_dest|user|password_file)' \
        deploy/mosquitto/mosquitto.conf \
        | if [ "$settings" = off ]; then sed -E 's/^persistence .*/persistence false/'; else cat; fi
    cat <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence_location $folder/
log_dest file $folder/mosquitto.log
CONF
    if [ "$(id -u)" = 0 ]; then echo "user root"; fi
}

# start_mosquitto SETTINGS: starts a broker on a free port in a folder of
# its own under $dir and sets $mqtt to its port.
start_mosquitto() {
    need mosquitto mosquitto
    mqtt=$(free_port)
    local folder="$dir/mosquitto-$1-$mqtt"
    mkdir -p "$folder"
    mosquitto_conf "$1" "$mqtt" "$folder" > "$folder/mosquitto.conf"
    "$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c "$folder/mosquitto.conf" &
    pids+=($!)
    # shellcheck disable=SC2034 # for the scripts that stop it
    mosquitto_pid=$!
    for _ in $(seq 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $mqtt), 0.2)" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "bench: mosquitto did not start" >&2
    cat "$folder/mosquitto.log" >&2
    exit 1
}

# wait_http URL [LOG]: waits until URL answers 2xx (10 s); on failure
# prints the end of LOG.
wait_http() {
    for _ in $(seq 200); do
        curl -sf "$1" >/dev/null && return 0
        sleep 0.05
    done
    echo "bench: $1 did not answer" >&2
    # The log of whatever should have answered, where a script keeps it.
    if [ -n "${2:-}" ] && [ -f "$2" ]; then tail -20 "$2" >&2; fi
    return 1
}

# median: the median of the numbers on stdin, one per line.
median() { sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}'; }

# rss_kb PID: resident set size in KiB.
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# hwm_kb PID: peak resident set size in KiB.
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
# cpu_seconds PID: user + system CPU seconds the process has used.
cpu_seconds() {
    python3 -c "import os,sys; f=open('/proc/$1/stat').read().rsplit(')',1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))"
}

# row MEASURE OURS PEER RATIO GOAL MET: one line of the results table.
# OURS and PEER are text with their unit ("41,200 alarms/s"), RATIO a
# number or "", GOAL the goal in words, MET true, false or "" (no goal).
row() {
    python3 -c 'import json, sys
m, ours, peer, ratio, goal, met = sys.argv[1:7]
print("ROW " + json.dumps({"measure": m, "ours": ours, "peer": peer, "ratio": ratio,
      "goal": goal, "met": {"true": True, "false": False}.get(met)}, ensure_ascii=False))' "$@"
}

# quiet_crew: the TOML of one person in one role, a log channel and a
# policy "quiet" that tells nobody for a day: for catalogues that measure
# the daemon, not its notifications.
quiet_crew() {
    cat <<'TOML'
[[person]]
id = "p"
name = "P"
phone = "+4500000000"
[[role]]
id = "r"
primary = "p"
[[channel]]
id = "log"
kind = "log"
[[policy]]
id = "quiet"
deputy_after = "1h"
[[policy.step]]
on = "open 1d"
notify = ["role:r"]
via = ["log"]
TOML
}

# example_config ENDPOINT MQTT: deploy/example/beredskab.toml on stdout
# with every target rewritten to a local one: its HTTP probes and the tcp
# probe to the HTTP server at 127.0.0.1:ENDPOINT, the icmp probe to
# 127.0.0.1, the DNS probe to a closed local port, MQTT to the broker at
# 127.0.0.1:MQTT, and its API on a free port. Fails if a 10.x target is
# left: only 127.0.0.1 is ever probed.
example_config() {
    local config
    config=$(sed -E \
        -e "s|^listen = \"127.0.0.1:[0-9]+\"|listen = \"127.0.0.1:$(free_port)\"|" \
        -e "s|^url = \"mqtt://127.0.0.1:[0-9]+\"|url = \"mqtt://127.0.0.1:$2\"|" \
        -e "s|^url = \"http://127.0.0.1:92[0-9][0-9]/|url = \"http://127.0.0.1:$1/|" \
        -e "s|^host = \"10\.[0-9.]+\"|host = \"127.0.0.1\"|" \
        -e "s|^address = \"10\.[0-9.]+:[0-9]+\"|address = \"127.0.0.1:$1\"|" \
        -e "s|^server = \"10\.[0-9.]+:[0-9]+\"|server = \"127.0.0.1:$(free_port)\"|" \
        deploy/example/beredskab.toml)
    if grep -nE '10\.[0-9]+\.[0-9]+\.[0-9]+' <<< "$config" | grep -v '^\s*[0-9]*:\s*#'; then
        echo "bench: the example still names a 10.x target" >&2
        exit 1
    fi
    echo "$config"
}

# start_responders COUNT: starts COUNT HTTP servers of
# examples/probe_bench.rs on 127.0.0.1 (built by the script) and sets
# $responders to their ports, comma-separated.
start_responders() {
    "$bin/examples/probe_bench" serve "$1" > "$dir/responders" &
    pids+=($!)
    for _ in $(seq 100); do
        grep -q '^ports:' "$dir/responders" 2>/dev/null && break
        sleep 0.1
    done
    responders=$(sed -n 's/^ports: //p' "$dir/responders")
    [ -n "$responders" ] || { echo "bench: the endpoints did not start" >&2; exit 1; }
}
