//! The daemon (`beredskab run`): wires the collectors, the core, the
//! notifier and the HTTP server together; shutdown and reload.
//!
//! Start-up validates the config before anything is opened or bound, opens
//! the store and rebuilds the engine from it, then starts the tasks:
//! - the core ([`core`]), the one task that owns the engine;
//! - the MQTT collector and the probe collector, feeding the core;
//! - the notifier, delivering the outbox;
//! - the HTTP API.
//!
//! SIGTERM and SIGINT stop intake first (collectors and HTTP), then let the
//! core commit what it has taken in, with a snapshot, then the notifier.
//! A dead task is a dead process: if the core, the notifier, the HTTP
//! server or a collector ends on its own (a panic, a store that refuses
//! every commit), the daemon logs why and returns an error at once, so
//! that the process exits non-zero, the service manager restarts it, and
//! the engine is rebuilt from the snapshot and the log.
//! SIGHUP reloads the config: an invalid one is logged and refused and the
//! old one keeps running; a valid one is carried into the core, and the
//! collectors whose settings changed are restarted, and the HTTPS
//! certificate and key are read again for the connections that follow (a
//! pair that does not read or match refuses the reload like an invalid
//! config).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::api::{self, ApiConfig, ApiState};
use crate::catalogue::Catalogue;
use crate::collect::mqtt::{MqttCollector, MqttInput};
use crate::collect::probe::{ProbeCollector, ProbeReport};
use crate::config::{self, Config, LoadError};
use crate::core::{self, Core, CoreHandle, Inbox, Status};
use crate::links::LinkSettings;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::store::SqliteStore;
use crate::tls::{self, ServerCert};

