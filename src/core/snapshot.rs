//! Engine snapshots, encoded on the core's path and stored beside it.
//!
//! The core encodes the engine's state in the batch that makes a
//! snapshot due. Storing it, a transaction of a few hundred kilobytes that
//! took as long as the encoding or longer, happens on a task of its own
//! once that batch is committed, while the core goes on deciding: the
//! alarms that arrive meanwhile no longer wait for it. The snapshot names
//! the last input it includes, known from that commit, so a replay starts
//! right after it however many commits have gone by before it is stored.
//! Until it is stored the one before it serves: a crash in between costs
//! a longer replay, nothing else. One write is under way at a time.
//!
//! A copy of the state, encoded beside the core, cost as much on the
//! core's path as the encoding (tens of thousands of small allocations
//! against one growing buffer), and left the daemon's memory 10–20 MiB
//! larger after a million alarms.

use tokio::task::JoinHandle;

use super::*;

/// The longest the core waits for a snapshot being stored, when it must
/// take the next one or is shutting down.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(10);

/// A snapshot taken by the batch being committed, to store once it is.
pub(super) struct Taken {
    at: Ts,
    body: String,
}

impl<S: Store> Core<S> {
    /// Whether a snapshot is due now, after a batch that was `forced` to
    /// take one or not. A periodic one waits while the last is still being
    /// written; one that must be taken (at start, at shutdown, after a
    /// reload) waits for that write to end instead.
    pub(super) async fn snapshot_due(&mut self, forced: bool) -> bool {
        let forced = forced || self.snapshot_every == 0;
        let ended = (self.snapshot_writing.as_ref()).is_some_and(|w| forced || w.is_finished());
        if ended && let Some(writing) = self.snapshot_writing.take() {
            snapshot_written(writing, SNAPSHOT_WAIT).await;
        }
        if self.snapshot_writing.is_some() {
            return false;
        }
        forced
            || self.logged_since_snapshot >= self.snapshot_every
            || (self.logged_since_snapshot > 0 && self.last_snapshot.elapsed() >= SNAPSHOT_EVERY)
    }

    /// Encodes the engine's state, for [`Core::write_snapshot`] after the
    /// commit.
    pub(super) fn take_snapshot(&mut self) {
        let began = Instant::now();
        let body = match serde_json::to_string(&self.engine.snapshot()) {
            Ok(body) => body,
            Err(e) => {
                error!(error = %e, "cannot encode the engine snapshot");
                return;
            }
        };
        self.snapshot_every = (body.len() / SNAPSHOT_BYTES_PER_INPUT)
            .clamp(self.snapshot_least, SNAPSHOT_MOST_INPUTS);
        debug!(
            bytes = body.len(),
            encoded_us = began.elapsed().as_micros() as u64,
            next_after_inputs = self.snapshot_every,
            "engine snapshot taken"
        );
        self.snapshot_taken = Some(Taken {
            at: self.last_at,
            body,
        });
        self.logged_since_snapshot = 0;
        self.last_snapshot = Instant::now();
    }

    /// Starts writing the snapshot the committed batch took, if it took
    /// one: it follows input `self.last_seq`.
    pub(super) fn write_snapshot(&mut self) {
        let Some(Taken { at, body }) = self.snapshot_taken.take() else {
            return;
        };
        let store = self.store.clone();
        let after_seq = self.last_seq;
        self.snapshot_writing = Some(tokio::spawn(async move {
            let began = Instant::now();
            // Shared, so that binding it does not copy it again.
            let body: Arc<str> = body.into();
            match store.write_snapshot(at, after_seq, body.clone()).await {
                Ok(()) => debug!(
                    bytes = body.len(),
                    after_seq,
                    stored_us = began.elapsed().as_micros() as u64,
                    "engine snapshot stored"
                ),
                Err(e) => warn!(error = %e, after_seq,
                    "cannot store the engine snapshot; a start replays from the one before"),
            }
        }));
    }

    /// At shutdown: waits for the last snapshot to be stored.
    pub(super) async fn last_snapshot_written(&mut self) {
        if let Some(writing) = self.snapshot_writing.take() {
            snapshot_written(writing, SNAPSHOT_WAIT).await;
        }
    }
}

/// Waits for a snapshot's write to end, for at most `within`.
async fn snapshot_written(writing: JoinHandle<()>, within: Duration) {
    match tokio::time::timeout(within, writing).await {
        // Said how it ended.
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!(error = %e, "the engine snapshot's writer stopped"),
        // It goes on by itself; whichever is stored last, a start
        // restores the one after the latest input.
        Err(_) => warn!(
            waited_s = within.as_secs(),
            "an engine snapshot is still being stored; going on without waiting for it"
        ),
    }
}
