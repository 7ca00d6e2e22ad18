//! The notifier: delivers the outbox, exactly once per key where the
//! channel allows it.
//!
//! The core writes each notification into the outbox in the same commit as
//! the incident change that caused it, and wakes the notifier; the notifier
//! reads what is due and delivers it on its channel ([`channel`]), several
//! at a time so that one slow gateway holds up only its own deliveries. It
//! sleeps until the next row is due or until it is woken, never on a fixed
//! poll. Every attempt is recorded with its outcome (the incident's
//! timeline shows them) and counted in `beredskab_notifications_total`:
//! - sent: the row is done; its key never goes out again;
//! - retried: a failure is tried again after an exponential backoff with
//!   jitter, or after the gateway's `Retry-After` when that is longer, both
//!   capped at [`BACKOFF_MAX`] so that every pending notification reaches
//!   a gateway within a minute of its recovery, however long it was down;
//! - fallback: after the channel's `attempts` failures, or at once for a
//!   failure no retry can mend (no phone number, a 4xx), the channel's
//!   `fallback` gets a new row of its own;
//! - without a fallback, a page is not given up while it matters: it is
//!   retried until it is sent, until the incident is over (dropped: the
//!   message was about it being open; `resolved` and `recovery` messages
//!   are never dropped), or until the channel's `give_up_after` (24h by
//!   default) has passed since it was decided (failed: logged at error).
//!
//! Attempts are recorded in batches, many in one transaction, without a
//! sync to disk of their own (the core's next commit syncs them): so a
//! thousand notifications a second cost a few cheap writes, and the core's
//! commits, which share the one writer, do not queue behind them. A send
//! is never repeated because recording it failed: the outcome is kept, its
//! key stays in flight, and its record is retried until the store takes
//! it. A crash between the gateway's answer and the record of it (or a
//! power loss before the record's sync) sends that row again after the
//! restart: the idempotency key goes with every request (and is the
//! mail's Message-ID) so the gateway can drop the duplicate. SMTP cannot
//! promise that; such a duplicate is rare and never a loss.
//!
//! Times in the outbox are engine times, on the daemon's monotonic
//! [`Clock`]: a wall clock set back does not hold a retry back.

pub mod channel;
mod http;
mod smtp;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::catalogue::Catalogue;
use crate::clock::Clock;
use crate::config::DEFAULT_GIVE_UP_AFTER;
use crate::engine::Ts;
use crate::links::LinkSettings;
use crate::metrics::Metrics;
use crate::store::{Attempt, AttemptOutcome, OutboxRow, Store};
use channel::{Delivery, SendError, Sender};

/// Rows read per round trip.
const PAGE: u32 = 256;
/// Deliveries in flight at once.
const IN_FLIGHT: usize = 64;
/// Most attempts recorded in one transaction.
const RECORD_BATCH: usize = 256;
/// How long shutdown waits for the attempts already made to be recorded.
const RECORD_AT_SHUTDOWN: Duration = Duration::from_secs(2);
/// How long to wait after the store failed before trying again.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between tries to record an attempt the store refused.
const RECORD_RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a delivery's claim on its row lasts ([`Store::claim`]): longer
/// than an attempt and its record take, short enough that another daemon
/// sharing the outbox takes over soon after this one died.
const CLAIM_FOR: Duration = Duration::from_secs(120);
/// How often the outbox gauges are read from the store.
const GAUGE_EVERY: Duration = Duration::from_secs(5);
/// The longest sleep without looking at the outbox (a safety net: waking
/// is what normally starts a delivery).
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// The first retry's wait; each further one doubles, up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two tries: with a request's own timeout and
/// the queue, a page reaches a gateway within 60 s of its recovery.
pub const BACKOFF_MAX: Duration = Duration::from_secs(45);
/// The longest a gateway's `Retry-After` is obeyed: an alarm must not wait
/// an hour because a gateway asked for it.
const RETRY_AFTER_MAX: Duration = BACKOFF_MAX;
/// Extra time beyond a channel's own timeout before an attempt is given up.
const TIMEOUT_SLACK: Duration = Duration::from_secs(5);

