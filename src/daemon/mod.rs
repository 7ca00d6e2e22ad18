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
use crate::cluster::{self, Cluster};
use crate::collect::mqtt::{MqttCollector, MqttInput};
use crate::collect::probe::{ProbeCollector, ProbeReport};
use crate::config::{self, Config, LoadError};
use crate::core::{self, Core, CoreHandle, Inbox, Status};
use crate::links::LinkSettings;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::store::{PgStore, SqliteStore, Store};
use crate::tls::{self, ServerCert};

/// Capacity of each channel into the core.
const CHANNEL_CAPACITY: usize = 1024;
/// Commits whose new notifications may wait for the notifier in memory;
/// beyond them it reads the rest from the store.
const FRESH_CAPACITY: usize = 64;
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
            "[store] url {url:?}: this command reads only sqlite:// stores"
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
    /// Its settings' [`fingerprint`], to tell whether a reload changed
    /// them.
    settings: u64,
}

/// A fingerprint of settings, from their Debug text, without holding the
/// text (for 10,000 probes it is megabytes).
fn fingerprint<T: std::fmt::Debug + ?Sized>(settings: &T) -> u64 {
    use std::fmt::Write as _;
    use std::hash::Hasher as _;
    struct Hashing(std::collections::hash_map::DefaultHasher);
    impl std::fmt::Write for Hashing {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }
    let mut hashing = Hashing(std::collections::hash_map::DefaultHasher::new());
    let _ = write!(hashing, "{settings:?}");
    hashing.0.finish()
}

/// The fingerprint of the probes a running collector has, or of none.
fn probes_running(probes: Option<&Running>) -> u64 {
    probes.map_or_else(
        || fingerprint::<[crate::config::ProbeConfig]>(&[]),
        |r| r.settings,
    )
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
        settings: fingerprint(mqtt),
    }))
}

/// Says, in a cluster, which share of the probes this instance runs now.
fn note_share(cluster: Option<&Cluster>, running: &Config, all: &Config) {
    if let Some(c) = cluster
        && !all.probes.is_empty()
    {
        info!(
            probes = running.probes.len(),
            of = all.probes.len(),
            live_instances = c.members.borrow().len(),
            "this instance's share of the probes"
        );
    }
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
        settings: fingerprint(config.probes.as_slice()),
    }))
}

/// Runs the daemon until `shutdown` is cancelled (or, with `signals`, until
/// SIGTERM or SIGINT).
pub async fn run(opts: RunOptions, shutdown: CancellationToken) -> Result<(), DaemonError> {
    crate::tls::install_provider();
    let loaded = load(&opts.config)?;
    let url = loaded.config.store.url.clone();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let instance = cluster::instance_name();
        let store = PgStore::connect(&url)
            .await?
            .with_instance(instance.clone());
        info!(
            instance,
            "store open: PostgreSQL, as one instance of a cluster"
        );
        let leadership = CancellationToken::new();
        let (joined, leading) = cluster::join(&url, instance, leadership.clone())
            .await
            .map_err(|e| DaemonError::Store(crate::store::StoreError::Db(e)))?;
        let result = serve(opts, shutdown, loaded, store.clone(), Some(joined)).await;
        // The leadership task gives the lock back and says this instance
        // no longer lives on its way out.
        leadership.cancel();
        let _ = tokio::time::timeout(INTAKE_GRACE, leading).await;
        store.close().await;
        return result;
    }
    let db = sqlite_path(&opts.config, &url)?;
    let store = SqliteStore::open(&db).await?;
    info!(store = %db.display(), "store open");
    let result = serve(opts, shutdown, loaded, store.clone(), None).await;
    store.close().await;
    result
}

/// What runs the engine's side of this instance: the core (alone, or
/// leading a cluster) or, on a follower, the forwarder to the shared
/// inbox. Either holds the inbox while it runs.
struct Side {
    task: JoinHandle<Result<(), core::CoreError>>,
    stop: CancellationToken,
    /// On a leader: the reader of the shared inbox.
    reader: Option<(JoinHandle<()>, CancellationToken)>,
    leads: bool,
    /// The clock outbox times are written in: the core's (never behind
    /// the times it restored), or the wall clock's on a follower.
    clock: crate::clock::Clock,
}

impl Side {
    /// Stops it and waits for its last commit.
    async fn stop(self) {
        if let Some((task, stop)) = self.reader {
            stop.cancel();
            let _ = tokio::time::timeout(INTAKE_GRACE, task).await;
        }
        self.stop.cancel();
        if tokio::time::timeout(CORE_GRACE, self.task).await.is_err() {
            error!("the core did not finish its last commit in time");
        }
    }
}

