//! The core's snapshots against a real store: each one stored is the
//! engine's state after the input it names, and a kill at any point
//! restarts to the state the whole log gives.

use std::path::PathBuf;

use futures_util::future::join_all;

use super::*;
use crate::api::tests::TempDir;
use crate::config::{AlarmKind, load_str};
use crate::engine::{AlarmSeverity, AlarmState};
use crate::store::SqliteStore;

/// Servers of the example config.
const SERVERS: [&str; 6] = [
    "srv-ad",
    "srv-esdh",
    "srv-mail-gw",
    "srv-web",
    "srv-loen",
    "srv-nexus",
];

/// Logged inputs between snapshots in these tests: a few per round.
const EVERY: usize = 5;

fn catalogue() -> Arc<Catalogue> {
    let loaded =
        load_str("beredskab.toml", crate::demo::EXAMPLE_CONFIG).expect("the example loads");
    Arc::new(Catalogue::build(&loaded.config).expect("the example resolves"))
}

/// The `i`th alarm: the servers in turn, each firing under a few keys and
/// cleared every third round, so incidents open, grow and resolve.
fn alarm(i: usize) -> Event {
    let round = i / SERVERS.len();
    Event::Alarm(AlarmInput {
        component: SERVERS[i % SERVERS.len()].to_owned(),
        kind: AlarmKind::Server,
        state: if round % 3 == 2 {
            AlarmState::Cleared
        } else {
            AlarmState::Firing
        },
        severity: AlarmSeverity::Critical,
        source: Source::Http,
        message: None,
        key: Some(format!("disk-{}", round % 2)),
    })
}

/// The store's file in `dir`.
fn db(dir: &TempDir) -> PathBuf {
    dir.0.join("beredskab.db")
}

struct Running {
    handle: CoreHandle,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), CoreError>>,
}

/// A core on `store` that takes a snapshot every [`EVERY`] logged inputs.
async fn run(store: SqliteStore, cat: Arc<Catalogue>) -> Running {
    let mut core = Core::start(
        cat,
        store,
        Arc::new(Metrics::new()),
        Arc::new(Status::default()),
        Arc::new(Notify::new()),
    )
    .await
    .expect("the core starts");
    core.snapshot_least = EVERY;
    core.snapshot_every = EVERY;
    let (handle, commands) = CoreHandle::channel(64);
    let stop = CancellationToken::new();
    let task = tokio::spawn(core.run(
        Box::new(Inbox {
            commands,
            mqtt: mpsc::channel(1).1,
            probes: mpsc::channel(1).1,
            forwarded: mpsc::channel(1).1,
        }),
        stop.clone(),
    ));
    Running { handle, stop, task }
}

async fn accept(core: &CoreHandle, i: usize) {
    let receipt = core.input(alarm(i), Source::Http).await;
    assert!(
        matches!(receipt, Ok(Ok(Receipt { seq: Some(_), .. }))),
        "alarm {i}: {receipt:?}"
    );
}

/// The state of an engine that replayed the store's log from the start up
/// to input `through`, then ran its timers to `until`: what a snapshot
/// after that input at that time must hold.
async fn replayed(store: &SqliteStore, cat: &Arc<Catalogue>, through: u64, until: Ts) -> Engine {
    let mut engine = Engine::new(cat.clone());
    for input in store.inputs().await.expect("the log reads") {
        if input.seq > through {
            break;
        }
        engine.run_timers_until(input.at);
        let _ = engine.apply(input.at, input.event);
    }
    engine.run_timers_until(until);
    engine
}

/// The state as the snapshots hold it: what is over is not kept.
fn state(engine: &mut Engine) -> serde_json::Value {
    engine.forget_resolved();
    serde_json::to_value(engine.snapshot()).expect("a snapshot encodes")
}

