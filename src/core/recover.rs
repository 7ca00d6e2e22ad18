//! Rebuilding the engine after a start: the newest snapshot, the inputs
//! logged after it, and the timers up to the watermark.

use super::*;

impl<S: Store> Core<S> {
    /// Rebuilds the engine from the store: the newest snapshot, then every
    /// input logged after it, then the timers up to the watermark (their
    /// effects are already stored). Nothing is written yet.
    pub async fn start(
        cat: Arc<Catalogue>,
        store: S,
        metrics: Arc<Metrics>,
        status: Arc<Status>,
        outbox: Arc<Notify>,
    ) -> Result<Core<S>, CoreError> {
        let started = Instant::now();
        let (mut engine, mut after) = match store.latest_snapshot().await? {
            Some(row) => match serde_json::from_str::<Snapshot>(&row.body) {
                Ok(snap) => {
                    let (engine, warnings) = Engine::restore(cat.clone(), &snap);
                    for w in &warnings {
                        warn!(warning = %w, "restoring the engine");
                    }
                    (engine, row.after_seq)
                }
                Err(e) => {
                    // The log is never truncated: replaying all of it is
                    // slower but complete.
                    warn!(error = %e, "the newest snapshot cannot be read; replaying the whole log");
                    (Engine::new(cat.clone()), 0)
                }
            },
            None => (Engine::new(cat.clone()), 0),
        };
        let mut last_at = Ts(0);
        let mut replayed = 0usize;
        loop {
            let page = store.inputs_after(after, REPLAY_PAGE).await?;
            for input in &page {
                engine.run_timers_until(input.at);
                // A refused action (an ack on a resolved incident) was
                // refused the first time too.
                let _ = engine.apply(input.at, input.event.clone());
                last_at = last_at.max(input.at);
                after = input.seq;
            }
            replayed += page.len();
            if page.len() < REPLAY_PAGE as usize {
                break;
            }
        }
        let watermark = store
            .meta(META_WATERMARK)
            .await?
            .and_then(|v| v.parse::<i64>().ok())
            .map(Ts);
        if let Some(w) = watermark {
            engine.run_timers_until(w);
            last_at = last_at.max(w);
        }
        let mqtt_seen = store.meta(META_MQTT_SEEN).await?.is_some();
        // Links used before the engine kept them itself (an older log
        // holds plain acknowledgements) are known from the store.
        let held: Vec<u64> = engine.incidents().iter().map(|i| i.id.0).collect();
        for (incident, link) in store.used_links_of(&held).await? {
            engine.remember_used_link(IncidentId(incident), link);
        }
        let clock = Clock::start(last_at);
        info!(
            replayed,
            live_incidents = engine.live_incidents().len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "engine rebuilt from the store"
        );
        let mut core = Core {
            engine,
            cat,
            store,
            metrics,
            status,
            outbox,
            stored: HashMap::new(),
            clock,
            last_at,
            watermark_stored: last_at,
            wall_offset_logged: Duration::ZERO,
            logged_since_snapshot: replayed,
            snapshot_every: SNAPSHOT_EVERY_INPUTS,
            snapshot_least: SNAPSHOT_EVERY_INPUTS,
            last_snapshot: Instant::now(),
            snapshot_taken: None,
            snapshot_writing: None,
            last_seq: after,
            mqtt_seen,
            since: HashMap::new(),
            board_changed: true,
            upcoming: BTreeMap::new(),
            upcoming_stale: BTreeSet::new(),
            gauges: Default::default(),
            probe_up: HashMap::new(),
            cluster: None,
            handoff: None,
        };
        core.set_all_gauges();
        Ok(core)
    }
}
