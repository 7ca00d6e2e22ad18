//! The shared inbox: how what a follower takes in reaches the leader.
//!
//! A follower's [`Forwarder`] stands where the core stands on the leader:
//! it reads the same channels (MQTT, probes, API commands), writes each
//! input as a row of `cluster_inbox`, and only after that commit
//! acknowledges the MQTT message. An API command waits for the leader's
//! answer in its row. On the leader, the [`InboxReader`] hands the rows to
//! the core, whose commit marks them done in the same transaction as
//! their effects (see [`crate::store::Batch::forwarded`]), so a row is
//! taken in once whichever leader takes it, and one not yet taken waits
//! for the next leader.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::backoff::Backoff;
use crate::collect::mqtt::{Acker, MqttInput};
use crate::collect::probe::ProbeReport;
use crate::core::{
    ANSWER_WITHIN, Command, Forwarded, ForwardedItem, Inbox, LinkOutcome, Receipt, Refused, Status,
    wall_now,
};
use crate::engine::{
    AlarmInput, EngineError, Event, IncidentId, ProbeResult, RejectReason, Source, Ts,
};
use crate::metrics::Metrics;

/// Most inputs written in one transaction.
const MAX_ROWS: usize = 512;
/// How often a waiting API request looks for its answer.
const ANSWER_POLL: Duration = Duration::from_millis(20);
/// How often the leader looks for new rows when no notification says
/// there are some (a follower's write notifies `beredskab_inbox`).
const READ_POLL: Duration = Duration::from_secs(1);
/// Retrying a failed write of the inbox: nothing is acknowledged until it
/// succeeds, and the forwarder never gives up.
const WRITE_RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// How long done rows are kept (then deleted by the leader).
const KEEP_DONE_MS: i64 = 3_600_000;

/// One row of the shared inbox.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Item {
    Mqtt {
        topic: String,
        #[serde(with = "crate::engine::payload_form")]
        payload: Vec<u8>,
    },
    Probe {
        id: String,
        result: ProbeResult,
        elapsed_ms: u64,
    },
    Request(Request),
}

