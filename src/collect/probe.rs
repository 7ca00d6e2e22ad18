//! The probe collector: every `[[probe]]` checks its target on a fixed
//! timetable (an HTTP GET of its URL, or for network gear an ICMP echo, a
//! TCP connection, a DNS query or a TLS handshake, see [`super::net`]) and
//! hands each outcome to the daemon as a [`ProbeReport`].
//!
//! Talks to the probed endpoints (`http://` through hyper-util's pooled
//! client, see [`super::http`]; `https://` through reqwest, TLS with rustls
//! and ring) and to the daemon (a bounded channel). It only fetches: status
//! codes, JSON checks, generator readings, round trips and certificate
//! expiry are judged by the engine (`engine::intake::classify`), so `drill`
//! and the daemon agree.
//!
//! Why it is built this way:
//! - one task per probe, each sleeping on tokio's timer until its next
//!   deadline: a hanging endpoint delays only its own probe, and thousands of
//!   idle probes cost a timer entry each, no thread and no polling;
//! - one shared client per scheme, so connections to the same host are
//!   reused;
//! - deadline k is `start + phase + k × every`, with a random phase in
//!   `[0, every)` per probe so that probes of equal interval spread out
//!   instead of firing together; a request that outlasts its interval skips
//!   the deadlines it overran instead of starting late or piling up;
//! - `timeout` bounds the whole request, body included, and the body is read
//!   up to [`MAX_BODY`] only;
//! - at most [`MAX_PER_HOST`] HTTP requests to one scheme, host and port at
//!   once, so at most that many connections: probes that fall due together
//!   (thousands at once after the machine stalled) wait their turn instead
//!   of opening a connection each, which a switch's web interface may
//!   refuse and which costs the daemon a connection's buffers each.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Url};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use super::http::{self, body_too_long, error_text, failed};
use super::net::{self, DnsQuestion, Icmp};
use crate::USER_AGENT;
use crate::config::{ProbeConfig, ProbeKind};
use crate::engine::ProbeResult;

pub use super::http::MAX_BODY;

/// The longest slot of the grid probe phases fall on. Probes that share a
/// slot start together, so the daemon wakes once for all of them: an
/// interval's phases fall on slots of a hundredth of it (10 ms for 1 s),
/// up to this (for 5 s and longer).
const MAX_SLOT: Duration = Duration::from_millis(50);
/// How many slots an interval's phases are spread over, at the least.
const SLOTS_PER_INTERVAL: u64 = 100;
/// The most HTTP requests in flight to one scheme, host and port: a
/// browser's six, and a little more for a host with many probes.
pub const MAX_PER_HOST: usize = 8;

/// Why a collector cannot be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe {id:?}: url {url:?} is not an http:// or https:// url{detail}")]
    Url {
        id: String,
        url: String,
        detail: String,
    },
    #[error("probe {id:?}: {what} must be more than zero")]
    Zero { id: String, what: &'static str },
    #[error("probe {id:?}: {detail}")]
    Target { id: String, detail: String },
    /// No ICMP socket may be opened: the message names both remedies.
    #[error("{0}")]
    Icmp(String),
    /// No root certificate for tls probes.
    #[error("{0}")]
    Roots(String),
    #[error("http client: {0}")]
    Client(String),
}

/// One probe request's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    /// The probe's id, as in `[[probe]] id`.
    pub id: String,
    pub result: ProbeResult,
    /// From the start of the request to its result (the response read, or
    /// the error).
    pub elapsed: Duration,
}

/// One probe, checked and ready to run.
#[derive(Debug)]
struct Probe {
    id: String,
    target: Target,
    every: Duration,
    timeout: Duration,
}

/// What a probe checks, by kind.
#[derive(Debug)]
enum Target {
    /// The URL and URI on the heap: each is as large as all the rest of
    /// a probe, which a waiting probe's task holds all the time.
    Http {
        url: Box<Url>,
        /// The URI when the plain client can serve the URL (`http://`
        /// without credentials), parsed once here rather than per request.
        plain: Option<Box<hyper::Uri>>,
        /// Whether the engine reads the body (a check or a generator
        /// section): only then is a body over [`MAX_BODY`] a failure.
        needs_body: bool,
        /// [`MAX_PER_HOST`] permits, shared by the probes of one scheme,
        /// host and port.
        gate: Arc<Semaphore>,
    },
    /// `count` echoes, each waiting up to `wait` (9/10 of the timeout
    /// shared out, so that a lost echo is told from a timed-out check).
    Icmp {
        host: String,
        count: u32,
        wait: Duration,
    },
    Tcp {
        address: String,
    },
    Dns(DnsQuestion),
    Tls {
        address: String,
        server_name: rustls::pki_types::ServerName<'static>,
    },
}