/// What starting a side needs.
struct Parts<S: Store + Clone + 'static> {
    store: S,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    outbox: Arc<Notify>,
    inbox: Arc<tokio::sync::Mutex<Inbox>>,
    forwarded: mpsc::Sender<core::Forwarded>,
    /// To the notifier: what each commit queued.
    fresh: mpsc::Sender<Vec<crate::store::OutboxRow>>,
}

impl<S: Store + Clone + 'static> Parts<S> {
    /// Rebuilds the engine from the store and starts the core on it,
    /// leading `cluster` when there is one.
    async fn core(
        &self,
        catalogue: Arc<Catalogue>,
        cluster: Option<&Cluster>,
    ) -> Result<Side, DaemonError> {
        let mut core = Core::start(
            catalogue,
            self.store.clone(),
            self.metrics.clone(),
            self.status.clone(),
            self.outbox.clone(),
        )
        .await?;
        core = core.handing_to(self.fresh.clone());
        if let Some(c) = cluster {
            core = core.leading(c.instance.clone());
        }
        let stop = CancellationToken::new();
        let clock = core.clock();
        let inbox = self.inbox.clone().lock_owned().await;
        let task = tokio::spawn(core.run(inbox, stop.clone()));
        let reader = cluster.map(|c| {
            let stop = CancellationToken::new();
            let task = tokio::spawn(
                cluster::forward::InboxReader {
                    pool: c.pool.clone(),
                    core: self.forwarded.clone(),
                }
                .run(stop.clone()),
            );
            (task, stop)
        });
        Ok(Side {
            task,
            stop,
            reader,
            leads: true,
            clock,
        })
    }

    /// Starts the forwarder of a follower.
    async fn forwarder(&self, cluster: &Cluster) -> Side {
        let stop = CancellationToken::new();
        let inbox = self.inbox.clone().lock_owned().await;
        let forwarder = cluster::forward::Forwarder {
            pool: cluster.pool.clone(),
            instance: cluster.instance.clone(),
            status: self.status.clone(),
            metrics: self.metrics.clone(),
        };
        let run = forwarder.run(inbox, stop.clone());
        let task = tokio::spawn(async move {
            run.await;
            Ok(())
        });
        Side {
            task,
            stop,
            reader: None,
            leads: false,
            clock: crate::clock::Clock::start(crate::core::wall_now()),
        }
    }
}

/// The config as this instance runs it: in a cluster, its own MQTT
/// session (named after the instance) and its share of the probes.
fn as_instance(config: &Config, cluster: Option<&Cluster>) -> Config {
    let mut config = config.clone();
    if let Some(c) = cluster {
        if let Some(m) = &mut config.mqtt {
            m.client_id = format!("{}-{}", m.client_id, c.instance);
        }
        let members = c.members.borrow().clone();
        config
            .probes
            .retain(|p| cluster::runs_probe(&p.id, &members, &c.instance));
    }
    config
}

/// The leadership task's next news: a new role or new live instances
/// (never, without a cluster or once the task has ended).
async fn cluster_news(cluster: &mut Option<Cluster>) -> SignalEvent {
    let Some(c) = cluster else {
        return std::future::pending().await;
    };
    tokio::select! {
        r = c.role.changed() => match r {
            Ok(()) => SignalEvent::Role(*c.role.borrow_and_update()),
            Err(_) => std::future::pending().await,
        },
        r = c.members.changed() => match r {
            Ok(()) => SignalEvent::Members,
            Err(_) => std::future::pending().await,
        },
    }
}