/// Capacity of each channel into the core.
const CHANNEL_CAPACITY: usize = 1024;
/// How long stopping intake (HTTP requests in flight, the MQTT DISCONNECT)
/// may take before the core is stopped anyway.
const INTAKE_GRACE: Duration = Duration::from_secs(5);
/// How long the core may take to commit its last batch.
const CORE_GRACE: Duration = Duration::from_secs(15);

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("core: {0}")]
    Core(#[from] core::CoreError),
    #[error("mqtt: {0}")]
    Mqtt(#[from] crate::collect::mqtt::MqttError),
    #[error("probes: {0}")]
    Probe(#[from] crate::collect::probe::ProbeError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("http server: {0}")]
    Http(std::io::Error),
    #[error("signals: {0}")]
    Signal(std::io::Error),
    #[error("the {task} stopped unexpectedly: {why}")]
    TaskEnded { task: &'static str, why: String },
}

/// Why a task that should run until shutdown ended.
fn why_ended<T: std::fmt::Debug>(result: Result<T, tokio::task::JoinError>) -> String {
    match result {
        Ok(v) => format!("it returned {v:?}"),
        Err(e) if e.is_panic() => {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            format!("panicked: {msg}")
        }
        Err(e) => e.to_string(),
    }
}

/// Waits for a collector's task to end, or forever when there is none.
async fn collector_ended(r: &mut Option<Running>) -> Result<(), tokio::task::JoinError> {
    match r {
        Some(r) => (&mut r.task).await,
        None => std::future::pending().await,
    }
}

/// The settings a reload replaces, sent to the parts that read them:
/// each reads the newest value when it needs one.
struct Settings {
    catalogue: watch::Sender<Arc<Catalogue>>,
    links: watch::Sender<Arc<LinkSettings>>,
    api: watch::Sender<Arc<ApiConfig>>,
    /// Whether the listener serves HTTPS: fixed at start, whatever a
    /// reloaded config says, since the listener is not replaced.
    tls: bool,
}

impl Settings {
    fn new(config: &Config, catalogue: Arc<Catalogue>, tls: bool) -> Settings {
        let links = Arc::new(LinkSettings::from_config(config, |var| {
            std::env::var(var).ok()
        }));
        let mut api = ApiConfig::new(config, catalogue.clone(), links.clone());
        api.tls = tls;
        Settings {
            catalogue: watch::channel(catalogue).0,
            links: watch::channel(links).0,
            api: watch::channel(Arc::new(api)).0,
            tls,
        }
    }

    fn replace(&self, config: &Config, catalogue: Arc<Catalogue>) {
        // A reload keeps the running key when the new config names none, so
        // links already sent keep working.
        let mut links = LinkSettings::from_config(config, |var| std::env::var(var).ok());
        if config.server.secret_env.is_none() {
            links.key = self.links.borrow().key.clone();
        }
        let links = Arc::new(links);
        let mut api = ApiConfig::new(config, catalogue.clone(), links.clone());
        api.tls = self.tls;
        self.catalogue.send_replace(catalogue);
        self.links.send_replace(links);
        self.api.send_replace(Arc::new(api));
    }
}

/// How to run.
#[derive(Debug)]
pub struct RunOptions {
    pub config: PathBuf,
    /// Told the HTTP server's address once it listens.
    pub on_listening: Option<oneshot::Sender<SocketAddr>>,
    /// Handle SIGTERM, SIGINT and SIGHUP (off for an embedded daemon whose
    /// owner handles them).
    pub signals: bool,
}

/// A loaded and resolved config.
struct Loaded {
    config: Config,
    catalogue: Arc<Catalogue>,
}

fn load(path: &Path) -> Result<Loaded, DaemonError> {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(LoadError::Invalid(diagnostics)) => {
            let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            return Err(DaemonError::Config(lines.join("\n")));
        }
        Err(e) => return Err(DaemonError::Config(e.to_string())),
    };
    for w in &loaded.warnings {
        warn!("{w}");
    }
    let catalogue = Catalogue::build(&loaded.config)
        .map_err(|e| DaemonError::Config(format!("{}: {e}", path.display())))?;
    Ok(Loaded {
        config: loaded.config,
        catalogue: Arc::new(catalogue),
    })
}

/// The SQLite file a `[store] url` names, relative to the config's folder.
pub fn sqlite_path(config_path: &Path, url: &str) -> Result<PathBuf, DaemonError> {
    let Some(file) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Err(DaemonError::Config(format!(
            "[store] url {url:?}: only sqlite:// is supported by this build (PostgreSQL is planned)"
        )));
    };
    let file = Path::new(file);
    if file.as_os_str().is_empty() {
        return Err(DaemonError::Config("[store] url names no file".into()));
    }
    Ok(if file.is_absolute() {
        file.to_path_buf()
    } else {
        config_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(file)
    })
}

/// A running collector and how to stop it.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// Its settings, to tell whether a reload changed them.
    settings: String,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        if tokio::time::timeout(INTAKE_GRACE, self.task).await.is_err() {
            warn!("a collector did not stop within the grace period");
        }
    }
}

fn start_mqtt(
    config: &Config,
    tx: &mpsc::Sender<MqttInput>,
    parent: &CancellationToken,
) -> Result<Option<Running>, DaemonError> {
    let Some(mqtt) = &config.mqtt else {
        return Ok(None);
    };
    let password = match &mqtt.password_env {
        None => None,
        Some(var) => Some(std::env::var(var).map_err(|_| {
            DaemonError::Config(format!(
                "[mqtt] password_env: the environment variable {var} is not set"
            ))
        })?),
    };
    let collector = MqttCollector::new(mqtt, password)?;
    let stop = parent.child_token();
    let task = tokio::spawn(collector.run(tx.clone(), stop.clone()));
    Ok(Some(Running {
        stop,
        task,
        settings: format!("{mqtt:?}"),
    }))
}

fn start_probes(
    config: &Config,
    tx: &mpsc::Sender<ProbeReport>,
    parent: &CancellationToken,
) -> Result<Option<Running>, DaemonError> {
    if config.probes.is_empty() {
        return Ok(None);
    }
    let collector = ProbeCollector::new(&config.probes)?;
    let stop = parent.child_token();
    let task = tokio::spawn(collector.run(tx.clone(), stop.clone()));
    Ok(Some(Running {
        stop,
        task,
        settings: format!("{:?}", config.probes),
    }))
}

