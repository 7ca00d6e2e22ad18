#!/bin/sh
# Starts Mosquitto in compose.yaml with the shipped deploy/mosquitto/mosquitto.conf:
# its listener opened to the compose network (it is on 127.0.0.1 for a
# server of its own), the password file made from MQTT_PASSWORD for the user
# `beredskab`, persistence in the data volume.
set -eu
: "${MQTT_PASSWORD:?set MQTT_PASSWORD}"
data=/mosquitto/data
# Kept across restarts, so that the sensors' logins added with
# mosquitto_passwd stay; beredskab's is set again from MQTT_PASSWORD.
if [ -f "$data/passwd" ]; then
    mosquitto_passwd -b "$data/passwd" beredskab "$MQTT_PASSWORD"
else
    mosquitto_passwd -b -c "$data/passwd" beredskab "$MQTT_PASSWORD"
fi
chmod 0600 "$data/passwd"
sed \
    -e 's|^listener 1883 127\.0\.0\.1$|listener 1883|' \
    -e "s|^password_file .*|password_file $data/passwd|" \
    /etc/mosquitto/beredskab.conf > "$data/mosquitto.conf"
printf 'persistence_location %s/\nlog_dest stdout\n' "$data" >> "$data/mosquitto.conf"
chown -R mosquitto:mosquitto "$data" 2>/dev/null || true
exec mosquitto -c "$data/mosquitto.conf"
