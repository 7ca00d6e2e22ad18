#!/usr/bin/env bash
# Alarm → notification latency, side by side with Alertmanager: from an
# alarm's arrival (pushed to the daemon's HTTP API, published to a
# Mosquitto with the shipped settings, or posted to Alertmanager's
# /api/v2/alerts) to the request at a local webhook receiver, at 100,
# 1,000 and 10,000 alarms/s and for a burst of 5,000. The daemon runs with
# its durable store (synchronous=FULL: a decision is on disk before it is
# notified); Alertmanager (Debian's prometheus-alertmanager, 0.25) routes
# every alert to its own group (group_by ['...']) with group_wait 0s.
# examples/alarm_latency.rs sends and receives, and fails when any
# notification is missing or comes twice.
#
# Every alarm is a fire alarm on a component of its own (10,000 of them),
# so each opens its own incident and yields one notification; the
# components feed services of COMPONENTS_PER_SERVICE (default 100) each.
# The core rebuilds the board of every service at each commit, so
# COMPONENTS_PER_SERVICE=1 (10,000 services) measures that cost too.
#
#   bench/alarm-latency.sh [--quick] [REPETITIONS]   (default 3)
# --quick: 200 alarms at 100/s and a burst of 200 on each path, once.
# LATENCY_PHASES=1000,burst runs only the phases named (100, 1000, 10000,
# burst), for looking at one while working on it.
# DAEMON_LOG=beredskab::core=debug runs the daemon with that log filter and
# prints the spread of its commit times (stored_us, decided_us) at the end,
# and each engine snapshot it took: its size and what it cost.
source "$(dirname "$0")/lib.sh"

reps=$(pick 1 "${1:-3}")
# The most alarms one phase raises at once: one component each.
components=$(pick 200 10000)
need prometheus-alertmanager prometheus-alertmanager
build --bin beredskab --example alarm_latency

start_mosquitto shipped
api=$(free_port)
receiver=$(free_port)
am=$(free_port)

# Alertmanager: one group per alert, sent at once, never repeated.
mkdir -p "$dir/alertmanager"
cat > "$dir/alertmanager/alertmanager.yml" <<CONF
route:
  receiver: hook
  group_by: ['...']
  group_wait: 0s
  group_interval: 1h
  repeat_interval: 24h
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:$receiver/alertmanager
        send_resolved: false
CONF
"$(command -v prometheus-alertmanager || echo /usr/bin/prometheus-alertmanager)" \
    --config.file="$dir/alertmanager/alertmanager.yml" \
    --storage.path="$dir/alertmanager" \
    --web.listen-address="127.0.0.1:$am" \
    --cluster.listen-address= \
    --log.level=warn 2> "$dir/alertmanager/log" &
pids+=($!)

token="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
sha=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
python3 - "$dir/beredskab.toml" "$api" "$mqtt" "$receiver" "$sha" "$components" "${COMPONENTS_PER_SERVICE:-100}" <<'PY'
import sys
path, api, mqtt, receiver, sha, n, per = sys.argv[1:8]
out = [f'''[site]
name = "Bench"
language = "en"
[server]
listen = "127.0.0.1:{api}"
[[token]]
name = "bench"
sha256 = "{sha}"
scopes = ["ingest", "read"]
[store]
url = "sqlite://beredskab.db"
[mqtt]
url = "mqtt://127.0.0.1:{mqtt}"
client_id = "beredskab-latency"
[[mqtt.subscription]]
topic = "site/+/fire"
kind = "fire"
component = "{{1}}"
[[person]]
id = "p1"
name = "On call"
[[role]]
id = "r"
primary = "p1"
[[channel]]
id = "hook"
kind = "webhook"
url = "http://127.0.0.1:{receiver}/beredskab"
[[policy]]
id = "p"
[[policy.step]]
on = "open"
notify = ["role:r"]
via = ["hook"]
''']
n, per = int(n), int(per)
for i in range(n):
    out.append(f'[[component]]\nid = "kmp{i}"\nkind = "room"\n')
for s in range(0, n, per):
    deps = ", ".join(f'"kmp{i}"' for i in range(s, min(n, s + per)))
    out.append(f'[[service]]\nid = "svc{s // per}"\ncriticality = "life"\n'
               f'depends_on = [{deps}]\npolicy = "p"\n')
open(path, "w").write("".join(out))
PY
RUST_LOG=${DAEMON_LOG:-warn} "$bin/beredskab" run -c "$dir/beredskab.toml" 2> "$dir/daemon.log" &
pids+=($!)
daemon_pid=$!
wait_http "http://127.0.0.1:$api/readyz" || { cat "$dir/daemon.log" >&2; exit 1; }
wait_http "http://127.0.0.1:$am/-/ready" || { cat "$dir/alertmanager/log" >&2; exit 1; }

