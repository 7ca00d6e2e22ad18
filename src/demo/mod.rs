//! `beredskab demo`: the whole system with no external service.
//!
//! [`prepare`] starts what the daemon would otherwise find outside: an MQTT
//! broker in the process ([`broker`]) and simulated sensors ([`sensors`]):
//! real HTTP health and generator endpoints, and an MQTT client that
//! publishes the sensor topics. It rewrites the example catalogue
//! (deploy/example/beredskab.toml) to point at them, with log channels
//! instead of SMS, calls and mail and the store in a temporary folder, and
//! writes it there for the daemon to run. [`Demo::run_script`] then plays a
//! morning in the server room on real time ([`script`]): a power cut the
//! generator carries while its fuel runs low, a fire, and the recovery,
//! each step printed for the newcomer.
//!
//! Talks only to 127.0.0.1: the broker and the sensors bind there, and the
//! daemon reaches both over TCP like it would reach real ones.

pub mod broker;
pub mod operator;
pub mod script;
pub mod sensors;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use toml::{Table, Value};

use crate::config::{self, Level, LoadError};
use broker::{Broker, BrokerHandle};
use sensors::{Sensors, SensorsError};

/// The example catalogue the demo runs.
pub const EXAMPLE_CONFIG: &str = include_str!("../../deploy/example/beredskab.toml");
/// The name the example has in diagnostics.
const EXAMPLE_NAME: &str = "deploy/example/beredskab.toml";
/// Where the web UI listens unless `--listen` says otherwise.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// The config file the demo writes into its folder.
pub const CONFIG_FILE: &str = "beredskab.toml";
/// The SQLite store in the demo's folder.
pub const STORE_FILE: &str = "beredskab.db";
/// Probes poll at most this often apart, so that the two-minute script
/// shows its effects within seconds rather than minutes.
const DEMO_PROBE_EVERY: Duration = Duration::from_secs(5);
/// A probe timeout below the demo interval.
const DEMO_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The `[[channel]]` keys a log channel keeps; the rest configure gateways.
const LOG_CHANNEL_KEYS: [&str; 3] = ["id", "requires_service", "fallback"];
/// Random bytes in a demo token.
const TOKEN_BYTES: usize = 16;

