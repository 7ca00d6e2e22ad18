//! The MQTT collector (being written).
