//! The notifier: delivers the outbox.
//!
//! The core writes each notification into the outbox in the same commit as
//! the incident change that caused it and wakes the notifier; the notifier
//! reads what is due, delivers it and records the outcome. It sleeps until
//! the next row is due or until it is woken, never on a fixed poll.
//!
//! Only the `log` channel delivers so far: it writes the notification to
//! the daemon's log. Rows for other channel kinds are marked failed with a
//! clear reason until their senders exist, rather than claimed as sent.

pub mod channel;
mod http;
mod smtp;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::catalogue::Catalogue;
use crate::config::ChannelKind;
use crate::daemon::core::wall_now;
use crate::metrics::Metrics;
use crate::store::{OutboxRow, Store};

/// Rows read per round trip.
const PAGE: u32 = 100;
/// How long to wait after the store failed before trying again.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// The longest sleep without looking at the outbox (a safety net: waking
/// is what normally starts a delivery).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The outbox worker.
pub struct Notifier<S: Store> {
    pub store: S,
    pub catalogue: Arc<RwLock<Arc<Catalogue>>>,
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

impl<S: Store> Notifier<S> {
    /// Delivers until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let sleep = match self.deliver_due().await {
                Ok(true) => continue,
                Ok(false) => match self.store.next_due().await {
                    Ok(Some(at)) => {
                        Duration::from_millis(at.millis_since(wall_now()).max(0) as u64)
                            .min(MAX_SLEEP)
                    }
                    Ok(None) => MAX_SLEEP,
                    Err(e) => {
                        error!(error = %e, "outbox: cannot read the next due time");
                        STORE_RETRY
                    }
                },
                Err(e) => {
                    error!(error = %e, "outbox: cannot read due notifications");
                    STORE_RETRY
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Delivers one page of due rows; true when there may be more.
    async fn deliver_due(&self) -> Result<bool, crate::store::StoreError> {
        let due = self.store.due_notifications(wall_now(), PAGE).await?;
        let full = due.len() == PAGE as usize;
        for row in due {
            self.deliver(row).await?;
        }
        Ok(full)
    }

    async fn deliver(&self, row: OutboxRow) -> Result<(), crate::store::StoreError> {
        let kind = {
            let cat = self
                .catalogue
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            cat.channels
                .iter()
                .find(|c| c.id == row.channel)
                .map(|c| c.config.kind)
        };
        match kind {
            Some(ChannelKind::Log) => {
                info!(
                    target: "beredskab::notification",
                    incident = row.incident,
                    to = %row.person,
                    role = row.role.as_deref().unwrap_or(""),
                    channel = %row.channel,
                    reason = %row.reason,
                    key = %row.key,
                    "{}",
                    row.text
                );
                self.store.mark_sent(&row.key, wall_now()).await?;
                self.count(&row.channel, "sent");
            }
            Some(other) => {
                let why = format!("channel kind {} has no sender yet", other.as_str());
                warn!(key = %row.key, channel = %row.channel, "{why}");
                self.store.mark_failed(&row.key, &why, None).await?;
                self.count(&row.channel, "failed");
            }
            None => {
                let why = format!("channel {:?} is not in the config", row.channel);
                warn!(key = %row.key, "{why}");
                self.store.mark_failed(&row.key, &why, None).await?;
                self.count(&row.channel, "failed");
            }
        }
        Ok(())
    }

    fn count(&self, channel: &str, outcome: &str) {
        self.metrics
            .notifications
            .with_label_values(&[channel, outcome])
            .inc();
    }
}