/// Alarms ten at a time, so that batches hold several and snapshots fall
/// between them: every snapshot stored while they come in, and the one
/// stored at shutdown, is the state of the log up to the input it names
/// (one named too late would make a start skip inputs; too early, apply
/// some twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stored_snapshot_is_the_state_after_the_input_it_names() {
    let dir = TempDir::new();
    let store = SqliteStore::open(db(&dir)).await.expect("open the store");
    let cat = catalogue();
    let core = run(store.clone(), cat.clone()).await;
    let mut checked = BTreeSet::new();
    let mut check = async |row: crate::store::SnapshotRow| {
        if checked.insert(row.after_seq) {
            let stored: serde_json::Value =
                serde_json::from_str(&row.body).expect("the snapshot reads");
            let mut engine = replayed(&store, &cat, row.after_seq, row.at).await;
            assert_eq!(
                stored,
                state(&mut engine),
                "the snapshot after input {}",
                row.after_seq
            );
        }
    };
    for round in 0..12 {
        join_all((0..10).map(|i| accept(&core.handle, round * 10 + i))).await;
        if let Some(row) = store.latest_snapshot().await.expect("snapshots read") {
            check(row).await;
        }
    }
    core.stop.cancel();
    core.task.await.expect("the core ends").expect("cleanly");
    let last = store.latest_snapshot().await.expect("read").expect("one");
    assert_eq!(
        last.after_seq, 120,
        "the one at shutdown follows every input"
    );
    check(last).await;
    // The start's, at least one taken among the alarms, the shutdown's.
    assert!(checked.len() >= 3, "snapshots checked: {checked:?}");
    store.close().await;
}

/// A runtime of its own, so that dropping it kills every task of the core
/// at once, the snapshot's writer included, with no shutdown.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Killed after each number of answered alarms from 1 to 45, with three
/// more in flight: before the first snapshot was stored, between taking
/// one and storing it, and with inputs logged after the one stored. Each
/// time the next start restores the newest stored snapshot, replays the
/// inputs logged after it, and holds the state that replaying the whole
/// log gives.
#[test]
fn a_kill_restarts_to_the_state_of_the_whole_log() {
    // Kill points where a stored snapshot had inputs logged after it.
    let mut replayed_after_snapshot = 0;
    for answered in 1..=45 {
        let dir = TempDir::new();
        let cat = catalogue();
        let first = runtime();
        first.block_on(async {
            let store = SqliteStore::open(db(&dir)).await.expect("open the store");
            let core = run(store, cat.clone()).await;
            for i in 0..answered {
                accept(&core.handle, i).await;
            }
            for i in answered..answered + 3 {
                let handle = core.handle.clone();
                tokio::spawn(async move { handle.input(alarm(i), Source::Http).await });
            }
            tokio::task::yield_now().await;
        });
        first.shutdown_background();

        runtime().block_on(async {
            let store = SqliteStore::open(db(&dir)).await.expect("reopen the store");
            let log = store.inputs().await.expect("the log reads");
            let newest = log.last().map_or(0, |i| i.seq);
            assert!(
                newest >= answered as u64,
                "killed after {answered}: {newest} inputs logged"
            );
            // None when even the start's was not stored yet.
            let after = (store.latest_snapshot().await.expect("read")).map_or(0, |s| s.after_seq);
            assert!(
                after <= newest,
                "killed after {answered}: the snapshot names input {after} of {newest}"
            );
            if after > 0 && after < newest {
                replayed_after_snapshot += 1;
            }
            let watermark = store
                .meta(META_WATERMARK)
                .await
                .expect("meta")
                .and_then(|v| v.parse().ok())
                .map(Ts)
                .expect("a watermark");
            let mut core = Core::start(
                cat.clone(),
                store.clone(),
                Arc::new(Metrics::new()),
                Arc::new(Status::default()),
                Arc::new(Notify::new()),
            )
            .await
            .expect("the core starts again");
            let mut whole = replayed(&store, &cat, newest, watermark).await;
            assert_eq!(
                state(&mut core.engine),
                state(&mut whole),
                "killed after {answered} (snapshot after input {after} of {newest})"
            );
            drop(core);
            store.close().await;
        });
    }
    assert!(
        replayed_after_snapshot > 0,
        "no kill point left a stored snapshot with inputs after it"
    );
}