async fn serve<S: Store + Clone + 'static>(
    opts: RunOptions,
    shutdown: CancellationToken,
    loaded: Loaded,
    store: S,
    mut cluster: Option<Cluster>,
) -> Result<(), DaemonError> {
    let Loaded { config, catalogue } = loaded;
    let listen = config.server.listen.clone();
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(Status::default());
    let outbox = Arc::new(Notify::new());
    let (cmd_handle, cmd_rx) = CoreHandle::channel(CHANNEL_CAPACITY);
    let (mqtt_tx, mqtt_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (probe_tx, probe_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (forwarded_tx, forwarded_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (fresh_tx, fresh_rx) = mpsc::channel(FRESH_CAPACITY);
    let parts = Parts {
        store: store.clone(),
        metrics: metrics.clone(),
        status: status.clone(),
        outbox: outbox.clone(),
        inbox: Arc::new(tokio::sync::Mutex::new(Inbox {
            commands: cmd_rx,
            mqtt: mqtt_rx,
            probes: probe_rx,
            forwarded: forwarded_rx,
        })),
        forwarded: forwarded_tx,
        fresh: fresh_tx,
    };
    if config.mqtt.is_some() {
        status.mqtt.store(Status::MQTT_DOWN, Ordering::Relaxed);
        metrics.set_mqtt_connected(false);
    }
    // Alone, the core starts at once; in a cluster every instance starts
    // as a follower and the leadership task says when it leads.
    let mut side = match &mut cluster {
        None => parts.core(catalogue.clone(), None).await?,
        Some(c) => {
            // The first try for the lock, briefly: an instance that leads
            // at once starts as leader instead of switching right away.
            let _ =
                tokio::time::timeout(Duration::from_secs(2), c.settled.wait_for(|tried| *tried))
                    .await;
            let role = *c.role.borrow_and_update();
            let started = match role {
                cluster::Role::Leader { epoch } => {
                    store.fence(Some(epoch));
                    status.role.store(Status::LEADER, Ordering::Relaxed);
                    metrics.set_leader(true);
                    match parts.core(catalogue.clone(), Some(c)).await {
                        Ok(side) => {
                            info!(
                                epoch,
                                "leading: the engine is rebuilt from the store and runs"
                            );
                            Some(side)
                        }
                        // Handled as a change of role by the loop below,
                        // which retries while this instance leads.
                        Err(e) => {
                            warn!(error = %e, "cannot rebuild the engine as leader yet");
                            c.role.mark_changed();
                            None
                        }
                    }
                }
                cluster::Role::Follower => None,
            };
            match started {
                Some(side) => side,
                None => {
                    status.role.store(Status::FOLLOWER, Ordering::Relaxed);
                    metrics.set_leader(false);
                    // Starting as follower is not a change of leadership.
                    metrics.leader_changes.reset();
                    parts.forwarder(c).await
                }
            }
        }
    };
    let mut running_catalogue = catalogue.clone();
    let clock = side.clock;
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

    let core_handle = cmd_handle;
    let intake = CancellationToken::new();
    let notifier_stop = CancellationToken::new();

    let mut mqtt = start_mqtt(&as_instance(&config, cluster.as_ref()), &mqtt_tx, &intake)?;
    let running = as_instance(&config, cluster.as_ref());
    note_share(cluster.as_ref(), &running, &config);
    let mut probes = start_probes(&running, &probe_tx, &intake)?;
    // A copy of the whole config (megabytes with thousands of probes),
    // not kept for the daemon's life.
    drop(running);
    if let Some(c) = &cluster {
        tokio::spawn(cluster::board::share(
            c.pool.clone(),
            status.clone(),
            notifier_stop.clone(),
        ));
        // A follower's notifier hears of new rows from no commit of its
        // own: it looks every second.
        let wake = outbox.clone();
        let stop = notifier_stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => wake.notify_one(),
                }
            }
        });
    }
    let mut notifier_task = tokio::spawn(
        Notifier {
            store: store.clone(),
            catalogue: settings.catalogue.subscribe(),
            links: settings.links.subscribe(),
            wake: outbox.clone(),
            metrics: metrics.clone(),
            clock,
            fresh: fresh_rx,
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
            r = &mut side.task => Err((if side.leads { "core" } else { "forwarder" }, why_ended(r))),
            r = &mut notifier_task => Err(("notifier", why_ended(r))),
            r = &mut http_task => Err(("HTTP server", why_ended(r))),
            r = collector_ended(&mut mqtt) => Err(("MQTT collector", why_ended(r))),
            r = collector_ended(&mut probes) => Err(("probe collector", why_ended(r))),
            news = cluster_news(&mut cluster) => Ok(news),
        };
        let event = match ended {
            Ok(event) => event,
            Err((task, why)) => {
                error!(task, why = %why, "an essential task ended; exiting so that the \
                    service manager restarts beredskab and it rebuilds from the store");
                // The others are left to the runtime's shutdown: what was
                // not committed was not acknowledged either.
                intake.cancel();
                side.stop.cancel();
                notifier_stop.cancel();
                return Err(DaemonError::TaskEnded { task, why });
            }
        };
        match event {
            SignalEvent::Stop => break,
            SignalEvent::Role(role) => {
                let Some(c) = &cluster else { continue };
                let leads = matches!(role, cluster::Role::Leader { .. });
                if leads == side.leads {
                    continue;
                }
                // The collectors stop first: what they took in and the
                // old side did not commit is redelivered to the new one.
                for r in [mqtt.take(), probes.take()].into_iter().flatten() {
                    r.stop().await;
                }
                side.stop().await;
                side = if let cluster::Role::Leader { epoch } = role {
                    store.fence(Some(epoch));
                    status.role.store(Status::LEADER, Ordering::Relaxed);
                    metrics.set_leader(true);
                    // The database may fail right after the lock was
                    // taken: try again while this instance still leads.
                    let mut retry = crate::backoff::Backoff::new(
                        Duration::from_millis(200),
                        Duration::from_secs(5),
                    );
                    let failing_since = std::time::Instant::now();
                    loop {
                        let still_leads = || *c.role.borrow() == role;
                        match parts.core(running_catalogue.clone(), Some(c)).await {
                            Ok(side) => {
                                info!(
                                    epoch,
                                    "leading: the engine is rebuilt from the store and runs"
                                );
                                break side;
                            }
                            Err(e) if !still_leads() => {
                                // The lead was lost meanwhile: follow; the
                                // change is heard again below.
                                warn!(error = %e, "the lead was lost while the engine was rebuilt");
                                status.role.store(Status::FOLLOWER, Ordering::Relaxed);
                                metrics.set_leader(false);
                                break parts.forwarder(c).await;
                            }
                            Err(e) if failing_since.elapsed() < core::COMMIT_GIVE_UP => {
                                let delay = retry.next_delay();
                                warn!(error = %e, retry_ms = delay.as_millis() as u64,
                                    "cannot rebuild the engine as leader yet");
                                tokio::time::sleep(delay).await;
                            }
                            Err(e) => {
                                // Holding the lock without an engine would
                                // leave the cluster without a leader.
                                error!(error = %e, "cannot start the engine as leader; exiting so that another instance leads");
                                intake.cancel();
                                notifier_stop.cancel();
                                return Err(e);
                            }
                        }
                    }
                } else {
                    status.role.store(Status::FOLLOWER, Ordering::Relaxed);
                    metrics.set_leader(false);
                    info!("following: what this instance takes in goes to the leader");
                    parts.forwarder(c).await
                };
                let running = as_instance(&current, cluster.as_ref());
                if running.mqtt.is_some() {
                    status.mqtt.store(Status::MQTT_DOWN, Ordering::Relaxed);
                }
                match start_mqtt(&running, &mqtt_tx, &intake) {
                    Ok(m) => mqtt = m,
                    Err(e) => error!(error = %e, "mqtt collector not restarted"),
                }
                note_share(cluster.as_ref(), &running, &current);
                match start_probes(&running, &probe_tx, &intake) {
                    Ok(p) => probes = p,
                    Err(e) => error!(error = %e, "probe collector not restarted"),
                }
            }
            SignalEvent::Members => {
                let running = as_instance(&current, cluster.as_ref());
                if probes_running(probes.as_ref()) != fingerprint(running.probes.as_slice()) {
                    if let Some(old) = probes.take() {
                        old.stop().await;
                    }
                    note_share(cluster.as_ref(), &running, &current);
                    match start_probes(&running, &probe_tx, &intake) {
                        Ok(p) => probes = p,
                        Err(e) => error!(error = %e, "probe collector not restarted"),
                    }
                }
            }
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
                running_catalogue = next.catalogue.clone();
                settings.replace(&next.config, next.catalogue.clone());
                if let (Some(cert), Some(pair)) = (&server_cert, next_pair) {
                    cert.replace(pair);
                    info!("TLS certificate and key read again; new connections use them");
                }
                let running = as_instance(&next.config, cluster.as_ref());
                let mqtt_settings = running.mqtt.as_ref().map(fingerprint);
                if mqtt.as_ref().map(|r| r.settings) != mqtt_settings {
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
                    match start_mqtt(&running, &mqtt_tx, &intake) {
                        Ok(m) => mqtt = m,
                        Err(e) => error!(error = %e, "mqtt collector not restarted"),
                    }
                }
                if probes_running(probes.as_ref()) != fingerprint(running.probes.as_slice()) {
                    if let Some(old) = probes.take() {
                        old.stop().await;
                    }
                    note_share(cluster.as_ref(), &running, &next.config);
                    match start_probes(&running, &probe_tx, &intake) {
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
    side.stop().await;
    notifier_stop.cancel();
    let _ = tokio::time::timeout(INTAKE_GRACE, notifier_task).await;
    info!("stopped");
    Ok(())
}

enum SignalEvent {
    Stop,
    Reload,
    /// The leadership task's news.
    Role(cluster::Role),
    /// The live instances changed.
    Members,
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