/// Why the demo cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the example config cannot be rewritten: {0}")]
    Example(String),
    #[error("the demo config does not validate:\n{0}")]
    Invalid(String),
    #[error("cannot start the demo mqtt broker: {0}")]
    Broker(#[source] io::Error),
    #[error(transparent)]
    Sensors(#[from] SensorsError),
    #[error("cannot use the demo folder {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
}

/// `beredskab demo`: the daemon on a generated config in a temporary
/// folder, beside the broker and the simulated sensors, until SIGINT or
/// SIGTERM (the daemon's own signal handling); prints what to open and
/// try. The folder is removed afterwards.
pub async fn run(listen: SocketAddr) -> Result<(), DemoError> {
    let dir = make_temp_dir().map_err(|source| DemoError::Dir {
        path: std::env::temp_dir(),
        source,
    })?;
    let result = async {
        let demo = prepare(listen, &dir).await?;
        print!("{}", demo.plan());
        let stop = CancellationToken::new();
        let script = tokio::spawn(demo.run_script(stop.clone()));
        let opts = crate::daemon::RunOptions {
            config: demo.config_path.clone(),
            on_listening: None,
            signals: true,
        };
        let ran = crate::daemon::run(opts, CancellationToken::new()).await;
        stop.cancel();
        let _ = script.await;
        // After the daemon, so that its MQTT collector disconnects cleanly.
        demo.shutdown().await;
        ran.map_err(DemoError::from)
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Where the demo's parts are, for [`demo_config`].
#[derive(Debug, Clone)]
pub struct DemoAddrs {
    /// The daemon's HTTP server.
    pub listen: SocketAddr,
    /// The in-process MQTT broker.
    pub broker: SocketAddr,
    /// The simulated sensors' HTTP server.
    pub sensors: SocketAddr,
    /// The SQLite file (absolute).
    pub store: PathBuf,
}

/// An API token made for this run; the config holds only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoToken {
    /// The example's token name (`vagttelefon`, `overvaagning`).
    pub name: String,
    pub scopes: Vec<String>,
    /// The person the token acts as, if any.
    pub person: Option<String>,
    /// The bearer token itself.
    pub secret: String,
}

/// The rewritten config text and the tokens it accepts.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub text: String,
    pub tokens: Vec<DemoToken>,
}

/// The keys of the probe kinds other than http, and `kind` itself.
const NETWORK_PROBE_KEYS: [&str; 9] = [
    "kind",
    "host",
    "count",
    "max_rtt",
    "address",
    "server",
    "name",
    "record",
    "warn_before",
];

/// Rewrites the example config for the demo: MQTT to the demo broker, every
/// probe (of any kind) an HTTP probe of the simulated sensors (polled at most [`DEMO_PROBE_EVERY`]
/// apart), every channel a `log` channel with the same id, the store in the
/// demo folder, the server on `at.listen` with links to it, no secret from
/// the environment, and fresh random tokens in place of the example's.
pub fn demo_config(example: &str, at: &DemoAddrs) -> Result<DemoConfig, DemoError> {
    let bad = |what: &str| DemoError::Example(what.to_owned());
    let mut doc: Table = example
        .parse()
        .map_err(|e: toml::de::Error| DemoError::Example(e.to_string()))?;

    let server = table_entry(&mut doc, "server")?;
    server.insert("listen".into(), Value::String(at.listen.to_string()));
    server.insert(
        "public_url".into(),
        Value::String(format!("http://{}", at.listen)),
    );
    // A demo must not depend on the environment: without `secret_env` the
    // daemon has to sign ack links with a key of its own for the run.
    for key in ["secret_env", "tls_cert", "tls_key"] {
        server.remove(key);
    }

    let store = path_text(&at.store)?;
    let store_table = table_entry(&mut doc, "store")?;
    store_table.insert("url".into(), Value::String(format!("sqlite://{store}")));

    let mqtt = table_entry(&mut doc, "mqtt")?;
    mqtt.insert("url".into(), Value::String(format!("mqtt://{}", at.broker)));
    for key in ["username", "password_env"] {
        mqtt.remove(key);
    }

    for probe in tables_mut(&mut doc, "probe")? {
        let id = probe
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a [[probe]] without an id"))?
            .to_owned();
        // Network gear is simulated like the rest: its ping, TCP, DNS or
        // TLS probe becomes an HTTP probe of the simulated sensors (the
        // demo must never send traffic to the example's addresses).
        probe.retain(|key, _| !NETWORK_PROBE_KEYS.contains(&key));
        probe.insert(
            "url".into(),
            Value::String(sensors::probe_url(at.sensors, &id)),
        );
        let every = shorten(probe, "every", DEMO_PROBE_EVERY)?;
        shorten(probe, "timeout", DEMO_PROBE_TIMEOUT.min(every))?;
    }

    for channel in tables_mut(&mut doc, "channel")? {
        channel.retain(|key, _| LOG_CHANNEL_KEYS.contains(&key));
        channel.insert("kind".into(), Value::String("log".into()));
    }

    let mut tokens = Vec::new();
    for token in tables_mut(&mut doc, "token")? {
        let name = token
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a [[token]] without a name"))?
            .to_owned();
        let scopes = token
            .get("scopes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let person = token
            .get("person")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let secret = new_token();
        token.insert("sha256".into(), Value::String(sha256_hex(&secret)));
        tokens.push(DemoToken {
            name,
            scopes,
            person,
            secret,
        });
    }

    let body = toml::to_string(&doc).map_err(|e| DemoError::Example(e.to_string()))?;
    let text = format!(
        "# Written by `beredskab demo` from {EXAMPLE_NAME} (keys sorted, comments \
         dropped).\n# It lives only as long as the demo's folder; the tokens are \
         new each run.\n\n{body}"
    );
    Ok(DemoConfig { text, tokens })
}

fn table_entry<'t>(doc: &'t mut Table, key: &str) -> Result<&'t mut Table, DemoError> {
    doc.entry(key.to_owned())
        .or_insert_with(|| Value::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| DemoError::Example(format!("[{key}] is not a table")))
}

