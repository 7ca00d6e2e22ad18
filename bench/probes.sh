#!/usr/bin/env bash
# Load check of the HTTP probe collector: N probes (default 2,000) against
# 4 local axum servers, every 1 s for 20 s. Prints the collector process's
# CPU time (from /proc/self/stat), its peak RSS, and the median and p99
# lateness of probe starts against their timetable (see
# examples/probe_bench.rs for how lateness is estimated).
# Not run in CI; run it by hand: bench/probes.sh [N] [EVERY] [SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
every=${2:-1s}
secs=${3:-20}
cargo build --release -q --example probe_bench
bin=target/release/examples/probe_bench
dir=$(mktemp -d)
exec 3> >("$bin" serve 4 >"$dir/ports")
trap 'exec 3>&-; rm -rf "$dir"' EXIT
for _ in $(seq 50); do
  grep -q '^ports:' "$dir/ports" 2>/dev/null && break
  sleep 0.1
done
ports=$(sed -n 's/^ports: //p' "$dir/ports")
[ -n "$ports" ] || { echo "the servers did not start" >&2; exit 1; }
# The probes open many connections at once: raise the descriptor limit.
ulimit -n 65536 2>/dev/null || true
CLK_TCK=$(getconf CLK_TCK) "$bin" probe "$ports" "$n" "$every" "$secs"
