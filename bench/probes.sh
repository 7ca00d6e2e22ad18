#!/usr/bin/env bash
# Probing, side by side: the daemon running N HTTP probes every EVERY
# seconds (10,000 every 10 s) against local endpoints, against
# blackbox_exporter probing the same N URLs for Prometheus, which scrapes
# its /probe for each target at the same interval.
#
# The endpoints: 4 HTTP servers of examples/probe_bench.rs on 127.0.0.1,
# every target a URL of its own. Each side runs alone (the other stopped)
# and settles (the daemon 4 intervals: each probe's first results change
# what the engine knows of it and are committed, later ones are not, which
# is the steady state; Prometheus one interval after taking in its
# targets), then 3 intervals are measured: CPU seconds of
# the process from /proc (the daemon; blackbox_exporter, with Prometheus'
# own CPU reported beside it) over the probes made in that window (the
# requests the endpoints answered; for the peer, Prometheus' count of
# scrapes), and the peak RSS (VmHWM) of the run up to then (the daemon's
# /metrics, read after it to see that no probe failed, makes text of tens of
# MB for 10,000 probes). Every probe must
# succeed on the daemon's side (at most a tenth may fail, timed out, on
# the peer's), and the window must hold at least 90 % of the probes due in
# it, or the script fails.
#
# bench/probes.sh [--quick]: --quick is 100 targets every 2 s for 3
# intervals, once, on the debug build.
source "$(dirname "$0")/lib.sh"
need prometheus-blackbox-exporter prometheus-blackbox-exporter
need prometheus prometheus
n=$(pick 100 10000)
every=$(pick 2 10)
intervals=$(pick 3 3)
reps=$(pick 1 3)
window=$((every * intervals))
build --bin beredskab --example probe_bench
# Thousands of connections at once: raise the descriptor limit.
ulimit -n 65536 2>/dev/null || true

echo "probes: $n HTTP probes every ${every}s, $intervals intervals measured, $reps rounds" >&2
QUIET_CREW=$(quiet_crew)
export QUIET_CREW
start_responders 4
IFS=, read -r -a ports <<< "$responders"
# Target i: http://127.0.0.1:PORT/t/i on one of the servers.
targets() {
    local i
    for ((i = 0; i < n; i++)); do
        echo "http://127.0.0.1:${ports[i % ${#ports[@]}]}/t/$i"
    done
}
targets > "$dir/targets"

# The daemon: one component per target, each with its probe.
daemon_round() {
    local http folder=$dir/daemon-$1
    http=$(free_port)
    mkdir -p "$folder"
    python3 - "$folder/beredskab.toml" "$http" "$every" "$dir/targets" <<'PY'
import os, sys
crew = os.environ["QUIET_CREW"]
path, http, every, targets = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
urls = open(targets).read().split()
with open(path, "w") as f:
    f.write(f'''[site]
name = "Bench"
language = "en"
timezone = "Europe/Copenhagen"
[server]
listen = "127.0.0.1:{http}"
metrics_public = true
[store]
url = "sqlite://bench.db"
{crew}
[[service]]
id = "bulk"
name = "Bulk"
criticality = "important"
policy = "quiet"
depends_on = [{", ".join(f'"c-{i}"' for i in range(len(urls)))}]
''')
    for i, url in enumerate(urls):
        f.write(f'[[component]]\nid = "c-{i}"\nkind = "server"\n'
                f'[[probe]]\nid = "p-{i}"\ncomponent = "c-{i}"\nurl = "{url}"\n'
                f'every = "{every}s"\ntimeout = "2s"\n')
PY
    RUST_LOG=warn "$bin/beredskab" run -c "$folder/beredskab.toml" 2> "$folder/daemon.log" &
    local pid=$!
    pids+=($pid)
    wait_http "http://127.0.0.1:$http/healthz" "$folder/daemon.log"
    # The steady state: a probe's first results each change what the
    # engine knows of it (and so are committed), the later ones do not.
    sleep "$((every * 4))"
    local probes0 cpu0 probes1 cpu1 failing hwm
    probes0=$(answered)
    cpu0=$(cpu_seconds "$pid")
    sleep "$window"
    cpu1=$(cpu_seconds "$pid")
    probes1=$(answered)
    # Before /metrics, whose text for 10,000 probes costs tens of MB.
    hwm=$(hwm_kb "$pid")
    failing=$(curl -sf "http://127.0.0.1:$http/metrics" | awk '/^beredskab_probe_up\{/ && $2 != 1' | wc -l)
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    check_round daemon "$((probes1 - probes0))" "$failing"
    python3 -c "print(($cpu1 - $cpu0) / $((probes1 - probes0)) * 1e6)" >> "$dir/ours-us"
    echo "$hwm" >> "$dir/ours-hwm"
    echo "  daemon: $((probes1 - probes0)) probes, $(python3 -c "print(round($cpu1 - $cpu0, 2))") CPU s, peak RSS $((hwm / 1024)) MiB" >&2
}

# answered: how many requests the endpoints have answered so far (one
# count for all of them).
answered() { curl -sf "http://127.0.0.1:${ports[0]}/answered"; }

