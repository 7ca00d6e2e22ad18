#!/usr/bin/env bash
# Writes link/idle-order.txt: the functions of the release daemon that run
# from its start through a minute with the example catalogue (every target
# local, as in bench/memory.sh), asked for /healthz, /readyz and /metrics
# every 5 s, the most run first. build.rs hands the
# file to the linker (lld's --symbol-ordering-file) in release builds, so
# that this code lies together at the start of the binary's text.
#
# Why: the kernel maps the cached pages around every page of code that
# runs (fault-around, 64 KiB), so code run once at start stays resident.
# In the linker's own order the code an idle daemon had run was spread
# over most of the 13 MB text, and the daemon held about 10.5 MiB of it.
# Laid out together, it holds about 4 MiB.
#
# A symbol's name carries a hash of its crate's build: its features, its
# dependencies' versions and features, the toolchain. So the file holds
# the names of two builds: the one deploy/README.md installs (`cargo build
# --release --locked --no-default-features`) and the one bench/ measures
# (`cargo build --release --bin beredskab`, default features); the linker
# skips the names it does not find. A build together with the
# dev-dependencies (`cargo test`, `cargo bench`, which bench/run ends with)
# has other names again: it is laid out in the linker's own order. Run
# this again after a dependency or toolchain upgrade: bench/memory.sh says
# how many of the file's names the binary it measures still has (about
# 2,900 of 4,100 for the bench's build). Needs valgrind (callgrind); takes about
# ten minutes, most of it the two release builds.
#
# bench/idle-order.sh [SECONDS (60)]
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"
need valgrind valgrind
seconds=${1:-60}
build --bin beredskab --example probe_bench
export BEREDSKAB_SECRET=bench-secret-bench-secret-bench-secret SMS_TOKEN=bench
start_responders 1
start_mosquitto off
example_config "$responders" "$mqtt" > "$dir/beredskab.toml"
# The deploy build first, so that the bench's is the one left in
# target/release.
for features in --no-default-features --features=demo; do
    cargo build --release -q --locked --bin beredskab "$features"
    echo "idle-order: the daemon ($features) under callgrind for ${seconds}s" >&2
    rm -f "$dir"/beredskab.db*
    RUST_LOG=warn valgrind --tool=callgrind --demangle=no \
        --callgrind-out-file="$dir/callgrind$features.out" \
        target/release/beredskab run -c "$dir/beredskab.toml" 2> "$dir/daemon.log" &
    daemon=$!
    pids+=($daemon)
    # What an idle daemon is asked: its health by the service manager or
    # the bench, its metrics by Prometheus.
    http=$(sed -n 's/^listen = "127.0.0.1:\([0-9]*\)".*/\1/p' "$dir/beredskab.toml" | head -1)
    end=$((SECONDS + seconds))
    while [ $SECONDS -lt $end ]; do
        for path in healthz readyz metrics; do
            curl -s -m 5 "http://127.0.0.1:$http/$path" > /dev/null || true
        done
        sleep 5
    done
    # Callgrind writes its counts when the process exits.
    kill -TERM "$daemon"
    wait "$daemon" || true
    [ -s "$dir/callgrind$features.out" ] || { tail -20 "$dir/daemon.log" >&2; exit 1; }
    nm --defined-only target/release/beredskab | awk '$2 ~ /^[tTwW]$/ {print $3}' \
        > "$dir/defined$features"
done
python3 - "$dir" > link/idle-order.txt <<'PY'
import collections, glob, re, sys


def run_functions(out, defined):
    """Each function of the binary that ran, with the instructions it ran."""
    names, cost = {}, collections.Counter()
    current, call_cost = None, False
    name_re = re.compile(r"c?fn=\((\d+)\)(?: (.*))?")
    for line in open(out, errors="replace"):
        if line.startswith(("fn=", "cfn=")):
            m = name_re.match(line.rstrip("\n"))
            if not m:
                continue
            fid, name = m.groups()
            if name:
                # Callgrind names a recursion level as name'2.
                names[fid] = re.sub(r"'\d+$", "", name)
            if line.startswith("fn="):
                current = fid
            # A function called is a function run.
            cost[fid] += 0
        elif line.startswith("calls="):
            call_cost = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if call_cost:
                # The line after calls= is the call's cost, not the caller's own.
                call_cost = False
            elif current is not None:
                parts = line.split()
                if len(parts) > 1:
                    cost[current] += int(parts[1])
    ran = collections.Counter()
    for fid, c in cost.items():
        name = names.get(fid)
        if name in defined:
            ran[name] = max(ran[name], c)
    return ran


ran = collections.Counter()
for out in sorted(glob.glob(sys.argv[1] + "/callgrind*.out")):
    defined = set(open(out.replace("/callgrind", "/defined")[: -len(".out")]).read().split())
    for name, c in run_functions(out, defined).items():
        ran[name] = max(ran[name], c)
print("# The functions the release daemon ran from start through a minute idle")
print("# with the example catalogue, the most run first, for two builds (see")
print("# bench/idle-order.sh, which writes this file; build.rs gives it to the")
print("# linker). Not edited by hand.")
print("\n".join(name for name, _ in sorted(ran.items(), key=lambda kv: (-kv[1], kv[0]))))
PY
echo "idle-order: $(grep -vc '^#' link/idle-order.txt) functions in link/idle-order.txt" >&2