/// Between two tries of a notification.
const RETRY: Backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
/// Between two tries to record an attempt the store refused.
const RECORD_RETRY: Backoff = Backoff::new(STORE_RETRY, RECORD_RETRY_MAX);

/// The wait before a notification's retry number `n` (1 for the first).
fn backoff(n: u32) -> Duration {
    RETRY.delay(n)
}

/// The channels' senders for one catalogue.
struct Senders {
    catalogue: Arc<Catalogue>,
    by_channel: HashMap<String, Result<Arc<Sender>, String>>,
}

impl Senders {
    fn new(catalogue: Arc<Catalogue>) -> Senders {
        let env = |name: &str| std::env::var(name).ok();
        let by_channel = catalogue
            .channels
            .iter()
            .map(|c| {
                let sender = Sender::new(&c.config, &env).map(Arc::new).map_err(|e| {
                    error!(channel = %c.id, error = %e, "channel cannot send");
                    e.to_string()
                });
                (c.id.clone(), sender)
            })
            .collect();
        Senders {
            catalogue,
            by_channel,
        }
    }
}

/// The outbox worker.
pub struct Notifier<S: Store> {
    pub store: S,
    /// The running config's catalogue; a reload sends a new one.
    pub catalogue: watch::Receiver<Arc<Catalogue>>,
    /// How acknowledgement links are made; a reload sends new settings.
    pub links: watch::Receiver<Arc<LinkSettings>>,
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    /// The daemon's clock: the core writes outbox times in it.
    pub clock: Clock,
    /// The notifications the core just queued, as stored: sent without
    /// reading them back (a closed channel when there is no core).
    pub fresh: mpsc::Receiver<Vec<OutboxRow>>,
}

