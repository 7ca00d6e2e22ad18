//! The board (every service's state, for the status page and
//! `/api/v1/services`) on every instance: the leader's core makes it, this
//! task writes it to the database, and followers read it from there.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::core::{Board, Status};

/// How often a follower reads the board, and the longest the leader waits
/// to write a new one.
const EVERY: Duration = Duration::from_millis(500);
/// The `meta` row that holds it.
const META_BOARD: &str = "cluster_board";

/// Writes the board while this instance leads, reads it while it
/// follows, until `stop`.
pub async fn share(pool: PgPool, status: Arc<Status>, stop: CancellationToken) {
    let mut board = status.board.subscribe();
    let mut written = 0u64;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
        if status.role.load(Ordering::Relaxed) == Status::LEADER {
            if !board.has_changed().unwrap_or(false) && written != 0 {
                continue;
            }
            let now = board.borrow_and_update().clone();
            if now.version == written {
                continue;
            }
            let Ok(text) = serde_json::to_string(&*now) else {
                continue;
            };
            match sqlx::query(
                "INSERT INTO meta (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )
            .bind(META_BOARD)
            .bind(text)
            .execute(&pool)
            .await
            {
                Ok(_) => written = now.version,
                Err(e) => warn!(error = %e, "cannot share the board"),
            }
        } else {
            written = 0;
            let row: Result<Option<String>, _> =
                sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
                    .bind(META_BOARD)
                    .fetch_optional(&pool)
                    .await;
            let Ok(Some(text)) = row else { continue };
            let Ok(read) = serde_json::from_str::<Board>(&text) else {
                continue;
            };
            if read.version != status.board.borrow().version {
                status.board.send_replace(Arc::new(read));
            }
        }
    }
}