/// The collector, configured and not yet running.
pub struct ProbeCollector {
    client: Client,
    plain: http::Plain,
    probes: Vec<Probe>,
    /// The roots tls probes trust, when there are tls probes.
    roots: Option<Arc<rustls::RootCertStore>>,
}

impl fmt::Debug for ProbeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeCollector")
            .field("probes", &self.probes.len())
            .finish_non_exhaustive()
    }
}

impl ProbeCollector {
    /// Builds the collector from the `[[probe]]` sections: refuses a URL
    /// that is not http(s) with a host, a target that is not one of its
    /// kind, and a zero `every` or `timeout`. With icmp probes, fails when
    /// the process may open no ICMP socket (the error names both
    /// remedies); with tls probes, loads the roots they trust
    /// (`SSL_CERT_FILE`, `SSL_CERT_DIR` or the system's).
    pub fn new<P: Borrow<ProbeConfig>>(probes: &[P]) -> Result<ProbeCollector, ProbeError> {
        ProbeCollector::build(probes, None)
    }

    /// [`ProbeCollector::new`] with tls probes trusting the certificates in
    /// `roots` instead of `SSL_CERT_FILE` or the system's: for a test's own
    /// CA (the environment is process-wide).
    pub fn with_root_certificates<P: Borrow<ProbeConfig>>(
        probes: &[P],
        roots: &Path,
    ) -> Result<ProbeCollector, ProbeError> {
        ProbeCollector::build(probes, Some(roots))
    }

    fn build<P: Borrow<ProbeConfig>>(
        probes: &[P],
        roots: Option<&Path>,
    ) -> Result<ProbeCollector, ProbeError> {
        let mut probes = probes
            .iter()
            .map(|p| Probe::new(p.borrow()))
            .collect::<Result<Vec<_>, _>>()?;
        share_gates(&mut probes);
        crate::tls::install_provider();
        for v6 in [false, true] {
            let needed = probes.iter().any(|p| match &p.target {
                Target::Icmp { host, .. } => match host.parse::<std::net::IpAddr>() {
                    Ok(ip) => ip.is_ipv6() == v6,
                    // A host name's family is known only once resolved.
                    Err(_) => !v6,
                },
                _ => false,
            });
            if needed {
                let kind = net::icmp_socket(v6).map_err(ProbeError::Icmp)?;
                debug!(?kind, v6, "icmp probes have a socket");
            }
        }
        let roots = if probes
            .iter()
            .any(|p| matches!(p.target, Target::Tls { .. }))
        {
            Some(net::load_roots(roots).map_err(ProbeError::Roots)?)
        } else {
            None
        };
        let client = Client::builder()
            .user_agent(USER_AGENT)
            // Probes watch the local infrastructure, which must be checked
            // directly: a proxy from the environment would probe the proxy.
            .no_proxy()
            .build()
            .map_err(|e| ProbeError::Client(error_chain(&e)))?;
        Ok(ProbeCollector {
            client,
            plain: http::client(),
            probes,
            roots,
        })
    }

    /// Runs every probe until `shutdown` is cancelled or the receiver is
    /// dropped, and returns once every probe has stopped.
    ///
    /// Reports are sent with `send().await`: a daemon that falls behind
    /// holds each probe at its send, so the probe skips the deadlines it
    /// missed instead of losing results or piling them up. Memory stays
    /// bounded by one report per probe, the same bound as one request in
    /// flight per probe.
    pub async fn run(self, tx: mpsc::Sender<ProbeReport>, shutdown: CancellationToken) {
        let net = Net {
            http: self.client,
            plain: self.plain,
            icmp: Arc::new(Icmp::default()),
            roots: self.roots,
        };
        // One for all probes: each probe's task holds only a pointer.
        run_all(self.probes, Arc::new(net), tx, shutdown).await;
    }
}

/// How a probe's check is made: over the network, or a test's stand-in
/// (so the timetable can be tested on tokio's paused clock).
trait Fetch: Clone + Send + Sync + 'static {
    /// The check without its timeout: [`run_probe`] bounds it.
    fn fetch(&self, probe: &Probe) -> impl Future<Output = ProbeResult> + Send;
}