/// Runs the daemon until `shutdown` is cancelled (or, with `signals`, until
/// SIGTERM or SIGINT).
pub async fn run(opts: RunOptions, shutdown: CancellationToken) -> Result<(), DaemonError> {
    crate::tls::install_provider();
    let Loaded { config, catalogue } = load(&opts.config)?;
    let db = sqlite_path(&opts.config, &config.store.url)?;
    let listen = config.server.listen.clone();

    let store = SqliteStore::open(&db).await?;
    info!(store = %db.display(), "store open");
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(Status::default());
    let outbox = Arc::new(Notify::new());
    let core = Core::start(
        catalogue.clone(),
        store.clone(),
        metrics.clone(),
        status.clone(),
        outbox.clone(),
    )
    .await?;
    let clock = core.clock();
    // Read again after the check in `load`: the files may have changed.
    let server_cert = match config.server.tls_files(&opts.config) {
        None => None,
        Some((cert, key)) => {
            let pair = tls::load_server_key(&cert, &key)
                .map_err(|e| DaemonError::Config(format!("[server] cannot serve HTTPS: {e}")))?;
            Some(ServerCert::new(pair))
        }
    };
    let tls_config = match &server_cert {
        None => None,
        Some(c) => Some(
            c.server_config()
                .map_err(|e| DaemonError::Config(format!("[server] cannot serve HTTPS: {e}")))?,
        ),
    };
    let settings = Settings::new(&config, catalogue.clone(), server_cert.is_some());

    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: listen.clone(),
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|source| DaemonError::Listen {
            addr: listen.clone(),
            source,
        })?;

    let (core_handle, cmd_rx) = CoreHandle::channel(CHANNEL_CAPACITY);
    let (mqtt_tx, mqtt_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (probe_tx, probe_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let intake = CancellationToken::new();
    let core_stop = CancellationToken::new();
    let notifier_stop = CancellationToken::new();

    if config.mqtt.is_some() {
        status.mqtt.store(Status::MQTT_DOWN, Ordering::Relaxed);
        metrics.set_mqtt_connected(false);
    }
    let mut core_task = tokio::spawn(core.run(
        Inbox {
            commands: cmd_rx,
            mqtt: mqtt_rx,
            probes: probe_rx,
        },
        core_stop.clone(),
    ));
    let mut mqtt = start_mqtt(&config, &mqtt_tx, &intake)?;
    let mut probes = start_probes(&config, &probe_tx, &intake)?;
    let mut notifier_task = tokio::spawn(
        Notifier {
            store: store.clone(),
            catalogue: settings.catalogue.subscribe(),
            links: settings.links.subscribe(),
            wake: outbox.clone(),
            metrics: metrics.clone(),
            clock,
        }
        .run(notifier_stop.clone()),
    );

    let app = crate::web::app(ApiState {
        store: store.clone(),
        core: core_handle.clone(),
        metrics: metrics.clone(),
        status: status.clone(),
        config: settings.api.subscribe(),
    });
    let mut http_task = tokio::spawn(api::server::serve(
        listener,
        app,
        tls_config,
        intake.clone(),
    ));
    info!(listen = %local, https = server_cert.is_some(), "beredskab running");
    if let Some(tx) = opts.on_listening {
        let _ = tx.send(local);
    }

    let mut signals = if opts.signals {
        Some(Signals::new().map_err(DaemonError::Signal)?)
    } else {
        None
    };
    let mut current = config;
    loop {
        let ended = tokio::select! {
            () = shutdown.cancelled() => Ok(SignalEvent::Stop),
            e = async {
                match &mut signals {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            } => Ok(e),
            r = &mut core_task => Err(("core", why_ended(r))),
            r = &mut notifier_task => Err(("notifier", why_ended(r))),
            r = &mut http_task => Err(("HTTP server", why_ended(r))),
            r = collector_ended(&mut mqtt) => Err(("MQTT collector", why_ended(r))),
            r = collector_ended(&mut probes) => Err(("probe collector", why_ended(r))),
        };
        let event = match ended {
            Ok(event) => event,
            Err((task, why)) => {
                error!(task, why = %why, "an essential task ended; exiting so that the \
                    service manager restarts beredskab and it rebuilds from the store");
                // The others are left to the runtime's shutdown: what was
                // not committed was not acknowledged either.
                intake.cancel();
                core_stop.cancel();
                notifier_stop.cancel();
                return Err(DaemonError::TaskEnded { task, why });
            }
        };
        match event {
            SignalEvent::Stop => break,
            SignalEvent::Reload => {
                info!(config = %opts.config.display(), "SIGHUP: reloading the config");
                let next = match load(&opts.config) {
                    Ok(l) => l,
                    Err(e) => {
                        error!("reload refused, the running config stays:\n{e}");
                        continue;
                    }
                };
                if next.config.server.listen != current.server.listen
                    || next.config.store.url != current.store.url
                {
                    warn!("[server] listen and [store] url take effect only after a restart");
                }
                let next_pair = match (&server_cert, next.config.server.tls_files(&opts.config)) {
                    (Some(_), Some((cert, key))) => match tls::load_server_key(&cert, &key) {
                        Ok(pair) => Some(pair),
                        Err(e) => {
                            error!("reload refused, the running config and certificate stay:\n{e}");
                            continue;
                        }
                    },
                    (None, None) => None,
                    (Some(_), None) | (None, Some(_)) => {
                        warn!(
                            "turning HTTPS on or off ([server] tls_cert, tls_key) takes effect \
                             only after a restart"
                        );
                        None
                    }
                };
                if core_handle.reload(next.catalogue.clone()).await.is_err() {
                    break;
                }
                settings.replace(&next.config, next.catalogue.clone());
                if let (Some(cert), Some(pair)) = (&server_cert, next_pair) {
                    cert.replace(pair);
                    info!("TLS certificate and key read again; new connections use them");
                }
                let mqtt_settings = next.config.mqtt.as_ref().map(|m| format!("{m:?}"));
                if mqtt.as_ref().map(|r| r.settings.clone()) != mqtt_settings {
                    if let Some(old) = mqtt.take() {
                        old.stop().await;
                    }
                    // Before the new collector starts: its first ConnAck
                    // sets it up again.
                    let state = if next.config.mqtt.is_some() {
                        Status::MQTT_DOWN
                    } else {
                        Status::MQTT_NONE
                    };
                    status.mqtt.store(state, Ordering::Relaxed);
                    match start_mqtt(&next.config, &mqtt_tx, &intake) {
                        Ok(m) => mqtt = m,
                        Err(e) => error!(error = %e, "mqtt collector not restarted"),
                    }
                }
                let probe_settings = format!("{:?}", next.config.probes);
                if probes.as_ref().map(|r| r.settings.as_str()).unwrap_or("[]") != probe_settings {
                    if let Some(old) = probes.take() {
                        old.stop().await;
                    }
                    match start_probes(&next.config, &probe_tx, &intake) {
                        Ok(p) => probes = p,
                        Err(e) => error!(error = %e, "probe collector not restarted"),
                    }
                }
                current = next.config;
                info!("config reloaded");
            }
        }
    }

    info!("stopping: no new input; saving state");
    intake.cancel();
    for r in [mqtt.take(), probes.take()].into_iter().flatten() {
        r.stop().await;
    }
    if tokio::time::timeout(INTAKE_GRACE, http_task).await.is_err() {
        warn!("http requests still running at shutdown");
    }
    core_stop.cancel();
    if tokio::time::timeout(CORE_GRACE, core_task).await.is_err() {
        error!("the core did not finish its last commit in time");
    }
    notifier_stop.cancel();
    let _ = tokio::time::timeout(INTAKE_GRACE, notifier_task).await;
    store.close().await;
    info!("stopped");
    Ok(())
}

enum SignalEvent {
    Stop,
    Reload,
}

/// SIGTERM, SIGINT and SIGHUP.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> SignalEvent {
        tokio::select! {
            _ = self.term.recv() => { info!("SIGTERM"); SignalEvent::Stop }
            _ = self.int.recv() => { info!("SIGINT"); SignalEvent::Stop }
            _ = self.hup.recv() => SignalEvent::Reload,
        }
    }
}