# The floor under every commit: how long this disk takes to sync a write.
python3 - "$dir" <<'PY' >&2
import os, sys, time
f = os.open(os.path.join(sys.argv[1], "fsync-probe"), os.O_WRONLY | os.O_CREAT)
took = []
for _ in range(100):
    os.write(f, b"x" * 4096)
    t = time.perf_counter()
    os.fsync(f)
    took.append((time.perf_counter() - t) * 1000)
took.sort()
print(f"fsync of 4 KiB on this disk: p50 {took[49]:.2f} ms, p99 {took[98]:.2f} ms")
PY

quick_flag=$(pick --quick "")
cpu_before=$(cpu_seconds "$daemon_pid")
# shellcheck disable=SC2086
"$bin/examples/alarm_latency" --api "$api" --token "$token" --mqtt "$mqtt" \
    --alertmanager "$am" --listen "$receiver" --reps "$reps" $quick_flag \
    ${LATENCY_PHASES:+--phases "$LATENCY_PHASES"} > "$dir/results" \
    || { echo "bench: the latency run failed; the daemon's log:" >&2; tail -50 "$dir/daemon.log" >&2; exit 1; }
echo "daemon CPU over the run: $(python3 -c "print(round($(cpu_seconds "$daemon_pid") - $cpu_before, 2))") s" >&2
if [ -n "${DAEMON_LOG:-}" ]; then
    python3 - "$dir/daemon.log" <<'PY' >&2
import re, sys
log = open(sys.argv[1], errors="replace").read()
lines = log.splitlines()
for field, said in (("decided_us", "batch decided"), ("stored_us", "batch committed"),
                    ("boarded_us", "batch committed")):
    v = sorted(int(m.group(1)) for m in (re.search(field + r"=(\d+)", l)
                                          for l in lines if said in l) if m)
    if v:
        q = lambda p: v[min(len(v) - 1, int(p * len(v)))]
        print(f"daemon {field}: n {len(v)}, p10 {q(.1)}, p50 {q(.5)}, p90 {q(.9)}, p99 {q(.99)}, max {v[-1]}")
# Each engine snapshot: encoded on the core's path, stored beside it.
taken = re.findall(r"engine snapshot taken bytes=(\d+) encoded_us=(\d+)", log)
stored = re.findall(r"engine snapshot stored bytes=\d+ after_seq=\d+ stored_us=(\d+)", log)
for i, (size, encoded) in enumerate(taken):
    print(f"daemon snapshot: {int(size):,} bytes, encoded in {encoded} us on the core's path, "
          f"stored in {stored[i] if i < len(stored) else '?'} us beside it")
PY
fi

# One row per phase and arrival path; Alertmanager's p99 is the peer.
python3 - "$dir/results" <<'PY' | while IFS=$'\t' read -r measure ours peer ratio goal met; do row "$measure" "$ours" "$peer" "$ratio" "$goal" "$met"; done
import json, sys
res = [json.loads(l.split(" ", 1)[1]) for l in open(sys.argv[1]) if l.startswith("RESULT ")]
peer = {r["phase"]: r for r in res if r["path"] == "alertmanager"}
names = {"http": "HTTP push", "mqtt": "MQTT (shipped Mosquitto)"}
for r in res:
    if r["path"] == "alertmanager":
        continue
    am = peer[r["phase"]]
    if r["rate"]:
        at = f'{r["rate"]:,}/s'
    else:
        at = f'burst of {r["alarms"]:,}'
    ms = lambda v: f"{v:.2f} ms" if v < 10 else f"{v:.0f} ms"
    ours = f'{ms(r["p99_ms"])} (p50 {ms(r["p50_ms"])}, max {ms(r["max_ms"])})'
    theirs = f'{ms(am["p99_ms"])} (p50 {ms(am["p50_ms"])}, max {ms(am["max_ms"])})'
    ratio = f'{am["p99_ms"] / max(r["p99_ms"], 1e-9):.2f}'
    below = r["p99_ms"] < am["p99_ms"]
    goal = "below Alertmanager"
    met = below
    if r["rate"] == 1000:
        goal += ", < 5 ms"
        met = below and r["p99_ms"] < 5
    print("\t".join([f"Alarm → webhook p99, {names[r['path']]}, {at}", ours, theirs, ratio, goal,
                     "true" if met else "false"]))
PY
