//! beredskab: a municipal IT department's preparedness plan, running.
//!
//! An alarm's way through the crate, in module order:
//! - [`config`] reads the plan: critical services, components, people, policies;
//! - [`catalogue`] resolves it into a graph of components and services;
//! - [`engine`] is the pure core: alarms in, incidents, estimates and
//!   notifications out, with the time passed in; its snapshots carry it
//!   across restarts and config reloads;
//! - [`collect`] brings alarms in from the outside (MQTT so far);
//! - [`store`] keeps inputs, incidents and the outbox durably;
//! - [`drill`] replays a scenario through the engine on a simulated clock;
//! - [`plan`] renders the config as the preparedness plan people read.
#![forbid(unsafe_code)]

pub mod catalogue;
pub mod collect;
pub mod config;
pub mod drill;
pub mod engine;
pub mod plan;
pub mod store;