/// The tables of an array of tables (`[[key]]`); none when it is missing.
fn tables_mut<'t>(doc: &'t mut Table, key: &str) -> Result<Vec<&'t mut Table>, DemoError> {
    let Some(value) = doc.get_mut(key) else {
        return Ok(Vec::new());
    };
    let not_tables = || DemoError::Example(format!("[[{key}]] is not an array of tables"));
    value
        .as_array_mut()
        .ok_or_else(not_tables)?
        .iter_mut()
        .map(|v| v.as_table_mut().ok_or_else(not_tables))
        .collect()
}

/// Sets a duration key to at most `max`; returns the value it now has
/// (`max` when it was absent).
fn shorten(table: &mut Table, key: &str, max: Duration) -> Result<Duration, DemoError> {
    let current = match table.get(key).and_then(Value::as_str) {
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| DemoError::Example(format!("{key} = {text:?}: {e}")))?,
        None => max,
    };
    let value = current.min(max);
    table.insert(
        key.into(),
        Value::String(humantime::format_duration(value).to_string()),
    );
    Ok(value)
}

fn path_text(path: &Path) -> Result<&str, DemoError> {
    path.to_str().ok_or_else(|| DemoError::Dir {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "the path is not UTF-8"),
    })
}

/// A random bearer token. fastrand is not a cryptographic generator; the
/// tokens guard a demo on loopback for one run, not production data.
fn new_token() -> String {
    let bytes: Vec<u8> = (0..TOKEN_BYTES).map(|_| fastrand::u8(..)).collect();
    format!("demo-{}", hex::encode(bytes))
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Makes a fresh folder for one demo run under the system's temp folder.
/// The caller removes it when it is no longer wanted.
pub fn make_temp_dir() -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "beredskab-demo-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A prepared demo: broker and sensors running, the config written.
#[derive(Debug)]
pub struct Demo {
    /// The config file for the daemon (`beredskab::daemon::run`).
    pub config_path: PathBuf,
    /// The demo's folder (config and store).
    pub dir: PathBuf,
    /// Where the daemon's HTTP server is told to listen.
    pub listen: SocketAddr,
    pub broker_addr: SocketAddr,
    pub sensors_addr: SocketAddr,
    /// The API tokens of this run.
    pub tokens: Vec<DemoToken>,
    broker: BrokerHandle,
    sensors: Sensors,
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// Starts the demo's broker and sensors on 127.0.0.1 and writes the demo
/// config into `dir` (which must exist), for a daemon that will listen on
/// `listen`. Call [`Demo::run_script`] once the daemon runs, and
/// [`Demo::shutdown`] after it has stopped.
pub async fn prepare(listen: SocketAddr, dir: &Path) -> Result<Demo, DemoError> {
    let dir_error = |source| DemoError::Dir {
        path: dir.to_owned(),
        source,
    };
    let dir = std::path::absolute(dir).map_err(dir_error)?;
    let loopback = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0);
    let broker = Broker::bind(loopback).await.map_err(DemoError::Broker)?;
    let sensors_listener = sensors::bind().await?;
    let addrs = DemoAddrs {
        listen,
        broker: broker.local_addr(),
        sensors: sensors_listener.local_addr().map_err(SensorsError::Bind)?,
        store: dir.join(STORE_FILE),
    };
    let demo = demo_config(EXAMPLE_CONFIG, &addrs)?;
    let config_path = dir.join(CONFIG_FILE);
    let loaded =
        config::load_str(&config_path.display().to_string(), &demo.text).map_err(invalid)?;
    std::fs::write(&config_path, &demo.text).map_err(|source| DemoError::Dir {
        path: config_path.clone(),
        source,
    })?;

    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let handle = broker.handle();
    tasks.spawn(broker.run(stop.clone()));
    let sensors = Sensors::start(
        sensors_listener,
        &loaded.config,
        addrs.broker,
        &tasks,
        stop.clone(),
    )?;
    Ok(Demo {
        config_path,
        dir,
        listen,
        broker_addr: addrs.broker,
        sensors_addr: addrs.sensors,
        tokens: demo.tokens,
        broker: handle,
        sensors,
        tasks,
        stop,
    })
}

fn invalid(error: LoadError) -> DemoError {
    match error {
        LoadError::Invalid(diagnostics) => DemoError::Invalid(
            diagnostics
                .iter()
                .filter(|d| d.level == Level::Error)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        other => DemoError::Invalid(other.to_string()),
    }
}

impl Demo {
    /// Plays the script on real time, printing each step to stdout, then
    /// keeps the sensors' heartbeats going until `shutdown` is cancelled.
    /// The clock starts once the daemon has subscribed to the sensor topics
    /// (or after [`script::SUBSCRIBER_WAIT`]), so that no scripted message
    /// is lost. The future owns what it needs: `.await` it next to the
    /// daemon or hand it to `tokio::spawn`.
    pub fn run_script(
        &self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let sensors = self.sensors.clone();
        let broker = self.broker.clone();
        let operator = self
            .token("ack")
            .map(|t| operator::Operator::new(format!("http://{}", self.listen), t.secret.clone()));
        async move {
            script::play(
                &sensors,
                &broker,
                operator.as_ref(),
                script::Pace::REAL_TIME,
                &shutdown,
                &mut script::print_line,
            )
            .await;
        }
    }

    /// What to print at start: what to open and what to try.
    pub fn plan(&self) -> DemoPlan {
        DemoPlan::new(self)
    }

    /// The first token with `scope`, if the config has one.
    pub fn token(&self, scope: &str) -> Option<&DemoToken> {
        self.tokens
            .iter()
            .find(|t| t.scopes.iter().any(|s| s == scope))
    }

    /// Stops the broker and the sensors and waits for them. Stop the daemon
    /// first: its MQTT collector then leaves the broker cleanly.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // A demo dropped without `shutdown` must not leave servers behind.
        self.stop.cancel();
    }
}

/// One thing to open, use or run, with what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub what: String,
    pub how: String,
}

