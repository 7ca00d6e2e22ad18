#!/usr/bin/env bash
# Memory: the daemon's resident set size (VmRSS from /proc)
# - idle with the example catalogue: deploy/example/beredskab.toml with
#   every target rewritten to a local one (its HTTP probes and the tcp probe
#   to the HTTP servers of examples/probe_bench.rs, the icmp probe to
#   127.0.0.1, the DNS probe to a closed local port, MQTT to a broker of our
#   own), after its probes have run a while; beside it Alertmanager idle;
# - idle with a 10,000-service catalogue (each service on a component of
#   its own), no peer;
# - after N alarms (1,000,000) pushed as Alertmanager bodies of 1,000
#   alerts each to /api/v1/alertmanager, opened and resolved, 1,000 left
#   open at the end: memory should follow what is open, not how many
#   alarms there have been. Fails if the daemon does not hold exactly the
#   1,000 open incidents at the end or answers a push with anything but 202.
#
# bench/memory.sh [--quick]: --quick is 10,000 alarms, each measurement
# once, on the debug build.
source "$(dirname "$0")/lib.sh"
need prometheus-alertmanager prometheus-alertmanager
alarms=$(pick 10000 1000000)
reps=$(pick 1 3)
settle=$(pick 3 15)
services=$(pick 1000 10000)
build --bin beredskab --example probe_bench
# The release daemon lays out the code it runs when idle together, by the
# names in link/idle-order.txt (build.rs). Names the binary no longer has
# (after a dependency or toolchain upgrade) cost idle memory, never a
# build: say how many it has.
if ! $quick; then
    grep -v '^#' link/idle-order.txt | sort -u > "$dir/ordered"
    echo "memory: $(nm --defined-only "$bin/beredskab" | awk '{print $3}' | sort -u \
        | comm -12 - "$dir/ordered" | wc -l) of link/idle-order.txt's $(wc -l < "$dir/ordered") names are in the binary (bench/idle-order.sh writes them)" >&2
fi
token=bench-token
sha=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
export BEREDSKAB_SECRET=bench-secret-bench-secret-bench-secret SMS_TOKEN=bench

QUIET_CREW=$(quiet_crew)
export QUIET_CREW
start_responders 1
endpoint=$responders
start_mosquitto off

# start_daemon CONFIG: starts the daemon, sets $pid and $http (read from
# the config's listen line) and waits until it answers.
start_daemon() {
    http=$(sed -n 's/^listen = "127.0.0.1:\([0-9]*\)".*/\1/p' "$1" | head -1)
    RUST_LOG=warn "$bin/beredskab" run -c "$1" 2> "$(dirname "$1")/daemon.log" &
    pid=$!
    pids+=($pid)
    wait_http "http://127.0.0.1:$http/healthz"
}

stop() {
    kill "$@"
    wait "$@" 2>/dev/null || true
}

# The example catalogue, every target local.
example_round() {
    local folder=$dir/example-$1
    mkdir -p "$folder"
    example_config "$endpoint" "$mqtt" > "$folder/beredskab.toml"
    start_daemon "$folder/beredskab.toml"
    sleep "$settle"
    rss_kb "$pid" >> "$dir/example-rss"
    # What the resident set is made of: the binary's code and data mapped
    # from its file, and anonymous memory (heap, stacks).
    awk '/^RssAnon/ {a=$2} /^RssFile/ {f=$2} END {printf "  example catalogue: %d KiB anonymous, %d KiB mapped from files\n", a, f}' \
        "/proc/$pid/status" >&2
    echo "  example catalogue: $(($(rss_kb "$pid") / 1024)) MiB idle" >&2
    stop "$pid"
}

alertmanager_round() {
    local folder=$dir/am-$1 port am
    mkdir -p "$folder"
    port=$(free_port)
    cat > "$folder/alertmanager.yml" <<YML
route:
  receiver: hook
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:$endpoint/hook
YML
    "$(command -v prometheus-alertmanager || echo /usr/bin/prometheus-alertmanager)" \
        --config.file="$folder/alertmanager.yml" --storage.path="$folder/am" \
        --web.listen-address="127.0.0.1:$port" --cluster.listen-address="" \
        2> "$folder/alertmanager.log" &
    am=$!
    pids+=($am)
    wait_http "http://127.0.0.1:$port/-/ready"
    sleep "$settle"
    rss_kb "$am" >> "$dir/am-rss"
    echo "  Alertmanager: $(($(rss_kb "$am") / 1024)) MiB idle" >&2
    stop "$am"
}

