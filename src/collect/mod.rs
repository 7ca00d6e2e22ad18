//! The ways alarms come in: MQTT subscriptions and HTTP probes.

pub mod mqtt;
pub mod probe;