impl<F: Fetch> Fetch for Arc<F> {
    fn fetch(&self, probe: &Probe) -> impl Future<Output = ProbeResult> + Send {
        (**self).fetch(probe)
    }
}

/// The real checks: HTTP through one shared client, ICMP through one shared
/// socket per address family, and the rest a connection each.
#[derive(Clone)]
struct Net {
    http: Client,
    plain: http::Plain,
    icmp: Arc<Icmp>,
    roots: Option<Arc<rustls::RootCertStore>>,
}

impl Fetch for Net {
    async fn fetch(&self, probe: &Probe) -> ProbeResult {
        match &probe.target {
            Target::Http {
                url,
                plain,
                needs_body,
                gate,
            } => {
                // Waiting counts against the probe's timeout: a host whose
                // every permit is held by hanging requests is not answering.
                let Ok(_permit) = gate.acquire().await else {
                    return ProbeResult::failed("probe stopped");
                };
                if let Some(uri) = plain
                    && let Ok(result) = http::fetch(&self.plain, uri, *needs_body).await
                {
                    return result;
                }
                fetch_unbounded(&self.http, url, *needs_body).await
            }
            Target::Icmp { host, count, wait } => self.icmp.ping(host, *count, *wait).await,
            Target::Tcp { address } => net::connect(address).await,
            Target::Dns(question) => question.ask().await,
            Target::Tls {
                address,
                server_name,
            } => match &self.roots {
                Some(roots) => net::handshake(address, server_name, roots).await,
                None => ProbeResult::failed("no root certificates loaded"),
            },
        }
    }
}

/// Runs each probe on its own timetable until `shutdown` or until the
/// receiver is dropped.
async fn run_all<F: Fetch>(
    probes: Vec<Probe>,
    fetcher: F,
    tx: mpsc::Sender<ProbeReport>,
    shutdown: CancellationToken,
) {
    let stop = shutdown.child_token();
    let tracker = TaskTracker::new();
    let start = Instant::now();
    info!(probes = probes.len(), "probe collector started");
    for probe in probes {
        let schedule = Schedule::jittered(start, probe.every);
        tracker.spawn(run_probe(
            probe,
            schedule,
            fetcher.clone(),
            tx.clone(),
            stop.clone(),
        ));
    }
    tracker.close();
    tokio::select! {
        () = stop.cancelled() => {}
        () = tx.closed() => debug!("probe reports have no receiver: stopping"),
    }
    drop(tx);
    stop.cancel();
    tracker.wait().await;
    info!("probe collector stopped");
}

impl Probe {
    fn new(config: &ProbeConfig) -> Result<Probe, ProbeError> {
        let zero = |what| ProbeError::Zero {
            id: config.id.clone(),
            what,
        };
        if config.every.is_zero() {
            return Err(zero("every"));
        }
        if config.timeout.is_zero() {
            return Err(zero("timeout"));
        }
        Ok(Probe {
            id: config.id.clone(),
            target: Target::new(config)?,
            every: config.every,
            timeout: config.timeout,
        })
    }
}

