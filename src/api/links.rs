//! Acknowledgement links (placeholder until signed links land).

use crate::daemon::LinkSettings;
use crate::engine::Ts;

/// The link a notification carries.
pub fn url(settings: &LinkSettings, incident: u64, person: &str, now: Ts) -> String {
    let _ = (person, now);
    format!("{}/api/v1/incidents/{incident}", settings.public_url)
}