impl Hint {
    fn new(what: impl Into<String>, how: impl Into<String>) -> Hint {
        Hint {
            what: what.into(),
            how: how.into(),
        }
    }
}

/// What `beredskab demo` prints at start (SPEC §1: "what to open and what
/// to try"), limited to what SPEC §5 promises.
#[derive(Debug, Clone)]
pub struct DemoPlan {
    pub dir: PathBuf,
    pub broker: String,
    pub sensors: String,
    /// Pages and endpoints to open.
    pub open: Vec<Hint>,
    /// The run's API tokens.
    pub tokens: Vec<Hint>,
    /// Commands to try.
    pub commands: Vec<Hint>,
    pub notes: Vec<String>,
}

impl DemoPlan {
    fn new(demo: &Demo) -> DemoPlan {
        let base = format!("http://{}", demo.listen);
        let read = demo.token("read").map_or("TOKEN", |t| t.secret.as_str());
        let ingest = demo.token("ingest").map_or("TOKEN", |t| t.secret.as_str());
        let post = |token: &str, path: &str, body: &str| {
            format!(
                "curl -s -X POST -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d '{body}' {base}{path}"
            )
        };
        let ack = demo.token("ack").map_or("TOKEN", |t| t.secret.as_str());
        let open = vec![
            Hint::new(
                "the on-call web UI: this link fills in the login form for the on-call phone's token",
                format!("{base}/login?token={ack}"),
            ),
            Hint::new(
                "the public status page: every critical service, as the whole organisation sees it",
                format!("{base}/status"),
            ),
            Hint::new(
                "is everything connected? (store, engine, MQTT)",
                format!("{base}/readyz"),
            ),
            Hint::new(
                "the incidents as JSON (needs the token, see below)",
                format!("{base}/api/v1/incidents"),
            ),
            Hint::new(
                "the API described (OpenAPI 3.1)",
                format!("{base}/api/v1/openapi.json"),
            ),
            Hint::new("Prometheus metrics", format!("{base}/metrics")),
        ];
        let tokens = demo
            .tokens
            .iter()
            .map(|t| {
                let person = t
                    .person
                    .as_ref()
                    .map(|p| format!(", acts as {p}"))
                    .unwrap_or_default();
                Hint::new(
                    format!("{} ({}{person})", t.name, t.scopes.join(", ")),
                    t.secret.clone(),
                )
            })
            .collect();
        let commands = vec![
            Hint::new(
                "list the open incidents",
                format!(
                    "curl -s -H 'Authorization: Bearer {read}' '{base}/api/v1/incidents?state=open'"
                ),
            ),
            Hint::new(
                "after t+40s: incident 2 (the fire) in full, with its timeline",
                format!("curl -s -H 'Authorization: Bearer {read}' {base}/api/v1/incidents/2"),
            ),
            Hint::new(
                "acknowledge incident 1 (the power cut) with a comment",
                post(
                    ack,
                    "/api/v1/incidents/1/ack",
                    r#"{"note":"Jeg kigger på det"}"#,
                ),
            ),
            Hint::new(
                "every service with its state and open incident",
                format!("curl -s -H 'Authorization: Bearer {read}' {base}/api/v1/services"),
            ),
            Hint::new(
                "the vendor reports that the case system is down, back in 2 hours",
                post(
                    ingest,
                    "/api/v1/reports",
                    r#"{"service":"nexus","source_type":"vendor","message":"databasen er nede","expected":"2h"}"#,
                ),
            ),
            Hint::new(
                "push an alarm of your own",
                post(
                    ingest,
                    "/api/v1/alarms",
                    r#"{"component":"srv-web","kind":"server","state":"firing","message":"webserveren svarer ikke"}"#,
                ),
            ),
        ];
        let notes = vec![
            "Notifications are written to the log (stderr) instead of SMS, calls and mail.".into(),
            "The script below runs on real time; at t+1m the person on call raises the fire to \
             crisis level through the API, as the web UI's button does. Ctrl-C stops the demo."
                .into(),
        ];
        DemoPlan {
            dir: demo.dir.clone(),
            broker: format!("mqtt://{}", demo.broker_addr),
            sensors: format!("http://{}/probe/ID", demo.sensors_addr),
            open,
            tokens,
            commands,
            notes,
        }
    }
}

impl fmt::Display for DemoPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "beredskab demo: Eksempel Kommune's IT, with simulated sensors"
        )?;
        writeln!(f, "  folder   {}", self.dir.display())?;
        writeln!(f, "  broker   {} (in this process)", self.broker)?;
        writeln!(f, "  sensors  {}", self.sensors)?;
        writeln!(f)?;
        writeln!(f, "Open:")?;
        let width = self.open.iter().map(|h| h.how.len()).max().unwrap_or(0);
        for h in &self.open {
            writeln!(f, "  {:<width$}  {}", h.how, h.what)?;
        }
        writeln!(f)?;
        writeln!(f, "Tokens for this run:")?;
        for h in &self.tokens {
            writeln!(f, "  {}: {}", h.what, h.how)?;
        }
        writeln!(f)?;
        writeln!(f, "Try:")?;
        for h in &self.commands {
            writeln!(f, "  # {}", h.what)?;
            writeln!(f, "  {}", h.how)?;
        }
        writeln!(f)?;
        for note in &self.notes {
            writeln!(f, "{note}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
