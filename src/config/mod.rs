//! Configuration: the schema (SPEC §2), loading with line and column, and
//! validation that reports every problem at once; the small languages
//! inside the values (escalation steps, recipient references, channel body
//! templates) are parsed here too.

mod load;
mod pieces;
mod schema;
mod step;
pub mod template;
mod validate;

pub use load::{Diagnostic, Level, LoadError, Loaded, load, load_str};
pub use schema::*;
pub use step::{RecipientRef, StepOn};
pub use validate::{MAX_ICMP_COUNT, dns_server, host_port, is_host_name, is_record_type};

/// The longest duration anything accepts, from a config file, an API body
/// or an MQTT payload: 100 years. Humantime takes `18446744073709551615s`;
/// bounding every duration at the edge keeps the arithmetic inside sane.
pub const MAX_DURATION: std::time::Duration =
    std::time::Duration::from_secs(100 * 365 * 24 * 3600 + 25 * 24 * 3600);

/// Whether a duration from outside is within [`MAX_DURATION`].
pub fn duration_in_bounds(d: std::time::Duration) -> bool {
    d <= MAX_DURATION
}

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