impl Target {
    fn new(config: &ProbeConfig) -> Result<Target, ProbeError> {
        let bad = |detail: String| ProbeError::Target {
            id: config.id.clone(),
            detail,
        };
        let needs = |key: &str, value: &Option<String>| {
            value
                .clone()
                .ok_or_else(|| bad(format!("a {} probe needs {key}", config.kind)))
        };
        Ok(match config.kind {
            ProbeKind::Http => {
                let bad = |detail: String| ProbeError::Url {
                    id: config.id.clone(),
                    url: config.url().to_owned(),
                    detail,
                };
                let url = Url::parse(config.url()).map_err(|e| bad(format!(": {e}")))?;
                if !matches!(url.scheme(), "http" | "https")
                    || url.host_str().is_none_or(str::is_empty)
                {
                    return Err(bad(String::new()));
                }
                Target::Http {
                    plain: http::plain_uri(&url).map(Box::new),
                    url: Box::new(url),
                    needs_body: config.generator.is_some() || !config.checks.is_empty(),
                    gate: Arc::new(Semaphore::new(MAX_PER_HOST)),
                }
            }
            ProbeKind::Icmp => {
                let host = needs("host", &config.host)?;
                if host.parse::<std::net::IpAddr>().is_err() && !crate::config::is_host_name(&host)
                {
                    return Err(bad(format!(
                        "host {host:?} is not an IP address or a host name"
                    )));
                }
                let count = config.echo_count();
                if !(1..=crate::config::MAX_ICMP_COUNT).contains(&count) {
                    return Err(bad(format!(
                        "count must be 1 to {} echoes",
                        crate::config::MAX_ICMP_COUNT
                    )));
                }
                Target::Icmp {
                    host,
                    count,
                    wait: (config.timeout * 9 / 10 / count).max(Duration::from_millis(1)),
                }
            }
            ProbeKind::Tcp => {
                let address = needs("address", &config.address)?;
                crate::config::host_port(&address)
                    .map_err(|why| bad(format!("address {address:?} {why}")))?;
                Target::Tcp { address }
            }
            ProbeKind::Dns => {
                let server = needs("server", &config.server)?;
                let name = needs("name", &config.name)?;
                Target::Dns(DnsQuestion::new(&server, &name, &config.record_type()).map_err(bad)?)
            }
            ProbeKind::Tls => {
                let address = needs("address", &config.address)?;
                let (host, _) = crate::config::host_port(&address)
                    .map_err(|why| bad(format!("address {address:?} {why}")))?;
                let server_name = rustls::pki_types::ServerName::try_from(host)
                    .map_err(|e| bad(format!("address {address:?}: {e}")))?;
                Target::Tls {
                    address,
                    server_name,
                }
            }
        })
    }
}

/// Gives the HTTP probes of one scheme, host and port one gate between
/// them (each was built with its own).
fn share_gates(probes: &mut [Probe]) {
    let mut gates: HashMap<String, Arc<Semaphore>> = HashMap::new();
    for probe in probes {
        if let Target::Http { url, gate, .. } = &mut probe.target {
            let origin = url.origin().ascii_serialization();
            *gate = Arc::clone(gates.entry(origin).or_insert_with(|| Arc::clone(gate)));
        }
    }
}

/// A probe's fixed timetable: deadline k is `first + k × every`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Schedule {
    first: Instant,
    every: Duration,
}

impl Schedule {
    /// Starts at a random phase in `[0, every)` after `start`.
    fn jittered(start: Instant, every: Duration) -> Schedule {
        Schedule {
            first: start + random_below(every),
            every,
        }
    }

    /// The deadline after `due` to run at when it is `now`: the next one if
    /// it has not passed, else the first that has not, so that an overrun
    /// skips deadlines and never starts late.
    fn next(&self, due: Instant, now: Instant) -> Instant {
        let after_due = due + self.every;
        if now <= after_due {
            return after_due;
        }
        let every = self.every.as_nanos();
        let k = now.duration_since(self.first).as_nanos().div_ceil(every);
        let offset = u64::try_from(k.saturating_mul(every)).unwrap_or(u64::MAX);
        self.first + Duration::from_nanos(offset)
    }
}

/// A random duration in `[0, bound)`: a whole number of slots of a
/// hundredth of `bound` (at most [`MAX_SLOT`]), or of milliseconds when
/// `bound` is under 200 ms. tokio's timers fire on a millisecond grid, so
/// a phase between two ticks would start every run up to 1 ms late (and a
/// phase just under `bound` would land on `bound` itself); and probes that
/// share a slot wake the daemon once between them instead of once each.
/// 10,000 probes every 10 s wake it 1,000 times a second on a millisecond
/// grid, 20 times on 50 ms slots, which cut its CPU per probe by about a
/// third (BENCHMARKS.md). `bound` is not zero.
fn random_below(bound: Duration) -> Duration {
    let millis = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
    if millis >= 1 {
        let most = u64::try_from(MAX_SLOT.as_millis()).unwrap_or(1);
        let slot = (millis / SLOTS_PER_INTERVAL).clamp(1, most);
        return Duration::from_millis(fastrand::u64(0..millis / slot) * slot);
    }
    let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..nanos.max(1)))
}

