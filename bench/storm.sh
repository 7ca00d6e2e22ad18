#!/usr/bin/env bash
# Correlation storm: a generated catalogue of 100,000 components (mains, a
# thousand rooms on it, the servers in them, a service per hundred servers),
# the mains alarm, then an alarm from every other component within the
# next second. The drill must decide one incident (any second incident or
# merge fails the script). The row is the time the storm takes to decide:
# the median of five runs of `beredskab drill`, less the median of five
# runs on the same files with the clock stopped at 0 s (reading 20 MB of
# TOML, the same in both), with the whole drill's time beside it.
# No peer: Alertmanager groups alerts by label, it does not correlate them
# through dependencies.
#   bench/storm.sh [--quick] [COMPONENTS]
# --quick: 1,000 components, one run, the debug build.
source "$(dirname "$0")/lib.sh"

n=${1:-$(pick 1000 100000)}
runs=$(pick 1 5)
build --bin beredskab

python3 - "$n" "$dir" <<'PY'
import sys
n, d = int(sys.argv[1]), sys.argv[2]
rooms = max(1, n // 100)
servers = n - 1 - rooms
out = ['[site]\nname = "Storm"\n', '[[component]]\nid = "mains"\nkind = "power"\n']
out += [f'[[component]]\nid = "room-{r}"\nkind = "room"\ndepends_on = ["mains"]\n'
        for r in range(rooms)]
out += [f'[[component]]\nid = "srv-{i}"\nkind = "server"\ndepends_on = ["room-{i % rooms}"]\n'
        for i in range(servers)]
for i in range(0, servers, 100):
    deps = ", ".join(f'"srv-{j}"' for j in range(i, min(i + 100, servers)))
    out.append(f'[[service]]\nid = "svc-{i}"\ncriticality = "critical"\n'
               f'depends_on = [{deps}]\npolicy = "p"\n')
out.append('[[person]]\nid = "p1"\nname = "P"\n[[role]]\nid = "r"\nprimary = "p1"\n'
           '[[channel]]\nid = "log"\nkind = "log"\n[[policy]]\nid = "p"\n'
           '[[policy.step]]\non = "open"\nnotify = ["role:r"]\nvia = ["log"]\n')
open(f"{d}/catalogue.toml", "w").write("".join(out))
# The mains at 0 s, then every room and server within the next second.
ev = ['end = "10m"\n',
      '[[event]]\nat = "0s"\nalarm = { component = "mains", kind = "power", state = "firing" }\n']
others = [f"room-{r}" for r in range(rooms)] + [f"srv-{i}" for i in range(servers)]
for i, c in enumerate(others):
    ms = 1 + i * 999 // len(others)
    ev.append(f'[[event]]\nat = "{ms}ms"\nalarm = {{ component = "{c}", kind = "server", '
              f'state = "firing", key = "storm" }}\n')
open(f"{d}/scenario.toml", "w").write("".join(ev))
PY
echo "storm: $n components, $((n - 1)) alarms within a second of the mains alarm" >&2

"$bin/beredskab" check -c "$dir/catalogue.toml" >/dev/null
"$bin/beredskab" drill -c "$dir/catalogue.toml" --scenario "$dir/scenario.toml" > "$dir/drill.jsonl"
python3 - "$dir/drill.jsonl" "$n" <<'PY'
import collections, json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
types = collections.Counter(l["type"] for l in lines)
opened = [l for l in lines if l["type"] == "incident_opened"]
alarms = types["alarm"]
print(f"storm: {dict(types)}", file=sys.stderr)
if len(opened) != 1 or types["incident_merged"] or opened[0]["root"] != "mains":
    sys.exit(f"storm: FAILED: want one incident rooted at mains, got {len(opened)} opened "
             f"({[o['root'] for o in opened[:5]]}) and {types['incident_merged']} merged")
if alarms != int(sys.argv[2]) or types["rejected"]:
    sys.exit(f"storm: FAILED: {alarms} alarms and {types['rejected']} rejected, "
             f"want {sys.argv[2]} alarms")
PY

# time_run COMMAND…: wall seconds of one run, output discarded.
time_run() {
    local t0=$EPOCHREALTIME
    "$@" >/dev/null
    python3 -c "print(round($EPOCHREALTIME - $t0, 4))"
}
# The same file with the clock stopped at 0 s: read and parsed alike, only
# the mains alarm applied. The difference is the time the engine takes to
# decide the storm (and print it).
sed 's/^end = "10m"$/end = "0s"/' "$dir/scenario.toml" > "$dir/parse-only.toml"
drill=() parse=()
for _ in $(seq "$runs"); do
    parse+=("$(time_run "$bin/beredskab" drill -c "$dir/catalogue.toml" --scenario "$dir/parse-only.toml")")
    drill+=("$(time_run "$bin/beredskab" drill -c "$dir/catalogue.toml" --scenario "$dir/scenario.toml")")
done
d=$(printf '%s\n' "${drill[@]}" | median)
p=$(printf '%s\n' "${parse[@]}" | median)
decided=$(python3 -c "print(round(max($d - $p, 0), 3))")
echo "storm: drill median $d s (runs: ${drill[*]}); reading the catalogue and scenario alone $p s;" \
    "the storm decided in $decided s" >&2
met=$(python3 -c "print('true' if $decided < 1 else 'false')")
count=$(python3 -c "print(f'{$n:,}')")
row "Correlation storm, $count components" \
    "1 incident, decided in $(printf '%.2f' "$decided") s ($(printf '%.2f' "$d") s with reading the files)" \
    "—" "" "one incident, < 1 s" "$met"