/// An API request another instance received.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
enum Request {
    Input {
        event: Event,
        source: Source,
    },
    Inputs {
        events: Vec<Event>,
        refused: Vec<RefusedWire>,
        source: Source,
    },
    Report {
        alarm: AlarmInput,
        expected_ms: Option<u64>,
    },
    Reject {
        refused: RefusedWire,
    },
    AckLink {
        link: String,
        incident: IncidentId,
        by: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct RefusedWire {
    source: Source,
    reason: RejectReason,
    detail: String,
    #[serde(with = "crate::engine::payload_form")]
    raw: Vec<u8>,
}

impl From<Refused> for RefusedWire {
    fn from(r: Refused) -> RefusedWire {
        RefusedWire {
            source: r.source,
            reason: r.reason,
            detail: r.detail,
            raw: r.raw,
        }
    }
}

impl From<RefusedWire> for Refused {
    fn from(r: RefusedWire) -> Refused {
        Refused {
            source: r.source,
            reason: r.reason,
            detail: r.detail,
            raw: r.raw,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReceiptWire {
    seq: Option<u64>,
    rejected: Option<(RejectReason, String)>,
    incident: Option<IncidentId>,
}

impl From<Receipt> for ReceiptWire {
    fn from(r: Receipt) -> ReceiptWire {
        ReceiptWire {
            seq: r.seq,
            rejected: r.rejected,
            incident: r.incident,
        }
    }
}

impl From<ReceiptWire> for Receipt {
    fn from(r: ReceiptWire) -> Receipt {
        Receipt {
            seq: r.seq,
            rejected: r.rejected,
            incident: r.incident,
        }
    }
}

/// The leader's answer, written to the request's row.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "answer", content = "value", rename_all = "snake_case")]
enum Answer {
    Receipt(Result<ReceiptWire, EngineError>),
    Receipts(Vec<Result<ReceiptWire, EngineError>>),
    Link(Result<LinkOutcome, EngineError>),
    Done,
}

/// Stands in for the core on a follower.
pub struct Forwarder {
    pub pool: PgPool,
    pub instance: String,
    pub status: std::sync::Arc<Status>,
    pub metrics: std::sync::Arc<Metrics>,
}

/// Where a command's answer goes, once the leader has written it.
enum Waiting {
    Receipt(oneshot::Sender<Result<Receipt, EngineError>>),
    Receipts(oneshot::Sender<Vec<Result<Receipt, EngineError>>>),
    Link(oneshot::Sender<Result<LinkOutcome, EngineError>>),
    Done(oneshot::Sender<()>),
}

impl Forwarder {
    /// Runs until `stop`. What is taken off the channels is written and
    /// acknowledged, or, when stopped before the write succeeds, left
    /// unacknowledged for the broker to deliver again.
    pub async fn run(
        self,
        mut inbox: impl std::ops::DerefMut<Target = Inbox> + Send,
        stop: CancellationToken,
    ) {
        self.status
            .running
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Until a write fails, as the core does.
        self.status
            .store_ok
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let inbox: &mut Inbox = &mut inbox;
        let mut mqtt = Vec::new();
        let mut commands = Vec::new();
        let mut probes = Vec::new();
        // One task looks for every waiting request's answer at once.
        let (waiters, waiting_rx) = mpsc::unbounded_channel();
        let answers = tokio::spawn(answer_when_done(self.pool.clone(), waiting_rx));
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                n = inbox.mqtt.recv_many(&mut mqtt, MAX_ROWS) => if n == 0 { break },
                n = inbox.commands.recv_many(&mut commands, MAX_ROWS) => if n == 0 { break },
                n = inbox.probes.recv_many(&mut probes, MAX_ROWS) => if n == 0 { break },
            }
            let mut rows: Vec<String> = Vec::new();
            let mut acks: Vec<Acker> = Vec::new();
            let mut waiting: Vec<(usize, Waiting)> = Vec::new();
            for input in mqtt.drain(..) {
                match input {
                    MqttInput::Message(m) => {
                        rows.push(encode(&Item::Mqtt {
                            topic: m.topic,
                            payload: m.payload,
                        }));
                        acks.push(m.acker);
                    }
                    other => crate::core::note_mqtt_state(&self.status, &self.metrics, &other),
                }
            }
            for r in probes.drain(..) {
                rows.push(encode(&Item::Probe {
                    id: r.id,
                    result: r.result,
                    elapsed_ms: u64::try_from(r.elapsed.as_millis()).unwrap_or(u64::MAX),
                }));
            }
            for c in commands.drain(..) {
                let (request, wait) = match c {
                    Command::Input {
                        event,
                        source,
                        reply,
                        ..
                    } => (Request::Input { event, source }, Waiting::Receipt(reply)),
                    Command::Inputs {
                        events,
                        refused,
                        source,
                        reply,
                        ..
                    } => (
                        Request::Inputs {
                            events,
                            refused: refused.into_iter().map(Into::into).collect(),
                            source,
                        },
                        Waiting::Receipts(reply),
                    ),
                    Command::Report {
                        alarm,
                        expected,
                        reply,
                        ..
                    } => (
                        Request::Report {
                            alarm,
                            expected_ms: expected
                                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                        },
                        Waiting::Receipt(reply),
                    ),
                    Command::Reject { refused, reply } => (
                        Request::Reject {
                            refused: refused.into(),
                        },
                        Waiting::Done(reply),
                    ),
                    Command::AckLink {
                        link,
                        incident,
                        by,
                        reply,
                    } => (
                        Request::AckLink { link, incident, by },
                        Waiting::Link(reply),
                    ),
                    // The follower's catalogue is the daemon's business;
                    // the leader reloads its own.
                    Command::Reload { reply, .. } => {
                        let _ = reply.send(Vec::new());
                        continue;
                    }
                };
                waiting.push((rows.len(), wait));
                rows.push(encode(&Item::Request(request)));
            }
            if rows.is_empty() {
                continue;
            }
            let Some(ids) = self.write(&rows, &stop).await else {
                // Stopped before the write: nothing is acknowledged, and the
                // waiting requests are answered "no answer" by their drop.
                break;
            };
            for a in acks {
                a.ack();
            }
            let deadline = Instant::now() + ANSWER_WITHIN;
            for (i, wait) in waiting {
                let Some(&id) = ids.get(i) else { continue };
                let _ = waiters.send((id, wait, deadline));
            }
        }
        // Requests still waiting are answered "no answer" by their drop.
        answers.abort();
        self.status
            .running
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes the rows in one transaction, retrying until it succeeds or
    /// `stop`; their ids in order.
    async fn write(&self, rows: &[String], stop: &CancellationToken) -> Option<Vec<i64>> {
        let mut retry = WRITE_RETRY;
        loop {
            match self.try_write(rows).await {
                Ok(ids) => {
                    self.status
                        .store_ok
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    return Some(ids);
                }
                Err(e) => {
                    self.status
                        .store_ok
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    let delay = retry.next_delay();
                    error!(error = %e, rows = rows.len(), retry_ms = delay.as_millis() as u64,
                        "cannot write to the shared inbox; nothing is acknowledged until it succeeds");
                    tokio::select! {
                        () = stop.cancelled() => return None,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn try_write(&self, rows: &[String]) -> Result<Vec<i64>, sqlx::Error> {
        let at = wall_now().0;
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(rows.len());
        for body in rows {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO cluster_inbox (instance, received_ms, body) VALUES ($1, $2, $3) \
                 RETURNING id",
            )
            .bind(&self.instance)
            .bind(at)
            .bind(body)
            .fetch_one(&mut *tx)
            .await?;
            ids.push(id);
        }
        sqlx::query("SELECT pg_notify('beredskab_inbox', '')")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ids)
    }
}

fn encode(item: &Item) -> String {
    // Every field is a plain value: encoding cannot fail.
    serde_json::to_string(item).unwrap_or_else(|e| {
        error!(error = %e, "cannot encode an inbox row");
        String::from("{}")
    })
}

/// Waits for the leader's answers to the requests it is given, each until
/// its deadline ([`ANSWER_WITHIN`] after it was stored), and passes them
/// on: one query for all that wait, every [`ANSWER_POLL`]. A request not
/// answered in time gets "no answer" from the API; it is still stored and
/// is taken in when a leader runs. Bounded by the requests in flight.
async fn answer_when_done(
    pool: PgPool,
    mut incoming: mpsc::UnboundedReceiver<(i64, Waiting, Instant)>,
) {
    let mut waiting: HashMap<i64, (Waiting, Instant)> = HashMap::new();
    loop {
        if waiting.is_empty() {
            match incoming.recv().await {
                Some((id, wait, deadline)) => {
                    waiting.insert(id, (wait, deadline));
                }
                None => return,
            }
        }
        while let Ok((id, wait, deadline)) = incoming.try_recv() {
            waiting.insert(id, (wait, deadline));
        }
        let ids: Vec<i64> = waiting.keys().copied().collect();
        let rows: Result<Vec<(i64, String)>, _> = sqlx::query_as(
            "SELECT id, answer FROM cluster_inbox WHERE id = ANY($1) AND answer IS NOT NULL",
        )
        .bind(&ids)
        .fetch_all(&pool)
        .await;
        if let Ok(rows) = rows {
            for (id, text) in rows {
                let Some((wait, _)) = waiting.remove(&id) else {
                    continue;
                };
                match serde_json::from_str::<Answer>(&text) {
                    Ok(answer) => pass_on(id, wait, answer),
                    Err(e) => warn!(id, error = %e, "the leader's answer cannot be read"),
                }
            }
        }
        let now = Instant::now();
        waiting.retain(|id, (_, deadline)| {
            let keep = *deadline > now;
            if !keep {
                debug!(id, "no answer from the leader in time");
            }
            keep
        });
        tokio::time::sleep(ANSWER_POLL).await;
    }
}

fn pass_on(id: i64, wait: Waiting, answer: Answer) {
    match (wait, answer) {
        (Waiting::Receipt(tx), Answer::Receipt(r)) => {
            let _ = tx.send(r.map(Into::into));
        }
        (Waiting::Receipts(tx), Answer::Receipts(rs)) => {
            let _ = tx.send(rs.into_iter().map(|r| r.map(Into::into)).collect());
        }
        (Waiting::Link(tx), Answer::Link(r)) => {
            let _ = tx.send(r);
        }
        (Waiting::Done(tx), Answer::Done) => {
            let _ = tx.send(());
        }
        _ => warn!(id, "the leader's answer does not fit the request"),
    }
}

/// On the leader: hands the shared inbox's rows to the core, in order,
/// and writes the answers to requests back to their rows.
pub struct InboxReader {
    pub pool: PgPool,
    pub core: mpsc::Sender<Forwarded>,
}

impl InboxReader {
    pub async fn run(self, stop: CancellationToken) {
        // Rows handed to the core and not yet seen done.
        let mut handed: BTreeSet<i64> = BTreeSet::new();
        let mut last_cleanup = Instant::now();
        let mut retry = WRITE_RETRY;
        // Woken by the followers' writes; without it, it polls.
        let mut listener = match sqlx::postgres::PgListener::connect_with(&self.pool).await {
            Ok(mut l) => match l.listen("beredskab_inbox").await {
                Ok(()) => Some(l),
                Err(e) => {
                    warn!(error = %e, "cannot listen for the shared inbox; polling it");
                    None
                }
            },
            Err(e) => {
                warn!(error = %e, "cannot listen for the shared inbox; polling it");
                None
            }
        };
        loop {
            if stop.is_cancelled() {
                return;
            }
            let page: Result<Vec<(i64, String, i64, String)>, _> = sqlx::query_as(
                "SELECT id, instance, received_ms, body FROM cluster_inbox \
                 WHERE done_ms IS NULL ORDER BY id LIMIT 1024",
            )
            .fetch_all(&self.pool)
            .await;
            let page = match page {
                Ok(p) => {
                    retry = WRITE_RETRY;
                    p
                }
                Err(e) => {
                    let delay = retry.next_delay();
                    warn!(error = %e, "cannot read the shared inbox");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            };
            let full = page.len() >= 1024;
            let last = page.last().map(|r| r.0);
            let pending: BTreeSet<i64> = page.iter().map(|r| r.0).collect();
            // A row no longer pending was committed done.
            handed.retain(|id| pending.contains(id) || (full && last.is_some_and(|l| *id > l)));
            let mut sent = 0usize;
            for (id, instance, received_ms, body) in page {
                if handed.contains(&id) {
                    continue;
                }
                let item = match self.decode(id, &body) {
                    Some(item) => item,
                    None => continue,
                };
                let f = Forwarded {
                    id,
                    instance,
                    at: Ts(received_ms),
                    item,
                };
                if self.core.send(f).await.is_err() {
                    return;
                }
                handed.insert(id);
                sent += 1;
            }
            if last_cleanup.elapsed() > Duration::from_secs(60) {
                last_cleanup = Instant::now();
                let _ = sqlx::query("DELETE FROM cluster_inbox WHERE done_ms < $1")
                    .bind(wall_now().0.saturating_sub(KEEP_DONE_MS))
                    .execute(&self.pool)
                    .await;
            }
            if sent == 0 {
                let heard = async {
                    match &mut listener {
                        // A lost connection is re-made by the listener; an
                        // error here means look again now.
                        Some(l) => {
                            let _ = l.recv().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = heard => {}
                    () = tokio::time::sleep(READ_POLL) => {}
                }
            }
        }
    }

    /// The row as the core takes it; a request gets a reply channel whose
    /// answer is written back to the row. A row that cannot be read is
    /// marked done with nothing taken in, and logged.
    fn decode(&self, id: i64, body: &str) -> Option<ForwardedItem> {
        let item = match serde_json::from_str::<Item>(body) {
            Ok(item) => item,
            Err(e) => {
                error!(id, error = %e, "an inbox row cannot be read; skipped");
                let pool = self.pool.clone();
                tokio::spawn(async move {
                    let _ = sqlx::query("UPDATE cluster_inbox SET done_ms = $2 WHERE id = $1")
                        .bind(id)
                        .bind(wall_now().0)
                        .execute(&pool)
                        .await;
                });
                return None;
            }
        };
        let received = Instant::now();
        Some(match item {
            Item::Mqtt { topic, payload } => ForwardedItem::Mqtt { topic, payload },
            Item::Probe {
                id,
                result,
                elapsed_ms,
            } => ForwardedItem::Probe(ProbeReport {
                id,
                result,
                elapsed: Duration::from_millis(elapsed_ms),
            }),
            Item::Request(request) => {
                let command = match request {
                    Request::Input { event, source } => {
                        let (reply, rx) = oneshot::channel();
                        self.answer(id, async move {
                            rx.await.ok().map(|r: Result<Receipt, EngineError>| {
                                Answer::Receipt(r.map(Into::into))
                            })
                        });
                        Command::Input {
                            event,
                            source,
                            received,
                            reply,
                        }
                    }
                    Request::Inputs {
                        events,
                        refused,
                        source,
                    } => {
                        let (reply, rx) = oneshot::channel();
                        self.answer(id, async move {
                            rx.await.ok().map(|rs: Vec<Result<Receipt, EngineError>>| {
                                Answer::Receipts(
                                    rs.into_iter().map(|r| r.map(Into::into)).collect(),
                                )
                            })
                        });
                        Command::Inputs {
                            events,
                            refused: refused.into_iter().map(Into::into).collect(),
                            source,
                            received,
                            reply,
                        }
                    }
                    Request::Report { alarm, expected_ms } => {
                        let (reply, rx) = oneshot::channel();
                        self.answer(id, async move {
                            rx.await.ok().map(|r: Result<Receipt, EngineError>| {
                                Answer::Receipt(r.map(Into::into))
                            })
                        });
                        Command::Report {
                            alarm,
                            expected: expected_ms.map(Duration::from_millis),
                            received,
                            reply,
                        }
                    }
                    Request::Reject { refused } => {
                        let (reply, rx) = oneshot::channel();
                        self.answer(id, async move { rx.await.ok().map(|()| Answer::Done) });
                        Command::Reject {
                            refused: refused.into(),
                            reply,
                        }
                    }
                    Request::AckLink { link, incident, by } => {
                        let (reply, rx) = oneshot::channel();
                        self.answer(id, async move { rx.await.ok().map(Answer::Link) });
                        Command::AckLink {
                            link,
                            incident,
                            by,
                            reply,
                        }
                    }
                };
                ForwardedItem::Command(command)
            }
        })
    }

    /// Writes the answer `answer` gives to row `id` (after the core's
    /// commit: the core replies only then).
    fn answer(
        &self,
        id: i64,
        answer: impl std::future::Future<Output = Option<Answer>> + Send + 'static,
    ) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let Some(answer) = answer.await else { return };
            let text = serde_json::to_string(&answer).unwrap_or_default();
            if let Err(e) = sqlx::query("UPDATE cluster_inbox SET answer = $2 WHERE id = $1")
                .bind(id)
                .bind(text)
                .execute(&pool)
                .await
            {
                warn!(id, error = %e, "cannot write the answer to a forwarded request");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let items = [
            Item::Mqtt {
                topic: "fire/1".into(),
                payload: b"ALARM".to_vec(),
            },
            Item::Request(Request::AckLink {
                link: "abc".into(),
                incident: IncidentId(3),
                by: "p".into(),
            }),
            Item::Request(Request::Reject {
                refused: RefusedWire {
                    source: Source::Http,
                    reason: RejectReason::BadPayload,
                    detail: "x".into(),
                    raw: vec![0xff, 0],
                },
            }),
        ];
        for item in items {
            let text = encode(&item);
            let back: Item = serde_json::from_str(&text).expect("reads back");
            assert_eq!(encode(&back), text);
        }
        let answer = Answer::Receipt(Err(EngineError::Resolved(IncidentId(2))));
        let text = serde_json::to_string(&answer).expect("encodes");
        assert!(matches!(
            serde_json::from_str::<Answer>(&text),
            Ok(Answer::Receipt(Err(EngineError::Resolved(IncidentId(2)))))
        ));
    }
}