# check_round SIDE PROBES FAILING [ALLOWED]: fails unless the window held
# at least 90 % of the probes due and at most ALLOWED (default none)
# failed. The peer may fail some on a busy machine (its probes time out):
# they are counted and said, not fatal.
check_round() {
    local due=$((n * intervals))
    if [ "$2" -lt $((due * 90 / 100)) ] || [ "$3" -gt "${4:-0}" ]; then
        echo "bench: $1 made $2 probes of $due due, $3 failing" >&2
        exit 1
    fi
    if [ "$3" -gt 0 ]; then
        echo "  $1: $3 of $2 probes failed" >&2
    fi
}

peer_round() {
    local bb prom folder=$dir/peer-$1
    bb=$(free_port)
    prom=$(free_port)
    mkdir -p "$folder"
    cat > "$folder/blackbox.yml" <<YML
modules:
  http_2xx:
    prober: http
    timeout: 2s
    http:
      preferred_ip_protocol: ip4
YML
    python3 - "$folder/prometheus.yml" "$bb" "$every" "$dir/targets" <<'PY'
import json, sys
path, bb, every, targets = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
urls = open(targets).read().split()
with open(path, "w") as f:
    f.write(f'''global:
  scrape_interval: {every}s
  scrape_timeout: 2s
scrape_configs:
  - job_name: blackbox
    metrics_path: /probe
    params:
      module: [http_2xx]
    static_configs:
      - targets: {json.dumps(urls)}
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: 127.0.0.1:{bb}
''')
PY
    "$(command -v prometheus-blackbox-exporter || echo /usr/bin/prometheus-blackbox-exporter)" \
        --config.file="$folder/blackbox.yml" --web.listen-address="127.0.0.1:$bb" \
        2> "$folder/blackbox.log" &
    local bb_pid=$!
    pids+=($bb_pid)
    wait_http "http://127.0.0.1:$bb/metrics"
    "$(command -v prometheus || echo /usr/bin/prometheus)" --config.file="$folder/prometheus.yml" \
        --storage.tsdb.path="$folder/tsdb" --web.listen-address="127.0.0.1:$prom" \
        2> "$folder/prometheus.log" &
    local prom_pid=$!
    pids+=($prom_pid)
    wait_http "http://127.0.0.1:$prom/-/ready"
    # Prometheus takes in new targets at most every 5 s, then spreads
    # their scrapes over one interval.
    sleep "$((every + 6))"
    local cpu0 pcpu0 cpu1 pcpu1
    cpu0=$(cpu_seconds "$bb_pid")
    pcpu0=$(cpu_seconds "$prom_pid")
    sleep "$window"
    cpu1=$(cpu_seconds "$bb_pid")
    pcpu1=$(cpu_seconds "$prom_pid")
    local hwm scrapes failing
    hwm=$(hwm_kb "$bb_pid")
    # Scrapes in the window, and samples of a failed probe or scrape.
    scrapes=$(prom_query "$prom" "sum(count_over_time(up{job=\"blackbox\"}[${window}s]))")
    failing=$(prom_query "$prom" "sum(count_over_time(probe_success[${window}s])) \
        - sum(sum_over_time(probe_success[${window}s]))")
    failing=$((failing + $(prom_query "$prom" "count(up{job=\"blackbox\"} == 0) or vector(0)")))
    kill "$prom_pid" "$bb_pid"
    wait "$prom_pid" "$bb_pid" 2>/dev/null || true
    check_round blackbox_exporter "$scrapes" "$failing" "$((scrapes / 10))"
    python3 -c "print(($cpu1 - $cpu0) / $scrapes * 1e6)" >> "$dir/peer-us"
    python3 -c "print(($pcpu1 - $pcpu0) / $scrapes * 1e6)" >> "$dir/prom-us"
    echo "$hwm" >> "$dir/peer-hwm"
    echo "  blackbox_exporter: $scrapes probes, $(python3 -c "print(round($cpu1 - $cpu0, 2))") CPU s, peak RSS $((hwm / 1024)) MiB; Prometheus $(python3 -c "print(round($pcpu1 - $pcpu0, 2))") CPU s" >&2
}

# prom_query PORT EXPR: the value of an instant query, as an integer.
prom_query() {
    curl -sfG "http://127.0.0.1:$1/api/v1/query" --data-urlencode "query=$2" \
        | python3 -c 'import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(int(float(r[0]["value"][1])) if r else 0)'
}

for r in $(seq "$reps"); do
    echo "round $r" >&2
    daemon_round "$r"
    peer_round "$r"
done

ours=$(median < "$dir/ours-us")
peer=$(median < "$dir/peer-us")
prom=$(median < "$dir/prom-us")
ours_mib=$(( $(median < "$dir/ours-hwm") / 1024 ))
peer_mib=$(( $(median < "$dir/peer-hwm") / 1024 ))
ratio=$(python3 -c "print(f'{$peer / $ours:.2f}')")
met=$(python3 -c "print(str($ours <= 30 and $peer / $ours >= 25).lower())")
row "probing: CPU per HTTP probe ($n every ${every}s)" \
    "$(printf '%.0f' "$ours") µs" \
    "$(printf '%.0f' "$peer") µs blackbox_exporter (+$(printf '%.0f' "$prom") µs Prometheus scraping it)" \
    "$ratio" "≤ 30 µs, ≥ 25× cheaper" "$met"
row "probing: peak RSS ($n probes)" "$ours_mib MiB" "$peer_mib MiB blackbox_exporter" \
    "$(python3 -c "print(f'{$peer_mib / max($ours_mib, 1):.2f}')")" "≤ 64 MB" \
    "$([ "$(median < "$dir/ours-hwm")" -le 62500 ] && echo true || echo false)"