/// One probe's loop: sleep until the deadline, fetch, report, repeat.
async fn run_probe<F: Fetch>(
    probe: Probe,
    schedule: Schedule,
    fetcher: F,
    tx: mpsc::Sender<ProbeReport>,
    stop: CancellationToken,
) {
    let mut due = schedule.first;
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(due) => {}
        }
        let started = Instant::now();
        // On the heap for the request's time only: the checks of every
        // kind make a future of kilobytes, and an idle probe need not hold
        // one (10,000 probes would hold 60 MB).
        let check = Box::pin(within_timeout(&probe, fetcher.fetch(&probe)));
        let result = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            result = check => result,
        };
        let elapsed = started.elapsed();
        match (&result.error, result.status) {
            (Some(error), _) => {
                debug!(probe = %probe.id, error = %error, elapsed_ms = elapsed.as_millis(), "probe failed")
            }
            (None, status) => {
                debug!(probe = %probe.id, status = ?status, rtt_ms = ?result.rtt_ms, expires_in_s = ?result.expires_in_s, elapsed_ms = elapsed.as_millis(), "probe answered")
            }
        }
        let report = ProbeReport {
            id: probe.id.clone(),
            result,
            elapsed,
        };
        // On the heap while it waits only, like the check: the send holds
        // a report and its place in the queue.
        let send = Box::pin(tx.send(report));
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            sent = send => if sent.is_err() { break },
        }
        let now = Instant::now();
        let next = schedule.next(due, now);
        if next > due + schedule.every {
            let skipped = (next - due).as_nanos() / schedule.every.as_nanos() - 1;
            debug!(probe = %probe.id, skipped, "probe overran its interval: deadlines skipped");
        }
        due = next;
    }
}

/// A probe's request (a GET of its URL, its body read up to [`MAX_BODY`])
/// within the probe's timeout.
async fn within_timeout(probe: &Probe, request: impl Future<Output = ProbeResult>) -> ProbeResult {
    match tokio::time::timeout(probe.timeout, request).await {
        Ok(result) => result,
        Err(_) => failed(
            None,
            format!(
                "timed out after {}",
                humantime::format_duration(probe.timeout)
            ),
        ),
    }
}

/// A body over [`MAX_BODY`] fails a probe that needs its body; for one that
/// only looks at the status (a large HTML health page), it is dropped.
async fn fetch_unbounded(client: &Client, url: &Url, needs_body: bool) -> ProbeResult {
    let mut response = match client.get(url.clone()).send().await {
        Ok(response) => response,
        Err(e) => return failed(None, transport_error(&e)),
    };
    let status = Some(response.status().as_u16());
    let too_long = |status| {
        if needs_body {
            failed(status, body_too_long())
        } else {
            ProbeResult {
                status,
                ..ProbeResult::default()
            }
        }
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return too_long(status);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return too_long(status);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return failed(status, format!("reading body: {}", transport_error(&e))),
        }
    }
    ProbeResult {
        status,
        body: Some(body),
        ..ProbeResult::default()
    }
}

/// A short text for a failed request: `connection refused`, `connect: …`,
/// without reqwest's wrapping (which also repeats the URL, and so any
/// credentials in it).
fn transport_error(e: &reqwest::Error) -> String {
    error_text(e, e.is_connect(), e.is_redirect())
}

