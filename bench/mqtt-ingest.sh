#!/usr/bin/env bash
# MQTT ingest: QoS 1 alarms through a real Mosquitto into the daemon's
# store, each alarm committed before its PUBACK, against the broker's own
# ceiling: the same stream, from the same broker, to a plain subscriber
# (rumqttc, persistent session, manual acks, each acked on receipt,
# nothing stored). Two stores:
# - SQLite (WAL, synchronous=FULL), one store for all repetitions of a
#   broker setting: persistence off, and the shipped
#   deploy/mosquitto/mosquitto.conf;
# - PostgreSQL, the server at $BEREDSKAB_BENCH_PG (default
#   postgres://postgres@127.0.0.1:5432/postgres, its own durability
#   settings: synchronous_commit and fsync on by default, checked and
#   named in the row when not), a fresh database per repetition
#   (beredskab_bench_PID_SETTING_REP, dropped after it), with the broker's
#   persistence off only. The daemon runs as the lone instance "bench"
#   of a cluster (BEREDSKAB_INSTANCE), so its MQTT client id is
#   beredskab-bench-bench. The script fails at once when the server does
#   not answer: CI starts one before `bench/run --quick`.
#
# For each store and broker setting (a broker of its own), REPS
# repetitions of:
# - peer:       a burst of N to the plain subscriber, while it runs;
# - live:       a burst of N published while the daemon runs, until all
#               are committed;
# - drain:      a backlog of N queued while the daemon is stopped, then the
#               daemon started, until all are committed (start-up included);
# - peer drain: a backlog of N queued for the plain subscriber while it is
#               away, from its reconnect until it has them all.
# Rows: the medians, live against peer (the goal; none for PostgreSQL) and
# drain against peer drain (no goal: for scale). Fails if any alarm is
# missing from the store (or stored twice). Lines at warn or above in the
# daemon's log are shown on stderr.
#
# bench/mqtt-ingest.sh [--quick] [N (20000, at most 100000)] [REPS (5)]
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"
n=${1:-$(pick 500 20000)}
reps=${2:-$(pick 1 5)}
# Both broker settings queue at most 100,000 messages per client
# (deploy/mosquitto/mosquitto.conf); a larger burst would be dropped by
# the broker, and the run would wait out its patience for alarms that
# never come.
if [ "$n" -gt 100000 ]; then
    echo "bench: N is at most 100000 (the broker's max_queued_messages)" >&2
    exit 2
