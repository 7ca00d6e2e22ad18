//! How the rest of the daemon talks to the core: [`CoreHandle`], whose
//! async methods send a command and wait for its answer after the commit,
//! within [`ANSWER_WITHIN`].

use super::*;

/// How long a caller waits for the core to take a command and answer it:
/// a full channel, or a core stuck in a failing commit, is not waited on
/// for ever.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Why the core gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswer {
    /// It has stopped (shutdown, or it died).
    Stopped,
    /// Not within [`ANSWER_WITHIN`]: it may still take the command in.
    TimedOut,
}

/// Input refused before it reached the engine (a body that does not
/// parse), to be kept, counted and logged like any rejection.
#[derive(Debug, Clone)]
pub struct Refused {
    pub source: Source,
    pub reason: RejectReason,
    pub detail: String,
    /// The raw input, kept (truncated) with the rejection.
    pub raw: Vec<u8>,
}

/// The sending end of the core's command channel, with a method for each
/// thing the API, the daemon and the demo ask of it. Each returns once
/// what it asked for is committed (or refused), or [`NoAnswer`].
#[derive(Debug, Clone)]
pub struct CoreHandle {
    tx: mpsc::Sender<Command>,
}

impl CoreHandle {
    /// A handle and the receiving end the core reads (`Inbox::commands`).
    pub fn channel(capacity: usize) -> (CoreHandle, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(capacity);
        (CoreHandle { tx }, rx)
    }

    /// Whether the core has stopped taking commands (it ended or died).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Sends the command `make` builds around a reply channel and waits
    /// for the answer, both within `within` (or for ever without one).
    async fn ask<T>(
        &self,
        within: Option<Duration>,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NoAnswer> {
        let (reply, answer) = oneshot::channel();
        let command = make(reply);
        let exchange = async {
            self.tx.send(command).await.map_err(|_| NoAnswer::Stopped)?;
            answer.await.map_err(|_| NoAnswer::Stopped)
        };
        let Some(within) = within else {
            return exchange.await;
        };
        let answer = tokio::time::timeout(within, exchange)
            .await
            .unwrap_or(Err(NoAnswer::TimedOut));
        if matches!(answer, Err(NoAnswer::TimedOut)) {
            warn!(
                timeout_s = within.as_secs(),
                "the core did not answer in time"
            );
        }
        answer
    }

    /// An event from outside (an alarm, an acknowledgement, …).
    pub async fn input(
        &self,
        event: Event,
        source: Source,
    ) -> Result<Result<Receipt, EngineError>, NoAnswer> {
        self.ask(Some(ANSWER_WITHIN), |reply| Command::Input {
            event,
            source,
            received: Instant::now(),
            reply,
        })
        .await
    }

    /// The events of one request, and what of it was refused before, in
    /// one commit: a result per event, in order.
    pub async fn inputs(
        &self,
        events: Vec<Event>,
        refused: Vec<Refused>,
        source: Source,
    ) -> Result<Vec<Result<Receipt, EngineError>>, NoAnswer> {
        self.ask(Some(ANSWER_WITHIN), |reply| Command::Inputs {
            events,
            refused,
            source,
            received: Instant::now(),
            reply,
        })
        .await
    }

    /// A report on a component or service; `expected` counts from now.
    pub async fn report(
        &self,
        alarm: AlarmInput,
        expected: Option<Duration>,
    ) -> Result<Result<Receipt, EngineError>, NoAnswer> {
        self.ask(Some(ANSWER_WITHIN), |reply| Command::Report {
            alarm,
            expected,
            received: Instant::now(),
            reply,
        })
        .await
    }

    /// Keeps, counts and logs input refused before the engine.
    pub async fn reject(&self, refused: Refused) -> Result<(), NoAnswer> {
        self.ask(Some(ANSWER_WITHIN), |reply| Command::Reject {
            refused,
            reply,
        })
        .await
    }

    /// Acknowledges by a verified signed link, once per link.
    pub async fn ack_link(
        &self,
        link: String,
        incident: IncidentId,
        by: String,
    ) -> Result<Result<LinkOutcome, EngineError>, NoAnswer> {
        self.ask(Some(ANSWER_WITHIN), |reply| Command::AckLink {
            link,
            incident,
            by,
            reply,
        })
        .await
    }

    /// Carries the running state into a reloaded config; returns what
    /// could not be carried over. Waits as long as the core takes: a
    /// reload is the operator's, not a request's.
    pub async fn reload(&self, catalogue: Arc<Catalogue>) -> Result<Vec<String>, NoAnswer> {
        self.ask(None, |reply| Command::Reload { catalogue, reply })
            .await
    }
}

/// What the core is asked, with where to answer. Built by [`CoreHandle`].
#[derive(Debug)]
pub enum Command {
    /// An event from the API (an alarm, an acknowledgement, …). The reply
    /// comes once it is committed.
    Input {
        event: Event,
        source: Source,
        received: Instant,
        reply: oneshot::Sender<Result<Receipt, EngineError>>,
    },
    /// Events of one API request (the alerts of an Alertmanager body),
    /// taken in and committed together. The reply has a result for each
    /// event, in order, once they are committed.
    Inputs {
        events: Vec<Event>,
        refused: Vec<Refused>,
        source: Source,
        received: Instant,
        reply: oneshot::Sender<Vec<Result<Receipt, EngineError>>>,
    },
    /// A report from a person or an outside party: an alarm on a component
    /// or service, and, when given, how long it is expected to last from now.
    Report {
        alarm: AlarmInput,
        expected: Option<Duration>,
        received: Instant,
        reply: oneshot::Sender<Result<Receipt, EngineError>>,
    },
    /// Input refused before it reached the engine (a body that does not
    /// parse): kept, counted and logged like any rejection.
    Reject {
        refused: Refused,
        reply: oneshot::Sender<()>,
    },
    /// A one-click acknowledgement from a signed link (already verified):
    /// it acknowledges once; a link used before is refused.
    AckLink {
        /// The link's identity (a hash of its token).
        link: String,
        incident: IncidentId,
        /// The person the link was sent to.
        by: String,
        reply: oneshot::Sender<Result<LinkOutcome, EngineError>>,
    },
    /// A new catalogue from a reloaded config. The reply carries what of
    /// the running state could not be carried over.
    Reload {
        catalogue: Arc<Catalogue>,
        reply: oneshot::Sender<Vec<String>>,
    },
}
