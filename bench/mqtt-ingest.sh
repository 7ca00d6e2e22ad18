#!/usr/bin/env bash
# QoS 1 alarms through a real Mosquitto (the shipped settings) into the
# daemon's store (SQLite, WAL, synchronous=FULL, acked only after commit),
# against the peer: the same broker delivering the same burst to a plain
# subscriber that acknowledges on receipt and stores nothing. Per round:
# - live: a burst published while the daemon runs, until all are committed;
# - peer: the same burst to the plain subscriber;
# - drain: a burst queued in the broker while the daemon is stopped, then
#   the daemon started, until all are committed (the daemon's own pace,
#   start-up included).
# Prints each round, the medians over ROUNDS (default 5) bursts of N
# (default 20,000) alarms, and the ratios to the peer.
# Not run in CI; run it by hand: bench/mqtt-ingest.sh [N] [ROUNDS] [debug]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
rounds=${2:-5}
profile=${3:-release}
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

if [ "$profile" = release ]; then
    cargo build --release -q --bin beredskab --example mqtt_ingest
    bin=target/release
else
    cargo build -q --bin beredskab --example mqtt_ingest
    bin=target/debug
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mqtt=$(free_port)
http=$(free_port)

# The broker with the shipped settings (file locations and listener our own).
grep -v -E '^\s*(#|$|listener|allow_anonymous|persistence_location|log_dest|user|password_file)' deploy/mosquitto/mosquitto.conf > "$dir/mosquitto.conf"
cat >> "$dir/mosquitto.conf" <<CONF
listener $mqtt 127.0.0.1
allow_anonymous true
persistence_location $dir/
log_dest file $dir/mosquitto.log
user root
CONF
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
"$mosquitto" -c "$dir/mosquitto.conf" & pids+=($!)

servers=""
ids=""
for i in $(seq 0 9); do
    servers+="[[component]]
id = \"srv-$i\"
kind = \"server\"
"
    ids+="\"srv-$i\", "
done
cat > "$dir/beredskab.toml" <<CONF
[site]
name = "Bench"
[server]
listen = "127.0.0.1:$http"
[store]
url = "sqlite://beredskab.db"
[mqtt]
url = "mqtt://127.0.0.1:$mqtt"
client_id = "beredskab-bench"
[[mqtt.subscription]]
topic = "burst/+/alarm"
kind = "server"
component = "{1}"
$servers
[[service]]
id = "apps"
criticality = "important"
depends_on = [${ids%, }]
policy = "p"
[[person]]
id = "p1"
name = "P"
[[role]]
id = "r"
primary = "p1"
[[channel]]
id = "log"
kind = "log"
[[policy]]
id = "p"
[[policy.step]]
on = "open"
notify = ["role:r"]
via = ["log"]
CONF
start_daemon() {
    RUST_LOG=warn "$bin/beredskab" run -c "$dir/beredskab.toml" 2>> "$dir/daemon.log" &
    daemon=$!
}
wait_ready() {
    for _ in $(seq 200); do
        curl -sf "http://127.0.0.1:$http/readyz" >/dev/null && return 0
        sleep 0.05
    done
    cat "$dir/daemon.log"; exit 1
}
start_daemon
pids+=($daemon)
wait_ready

rate() { sed -E 's/.* = ([0-9]+) alarms\/s/\1/'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
live=()
peer=()
drain=()
for r in $(seq "$rounds"); do
    line=$("$bin/examples/mqtt_ingest" "$mqtt" "$n" store "$dir/beredskab.db")
    echo "round $r live:  $line"
    live+=("$(echo "$line" | rate)")
    line=$("$bin/examples/mqtt_ingest" "$mqtt" "$n" peer)
    echo "round $r peer:  $line"
    peer+=("$(echo "$line" | rate)")
    kill -TERM "$daemon"; wait "$daemon" || true
    "$bin/examples/mqtt_ingest" "$mqtt" "$n" publish > /dev/null
    base=$("$bin/examples/mqtt_ingest" "$mqtt" 0 count "$dir/beredskab.db")
    start_daemon
    pids+=($daemon)
    line=$("$bin/examples/mqtt_ingest" "$mqtt" "$n" drain "$dir/beredskab.db" "$base")
    echo "round $r drain: $line"
    drain+=("$(echo "$line" | rate)")
    wait_ready
done
l=$(printf '%s\n' "${live[@]}" | median)
p=$(printf '%s\n' "${peer[@]}" | median)
d=$(printf '%s\n' "${drain[@]}" | median)
echo "profile: $profile, $rounds rounds of $n alarms on $(nproc) cores"
echo "median live, published while running, into the store: $l alarms/s"
echo "median drain, a queued backlog into the store:        $d alarms/s"
echo "median peer, at a plain subscriber storing nothing:  $p alarms/s"
python3 -c "print(f'ratio live / peer: {$l / $p:.2f}; drain / peer: {$d / $p:.2f}')"
