//! The ways alarms come in: MQTT subscriptions and probes (HTTP, and
//! ICMP, TCP, DNS and TLS for network gear).

mod http;
pub mod mqtt;
pub mod net;
pub mod probe;
