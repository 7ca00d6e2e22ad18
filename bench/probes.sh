#!/usr/bin/env bash
# Load check of the probe collector: N probes (default 2,000) of KIND
# (http, the default; tcp, tls, dns, icmp, or `all` for each in turn)
# against local peers, every 1 s for 20 s. Prints the collector process's
# CPU time (from /proc/self/stat) and so the CPU cost per probe check, its
# peak RSS, and the median and p99 lateness of probe starts against their
# timetable (see examples/probe_bench.rs for how lateness is estimated).
# The peers: 4 axum servers (http, tcp), 4 rustls servers with a
# certificate openssl makes here (tls), one dnsmasq (dns), 127.0.0.1 (icmp:
# run as root or with net.ipv4.ping_group_range allowing ping).
# Not run in CI; run it by hand: bench/probes.sh [N] [EVERY] [SECS] [KIND]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
every=${2:-1s}
secs=${3:-20}
kind=${4:-http}
cargo build --release -q --example probe_bench
bin=$PWD/target/release/examples/probe_bench
dir=$(mktemp -d)
pids=()
fds=()
cleanup() {
  for fd in "${fds[@]}"; do eval "exec $fd>&-"; done
  [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
# The probes open many connections at once: raise the descriptor limit.
ulimit -n 65536 2>/dev/null || true

wait_ports() {
  for _ in $(seq 50); do
    grep -q '^ports:' "$1" 2>/dev/null && break
    sleep 0.1
  done
  local p
  p=$(sed -n 's/^ports: //p' "$1")
  [ -n "$p" ] || { echo "the servers did not start" >&2; exit 1; }
  echo "$p"
}

http_ports=""
tls_ports=""
dns_port=""

run_kind() {
  local k=$1 ports extra=()
  case "$k" in
    http|tcp)
      if [ -z "$http_ports" ]; then
        exec 3> >("$bin" serve 4 >"$dir/http-ports"); fds+=(3)
        http_ports=$(wait_ports "$dir/http-ports")
      fi
      ports=$http_ports ;;
    tls)
      if [ -z "$tls_ports" ]; then
        cat > "$dir/ext" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
EXT
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
          -subj /CN=bench-ca -keyout "$dir/ca.key" -out "$dir/ca.pem" \
          -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
          -subj /CN=127.0.0.1 -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
        openssl x509 -req -days 2 -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
          -set_serial 2 -extfile "$dir/ext" -out "$dir/server.pem" 2>/dev/null
        exec 4> >("$bin" serve-tls "$dir/server.pem" "$dir/server.key" 4 >"$dir/tls-ports"); fds+=(4)
        tls_ports=$(wait_ports "$dir/tls-ports")
      fi
      ports=$tls_ports
      extra=("$dir/ca.pem") ;;
    dns)
      if [ -z "$dns_port" ]; then
        dns_port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        echo "127.0.0.1 bench.example.dk" > "$dir/hosts"
        dnsmasq=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)
        "$dnsmasq" --no-daemon --port="$dns_port" --listen-address=127.0.0.1 --bind-interfaces \
          --no-resolv --no-hosts --addn-hosts="$dir/hosts" --conf-file=/dev/null \
          --user=root --pid-file= --dns-forward-max=10000 --cache-size=1000 2>/dev/null &
        pids+=($!)
        sleep 0.5
      fi
      ports=$dns_port ;;
    icmp) ports=1 ;;
    *) echo "unknown kind $k" >&2; exit 2 ;;
  esac
  CLK_TCK=$(getconf CLK_TCK) "$bin" probe "$ports" "$n" "$every" "$secs" "$k" "${extra[@]}"
}

if [ "$kind" = all ]; then
  for k in http tcp tls dns icmp; do run_kind "$k"; echo; done
else
  run_kind "$kind"
fi
