#!/usr/bin/env bash
# Memory against history: the daemon (release build) takes N incidents
# (default 100,000) opened and resolved through Alertmanager bodies of
# 1,000 alerts each (one component per alert, each its own root), with
# 1,000 left open at the end. Prints the daemon's resident set size (VmRSS
# from /proc) and the incidents its engine holds after every tenth of the
# run, and the snapshot's size at the end. Memory should follow what is
# open, not how many incidents there have been.
# Not run in CI; run it by hand: bench/memory.sh [N] [debug]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
profile=${2:-release}
width=1000
rounds=$(( n / width ))
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

if [ "$profile" = release ]; then
    cargo build --release -q --bin beredskab
    bin=target/release/beredskab
else
    cargo build -q --bin beredskab
    bin=target/debug/beredskab
fi
http=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
token=bench-token
sha=$(printf %s "$token" | sha256sum | cut -d' ' -f1)

python3 - "$dir/beredskab.toml" "$http" "$sha" "$width" <<'PY'
import sys
path, http, sha, width = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ids = [f"c-{i}" for i in range(width)]
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
[[service]]
id = "bulk"
name = "Bulk"
criticality = "important"
policy = "quiet"
depends_on = [{", ".join(f'"{i}"' for i in ids)}]
''')
    for i in ids:
        f.write(f'[[component]]\nid = "{i}"\nkind = "server"\n')
PY

RUST_LOG=warn "$bin" run -c "$dir/beredskab.toml" 2> "$dir/daemon.log" & pid=$!; pids+=($pid)
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$http/healthz" > /dev/null 2>&1 && break || sleep 0.1
done

python3 - "$http" "$token" "$width" "$rounds" "$pid" <<'PY'
import json, sys, time, urllib.request
http, token, width, rounds, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
def held():
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz") as r:
        return json.load(r).get("incidents_in_memory")
def push(status):
    alerts = [{"status": status, "labels": {"component": f"c-{i}", "kind": "server"},
               "fingerprint": f"f{i}"} for i in range(width)]
    req = urllib.request.Request(f"http://127.0.0.1:{http}/api/v1/alertmanager",
        data=json.dumps({"alerts": alerts}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 202, r.status
print(f"{'incidents':>10} {'held':>6} {'VmRSS MiB':>10} {'s':>6}")
start = time.time()
print(f"{0:>10} {held():>6} {rss_kib()/1024:>10.1f} {0:>6.1f}")
step = max(rounds // 10, 1)
for k in range(1, rounds + 1):
    push("firing")
    if k < rounds:
        push("resolved")
    if k % step == 0 or k == rounds:
        print(f"{k*width:>10} {held():>6} {rss_kib()/1024:>10.1f} {time.time()-start:>6.1f}", flush=True)
PY
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
python3 - "$dir/bench.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
n, = db.execute("SELECT count(*) FROM incidents").fetchone()
size, = db.execute("SELECT length(body) FROM snapshots ORDER BY rowid DESC LIMIT 1").fetchone()
print(f"store: {n} incidents; the last snapshot is {size/1024:.1f} KiB")
PY
