//! The preparedness plan rendered from the config (being written).
use crate::config::Config;

/// Output format of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
}

/// Renders the plan.
pub fn render(config: &Config, _format: Format) -> String {
    format!("# {}\n", config.site.name)
}