# catalogue FILE SERVICES WIDTH: a config of SERVICES services, each on a
# component of its own, plus one service on WIDTH components c-0 … (for
# the alarms), listening on a free port.
catalogue() {
    python3 - "$1" "$(free_port)" "$sha" "$2" "$3" <<'PY'
import os, sys
crew = os.environ["QUIET_CREW"]
path, http, sha, services, width = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
with open(path, "w") as f:
    f.write(f'''[site]
name = "Bench"
language = "en"
timezone = "Europe/Copenhagen"
[server]
listen = "127.0.0.1:{http}"
[[token]]
name = "bench"
sha256 = "{sha}"
scopes = ["ingest"]
[store]
url = "sqlite://bench.db"
{crew}
''')
    if width:
        f.write(f'''[[service]]
id = "bulk"
name = "Bulk"
criticality = "important"
policy = "quiet"
depends_on = [{", ".join(f'"c-{i}"' for i in range(width))}]
''')
        for i in range(width):
            f.write(f'[[component]]\nid = "c-{i}"\nkind = "server"\n')
    for i in range(services):
        f.write(f'[[service]]\nid = "s-{i}"\nname = "Service {i}"\ncriticality = "important"\n'
                f'policy = "quiet"\ndepends_on = ["h-{i}"]\n'
                f'[[component]]\nid = "h-{i}"\nkind = "server"\n')
PY
}

services_round() {
    local folder=$dir/services-$1
    mkdir -p "$folder"
    catalogue "$folder/beredskab.toml" "$services" 0
    start_daemon "$folder/beredskab.toml"
    sleep "$settle"
    rss_kb "$pid" >> "$dir/services-rss"
    echo "  $services services: $(($(rss_kb "$pid") / 1024)) MiB idle" >&2
    stop "$pid"
}

# Alarms through the HTTP API: 1,000 alerts a body, opened then resolved,
# the last round left open.
alarms_round() {
    local folder=$dir/alarms-$1 width=1000
    mkdir -p "$folder"
    catalogue "$folder/beredskab.toml" 0 "$width"
    start_daemon "$folder/beredskab.toml"
    python3 - "$http" "$token" "$width" "$((alarms / width))" "$pid" <<'PY' >&2
import json, sys, time, urllib.request
http, token, width, rounds, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
def held():
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz") as r:
        return json.load(r).get("incidents_in_memory")
def body(status):
    return json.dumps({"alerts": [{"status": status, "labels": {"component": f"c-{i}", "kind": "server"},
                                   "fingerprint": f"f{i}"} for i in range(width)]}).encode()
bodies = {s: body(s) for s in ("firing", "resolved")}
def push(status):
    req = urllib.request.Request(f"http://127.0.0.1:{http}/api/v1/alertmanager", data=bodies[status],
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 202, r.status
print(f"  {'alarms':>10} {'held':>6} {'VmRSS MiB':>10} {'s':>6}")
start = time.time()
step = max(rounds // 5, 1)
for k in range(1, rounds + 1):
    push("firing")
    if k < rounds:
        push("resolved")
    if k % step == 0 or k == rounds:
        print(f"  {k*width:>10} {held():>6} {rss_kib()/1024:>10.1f} {time.time()-start:>6.1f}", flush=True)
n = held()
if n != width:
    sys.exit(f"bench: the daemon holds {n} incidents, not the {width} left open")
PY
    rss_kb "$pid" >> "$dir/alarms-rss"
    echo "  after $alarms alarms: $(($(rss_kb "$pid") / 1024)) MiB, peak $(($(hwm_kb "$pid") / 1024)) MiB" >&2
    stop "$pid"
}

for r in $(seq "$reps"); do
    echo "round $r" >&2
    example_round "$r"
    alertmanager_round "$r"
    services_round "$r"
done
alarms_round 1

mib() { python3 -c "print(f'{$1 / 1024:.1f}')"; }
ours=$(median < "$dir/example-rss")
am=$(median < "$dir/am-rss")
row "memory: idle, example catalogue" "$(mib "$ours") MiB" "$(mib "$am") MiB Alertmanager idle" \
    "$(python3 -c "print(f'{$am / $ours:.2f}')")" "< 12 MB" \
    "$(python3 -c "print(str($ours * 1024 < 12e6).lower())")"
ours=$(median < "$dir/services-rss")
row "memory: idle, $services services" "$(mib "$ours") MiB" "" "" "" ""
ours=$(median < "$dir/alarms-rss")
row "memory: after $alarms alarms" "$(mib "$ours") MiB" "" "" "< 64 MB" \
    "$(python3 -c "print(str($ours * 1024 < 64e6).lower())")"
