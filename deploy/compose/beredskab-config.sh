#!/bin/sh
# Writes the config beredskab runs on in compose.yaml: the example config
# (deploy/example/beredskab.toml) pointed at the compose network: listen on
# all of the container's addresses, the broker `mosquitto` with the login
# `beredskab` (password in MQTT_PASSWORD), the store in the state volume.
# Then runs the command it is given. tests/prometheus.rs runs it and checks
# the result with `beredskab check`.
#   IN   the example config (default /etc/beredskab/example.toml)
#   OUT  the config written (default /var/lib/beredskab/beredskab.toml)
#   STORE the SQLite file (default /var/lib/beredskab/beredskab.db)
set -eu
in=${IN:-/etc/beredskab/example.toml}
out=${OUT:-/var/lib/beredskab/beredskab.toml}
store=${STORE:-/var/lib/beredskab/beredskab.db}
sed \
    -e 's|^listen = "127\.0\.0\.1:8080"|listen = "0.0.0.0:8080"|' \
    -e 's|^url = "mqtt://127\.0\.0\.1:1883"|url = "mqtt://mosquitto:1883"|' \
    -e 's|^# username = "beredskab" |username = "beredskab"   |' \
    -e 's|^# password_env = "MQTT_PASSWORD"|password_env = "MQTT_PASSWORD"|' \
    -e "s|^url = \"sqlite://beredskab\.db\"|url = \"sqlite://$store\"|" \
    "$in" > "$out.tmp"
for want in 'listen = "0.0.0.0:8080"' 'url = "mqtt://mosquitto:1883"' 'username = "beredskab"' \
    'password_env = "MQTT_PASSWORD"' "url = \"sqlite://$store\""; do
    grep -qF "$want" "$out.tmp" || { echo "beredskab-config.sh: $in has no line for: $want" >&2; exit 1; }
done
mv "$out.tmp" "$out"
[ "$#" -eq 0 ] || exec "$@"
