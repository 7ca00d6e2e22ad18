//! Configuration: the schema (SPEC §2), loading with line and column, and
//! validation that reports every problem at once.

mod load;
mod schema;
mod step;
mod validate;

pub use load::{Diagnostic, Level, LoadError, Loaded, load, load_str};
pub use schema::*;
pub use step::{RecipientRef, StepOn};

/// The one-line summary `check` prints after `ok: `.
pub fn summary(config: &Config) -> String {
    let subscriptions = config.mqtt.as_ref().map_or(0, |m| m.subscriptions.len());
    format!(
        "{} services, {} components, {} roles, {} probes, {} subscriptions, {} policies",
        config.services.len(),
        config.components.len(),
        config.roles.len(),
        config.probes.len(),
        subscriptions,
        config.policies.len()
    )
}
