//! Several instances on one PostgreSQL database, one of them leading.
//!
//! Every instance takes in: its own MQTT session, its share of the probes,
//! the API. Exactly one, the **leader**, runs the engine: it holds a
//! PostgreSQL advisory lock on a connection of its own, and every commit it
//! makes checks the leadership epoch it took with the lock (a fencing
//! token), so that a leader that lost the lock without noticing cannot
//! write a decision after its successor started. The others, the
//! **followers**, store what they take in in the shared inbox
//! ([`forward`]), where the leader's engine takes it from.
//!
//! When the leader dies its connection closes and the lock is free; a
//! follower takes it within [`LEADER_POLL`], rebuilds the engine from the
//! store (the snapshot and the log, as after a restart) and carries on:
//! timers that came due in between fire once, at once. Instances say they
//! live every [`HEARTBEAT`]; the live ones share the probes among them by
//! a hash of the probe's id.

pub mod board;
pub mod forward;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;

/// The advisory lock's key: "beredskab" in the lock space of this database.
const LOCK_KEY: i64 = 0x6265_7265_6473_6b61;
/// How often a follower tries the lock.
pub const LEADER_POLL: Duration = Duration::from_millis(250);
/// How often each instance says it lives.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// An instance not heard of for this long is taken for dead (its probes
/// go to the others, its claims on the outbox are void).
pub use crate::store::PRESUMED_DEAD;
/// The longest a query of the leadership connection may take before the
/// leader steps down (it may have lost the database).
const QUERY_WITHIN: Duration = Duration::from_secs(3);
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

/// This instance's part in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// Leading, with the epoch it took the lock at.
    Leader {
        epoch: i64,
    },
}

/// What the leadership task tells the daemon.
#[derive(Debug)]
pub struct Cluster {
    pub instance: String,
    pub pool: PgPool,
    pub role: watch::Receiver<Role>,
    /// True once the first try for the lock has an answer (or failed), so
    /// that an instance that leads at once starts as leader.
    pub settled: watch::Receiver<bool>,
    /// The live instances, sorted (this one among them once it is heard).
    pub members: watch::Receiver<Vec<String>>,
}

/// This instance's name: `BEREDSKAB_INSTANCE`, else the host name. It
/// must be stable across restarts (the MQTT session is named after it)
/// and differ between instances.
pub fn instance_name() -> String {
    if let Ok(name) = std::env::var("BEREDSKAB_INSTANCE")
        && !name.trim().is_empty()
    {
        return name.trim().to_owned();
    }
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "beredskab".to_owned())
}

/// Connects to the database and starts the leadership task; it runs
/// until `stop`, then ends the task whose handle comes back with the
/// cluster.
pub async fn join(
    url: &str,
    instance: String,
    stop: CancellationToken,
) -> Result<(Cluster, tokio::task::JoinHandle<()>), sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.clone())
        .await?;
    let (role_tx, role) = watch::channel(Role::Follower);
    let (members_tx, members) = watch::channel(Vec::new());
    let (settled_tx, settled) = watch::channel(false);
    let task = tokio::spawn(lead_when_possible(
        options,
        instance.clone(),
        role_tx,
        members_tx,
        settled_tx,
        stop,
    ));
    Ok((
        Cluster {
            instance,
            pool,
            role,
            settled,
            members,
        },
        task,
    ))
}

/// The leadership task: connects, says it lives, tries the lock; on any
/// error of its connection it is a follower again and reconnects.
async fn lead_when_possible(
    options: PgConnectOptions,
    instance: String,
    role: watch::Sender<Role>,
    members: watch::Sender<Vec<String>>,
    settled: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut retry = RECONNECT;
    loop {
        let conn = tokio::select! {
            () = stop.cancelled() => return,
            c = tokio::time::timeout(QUERY_WITHIN, options.connect()) => c,
        };
        let mut conn = match conn {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                warn!(error = %e, "cluster: cannot reach the database");
                settled.send_replace(true);
                wait(&stop, retry.next_delay()).await;
                continue;
            }
            Err(_) => {
                warn!("cluster: the database did not answer the connection in time");
                settled.send_replace(true);
                wait(&stop, retry.next_delay()).await;
                continue;
            }
        };
        retry = RECONNECT;
        let ended = hold(&mut conn, &instance, &role, &members, &settled, &stop).await;
        if *role.borrow() != Role::Follower {
            if !stop.is_cancelled() {
                warn!(instance, "cluster: leadership lost; following");
            }
            role.send_replace(Role::Follower);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
        match ended {
            Ok(()) => return,
            Err(e) => {
                warn!(error = %e, "cluster: the leadership connection failed");
                wait(&stop, retry.next_delay()).await;
            }
        }
    }
}

