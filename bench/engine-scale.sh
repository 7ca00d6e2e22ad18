#!/usr/bin/env bash
# End-to-end engine scale check: a generated catalogue of N servers behind
# one server room (default 100,000), 2,000 server alarms, then the room
# alarm that merges them all into one incident, then the clears.
# Prints the median wall time of `check` and of `drill` over 5 runs.
# Not run in CI; run it by hand: bench/engine-scale.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 - "$n" "$dir" <<'PY'
import sys
n, d = int(sys.argv[1]), sys.argv[2]
out = ['[site]\nname = "Scale"\n', '[[component]]\nid = "room"\nkind = "room"\n']
out += [f'[[component]]\nid = "srv-{i}"\nkind = "server"\ndepends_on = ["room"]\n' for i in range(n)]
for i in range(0, n, 100):
    deps = ", ".join(f'"srv-{j}"' for j in range(i, min(i + 100, n)))
    out.append(f'[[service]]\nid = "svc-{i}"\ncriticality = "critical"\ndepends_on = [{deps}]\npolicy = "p"\n')
out.append('[[person]]\nid = "p1"\nname = "P"\n[[role]]\nid = "r"\nprimary = "p1"\n'
           '[[channel]]\nid = "log"\nkind = "log"\n[[policy]]\nid = "p"\n'
           '[[policy.step]]\non = "open"\nnotify = ["role:r"]\nvia = ["log"]\n')
open(f"{d}/catalogue.toml", "w").write("".join(out))
ev = ['end = "3h"\n']
k = min(2000, n)
ev += [f'[[event]]\nat = "{i}s"\nalarm = {{ component = "srv-{i * 37 % n}", kind = "server", state = "firing" }}\n' for i in range(k)]
ev.append(f'[[event]]\nat = "{k + 1}s"\nalarm = {{ component = "room", kind = "environment", state = "firing" }}\n')
ev += [f'[[event]]\nat = "{k + 2 + i}s"\nalarm = {{ component = "srv-{i * 37 % n}", kind = "server", state = "cleared" }}\n' for i in range(k)]
open(f"{d}/scenario.toml", "w").write("".join(ev))
PY
cargo build --release -q
bin=target/release/beredskab
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
TIMEFORMAT=%R
run5() { for _ in 1 2 3 4 5; do { time "$@" >/dev/null 2>&1; } 2>&1; done | median; }
echo "components: $((n + 1)), services: $(( (n + 99) / 100 ))"
echo "check median: $(run5 "$bin" check -c "$dir/catalogue.toml") s"
echo "drill median: $(run5 "$bin" drill -c "$dir/catalogue.toml" --scenario "$dir/scenario.toml") s"
"$bin" drill -c "$dir/catalogue.toml" --scenario "$dir/scenario.toml" \
  | python3 -c 'import sys, json, collections; print(dict(collections.Counter(json.loads(l)["type"] for l in sys.stdin)))'
