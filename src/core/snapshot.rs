//! Engine snapshots, taken on the core's path and encoded and stored
//! beside it.
//!
//! Taking one is a copy of the engine's state ([`Snapshot::into_owned`]).
//! Encoding it and storing it, which for a few hundred kilobytes took
//! milliseconds, happen on a task of their own once the batch it follows is
//! committed, while the core goes on deciding: the alarms that arrive
//! meanwhile no longer wait for them. The snapshot names the last input it
//! includes, known from that commit, so a replay starts right after it
//! however many commits have gone by before it is stored. Until it is
//! stored the one before it serves: a crash in between costs a longer
//! replay, nothing else. One write is under way at a time.

use tokio::task::JoinHandle;

use super::*;

/// The longest the core waits for a snapshot being stored, when it must
/// take the next one or is shutting down.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(10);

/// A snapshot taken by the batch being committed, to write once it is.
pub(super) struct Taken {
    at: Ts,
    snapshot: Snapshot<'static>,
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
            self.snapshot_written(writing, SNAPSHOT_WAIT).await;
        }
        if self.snapshot_writing.is_some() {
            return false;
        }
        forced
            || self.logged_since_snapshot >= self.snapshot_every
            || (self.logged_since_snapshot > 0 && self.last_snapshot.elapsed() >= SNAPSHOT_EVERY)
    }

    /// Copies the engine's state, for [`Core::write_snapshot`] after the
    /// commit.
    pub(super) fn take_snapshot(&mut self) {
        let began = Instant::now();
        self.snapshot_taken = Some(Taken {
            at: self.last_at,
            snapshot: self.engine.snapshot().into_owned(),
        });
        debug!(
            copied_us = began.elapsed().as_micros() as u64,
            "engine snapshot taken"
        );
        self.logged_since_snapshot = 0;
        self.last_snapshot = Instant::now();
        // Until the write reports the size, nothing sooner.
        self.snapshot_every = self.snapshot_every.max(self.snapshot_least);
    }

    /// Starts writing the snapshot the committed batch took, if it took
    /// one: it follows input `self.last_seq`.
    pub(super) fn write_snapshot(&mut self) {
        let Some(Taken { at, snapshot }) = self.snapshot_taken.take() else {
            return;
        };
        let store = self.store.clone();
        let after_seq = self.last_seq;
        self.snapshot_writing = Some(tokio::spawn(async move {
            let began = Instant::now();
            let body = tokio::task::spawn_blocking(move || serde_json::to_string(&snapshot))
                .await
                .map_err(|e| e.to_string())
                .and_then(|body| body.map_err(|e| e.to_string()));
            let body = match body {
                Ok(body) => body,
                Err(error) => {
                    error!(error, "cannot encode the engine snapshot");
                    return None;
                }
            };
            let encoded = began.elapsed();
            if let Err(e) = store.write_snapshot(at, after_seq, &body).await {
                warn!(error = %e, after_seq,
                    "cannot store the engine snapshot; a start replays from the one before");
                return None;
            }
            debug!(
                bytes = body.len(),
                after_seq,
                encoded_us = encoded.as_micros() as u64,
                stored_us = began.elapsed().saturating_sub(encoded).as_micros() as u64,
                "engine snapshot stored"
            );
            Some(body.len())
        }));
    }

    /// Waits for a snapshot's write to end, for at most `within`, and
    /// spaces the next by its size.
    async fn snapshot_written(&mut self, writing: JoinHandle<Option<usize>>, within: Duration) {
        match tokio::time::timeout(within, writing).await {
            Ok(Ok(Some(bytes))) => {
                self.snapshot_every = (bytes / SNAPSHOT_BYTES_PER_INPUT)
                    .clamp(self.snapshot_least, SNAPSHOT_MOST_INPUTS);
            }
            // Said where it failed; the next comes on the usual schedule.
            Ok(Ok(None)) => {}
            Ok(Err(e)) => error!(error = %e, "the engine snapshot's writer stopped"),
            // It goes on by itself; whichever is stored last, a start
            // restores the one after the latest input.
            Err(_) => warn!(
                waited_s = within.as_secs(),
                "an engine snapshot is still being stored; going on without waiting for it"
            ),
        }
    }

    /// At shutdown: waits for the last snapshot to be stored.
    pub(super) async fn last_snapshot_written(&mut self) {
        if let Some(writing) = self.snapshot_writing.take() {
            self.snapshot_written(writing, SNAPSHOT_WAIT).await;
        }
    }
}
