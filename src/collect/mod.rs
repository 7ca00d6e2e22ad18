//! The ways alarms come in.

pub mod mqtt;
