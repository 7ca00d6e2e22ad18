//! beredskab: a municipal IT department's preparedness plan, running.
//!
//! The house from the top: [`daemon`] wires everything (only `main.rs`
//! and the demo use it); [`api`], [`notify`] and [`collect`] are peers that
//! reach the engine only through the [`core`]'s handle; the core owns the
//! pure [`engine`] and writes to the [`store`]; below them the
//! [`catalogue`] and, at the ground, [`config`]. In module order:
//! - [`config`] reads the plan: critical services, components, people, policies;
//! - [`catalogue`] resolves it into a graph of components and services;
//! - [`engine`] is the pure core: alarms in, incidents, estimates and
//!   notifications out, with the time passed in; its snapshots carry it
//!   across restarts and config reloads;
//! - [`collect`] brings alarms in from the outside: MQTT and HTTP probes;
//! - [`core`] is the one task that owns the engine: it batches inputs,
//!   commits them with their effects, and only then acknowledges; its
//!   [`core::CoreHandle`] is how the others ask it things;
//! - [`api`] takes pushed alarms and reports, shows incidents, and serves
//!   the pages of the acknowledgement [`links`] that messages carry;
//! - [`web`] is the on-call web UI and the public status page, beside the
//!   API on the same server;
//! - [`store`] keeps inputs, incidents and the outbox durably;
//! - [`notify`] delivers the outbox;
//! - [`daemon`] runs all of it, on the monotonic [`clock`], and reloads;
//!   with PostgreSQL, as one of several instances of a [`cluster`];
//! - [`metrics`] holds every Prometheus metric;
//! - [`drill`] replays a scenario through the engine on a simulated clock;
//! - [`plan`] renders the config as the preparedness plan people read;
//! - [`report`] writes an incident's report for the archive from the store;
//! - [`words`] words times, durations and templates for messages, pages and
//!   the plan; [`html`] is what the HTML pages share;
//! - [`demo`] stands in for the outside world: an MQTT broker and simulated
//!   sensors in the process, and the example config pointed at them.
//!
//! Shared by the ways out: [`backoff`] between retries, the [`tls`] provider
//! and the [`USER_AGENT`].
#![forbid(unsafe_code)]

pub mod api;
pub mod backoff;
pub mod catalogue;
pub mod clock;
pub mod cluster;
pub mod collect;
pub mod config;
pub mod core;
pub mod daemon;
#[cfg(feature = "demo")]
pub mod demo;
pub mod drill;
pub mod engine;
pub mod html;
pub mod links;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod report;
pub mod store;
pub mod tls;
pub mod web;
pub mod words;

/// Sent with every HTTP request beredskab makes (probes, gateways,
/// webhooks), so that the other side's logs show who asks.
pub const USER_AGENT: &str = concat!("beredskab/", env!("CARGO_PKG_VERSION"));