/// The whole chain in one line, for errors that happen once at start-up.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn config(url: &str) -> ProbeConfig {
        ProbeConfig {
            id: "p".into(),
            component: "c".into(),
            url: Some(url.into()),
            every: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            ..ProbeConfig::default()
        }
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_accepted() {
        for ok in [
            "http://127.0.0.1:8080/health",
            "https://switch.example/status.json",
            "http://[::1]/",
        ] {
            assert!(Probe::new(&config(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://127.0.0.1/x",
            "file:///etc/passwd",
            "127.0.0.1/health",
            "http://",
            "not a url",
            "",
        ] {
            assert!(
                matches!(Probe::new(&config(bad)), Err(ProbeError::Url { .. })),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn a_zero_interval_or_timeout_is_refused() {
        let mut c = config("http://127.0.0.1/");
        c.every = Duration::ZERO;
        assert!(matches!(
            Probe::new(&c),
            Err(ProbeError::Zero { what: "every", .. })
        ));
        let mut c = config("http://127.0.0.1/");
        c.timeout = Duration::ZERO;
        assert!(matches!(
            Probe::new(&c),
            Err(ProbeError::Zero {
                what: "timeout",
                ..
            })
        ));
    }

    #[test]
    fn the_schedule_keeps_its_grid_and_skips_overrun_deadlines() {
        let t0 = Instant::now();
        let every = Duration::from_millis(100);
        let s = Schedule {
            first: t0 + Duration::from_millis(30),
            every,
        };
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // A quick request: the next deadline, whatever the request took.
        assert_eq!(s.next(ms(30), ms(31)), ms(130));
        assert_eq!(s.next(ms(130), ms(229)), ms(230));
        // A request that ends exactly on the next deadline starts on it.
        assert_eq!(s.next(ms(230), ms(330)), ms(330));
        // Overruns skip to the first deadline not yet passed.
        assert_eq!(s.next(ms(330), ms(431)), ms(530));
        assert_eq!(s.next(ms(330), ms(930)), ms(930));
        assert_eq!(s.next(ms(330), ms(1029)), ms(1030));
    }

    /// Phases fall on slots of a hundredth of the interval, up to 50 ms,
    /// and never on a fraction of a millisecond that tokio's timer would
    /// round up.
    #[test]
    fn phases_fall_on_slots_of_a_hundredth_of_the_interval_up_to_50_ms() {
        for (every_ms, slot_ms) in [
            (60_000, 50),
            (10_000, 50),
            (5_000, 50),
            (2_000, 20),
            (1_000, 10),
            (500, 5),
            (150, 1),
            (20, 1),
        ] {
            let every = Duration::from_millis(every_ms);
            let slots: std::collections::BTreeSet<Duration> =
                (0..5_000).map(|_| random_below(every)).collect();
            let slot = Duration::from_millis(slot_ms);
            for phase in &slots {
                assert!(*phase < every, "{phase:?} in {every:?}");
                assert!(
                    phase.as_nanos() % slot.as_nanos() == 0,
                    "{phase:?} in {every:?} is not on a {slot:?} slot"
                );
            }
            let possible = every_ms / slot_ms;
            // 5,000 draws fill all of up to 200 slots, and most of more.
            assert!(
                slots.len() as u64 >= possible.min(200),
                "{every:?}: {} slots of {possible}",
                slots.len()
            );
        }
    }

    #[test]
    fn the_phase_falls_within_one_interval() {
        let t0 = Instant::now();
        let every = Duration::from_secs(30);
        for _ in 0..1000 {
            let s = Schedule::jittered(t0, every);
            assert!(s.first >= t0 && s.first < t0 + every);
        }
    }

    /// A stand-in for the network on tokio's paused clock: each probe id
    /// answers 200 after a fixed time, or never.
    #[derive(Clone)]
    struct Fake {
        delays: Arc<std::collections::HashMap<String, Option<Duration>>>,
        in_flight: Arc<std::sync::Mutex<(usize, usize)>>,
    }

    impl Fake {
        fn new(delays: &[(&str, Option<Duration>)]) -> Fake {
            Fake {
                delays: Arc::new(
                    delays
                        .iter()
                        .map(|(id, d)| ((*id).to_owned(), *d))
                        .collect(),
                ),
                in_flight: Arc::default(),
            }
        }

        /// The most requests to a hanging target at once.
        fn most_at_once(&self) -> usize {
            self.in_flight.lock().expect("lock").1
        }
    }

    impl Fetch for Fake {
        fn fetch(&self, probe: &Probe) -> impl Future<Output = ProbeResult> + Send {
            let delay = self.delays.get(&probe.id).copied().flatten();
            let hangs = self.delays.get(&probe.id) == Some(&None);
            let in_flight = self.in_flight.clone();
            async move {
                if hangs {
                    {
                        let mut n = in_flight.lock().expect("lock");
                        n.0 += 1;
                        n.1 = n.1.max(n.0);
                    }
                    // Counted down when the timeout drops this future.
                    struct Done(Arc<std::sync::Mutex<(usize, usize)>>);
                    impl Drop for Done {
                        fn drop(&mut self) {
                            self.0.lock().expect("lock").0 -= 1;
                        }
                    }
                    let _done = Done(in_flight.clone());
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(delay.unwrap_or_default()).await;
                ProbeResult {
                    status: Some(200),
                    ..ProbeResult::default()
                }
            }
        }
    }

    /// Runs `probes` against `fake` for `how_long` of paused time and
    /// returns each report with when its request started.
    async fn reports(
        probes: &[ProbeConfig],
        fake: Fake,
        how_long: Duration,
    ) -> (Instant, Vec<(Instant, ProbeReport)>) {
        let probes = probes
            .iter()
            .map(|p| Probe::new(p).expect("probe"))
            .collect();
        let (tx, mut rx) = mpsc::channel(64);
        let stop = CancellationToken::new();
        let start = Instant::now();
        let task = tokio::spawn(run_all(probes, fake, tx, stop.clone()));
        let until = start + how_long;
        let mut got = Vec::new();
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => got.push((Instant::now() - r.elapsed, r)),
                    None => break,
                },
                () = tokio::time::sleep_until(until) => break,
            }
        }
        stop.cancel();
        task.await.expect("the collector ends");
        (start, got)
    }

    fn timed(id: &str, every_ms: u64, timeout_ms: u64) -> ProbeConfig {
        let mut c = config("http://127.0.0.1:1/");
        c.id = id.to_owned();
        c.every = Duration::from_millis(every_ms);
        c.timeout = Duration::from_millis(timeout_ms);
        c
    }

    /// On the paused clock, exactly: a probe whose target hangs times out
    /// at its timeout each time, skips the deadlines it overran (500 ms
    /// requests every 200 ms start 600 ms apart, one at a time), and never
    /// delays a healthy probe, which keeps every deadline of its grid.
    #[tokio::test(start_paused = true)]
    async fn a_hanging_target_times_out_and_never_delays_a_healthy_probe() {
        let fake = Fake::new(&[("hangs", None), ("healthy", Some(Duration::ZERO))]);
        let probes = [timed("hangs", 200, 500), timed("healthy", 100, 1000)];
        let (_, got) = reports(&probes, fake.clone(), Duration::from_millis(1900)).await;
        let of = |id: &str| -> Vec<&(Instant, ProbeReport)> {
            got.iter().filter(|(_, r)| r.id == id).collect()
        };
        let hangs = of("hangs");
        assert!(hangs.len() >= 2, "{} timeouts", hangs.len());
        for (_, r) in &hangs {
            assert_eq!(r.result.error.as_deref(), Some("timed out after 500ms"));
            assert_eq!(r.elapsed, Duration::from_millis(500));
        }
        for pair in hangs.windows(2) {
            assert_eq!(pair[1].0 - pair[0].0, Duration::from_millis(600));
        }
        let ok = of("healthy");
        let first = ok[0].0;
        for (k, (started, r)) in ok.iter().enumerate() {
            assert_eq!(r.result.status, Some(200));
            assert_eq!(*started, first + Duration::from_millis(100) * k as u32);
        }
        assert!(ok.len() >= 18, "only {} healthy reports in 1.9 s", ok.len());
        assert_eq!(
            fake.most_at_once(),
            1,
            "requests to the hanging target never pile up"
        );
    }

    /// Eight probes whose answers take 60 ms keep a fixed timetable (a
    /// schedule counted from the end of the last request would drift 60 ms
    /// per interval), each at its own random phase within one interval.
    #[tokio::test(start_paused = true)]
    async fn probes_keep_a_jittered_fixed_timetable() {
        let ids: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
        let delays: Vec<(&str, Option<Duration>)> = ids
            .iter()
            .map(|id| (id.as_str(), Some(Duration::from_millis(60))))
            .collect();
        let probes: Vec<ProbeConfig> = ids.iter().map(|id| timed(id, 200, 1000)).collect();
        let (start, got) = reports(&probes, Fake::new(&delays), Duration::from_millis(1700)).await;
        let mut phases = std::collections::BTreeSet::new();
        for id in &ids {
            let starts: Vec<Instant> = got
                .iter()
                .filter(|(_, r)| &r.id == id)
                .map(|(s, r)| {
                    assert_eq!(r.elapsed, Duration::from_millis(60));
                    *s
                })
                .collect();
            assert!(starts.len() >= 7, "{id}: only {} reports", starts.len());
            let phase = starts[0] - start;
            assert!(phase < Duration::from_millis(200), "{id}: phase {phase:?}");
            phases.insert(phase);
            for (k, s) in starts.iter().enumerate() {
                assert_eq!(
                    *s,
                    starts[0] + Duration::from_millis(200) * k as u32,
                    "{id}"
                );
            }
        }
        assert!(
            phases.len() > 1,
            "phases {phases:?} do not spread the probes"
        );
    }

    #[test]
    fn byte_sizes_read_naturally() {
        use super::super::http::byte_size;
        assert_eq!(byte_size(MAX_BODY), "1 MiB");
        assert_eq!(byte_size(64 * 1024), "64 KiB");
        assert_eq!(byte_size(100), "100 bytes");
        assert_eq!(body_too_long(), "body over 1 MiB");
    }
}
