#!/usr/bin/env bash
# Time from an MQTT fire alarm to the SMS gateway's request, through a real
# Mosquitto (the shipped settings), the daemon (release build) and a
# stand-in gateway on loopback: N (default 300) alarms one after another,
# each opening a new incident. Prints the median, p99 and max.
# Not run in CI; run it by hand: bench/alarm-latency.sh [N] [debug]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-300}
profile=${2:-release}
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

if [ "$profile" = release ]; then
    cargo build --release -q --bin beredskab --example alarm_latency
    bin=target/release
else
    cargo build -q --bin beredskab --example alarm_latency
    bin=target/debug
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mqtt=$(free_port)
http=$(free_port)
gateway=$(free_port)

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

cat > "$dir/beredskab.toml" <<CONF
[site]
name = "Bench"
[server]
listen = "127.0.0.1:$http"
[store]
url = "sqlite://beredskab.db"
[mqtt]
url = "mqtt://127.0.0.1:$mqtt"
client_id = "beredskab-latency"
[[mqtt.subscription]]
topic = "site/+/fire"
kind = "fire"
component = "{1}"
[[component]]
id = "serverrum"
kind = "room"
[[service]]
id = "omsorg"
criticality = "life"
depends_on = ["serverrum"]
policy = "p"
[[person]]
id = "p1"
name = "Vagt"
phone = "+4511111111"
[[role]]
id = "r"
primary = "p1"
[[channel]]
id = "sms"
kind = "sms-http"
url = "http://127.0.0.1:$gateway/sms"
body = '{"incident":"{{incident}}","to":"{{phone}}","text":"{{text}}"}'
[[policy]]
id = "p"
[[policy.step]]
on = "open"
notify = ["role:r"]
via = ["sms"]
CONF
RUST_LOG=warn "$bin/beredskab" run -c "$dir/beredskab.toml" 2> "$dir/daemon.log" & pids+=($!)
for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$http/readyz" >/dev/null && break
    sleep 0.05
done
curl -sf "http://127.0.0.1:$http/readyz" >/dev/null || { cat "$dir/daemon.log"; exit 1; }
"$bin/examples/alarm_latency" "$mqtt" "$gateway" "$n" || { cat "$dir/daemon.log"; exit 1; }
echo "profile: $profile on $(nproc) cores"