impl<S: Store + Clone + 'static> Notifier<S> {
    /// Delivers until `shutdown`; deliveries in flight then are abandoned
    /// (their rows stay pending and go out after the restart), and what
    /// was sent is still recorded for up to [`RECORD_AT_SHUTDOWN`].
    ///
    /// The outbox is read a page at a time, soonest first, when something
    /// may have changed in it (the core woke us, a page was not enough, a
    /// retry came due); the page's due rows wait in memory until a
    /// delivery slot is free, and its first row not yet due sets the
    /// sleep. One read serves many deliveries, so the reads do not grow
    /// with the rate.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut fresh = std::mem::replace(&mut self.fresh, mpsc::channel(1).1);
        let this = Arc::new(self);
        let mut senders = Arc::new(Senders::new(this.catalogue.borrow().clone()));
        let mut running: JoinSet<()> = JoinSet::new();
        // Keys sent or being sent whose attempt is not yet recorded.
        let mut in_flight: HashSet<String> = HashSet::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Recorded>();
        let (attempt_tx, attempt_rx) = mpsc::unbounded_channel::<Attempt>();
        let mut recorder = {
            let this = this.clone();
            tokio::spawn(async move { this.record(attempt_rx, done_tx).await })
        };
        let mut gauges = tokio::time::interval(GAUGE_EVERY);
        gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Due rows read but not yet handed to a delivery, soonest first.
        let mut queue: VecDeque<OutboxRow> = VecDeque::new();
        // The outbox may hold due rows that `queue` lacks.
        let mut read = true;
        // The last page was full: more rows may wait behind it.
        let mut more = false;
        // The earliest time a row not in `queue` comes due, when known.
        let mut next_at: Option<Ts> = None;
        let mut store_failed = false;
        loop {
            while let Ok(r) = done_rx.try_recv() {
                in_flight.remove(&r.key);
                next_at = earliest(next_at, r.next_attempt);
                read |= more;
            }
            while let Ok(rows) = fresh.try_recv() {
                read |= take_fresh(&mut queue, &in_flight, rows);
            }
            let current = this.catalogue.borrow().clone();
            if !Arc::ptr_eq(&current, &senders.catalogue) {
                senders = Arc::new(Senders::new(current));
            }
            let now = this.clock.now();
            if next_at.is_some_and(|at| at <= now) {
                read = true;
            }
            if read && running.len() < IN_FLIGHT {
                // Every pending row, soonest first: the due ones to send,
                // the first one after them for the sleep.
                match this.store.due_notifications(Ts(i64::MAX), PAGE).await {
                    Ok(page) => {
                        store_failed = false;
                        read = false;
                        more = page.len() >= PAGE as usize;
                        queue.clear();
                        next_at = None;
                        for row in page {
                            if row.next_attempt > now {
                                next_at = Some(row.next_attempt);
                                more = false;
                                break;
                            }
                            if !in_flight.contains(&row.key) {
                                queue.push_back(row);
                            }
                        }
                    }
                    Err(e) => {
                        error!(error = %e, "outbox: cannot read due notifications");
                        store_failed = true;
                    }
                }
            }
            let mut started = false;
            // Claim the rows for the free slots first, and deliver only
            // those won: another daemon sharing the store has the rest. A
            // store that cannot say delivers none, and is asked again as
            // after a failed read.
            let mut claim_failed = false;
            while running.len() < IN_FLIGHT && !queue.is_empty() && !claim_failed {
                let mut rows = Vec::new();
                while running.len() + rows.len() < IN_FLIGHT
                    && let Some(row) = queue.pop_front()
                {
                    if !in_flight.contains(&row.key) {
                        rows.push(row);
                    }
                }
                if rows.is_empty() {
                    break;
                }
                let keys: Vec<String> = rows.iter().map(|r| r.key.clone()).collect();
                match this.store.claim(&keys, now.plus(CLAIM_FOR)).await {
                    Ok(won) => rows.retain(|r| won.contains(&r.key)),
                    Err(e) => {
                        error!(error = %e, "outbox: cannot claim due notifications");
                        store_failed = true;
                        claim_failed = true;
                        rows.clear();
                        queue.clear();
                    }
                }
                for row in rows {
                    if !in_flight.insert(row.key.clone()) {
                        continue;
                    }
                    started = true;
                    let (this, senders, attempts) =
                        (this.clone(), senders.clone(), attempt_tx.clone());
                    running.spawn(async move {
                        let attempt = this.deliver(&senders, row).await;
                        let _ = attempts.send(attempt);
                    });
                }
            }
            // A page used up may have more behind it; one that gave
            // nothing new waits for a recorded attempt instead of asking
            // again at once.
            if queue.is_empty() && more && started {
                read = true;
            }
            let sleep = if store_failed {
                STORE_RETRY
            } else if read && running.len() < IN_FLIGHT {
                Duration::ZERO
            } else {
                next_at.map_or(MAX_SLEEP, |at| {
                    this.clock
                        .instant(at)
                        .saturating_duration_since(tokio::time::Instant::now())
                        .min(MAX_SLEEP)
                })
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = this.wake.notified() => read = true,
                Some(rows) = fresh.recv() => read |= take_fresh(&mut queue, &in_flight, rows),
                Some(_) = running.join_next(), if !running.is_empty() => {
                    while running.try_join_next().is_some() {}
                }
                Some(r) = done_rx.recv() => {
                    in_flight.remove(&r.key);
                    next_at = earliest(next_at, r.next_attempt);
                    read |= more;
                }
                () = tokio::time::sleep(sleep) => read = true,
                _ = gauges.tick() => this.set_gauges(&senders.catalogue).await,
            }
        }
        running.abort_all();
        drop(attempt_tx);
        while running.join_next().await.is_some() {}
        if tokio::time::timeout(RECORD_AT_SHUTDOWN, &mut recorder)
            .await
            .is_err()
        {
            warn!("outbox: attempts not recorded at shutdown are sent again after the restart");
            recorder.abort();
        }
    }

    /// `beredskab_outbox_pending` and `beredskab_outbox_oldest_seconds`,
    /// for every channel of the config (0 when nothing waits).
    async fn set_gauges(&self, cat: &Catalogue) {
        let pending = match self.store.outbox_pending().await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "outbox: cannot read the pending notifications");
                return;
            }
        };
        let now = self.clock.now();
        let channels = cat.channels.iter().map(|c| c.id.as_str());
        let extra = pending.iter().map(|p| p.channel.as_str());
        for channel in channels.chain(extra) {
            let p = pending.iter().find(|p| p.channel == channel);
            let n = p.map_or(0, |p| i64::try_from(p.pending).unwrap_or(i64::MAX));
            let age = p.map_or(0, |p| now.millis_since(p.oldest).max(0));
            self.metrics
                .outbox_pending
                .with_label_values(&[channel])
                .set(n);
            self.metrics
                .outbox_oldest
                .with_label_values(&[channel])
                .set(age as f64 / 1000.0);
        }
    }

    /// One attempt at one row: its outcome, to be recorded.
    async fn deliver(&self, senders: &Senders, row: OutboxRow) -> Attempt {
        let cat = &senders.catalogue;
        let now = crate::clock::wall_now();
        let channel = cat.channels.iter().find(|c| c.id == row.channel);
        let person = cat.people.iter().find(|p| p.id == row.person);
        let result = match (channel, person, senders.by_channel.get(&row.channel)) {
            (Some(_), Some(person), Some(Ok(sender))) => {
                // A message about the end has nothing left to acknowledge.
                let link = (!row.reason.is_about_the_end()).then(|| {
                    crate::links::url(&self.links.borrow(), row.incident, &row.person, now)
                });
                if matches!(**sender, Sender::Log) {
                    info!(
                        target: "beredskab::notification",
                        incident = row.incident,
                        to = %row.person,
                        role = row.role.as_deref().unwrap_or(""),
                        channel = %row.channel,
                        reason = %row.reason,
                        key = %row.key,
                        link = link.as_deref().unwrap_or(""),
                        "{}",
                        row.text
                    );
                }
                let delivery = Delivery {
                    key: &row.key,
                    incident: row.incident,
                    person,
                    role: row.role.as_deref(),
                    reason: row.reason.as_str(),
                    text: &row.text,
                    link: link.as_deref(),
                    site: &cat.site_name,
                };
                let limit = channel
                    .map(|c| c.config.timeout())
                    .unwrap_or_default()
                    .saturating_add(TIMEOUT_SLACK);
                match tokio::time::timeout(limit, sender.send(&delivery)).await {
                    Ok(r) => r,
                    Err(_) => Err(SendError::Retry {
                        error: format!("no answer within {}", humantime::format_duration(limit)),
                        retry_after: None,
                    }),
                }
            }
            (None, _, _) => Err(SendError::Permanent(format!(
                "channel {:?} is not in the config",
                row.channel
            ))),
            (_, None, _) => Err(SendError::Permanent(format!(
                "person {:?} is not in the config",
                row.person
            ))),
            (_, _, Some(Err(e))) => Err(SendError::Permanent(e.clone())),
            (_, _, None) => Err(SendError::Permanent("no sender".into())),
        };
        // A failed page about an open incident is not needed once it is
        // over; messages about the end itself always go out.
        let over = result.is_err()
            && !row.reason.is_about_the_end()
            && match self.store.incident_over(row.incident).await {
                Ok(over) => over,
                Err(e) => {
                    warn!(key = %row.key, error = %e, "outbox: cannot read the incident's state");
                    false
                }
            };
        // Backoff counts from the failure, not from the start of a
        // request that may have hung until its timeout.
        let attempt = outcome(cat, &row, self.clock.now(), result, over);
        if attempt.outcome != AttemptOutcome::Dropped {
            self.metrics
                .notifications
                .with_label_values(&[row.channel.as_str(), attempt.outcome.as_str()])
                .inc();
        }
        match attempt.outcome {
            AttemptOutcome::Sent => {}
            AttemptOutcome::Retried => warn!(key = %row.key, channel = %row.channel,
                error = %attempt.detail, "notification failed; will retry"),
            AttemptOutcome::Fallback => warn!(key = %row.key, channel = %row.channel,
                error = %attempt.detail, "notification failed; using the fallback channel"),
            AttemptOutcome::Dropped => info!(key = %row.key, channel = %row.channel,
                detail = %attempt.detail, "notification no longer needed"),
            AttemptOutcome::Failed => error!(key = %row.key, channel = %row.channel,
                error = %attempt.detail, "notification given up"),
        }
        attempt
    }

    /// Records the attempts that `attempts` brings, many in one
    /// transaction, and then lets their keys go (on `done`). What happened
    /// at a gateway happened: it is recorded however long the store takes,
    /// and never sent again for want of a record; the key stays in flight
    /// meanwhile, so no other task takes its row. Ends when every sender of
    /// `attempts` is gone and all they sent is recorded.
    async fn record(
        &self,
        mut attempts: mpsc::UnboundedReceiver<Attempt>,
        done: mpsc::UnboundedSender<Recorded>,
    ) {
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        while attempts.recv_many(&mut batch, RECORD_BATCH).await > 0 {
            self.record_all(&batch).await;
            let fallback = batch.iter().any(|a| a.fallback.is_some());
            for a in batch.drain(..) {
                let next_attempt =
                    (a.outcome == AttemptOutcome::Retried).then(|| a.next_attempt.unwrap_or(a.at));
                let _ = done.send(Recorded {
                    key: a.key,
                    next_attempt,
                });
            }
            if fallback {
                self.wake.notify_one();
            }
        }
    }

    /// Records `batch` in one transaction; should the store refuse it,
    /// each attempt on its own (one it can never take must not hold the
    /// others back), each retried until the store takes it.
    async fn record_all(&self, batch: &[Attempt]) {
        if batch.len() > 1 {
            match self.store.record_attempts(batch).await {
                Ok(()) => return,
                Err(e) => warn!(error = %e, attempts = batch.len(),
                    "cannot record delivery attempts together; recording them one by one"),
            }
        }
        for attempt in batch {
            let mut tries = 0u32;
            while let Err(e) = self
                .store
                .record_attempts(std::slice::from_ref(attempt))
                .await
            {
                tries = tries.saturating_add(1);
                let wait = RECORD_RETRY.delay(tries);
                error!(key = %attempt.key, error = %e, retry_ms = wait.as_millis() as u64,
                    "cannot record a delivery attempt; keeping its outcome and trying again");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// An attempt on record: its key may be taken again, at `next_attempt`
/// when it is to be retried.
struct Recorded {
    key: String,
    next_attempt: Option<Ts>,
}

/// The earlier of two times, either of which may be unknown.
/// Queues the rows the core just committed, due now, unless they are
/// queued or in flight already. Beyond a page they are left to the next
/// read of the store: whether one is needed.
fn take_fresh(
    queue: &mut VecDeque<OutboxRow>,
    in_flight: &HashSet<String>,
    rows: Vec<OutboxRow>,
) -> bool {
    let mut read = false;
    for row in rows {
        if queue.len() >= PAGE as usize {
            read = true;
            continue;
        }
        if !in_flight.contains(&row.key) && !queue.iter().any(|q| q.key == row.key) {
            queue.push_back(row);
        }
    }
    read
}

fn earliest(a: Option<Ts>, b: Option<Ts>) -> Option<Ts> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What an attempt's result means for its row.
fn outcome(
    cat: &Catalogue,
    row: &OutboxRow,
    now: Ts,
    result: Result<(), SendError>,
    incident_over: bool,
) -> Attempt {
    let base = |outcome, detail: String| Attempt {
        key: row.key.clone(),
        incident: row.incident,
        at: now,
        channel: row.channel.clone(),
        person: row.person.clone(),
        outcome,
        detail,
        next_attempt: None,
        fallback: None,
    };
    let channel = cat.channels.iter().find(|c| c.id == row.channel);
    let attempts = channel.map_or(1, |c| c.config.attempts().max(1));
    let tried = row.attempts.saturating_add(1);
    let retry = |error: &str, retry_after: Option<Duration>, of: String| {
        let wait = backoff(tried).max(retry_after.unwrap_or_default().min(RETRY_AFTER_MAX));
        let mut a = base(
            AttemptOutcome::Retried,
            format!(
                "attempt {tried}{of} failed: {error}; next in {}",
                humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)))
            ),
        );
        a.next_attempt = Some(now.plus(wait));
        a
    };
    let (error, retry_after) = match result {
        Ok(()) => return base(AttemptOutcome::Sent, "sent".into()),
        Err(SendError::Retry { error, retry_after }) if tried < attempts && !incident_over => {
            return retry(&error, retry_after, format!(" of {attempts}"));
        }
        Err(SendError::Retry { error, retry_after }) => (error, retry_after),
        Err(SendError::Permanent(error)) => (error, None),
    };
    if incident_over {
        return base(
            AttemptOutcome::Dropped,
            format!(
                "{error}; not tried again: incident {} is over",
                row.incident
            ),
        );
    }
    let fallback = channel
        .and_then(|c| c.fallback)
        .map(|f| cat.channel(f).id.clone())
        // A fallback's fallback is fine; a row does not come back to a
        // channel it already went through.
        .filter(|f| !row.key.contains(&format!("/fallback/{f}")) && *f != row.channel);
    match fallback {
        Some(f) => {
            let mut a = base(
                AttemptOutcome::Fallback,
                format!("{error}; handed to {f} after {tried} attempt(s)"),
            );
            a.fallback = Some(OutboxRow {
                key: format!("{}/fallback/{f}", row.key),
                channel: f,
                created_at: now,
                next_attempt: now,
                attempts: 0,
                state: crate::store::OutboxState::Pending,
                last_error: None,
                sent_at: None,
                ..row.clone()
            });
            a
        }
        None => {
            let give_up_after = channel.map_or(DEFAULT_GIVE_UP_AFTER, |c| c.config.give_up_after());
            if now >= row.created_at.plus(give_up_after) {
                base(
                    AttemptOutcome::Failed,
                    format!(
                        "{error}; given up after {tried} attempt(s) in {}",
                        humantime::format_duration(give_up_after)
                    ),
                )
            } else {
                // No fallback: keep trying while it matters.
                retry(&error, retry_after, String::new())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Reason;
    use crate::store::OutboxState;

    const CONFIG: &str = r#"
[site]
name = "T"
language = "en"
timezone = "Europe/Copenhagen"
[[component]]
id = "srv"
kind = "server"
[[service]]
id = "svc"
criticality = "life"
depends_on = ["srv"]
policy = "p"
[[person]]
id = "p1"
name = "P"
phone = "+4511111111"
[[role]]
id = "r"
primary = "p1"
[[channel]]
id = "sms"
kind = "sms-http"
url = "http://127.0.0.1:1/sms"
attempts = 2
give_up_after = "1h"
[[channel]]
id = "call"
kind = "call-http"
url = "http://127.0.0.1:1/call"
attempts = 2
fallback = "sms"
[[policy]]
id = "p"
[[policy.step]]
on = "open"
notify = ["role:r"]
via = ["sms"]
"#;

    fn cat() -> Catalogue {
        let loaded = crate::config::load_str("t.toml", CONFIG).expect("config");
        Catalogue::build(&loaded.config).expect("catalogue")
    }

    fn row(channel: &str, reason: &str, attempts: u32) -> OutboxRow {
        OutboxRow {
            key: format!("1/{reason}/p1/{channel}"),
            incident: 1,
            person: "p1".into(),
            role: None,
            channel: channel.into(),
            reason: Reason::parse(reason),
            text: "t".into(),
            created_at: Ts(0),
            state: OutboxState::Pending,
            attempts,
            next_attempt: Ts(0),
            last_error: None,
            sent_at: None,
        }
    }

    fn down() -> Result<(), SendError> {
        Err(SendError::Retry {
            error: "503".into(),
            retry_after: None,
        })
    }

    #[test]
    fn without_a_fallback_a_page_is_retried_past_its_attempts_until_give_up_after() {
        let cat = cat();
        let minute = Ts(60_000);
        let a = outcome(&cat, &row("sms", "open", 7), minute, down(), false);
        assert_eq!(a.outcome, AttemptOutcome::Retried, "{}", a.detail);
        let wait = a.next_attempt.expect("a next attempt").millis_since(minute);
        assert!(wait <= 45_000, "capped at 45 s: {wait} ms");
        // Permanent failures are retried too: the operator may fix the
        // gateway's token or a phone number.
        let a = outcome(
            &cat,
            &row("sms", "open", 0),
            minute,
            Err(SendError::Permanent("401".into())),
            false,
        );
        assert_eq!(a.outcome, AttemptOutcome::Retried);
        // A Retry-After of an hour waits 45 s at most.
        let a = outcome(
            &cat,
            &row("sms", "open", 0),
            minute,
            Err(SendError::Retry {
                error: "429".into(),
                retry_after: Some(Duration::from_secs(3600)),
            }),
            false,
        );
        assert!(a.next_attempt.expect("next").millis_since(minute) <= 45_000);
        // give_up_after is one hour on this channel.
        let late = Ts(3_600_000);
        let a = outcome(&cat, &row("sms", "open", 9), late, down(), false);
        assert_eq!(a.outcome, AttemptOutcome::Failed, "{}", a.detail);
        assert!(a.detail.contains("given up"), "{}", a.detail);
    }

    #[test]
    fn a_page_about_an_incident_that_is_over_is_dropped_but_its_end_is_not() {
        let cat = cat();
        let a = outcome(&cat, &row("sms", "open", 0), Ts(1000), down(), true);
        assert_eq!(a.outcome, AttemptOutcome::Dropped, "{}", a.detail);
        for reason in ["resolved", "recovery"] {
            // The notifier only passes `over` for reasons that need a live
            // incident; the end itself is retried as any page.
            let over = !Reason::parse(reason).is_about_the_end();
            let a = outcome(&cat, &row("sms", reason, 0), Ts(1000), down(), over);
            assert_eq!(a.outcome, AttemptOutcome::Retried, "{reason}");
        }
    }

    #[test]
    fn after_its_attempts_a_channel_with_a_fallback_hands_over() {
        let cat = cat();
        let a = outcome(&cat, &row("call", "open", 0), Ts(0), down(), false);
        assert_eq!(a.outcome, AttemptOutcome::Retried);
        let a = outcome(&cat, &row("call", "open", 1), Ts(0), down(), false);
        assert_eq!(a.outcome, AttemptOutcome::Fallback);
        assert_eq!(a.fallback.expect("a fallback row").channel, "sms");
        let sent = outcome(&cat, &row("call", "open", 1), Ts(0), Ok(()), false);
        assert_eq!(sent.outcome, AttemptOutcome::Sent);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        for n in 1..6 {
            let step = BACKOFF_FIRST * (1 << (n - 1));
            let d = backoff(n);
            assert!(d >= step / 2 && d <= step, "retry {n}: {d:?}");
        }
        assert!(backoff(40) <= BACKOFF_MAX);
        assert!(backoff(40) >= BACKOFF_MAX / 2);
    }
}