/// One connection's life: heartbeats, the lock, the members. Returns
/// `Ok` on `stop` (the lock is released), an error when the connection
/// fails or does not answer in time.
async fn hold(
    conn: &mut PgConnection,
    instance: &str,
    role: &watch::Sender<Role>,
    members: &watch::Sender<Vec<String>>,
    settled: &watch::Sender<bool>,
    stop: &CancellationToken,
) -> Result<(), String> {
    // The server drops a connection whose peer has gone quiet within
    // about 8 s, freeing the lock of a leader cut off by the network.
    timed(
        sqlx::query(
            "SELECT set_config('tcp_keepalives_idle', '5', false), \
             set_config('tcp_keepalives_interval', '1', false), \
             set_config('tcp_keepalives_count', '3', false)",
        )
        .execute(&mut *conn),
    )
    .await?;
    let mut last_beat = tokio::time::Instant::now() - HEARTBEAT;
    loop {
        if stop.is_cancelled() {
            // Not live from now on: the others take its probes, and its
            // claims on the outbox are void.
            let _ = timed(
                sqlx::query(
                    "UPDATE cluster_instances SET seen_ms = 0, leader = false WHERE instance = $1",
                )
                .bind(instance)
                .execute(&mut *conn),
            )
            .await;
            let _ = timed(sqlx::query("SELECT pg_advisory_unlock_all()").execute(&mut *conn)).await;
            return Ok(());
        }
        let leading = matches!(*role.borrow(), Role::Leader { .. });
        if !leading {
            let got: bool = timed(
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(LOCK_KEY)
                    .fetch_one(&mut *conn),
            )
            .await?;
            if got {
                let epoch: i64 = timed(
                    sqlx::query_scalar(
                        "UPDATE cluster_leader SET epoch = epoch + 1, instance = $1, \
                         since_ms = (extract(epoch from clock_timestamp()) * 1000)::bigint \
                         WHERE id = 1 RETURNING epoch",
                    )
                    .bind(instance)
                    .fetch_one(&mut *conn),
                )
                .await?;
                info!(instance, epoch, "cluster: this instance leads");
                role.send_replace(Role::Leader { epoch });
            }
            settled.send_replace(true);
        }
        if last_beat.elapsed() >= HEARTBEAT {
            last_beat = tokio::time::Instant::now();
            let leading = matches!(*role.borrow(), Role::Leader { .. });
            timed(
                sqlx::query(
                    "INSERT INTO cluster_instances (instance, seen_ms, leader) \
                     VALUES ($1, (extract(epoch from clock_timestamp()) * 1000)::bigint, $2) \
                     ON CONFLICT (instance) DO UPDATE SET seen_ms = excluded.seen_ms, \
                     leader = excluded.leader",
                )
                .bind(instance)
                .bind(leading)
                .execute(&mut *conn),
            )
            .await?;
            let live: Vec<String> = timed(
                sqlx::query_scalar(
                    "SELECT instance FROM cluster_instances WHERE seen_ms > \
                     (extract(epoch from clock_timestamp()) * 1000)::bigint - $1 \
                     ORDER BY instance",
                )
                .bind(i64::try_from(PRESUMED_DEAD.as_millis()).unwrap_or(i64::MAX))
                .fetch_all(&mut *conn),
            )
            .await?;
            members.send_if_modified(|m| {
                let changed = *m != live;
                if changed {
                    *m = live;
                }
                changed
            });
        }
        wait(stop, LEADER_POLL).await;
    }
}

async fn timed<T>(
    query: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(QUERY_WITHIN, query).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {QUERY_WITHIN:?}")),
    }
}

async fn wait(stop: &CancellationToken, delay: Duration) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(delay) => {}
    }
}

/// Whether this instance runs the probe `id`, among the live `members`:
/// each probe goes to one of them by a hash of its id, so that every
/// target is probed once per interval. An instance that is not among them
/// (it has not been heard yet, or lost the database) runs every probe:
/// a target probed twice is better than one not probed.
pub fn runs_probe(id: &str, members: &[String], instance: &str) -> bool {
    let Some(_) = members.iter().position(|m| m == instance) else {
        return true;
    };
    let n = members.len() as u64;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let owner = (h % n) as usize;
    members.get(owner).is_some_and(|m| m == instance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_probe_has_exactly_one_live_owner() {
        let members: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let mut counts = [0usize; 3];
        for i in 0..300 {
            let id = format!("probe-{i}");
            let owners: Vec<usize> = (0..3)
                .filter(|&k| runs_probe(&id, &members, &members[k]))
                .collect();
            assert_eq!(owners.len(), 1, "{id}");
            counts[owners[0]] += 1;
        }
        assert!(counts.iter().all(|&c| c > 50), "spread: {counts:?}");
    }

    #[test]
    fn an_instance_not_yet_heard_runs_every_probe() {
        assert!(runs_probe("x", &[], "a"));
        assert!(runs_probe("x", &["b".to_owned()], "a"));
    }
}
