//! Channel senders (placeholder until the senders land: only `log`).

use std::time::Duration;

use crate::catalogue::Person;
use crate::config::{ChannelConfig, ChannelKind};

/// One notification to deliver.
pub struct Delivery<'a> {
    pub key: &'a str,
    pub incident: u64,
    pub person: &'a Person,
    pub role: Option<&'a str>,
    pub reason: &'a str,
    pub text: &'a str,
    pub link: Option<&'a str>,
    pub site: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{error}")]
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    #[error("{0}")]
    Permanent(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("channel {0:?}: kind {1} has no sender yet")]
    Unsupported(String, &'static str),
}

pub enum Sender {
    Log,
}

impl Sender {
    pub fn new(
        channel: &ChannelConfig,
        _env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Sender, ChannelError> {
        match channel.kind {
            ChannelKind::Log => Ok(Sender::Log),
            other => Err(ChannelError::Unsupported(
                channel.id.clone(),
                other.as_str(),
            )),
        }
    }

    pub async fn send(&self, _d: &Delivery<'_>) -> Result<(), SendError> {
        Ok(())
    }
}
