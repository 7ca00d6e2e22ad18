#!/usr/bin/env bash
# Drill: 30 days of the example catalogue with every one of its 22 probes
# evaluated every 10 s (about 5.7 million probe results), replayed by
# `beredskab drill` on its simulated clock. A scenario names only the
# changes of a probe's result; the drill evaluates each probe on its own
# schedule with the result it last got, so the month is a handful of
# events, not a line per result. The changes: a web server outage on
# day 2, the core router flapping on day 9, the mail gateway down for two
# hours on day 16, the web certificate near expiry on day 25. The script
# checks the incidents they must open (and fails otherwise) and reports
# the median wall time of five runs.
#   bench/drill.sh [--quick]
# --quick: one day (the day-2 outage moved into it), one run, debug build.
source "$(dirname "$0")/lib.sh"

days=$(pick 1 30)
runs=$(pick 1 5)
build --bin beredskab

# The example catalogue, every probe every 10 s.
sed -E 's/^every = .*/every = "10s"/' deploy/example/beredskab.toml > "$dir/beredskab.toml"
probes=$(grep -c '^\[\[probe\]\]' "$dir/beredskab.toml")
python3 - "$days" "$dir/scenario.toml" <<'PY'
import sys
days, path = int(sys.argv[1]), sys.argv[2]
def at(day, h=0, m=0):
    # A shorter run keeps each change, squeezed into its days.
    day = min(day, days - 1) if days < 30 else day
    return f'"{day}d {h}h {m}m"' if day else f'"{h}h {m}m"'
ev = [f'start = "2026-03-02T00:00:00+01:00"\nend = "{days}d"\n']
def event(when, what):
    ev.append(f"[[event]]\nat = {when}\n{what}\n")
gen = lambda fuel: f"probe = {{ id = \"generator\", body = '{{\"running\": true, \"fuel_percent\": {fuel}}}' }}"
event(at(0), gen(95))
# Day 2: the web server answers 503 for 20 minutes.
event(at(2, 10, 0), 'probe = { id = "srv-web", status = 503 }')
event(at(2, 10, 20), 'probe = { id = "srv-web", status = 200 }')
if days >= 30:
    # Day 9: the core router flaps: down 5 minutes, up 3, down 5 again.
    event(at(9, 3, 0), 'probe = { id = "core-router", ok = false }')
    event(at(9, 3, 5), 'probe = { id = "core-router", ok = true }')
    event(at(9, 3, 8), 'probe = { id = "core-router", ok = false }')
    event(at(9, 3, 13), 'probe = { id = "core-router", ok = true }')
    # Day 16: the mail gateway fails for two hours; the generator's fuel
    # reading drops and is topped up.
    event(at(16, 8, 0), 'probe = { id = "srv-mail-gw", status = 500 }')
    event(at(16, 9, 0), gen(60))
    event(at(16, 10, 0), 'probe = { id = "srv-mail-gw", status = 200 }')
    event(at(16, 10, 5), gen(95))
    # Day 25: the web certificate has 5 days left, then is renewed.
    event(at(25, 9, 0), 'probe = { id = "web-cert", ok = true, expires_in = "5d" }')
    event(at(25, 11, 0), 'probe = { id = "web-cert", ok = true, expires_in = "90d" }')
open(path, "w").write("".join(ev))
PY
want=$(pick 1 5)
echo "drill: $days day(s), $probes probes every 10 s: $((days * 8640 * probes)) probe results" >&2

"$bin/beredskab" drill -c "$dir/beredskab.toml" --scenario "$dir/scenario.toml" > "$dir/drill.jsonl"
python3 - "$dir/drill.jsonl" "$want" <<'PY'
import collections, json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
types = collections.Counter(l["type"] for l in lines)
print(f"drill: {dict(types)}", file=sys.stderr)
opened = sum(1 for l in lines if l["type"] == "incident_opened")
resolved = types["incident_resolved"]
roots = [l["root"] for l in lines if l["type"] == "incident_opened"]
if opened != int(sys.argv[2]) or resolved != opened or types["rejected"]:
    sys.exit(f"drill: FAILED: {opened} incidents opened ({roots}), {resolved} resolved, "
             f"{types['rejected']} rejected; want {sys.argv[2]} opened and all resolved")
PY

times=()
for _ in $(seq "$runs"); do
    t0=$EPOCHREALTIME
    "$bin/beredskab" drill -c "$dir/beredskab.toml" --scenario "$dir/scenario.toml" >/dev/null
    times+=("$(python3 -c "print(round($EPOCHREALTIME - $t0, 4))")")
done
t=$(printf '%s\n' "${times[@]}" | median)
echo "drill: median $t s (runs: ${times[*]})" >&2
met=$(python3 -c "print('true' if $t < 1 else 'false')")
span=$(if [ "$days" = 1 ]; then echo "1 day"; else echo "$days days"; fi)
row "Drill, $span of $probes probes every 10 s" "$(printf '%.2f' "$t") s" "—" "" \
    "30 days < 1 s" "$met"
