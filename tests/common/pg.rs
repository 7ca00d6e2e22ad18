//! A throwaway PostgreSQL database per test: [`TestDb::create`] makes one
//! with a unique name on the server of `BEREDSKAB_TEST_PG`, and dropping
//! the [`TestDb`] drops it (with FORCE, so connections a test leaked or a
//! killed child left do not keep it). A missing server fails the test,
//! never skips it.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// The server and database the test databases are made from.
pub const PG_VAR: &str = "BEREDSKAB_TEST_PG";
pub const PG_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database of one test, dropped on drop.
pub struct TestDb {
    /// Connects to the test's database.
    pub url: String,
    /// The server's maintenance database, from which this one is dropped.
    admin: String,
    name: String,
}

/// The URL of the server the tests use.
pub fn admin_url() -> String {
    std::env::var(PG_VAR).unwrap_or_else(|_| PG_DEFAULT.to_owned())
}

impl TestDb {
    /// Creates an empty database with a name no other test uses.
    pub async fn create() -> TestDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let admin = admin_url();
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "cannot connect to PostgreSQL at {admin} ({e}); the store tests need one: \
                 start it (`.ci/run` installs and starts Debian's, or \
                 `pg_ctlcluster 15 main start`), allow user postgres from 127.0.0.1 \
                 without a password, or set {PG_VAR} to a server's URL"
            )
        });
        let name = format!(
            "beredskab_t_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        );
        // The name is ours: digits, letters and underscores.
        conn.execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .unwrap_or_else(|e| panic!("create database {name} at {admin}: {e}"));
        let _ = conn.close().await;
        let mut url = url::Url::parse(&admin)
            .unwrap_or_else(|e| panic!("{PG_VAR}={admin} is not a URL: {e}"));
        url.set_path(&name);
        TestDb {
            url: url.to_string(),
            admin,
            name,
        }
    }
}

impl Drop for TestDb {
    /// Drop is sync and may run inside a runtime: the database is dropped
    /// from a thread of its own with a runtime of its own.
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let mut conn = PgConnection::connect(&admin)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.execute(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .await
                .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("dropping test database {} panicked", self.name),
        }
    }
}