fi
BENCH_PATIENCE_S=$(pick 60 300)
export BENCH_PATIENCE_S
pg=${BEREDSKAB_BENCH_PG:-postgres://postgres@127.0.0.1:5432/postgres}

# The PostgreSQL server first: a missing one fails before the build.
need psql postgresql-client
if ! pg_answer=$(psql "$pg" -XAtq -v ON_ERROR_STOP=1 \
    -c "SELECT concat_ws('|', current_setting('server_version'), \
        current_setting('synchronous_commit'), current_setting('fsync'))" 2>&1); then
    echo "bench: PostgreSQL at $pg does not answer (start it, or set BEREDSKAB_BENCH_PG):" >&2
    echo "$pg_answer" >&2
    exit 1
fi
IFS="|" read -r pg_version pg_sync pg_fsync <<< "$pg_answer"
echo "mqtt-ingest: PostgreSQL $pg_version at $pg, synchronous_commit=$pg_sync, fsync=$pg_fsync" >&2
# The rows name a durability weaker than the default.
pg_name=PostgreSQL
if [ "$pg_sync" != on ] || [ "$pg_fsync" != on ]; then
    pg_name="PostgreSQL (synchronous_commit=$pg_sync, fsync=$pg_fsync)"
fi

build --bin beredskab --example mqtt_ingest
load="$bin/examples/mqtt_ingest"

# pg_url DATABASE: $pg with its database replaced.
pg_url() {
    python3 -c 'import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$pg" "$1"
}

# The databases this run created, dropped on exit whatever happens (after
# lib.sh's cleanup has stopped the daemons).
pg_dbs=()
drop_db() {
    psql "$pg" -XAtq -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" >/dev/null
}
trap 'cleanup; for db in "${pg_dbs[@]}"; do drop_db "$db" || true; done' EXIT

# The PostgreSQL side of examples/mqtt_ingest.rs's store modes, over one
# psql session (alarms.id is an identity taken in commit order, as
# SQLite's rowid is):
#   pg_ingest URL base
#   pg_ingest URL live RUN N LOAD PORT   (publishes with LOAD's publish mode)
#   pg_ingest URL drain RUN N BASE
# Polls every 2 ms until N alarm rows follow the base, then fails unless
# they are exactly one per key of RUN; prints the same line as the load
# generator, the rate last but one.
cat > "$dir/pg_ingest.py" <<'PYTHON'
import os, subprocess, sys, time

url, mode = sys.argv[1], sys.argv[2]
psql = subprocess.Popen(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", url],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

def query(sql):
    psql.stdin.write(sql + ";\n")
    psql.stdin.flush()
    line = psql.stdout.readline()
    if not line:
        sys.exit(f"pg_ingest {mode}: psql ended (exit {psql.wait()}) on: {sql}")
    return line.strip()

def newest():
    return int(query("SELECT coalesce(max(id), 0) FROM alarms"))

def wait(run, base, n, patience):
    deadline = time.monotonic() + patience
    while True:
        # max(id) is an index lookup; the count only once it may be done
        # (an identity can leave gaps).
        if newest() - base >= n and int(query(f"SELECT count(*) FROM alarms WHERE id > {base}")) >= n:
            done = time.monotonic()
            break
        if time.monotonic() >= deadline:
            got = query(f"SELECT count(*) FROM alarms WHERE id > {base}")
            sys.exit(f"pg_ingest {mode}: only {got} of {n} alarms committed within {patience} s")
        time.sleep(0.002)
    rows, keys = query("SELECT count(*) || ' ' || count(DISTINCT \"key\") FROM alarms "
                       f"WHERE id > {base} AND \"key\" LIKE '{run}-%'").split()
    if int(rows) != n or int(keys) != n:
        sys.exit(f"pg_ingest {mode}: the store holds {rows} alarm rows with {keys} distinct keys "
                 f"of run {run}, not {n}")
    return done

patience = float(os.environ.get("BENCH_PATIENCE_S", "300"))
if mode == "base":
    print(newest())
elif mode == "live":
    run, n, load, port = sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
    base = newest()
    started = time.monotonic()
    publisher = subprocess.Popen([load, port, str(n), "publish", run], stdout=subprocess.PIPE, text=True)
    done = wait(run, base, n, patience)
    out, _ = publisher.communicate()
    if publisher.returncode != 0:
        sys.exit(f"pg_ingest live: the publisher failed (exit {publisher.returncode})")
    published = out.split(" in ")[-1].split()[0]
    total = done - started
    print(f"live: {n} QoS 1 alarms, published in {published} s, all in {total:.3f} s "
          f"= {n / total:.0f} alarms/s")
elif mode == "drain":
    run, n, base = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    query("SELECT 1")
    started = time.monotonic()
    done = wait(run, base, n, patience)
    total = done - started
    print(f"drain: {n} QoS 1 alarms, all in {total:.3f} s = {n / total:.0f} alarms/s")
else:
    sys.exit(f"pg_ingest: unknown mode {mode}")
psql.stdin.close()
psql.wait()
PYTHON
pg_ingest() { python3 "$dir/pg_ingest.py" "$@"; }

# daemon_config URL: the daemon on broker $mqtt, HTTP on $http, its store
# at URL; 100 servers behind one service (each holds at most 10,000 firing
# alarms, and every alarm of the run stays firing), alarms on
# burst/SERVER/alarm.
daemon_config() {
    local servers="" ids=""
    for i in $(seq 0 99); do
        servers+="[[component]]
id = \"srv-$i\"
kind = \"server\"
"
        ids+="\"srv-$i\", "
    done
    cat <<CONF
[site]
name = "Bench"
[server]
listen = "127.0.0.1:$http"
[store]
url = "$1"
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
}

# The daemon as instance "bench": on PostgreSQL its MQTT client id is
# beredskab-bench-bench (SQLite ignores the name).
start_daemon() {
    BEREDSKAB_INSTANCE=bench RUST_LOG=warn "$bin/beredskab" run -c "$folder/beredskab.toml" \
        2>> "$folder/daemon.log" &
    daemon=$!
    pids+=("$daemon")
}

daemon_ready() {
    if ! wait_http "http://127.0.0.1:$http/readyz"; then
        cat "$folder/daemon.log" >&2
        exit 1
    fi
}

stop_daemon() {
    kill -TERM "$daemon"
    wait "$daemon" || true
}

# show_log LABEL: the daemon's lines at warn or above, if any, but the
# warning that the bench's catalogue has no secret for links.
show_log() {
    local lines
    grep -v 'no secret for acknowledgement links' "$folder/daemon.log" > "$folder/daemon.warn" || true
    lines=$(grep -c . "$folder/daemon.warn" || true)
    if [ "$lines" -gt 0 ]; then
        echo "  $1: the daemon logged $lines lines at warn or above; the first 20:" >&2
        head -20 "$folder/daemon.warn" | cut -c1-400 | sed 's/^/    /' >&2
    fi
}

# measure LABEL COMMAND…: runs the command (the load generator or
# pg_ingest), shows its line, prints the rate (its last number but one)
# for the caller to collect.
measure() {
    local label=$1 line
    shift
    line=$("$@") || {
        echo "bench: $label failed" >&2
        exit 1
    }
    echo "  $label: $line" >&2
    echo "$line" | awk '{print $(NF-1)}'
}

thousands() { python3 -c "import sys; print(f'{float(sys.argv[1]):,.0f}')" "$1"; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }

# One broker per store and setting: PostgreSQL with persistence off only.
for run in "sqlite off" "sqlite shipped" "postgres off"; do
    read -r store settings <<< "$run"
    start_mosquitto "$settings"
    http=$(free_port)
    folder="$dir/daemon-$store-$settings"
    mkdir -p "$folder"
    peer=() live=() drain=() peer_drain=()
    if [ "$store" = sqlite ]; then
        # One store for every repetition, the daemon running throughout.
        db="$folder/beredskab.db"
        daemon_config "sqlite://$db" > "$folder/beredskab.toml"
        start_daemon
        daemon_ready
    fi
    for r in $(seq "$reps"); do
        echo "mqtt-ingest: $store, persistence $settings, repetition $r of $reps, $n alarms each" >&2
        if [ "$store" = postgres ]; then
            # A fresh database for each repetition.
            database="beredskab_bench_$$_${settings}_$r"
            url=$(pg_url "$database")
            pg_dbs+=("$database")
            psql "$pg" -XAtq -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$database\"" >/dev/null
            daemon_config "$url" > "$folder/beredskab.toml"
            start_daemon
            daemon_ready
        fi
        peer+=("$(measure peer "$load" "$mqtt" "$n" peer "p$r")")
        if [ "$store" = sqlite ]; then
            live+=("$(measure live "$load" "$mqtt" "$n" store "l$r" "$db")")
        else
            live+=("$(measure live pg_ingest "$url" live "l$r" "$n" "$load" "$mqtt")")
        fi
        stop_daemon
        "$load" "$mqtt" "$n" publish "d$r" >/dev/null
        if [ "$store" = sqlite ]; then
            base=$("$load" "$mqtt" 0 base "$db")
            start_daemon
            drain+=("$(measure drain "$load" "$mqtt" "$n" drain "d$r" "$db" "$base")")
        else
            base=$(pg_ingest "$url" base)
            start_daemon
            drain+=("$(measure drain pg_ingest "$url" drain "d$r" "$n" "$base")")
        fi
        daemon_ready
        peer_drain+=("$(measure "peer drain" "$load" "$mqtt" "$n" peer-drain "q$r")")
        if [ "$store" = postgres ]; then
            stop_daemon
            drop_db "$database"
            pg_dbs=()
        fi
    done
    if [ "$store" = sqlite ]; then
        stop_daemon
    fi
    show_log "$store, persistence $settings"
    kill "$mosquitto_pid"
    wait "$mosquitto_pid" || true

    p=$(printf '%s\n' "${peer[@]}" | median)
    l=$(printf '%s\n' "${live[@]}" | median)
    d=$(printf '%s\n' "${drain[@]}" | median)
    q=$(printf '%s\n' "${peer_drain[@]}" | median)
    if [ "$settings" = off ]; then
        name="persistence off"
        goal=">= 0.80 and >= 40,000/s"
        met() { python3 -c "import sys; print(str(float(sys.argv[1]) >= 0.80 and float(sys.argv[2]) >= 40000).lower())" "$1" "$2"; }
    else
        name="shipped settings"
        goal=">= 0.90"
        met() { python3 -c "import sys; print(str(float(sys.argv[1]) >= 0.90).lower())" "$1" "$2"; }
    fi
    rl=$(ratio "$l" "$p")
    rd=$(ratio "$d" "$q")
    if [ "$store" = sqlite ]; then
        row "MQTT ingest, $name, live" "$(thousands "$l") alarms/s" "$(thousands "$p") msgs/s" \
            "$rl" "$goal" "$(met "$rl" "$l")"
    else
        # The goals are SQLite's: PostgreSQL is shown beside it.
        row "MQTT ingest, $pg_name, $name, live" "$(thousands "$l") alarms/s" \
            "$(thousands "$p") msgs/s" "$rl" "" ""
        name="$pg_name, $name"
    fi
    # The broker hands a queued backlog to a plain subscriber several times
    # faster than a live stream arrives: shown for scale, the goal is the
    # live row's.
    row "MQTT ingest, $name, backlog drain" "$(thousands "$d") alarms/s" "$(thousands "$q") msgs/s" \
        "$rd" "" ""
done
