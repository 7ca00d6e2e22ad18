//! The HTTP probe collector against real HTTP servers on 127.0.0.1: what it
//! reports for healthy, failing, vanished, hanging and malformed endpoints,
//! that one hanging endpoint never delays another probe, that probes keep a
//! jittered fixed timetable, and that shutdown stops them all at once. One
//! test feeds a generator's falling fuel through a real engine.
//!
//! The servers are a tiny hand-written HTTP/1.1 responder, so that a test
//! can make one hang, stream a body or vanish with its connections. Times
//! are tokio's real clock with intervals of 100–200 ms.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use beredskab::catalogue::Catalogue;
use beredskab::collect::probe::{MAX_BODY, MAX_PER_HOST, ProbeCollector, ProbeError, ProbeReport};
use beredskab::config::{AlarmKind, CheckOutcome, ProbeCheckConfig, ProbeConfig, load_str};
use beredskab::engine::intake::{ProbeClass, classify};
use beredskab::engine::{
    AlarmInput, AlarmSeverity, AlarmState, Basis, Effect, Engine, Event, IncidentId, Source, Ts,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const MS: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------
// A tiny HTTP/1.1 server

/// What the test server answers one request with.
#[derive(Debug, Clone)]
enum Reply {
    /// A response with a Content-Length.
    Sized(u16, Vec<u8>),
    /// A response with `Transfer-Encoding: chunked`, in 64 KiB chunks.
    Chunked(u16, Vec<u8>),
    /// A sized response after a pause.
    Late(Duration, u16, Vec<u8>),
    /// Reads the request and never answers.
    Hang,
}

fn json(status: u16, body: &str) -> Reply {
    Reply::Sized(status, body.as_bytes().to_vec())
}

type Handler = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// Requests being answered (or hung) right now, and the most at once.
#[derive(Default)]
struct Load {
    active: AtomicUsize,
    most: AtomicUsize,
    total: AtomicUsize,
    /// Connections accepted.
    connections: AtomicUsize,
}

/// Leaves `Load::active` when a request ends, however it ends.
struct Busy(Arc<Load>);

impl Busy {
    fn new(load: &Arc<Load>) -> Busy {
        let now = load.active.fetch_add(1, Ordering::SeqCst) + 1;
        load.most.fetch_max(now, Ordering::SeqCst);
        load.total.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(load))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A server on 127.0.0.1, port 0. Dropping it closes the listener and every
/// connection, so the port then refuses connections.
struct Server {
    addr: SocketAddr,
    load: Arc<Load>,
    accept: JoinHandle<()>,
}

impl Server {
    async fn start(handler: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Server {
        Server::closing_idle(None, handler).await
    }

    /// A server that closes a connection once it has waited `idle` for its
    /// next request, as web servers do (nginx after 75 s), without saying
    /// so in the response.
    async fn closing_idle(
        idle: Option<Duration>,
        handler: impl Fn(&str) -> Reply + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let load = Arc::new(Load::default());
        let handler: Handler = Arc::new(handler);
        let shared = Arc::clone(&load);
        // The connections live in the accept task's JoinSet: aborting the
        // task drops the set, which aborts them all.
        let accept = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => if let Ok((stream, _)) = accepted {
                        shared.connections.fetch_add(1, Ordering::SeqCst);
                        connections.spawn(serve(stream, Arc::clone(&handler), Arc::clone(&shared), idle));
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Server { addr, load, accept }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn active(&self) -> usize {
        self.load.active.load(Ordering::SeqCst)
    }

    fn most_at_once(&self) -> usize {
        self.load.most.load(Ordering::SeqCst)
    }

    fn connections(&self) -> usize {
        self.load.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.load.total.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Answers requests on one keep-alive connection until the client closes
/// it, or until it has waited `idle` for a request.
async fn serve(mut stream: TcpStream, handler: Handler, load: Arc<Load>, idle: Option<Duration>) {
    let (read, mut write) = stream.split();
    let mut read = BufReader::new(read);
    loop {
        let mut request_line = String::new();
        let next = read.read_line(&mut request_line);
        let got = match idle {
            Some(idle) => match tokio::time::timeout(idle, next).await {
                Ok(got) => got,
                Err(_) => return,
            },
            None => next.await,
        };
        if got.unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            match read.read_line(&mut header).await {
                Ok(0) | Err(_) => return,
                Ok(_) if header == "\r\n" || header == "\n" => break,
                Ok(_) => {}
            }
        }
        let _busy = Busy::new(&load);
        let path = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
        let (status, body, chunked) = match handler(&path) {
            Reply::Sized(status, body) => (status, body, false),
            Reply::Chunked(status, body) => (status, body, true),
            Reply::Late(pause, status, body) => {
                tokio::time::sleep(pause).await;
                (status, body, false)
            }
            Reply::Hang => {
                // Until the client gives up and closes the connection.
                let mut buf = [0u8; 64];
                while read.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                return;
            }
        };
        if respond(&mut write, status, &body, chunked).await.is_err() {
            return;
        }
    }
}

async fn respond(
    w: &mut (impl AsyncWriteExt + Unpin),
    status: u16,
    body: &[u8],
    chunked: bool,
) -> std::io::Result<()> {
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {}", body.len())
    };
    let head =
        format!("HTTP/1.1 {status} Test\r\nContent-Type: application/json\r\n{framing}\r\n\r\n");
    w.write_all(head.as_bytes()).await?;
    if chunked {
        for chunk in body.chunks(64 * 1024) {
            w.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            w.write_all(chunk).await?;
            w.write_all(b"\r\n").await?;
        }
        w.write_all(b"0\r\n\r\n").await?;
    } else {
        w.write_all(body).await?;
    }
    w.flush().await
}

// ---------------------------------------------------------------------------
// The collector under test

fn probe(id: &str, url: &str, every: Duration, timeout: Duration) -> ProbeConfig {
    ProbeConfig {
        id: id.into(),
        component: "c".into(),
        url: Some(url.into()),
        every,
        timeout,
        ..ProbeConfig::default()
    }
}

/// A report with the moment the test received it.
struct Got {
    at: Instant,
    report: ProbeReport,
}

impl Got {
    /// When the request started: received, less the time it took.
    fn started(&self) -> Instant {
        self.at - self.report.elapsed
    }
}

/// A running collector, its report channel and its shutdown.
struct Running {
    started: Instant,
    rx: mpsc::Receiver<ProbeReport>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    fn start<P: std::borrow::Borrow<ProbeConfig>>(probes: &[P]) -> Running {
        let collector = ProbeCollector::new(probes).expect("probes are valid");
        let (tx, rx) = mpsc::channel(256);
        let shutdown = CancellationToken::new();
        let started = Instant::now();
        let task = tokio::spawn(collector.run(tx, shutdown.clone()));
        Running {
            started,
            rx,
            shutdown,
            task,
        }
    }

    /// The next report, within `within`.
    async fn next(&mut self, within: Duration) -> Got {
        let report = tokio::time::timeout(within, self.rx.recv())
            .await
            .expect("a report in time")
            .expect("the collector is running");
        Got {
            at: Instant::now(),
            report,
        }
    }

    /// The next report of probe `id`.
    async fn next_of(&mut self, id: &str, within: Duration) -> Got {
        let until = Instant::now() + within;
        loop {
            let got = self
                .next(until.saturating_duration_since(Instant::now()))
                .await;
            if got.report.id == id {
                return got;
            }
        }
    }

    /// The next `n` reports, each a 200 without an error.
    async fn answered_ok(&mut self, n: usize) {
        for _ in 0..n {
            let got = self.next(Duration::from_secs(2)).await.report;
            assert_eq!(got.result.error, None);
            assert_eq!(got.result.status, Some(200));
        }
    }

    /// Every report for `how_long`, by probe id.
    async fn collect(&mut self, how_long: Duration) -> BTreeMap<String, Vec<Got>> {
        let until = Instant::now() + how_long;
        let mut by_id: BTreeMap<String, Vec<Got>> = BTreeMap::new();
        while let Ok(Some(report)) = tokio::time::timeout_at(until, self.rx.recv()).await {
            let got = Got {
                at: Instant::now(),
                report,
            };
            by_id.entry(got.report.id.clone()).or_default().push(got);
        }
        by_id
    }
}

/// `a - b` in milliseconds, signed.
fn ms_between(a: Instant, b: Instant) -> f64 {
    if a >= b {
        (a - b).as_secs_f64() * 1e3
    } else {
        -((b - a).as_secs_f64() * 1e3)
    }
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_answers_then_fails_then_goes_away_is_reported_each_time() {
    let mode = Arc::new(AtomicU16::new(200));
    let m = Arc::clone(&mode);
    let server = Server::start(move |_| match m.load(Ordering::SeqCst) {
        200 => json(200, r#"{"ok":true}"#),
        status => json(status, r#"{"ok":false}"#),
    })
    .await;
    let url = server.url("/health");
    let mut run = Running::start(&[probe("switch", &url, 100 * MS, 1000 * MS)]);

    let up = run.next(Duration::from_secs(2)).await.report;
    assert_eq!(up.id, "switch");
    assert_eq!(up.result.status, Some(200));
    assert_eq!(up.result.body.as_deref(), Some(&br#"{"ok":true}"#[..]));
    assert_eq!(up.result.error, None);

    mode.store(503, Ordering::SeqCst);
    let failing = run.next(Duration::from_secs(2)).await.report;
    assert_eq!(failing.result.status, Some(503));
    assert_eq!(
        failing.result.body.as_deref(),
        Some(&br#"{"ok":false}"#[..])
    );
    assert_eq!(
        failing.result.error, None,
        "a status is an answer, not an error"
    );

    drop(server);
    for _ in 0..3 {
        let gone = run.next(Duration::from_secs(2)).await;
        assert_eq!(
            gone.report.result.error.as_deref(),
            Some("connection refused")
        );
        assert_eq!(gone.report.result.status, None);
        assert_eq!(gone.report.result.body, None);
        assert!(gone.report.elapsed < 500 * MS, "refused at once");
    }
    run.shutdown.cancel();
    run.task.await.expect("collector ends");
}

/// Probe after probe goes over the one connection: the target is not made
/// to accept a connection per check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_serves_probe_after_probe() {
    let server = Server::start(|_| json(200, r#"{"ok":true}"#)).await;
    let mut run = Running::start(&[probe("kept", &server.url("/health"), 50 * MS, 1000 * MS)]);
    run.answered_ok(10).await;
    run.shutdown.cancel();
    run.task.await.expect("collector ends");
    assert!(server.requests() >= 10);
    assert_eq!(server.connections(), 1, "{} requests", server.requests());
}

/// A server that closes idle connections (after 20 ms here, a minute or so
/// in the wild) and a probe that comes back later (300 ms): each check
/// finds its kept connection closed, and must go through on a new one
/// rather than report the closed one as the target failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_server_closed_while_idle_is_replaced_not_reported() {
    let server = Server::closing_idle(Some(20 * MS), |_| json(200, r#"{"ok":true}"#)).await;
    let mut run = Running::start(&[probe(
        "reopens",
        &server.url("/health"),
        300 * MS,
        1000 * MS,
    )]);
    run.answered_ok(6).await;
    run.shutdown.cancel();
    run.task.await.expect("collector ends");
    // The server did close them: each check came on a new connection.
    assert!(
        server.connections() >= 6,
        "{} connections",
        server.connections()
    );
}

/// Forty probes of one slow host (each answer takes 300 ms, and they fall
/// due every 200 ms) never have more than [`MAX_PER_HOST`] requests at the
/// host at once: the rest wait their turn and still answer within their
/// timeout. Another host's probe does not wait behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_of_one_host_wait_their_turn_and_another_host_does_not() {
    let slow = Server::start(|_| Reply::Late(300 * MS, 200, b"{}".to_vec())).await;
    let quick = Server::start(|_| json(200, "{}")).await;
    let mut probes: Vec<ProbeConfig> = (0..40)
        .map(|i| {
            let url = slow.url(&format!("/{i}"));
            probe(&format!("slow-{i}"), &url, 200 * MS, 5000 * MS)
        })
        .collect();
    probes.push(probe("quick", &quick.url("/"), 100 * MS, 5000 * MS));
    let mut run = Running::start(&probes);
    let by_id = run.collect(Duration::from_millis(3000)).await;
    run.shutdown.cancel();
    run.task.await.expect("collector ends");

    // Five waves of 300 ms serve the forty in about 1.5 s, and the gate
    // lets them in in turn: each has answered, none timed out.
    for i in 0..40 {
        let id = format!("slow-{i}");
        let got = by_id.get(&id).map(Vec::as_slice).unwrap_or_default();
        assert!(!got.is_empty(), "{id} never answered");
        assert!(
            got.iter().all(|g| g.report.result.status == Some(200)),
            "{id}: {:?}",
            got.iter()
                .map(|g| &g.report.result.error)
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(slow.most_at_once(), MAX_PER_HOST, "requests at once");
    // The quick host's probe went on at its own pace, each check a few
    // milliseconds, never a wave of the slow host's 300.
    let quick_got = &by_id["quick"];
    assert!(quick_got.len() >= 10, "{} quick reports", quick_got.len());
    for got in quick_got {
        assert_eq!(got.report.result.status, Some(200));
        assert!(
            got.report.elapsed < 200 * MS,
            "a quick check took {:?}",
            got.report.elapsed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_target_times_out_and_never_delays_a_healthy_probe() {
    let hanging = Server::start(|_| Reply::Hang).await;
    let healthy = Server::start(|_| json(200, "{}")).await;
    let every = 100 * MS;
    let mut run = Running::start(&[
        probe("hangs", &hanging.url("/"), 200 * MS, 500 * MS),
        probe("healthy", &healthy.url("/"), every, 1000 * MS),
    ]);
    let by_id = run.collect(Duration::from_millis(1900)).await;
    run.shutdown.cancel();

    // The hanging probe: an error once its timeout is up, each time.
    let hangs = &by_id["hangs"];
    assert!(hangs.len() >= 2, "{} timeouts", hangs.len());
    for got in hangs {
        let r = &got.report;
        assert_eq!(r.result.error.as_deref(), Some("timed out after 500ms"));
        assert_eq!((r.result.status, &r.result.body), (None, &None));
        assert!(
            r.elapsed >= 500 * MS && r.elapsed < 900 * MS,
            "reported {:?} after the start",
            r.elapsed
        );
    }
    // It skipped the deadlines its requests overran, staying on its grid:
    // 500 ms requests every 200 ms start 600 ms apart, one at a time.
    // (On average: on a busy machine one start can be read tens of
    // milliseconds off. The exact timetable is tested on tokio's paused
    // clock in collect::probe's unit tests.)
    let gap =
        ms_between(hangs[hangs.len() - 1].started(), hangs[0].started()) / (hangs.len() - 1) as f64;
    assert!(
        (gap - 600.0).abs() < 50.0,
        "hanging probe restarted {gap:.1} ms apart on average"
    );
    assert_eq!(hanging.most_at_once(), 1, "requests never pile up");

    // Meanwhile the healthy probe kept its cadence: every deadline, on time.
    let ok = &by_id["healthy"];
    assert!(ok.iter().all(|g| g.report.result.status == Some(200)));
    let mean = ms_between(ok[ok.len() - 1].started(), ok[0].started()) / (ok.len() - 1) as f64;
    assert!(
        (mean - 100.0).abs() < 15.0,
        "healthy reports {mean:.1} ms apart on average, not 100"
    );
    assert!(ok.len() >= 16, "only {} healthy reports in 1.9 s", ok.len());
    run.task.await.expect("collector ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_is_passed_on_and_the_engine_fails_it() {
    let bad = r#"{"running": true, "fuel_percent": "#;
    let server = Server::start(move |_| json(200, bad)).await;
    let url = server.url("/status.json");
    let mut run = Running::start(&[probe("generator", &url, 100 * MS, 1000 * MS)]);
    let report = run.next(Duration::from_secs(2)).await.report;
    run.shutdown.cancel();

    // The collector does not judge: a 200 and the body as it came.
    assert_eq!(report.result.status, Some(200));
    assert_eq!(report.result.body.as_deref(), Some(bad.as_bytes()));
    assert_eq!(report.result.error, None);

    // The engine does: a probe that reads its body fails on bad JSON.
    let plain = probe("generator", &url, 100 * MS, 1000 * MS);
    assert_eq!(classify(&plain, &report.result).0, ProbeClass::Ok);
    let with_check: ProbeConfig = toml::from_str(&format!(
        "id = \"generator\"\ncomponent = \"generator\"\nurl = \"{url}\"\n\
         [[check]]\npointer = \"/fuel_percent\"\nbelow = 25\nthen = \"degraded\"\n"
    ))
    .expect("probe with a check");
    let with_generator: ProbeConfig = toml::from_str(&format!(
        "id = \"generator\"\ncomponent = \"generator\"\nurl = \"{url}\"\n\
         [generator]\nrunning = \"/running\"\nfuel_percent = \"/fuel_percent\"\n\
         full_tank_runtime = \"8h\"\n"
    ))
    .expect("probe with a generator section");
    for p in [&with_check, &with_generator] {
        let (class, reading) = classify(p, &report.result);
        assert!(
            matches!(&class, ProbeClass::Failed(why) if why.starts_with("invalid JSON")),
            "{class:?}"
        );
        assert_eq!(reading, None);
    }
    run.task.await.expect("collector ends");
}

/// Mains power, carried by a generator whose probe reports falling fuel.
fn generator_plan(url: &str) -> String {
    format!(
        r#"
[site]
name = "Probe test"
language = "en"

[[probe]]
id = "generator"
component = "generator"
url = "{url}"
every = "100ms"
timeout = "1s"
[probe.generator]
running = "/running"
fuel_percent = "/fuel_percent"
full_tank_runtime = "8h"

[[component]]
id = "power-mains"
kind = "power"
backup = "generator"
[[component]]
id = "generator"
kind = "generator"
[[component]]
id = "serverrum"
kind = "room"
depends_on = ["power-mains"]

[[service]]
id = "esdh"
criticality = "critical"
depends_on = ["serverrum"]

[estimate]
by_kind = {{ power = "45m" }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generator_running_dry_makes_the_engine_estimate_by_generator() {
    // Fuel falls with each reading: 8 h × 10 % = 48 min still outlasts the
    // 45-minute power estimate; 8 h × 9 % = 43.2 min does not.
    const FUEL: [u32; 7] = [90, 40, 12, 10, 9, 8, 7];
    let readings = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&readings);
    let server = Server::start(move |_| {
        let i = n.fetch_add(1, Ordering::SeqCst).min(FUEL.len() - 1);
        json(
            200,
            &format!(r#"{{"running": true, "fuel_percent": {}}}"#, FUEL[i]),
        )
    })
    .await;
    let loaded = load_str(
        "generator.toml",
        &generator_plan(&server.url("/status.json")),
    )
    .expect("the plan is valid");
    let catalogue = Arc::new(Catalogue::build(&loaded.config).expect("the plan builds"));
    let mut engine = Engine::new(Arc::clone(&catalogue));

    // Mains power is lost; the generator carries, so nothing is down yet.
    let t0 = Ts(1_772_434_800_000);
    let mains_lost = Event::Alarm(AlarmInput {
        component: "power-mains".into(),
        kind: AlarmKind::Power,
        state: AlarmState::Firing,
        severity: AlarmSeverity::Critical,
        source: Source::Http,
        message: None,
        key: None,
    });
    let effects = engine.handle(t0, mains_lost).expect("alarm accepted");
    assert!(
        effects.iter().any(|e| matches!(
            e,
            Effect::IncidentOpened {
                incident: IncidentId(1),
                expected_s: 2700,
                ..
            }
        )),
        "{effects:?}"
    );

    let mut run = Running::start(&loaded.config.probes);
    let started = Instant::now();
    let esdh = catalogue.node_id("esdh").expect("service esdh");
    let mut alerted_at = None;
    for (reading, &fuel) in FUEL.iter().enumerate() {
        let got = run.next(Duration::from_secs(2)).await;
        assert_eq!(got.report.id, "generator");
        assert_eq!(got.report.result.status, Some(200));
        let now = t0.plus(got.at - started);
        let effects = engine
            .handle(
                now,
                Event::Probe {
                    id: got.report.id,
                    result: got.report.result,
                },
            )
            .expect("probe result accepted");
        let by_generator = effects.iter().any(|e| {
            matches!(
                e,
                Effect::Estimate {
                    incident: IncidentId(1),
                    expected_s: 2700,
                    basis: Basis::Generator
                }
            )
        });
        let incident = engine.incident(IncidentId(1)).expect("incident 1");
        let remaining_ms = incident
            .opened
            .plus(Duration::from_secs(2700))
            .millis_since(now);
        let runtime = Duration::from_secs(8 * 3600).mul_f64(f64::from(fuel) / 100.0);
        let fuel_short = (runtime.as_millis() as i64) < remaining_ms;
        match alerted_at {
            None if fuel_short => {
                assert!(
                    by_generator,
                    "reading {reading}: fuel short, but {effects:?}"
                );
                alerted_at = Some(reading);
                assert!(
                    incident.services.contains_key(&esdh),
                    "the incident takes on what the mains feeds"
                );
                assert_eq!(incident.fuel_out, Some(now.plus(runtime)));
            }
            None => {
                assert!(
                    !by_generator,
                    "reading {reading}: fuel lasts, but {effects:?}"
                );
                assert!(incident.services.is_empty(), "the generator carries");
            }
            Some(_) => assert!(!by_generator, "the generator estimate comes once"),
        }
    }
    assert_eq!(alerted_at, Some(4), "at 9 % fuel, 43 minutes left");
    run.shutdown.cancel();
    run.task.await.expect("collector ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_keep_a_jittered_fixed_timetable() {
    // Each answer takes 60 ms: a schedule that counted from the end of the
    // last request would drift by that much per interval.
    let server = Server::start(|_| Reply::Late(60 * MS, 200, b"{}".to_vec())).await;
    let every = 200 * MS;
    let probes: Vec<ProbeConfig> = (0..8)
        .map(|i| probe(&format!("p{i}"), &server.url("/"), every, 1000 * MS))
        .collect();
    let mut run = Running::start(&probes);
    let by_id = run.collect(Duration::from_millis(1700)).await;
    run.shutdown.cancel();

    let mut phases = Vec::new();
    for (id, got) in &by_id {
        assert!(got.len() >= 6, "{id}: only {} reports", got.len());
        let first = got[0].started();
        let phase = ms_between(first, run.started);
        assert!(
            (-60.0..200.0 + 60.0).contains(&phase),
            "{id}: first start {phase} ms after the collector"
        );
        phases.push(phase);
        for g in got {
            assert!(g.report.elapsed >= 60 * MS);
        }
        // On a busy machine one start can be read tens of milliseconds
        // off; the mean interval cannot drift that way. A timetable counted
        // from the end of each request would average 260 ms here. (The
        // exact timetable is tested on tokio's paused clock in
        // collect::probe's unit tests.)
        let span = ms_between(got[got.len() - 1].started(), first);
        let mean = span / (got.len() - 1) as f64;
        assert!(
            (170.0..230.0).contains(&mean),
            "{id}: starts {mean:.1} ms apart on average, not 200"
        );
    }
    assert_eq!(phases.len(), 8);
    let spread = phases.iter().cloned().fold(f64::MIN, f64::max)
        - phases.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread > 20.0, "phases {phases:?} do not spread the probes");
    run.task.await.expect("collector ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_an_error_not_a_buffer() {
    let server = Server::start(|path| {
        let len = if path.starts_with("/exact") {
            MAX_BODY
        } else {
            MAX_BODY + 1
        };
        let body = vec![b'x'; len];
        if path.starts_with("/sized") {
            Reply::Sized(200, body)
        } else {
            Reply::Chunked(200, body)
        }
    })
    .await;
    // Probes with a check read the body; a plain probe only its status.
    let checked = |id: &str| {
        let mut p = probe(id, &server.url(&format!("/{id}")), 200 * MS, 2000 * MS);
        p.checks = vec![ProbeCheckConfig {
            pointer: "/ok".into(),
            below: None,
            above: None,
            equals: Some(toml::Value::Boolean(false)),
            then: CheckOutcome::Down,
        }];
        p
    };
    let plain = probe(
        "sized-plain",
        &server.url("/sized-plain"),
        200 * MS,
        2000 * MS,
    );
    let mut run = Running::start(&[
        checked("sized"),
        checked("chunked"),
        checked("exact"),
        plain,
    ]);
    let sized = run.next_of("sized", Duration::from_secs(3)).await.report;
    let chunked = run.next_of("chunked", Duration::from_secs(3)).await.report;
    let exact = run.next_of("exact", Duration::from_secs(3)).await.report;
    let plain = run
        .next_of("sized-plain", Duration::from_secs(3))
        .await
        .report;
    run.shutdown.cancel();

    for over in [&sized, &chunked] {
        assert_eq!(
            over.result.error.as_deref(),
            Some("body over 1 MiB"),
            "{}",
            over.id
        );
        assert_eq!(over.result.body, None);
        assert_eq!(over.result.status, Some(200));
    }
    assert_eq!(exact.result.error, None);
    assert_eq!(exact.result.body.as_ref().map(Vec::len), Some(MAX_BODY));
    assert_eq!(
        (
            plain.result.status,
            plain.result.error.as_deref(),
            plain.result.body.as_ref()
        ),
        (Some(200), None, None),
        "a large page is no failure for a probe that only needs the status"
    );
    run.task.await.expect("collector ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_every_probe_promptly() {
    let hanging = Server::start(|_| Reply::Hang).await;
    let healthy = Server::start(|_| json(200, "{}")).await;
    let mut probes = Vec::new();
    for i in 0..10 {
        probes.push(probe(
            &format!("hang{i}"),
            &hanging.url("/"),
            100 * MS,
            30_000 * MS,
        ));
        probes.push(probe(
            &format!("ok{i}"),
            &healthy.url("/"),
            50 * MS,
            1000 * MS,
        ));
    }
    let mut run = Running::start(&probes);
    run.next_of("ok0", Duration::from_secs(2)).await;
    // As many hanging probes as one host is given are in the middle of a
    // request; the other two wait their turn.
    let until = Instant::now() + Duration::from_secs(2);
    while hanging.active() < MAX_PER_HOST && Instant::now() < until {
        tokio::time::sleep(10 * MS).await;
    }
    assert_eq!(hanging.active(), MAX_PER_HOST);

    let cancelled = Instant::now();
    run.shutdown.cancel();
    tokio::time::timeout(Duration::from_millis(300), run.task)
        .await
        .expect("run returns promptly")
        .expect("collector ends");
    let took = cancelled.elapsed();
    // Every probe task held a sender: the channel closes only when all ended.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), run.rx.recv()).await {}
    assert!(run.rx.is_closed() && run.rx.recv().await.is_none());
    // And the hanging requests were abandoned, their connections closed.
    let until = Instant::now() + Duration::from_secs(1);
    while hanging.active() > 0 && Instant::now() < until {
        tokio::time::sleep(10 * MS).await;
    }
    assert_eq!(hanging.active(), 0, "connections left open after shutdown");
    assert!(took < 300 * MS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_receiver_stops_the_collector() {
    let server = Server::start(|_| json(200, "{}")).await;
    // Hourly probes: none is due while the test runs.
    let probes: Vec<ProbeConfig> = (0..50)
        .map(|i| {
            probe(
                &format!("p{i}"),
                &server.url("/"),
                Duration::from_secs(3600),
                1000 * MS,
            )
        })
        .collect();
    let run = Running::start(&probes);
    tokio::time::sleep(50 * MS).await;
    drop(run.rx);
    tokio::time::timeout(Duration::from_millis(300), run.task)
        .await
        .expect("run returns once nobody listens")
        .expect("collector ends");
}

#[test]
fn bad_probe_urls_are_refused_before_anything_runs() {
    for url in [
        "ftp://127.0.0.1/health",
        "127.0.0.1:8080/health",
        "http://",
        "http://a b/",
    ] {
        let err = ProbeCollector::new(&[probe("bad", url, 100 * MS, 100 * MS)])
            .expect_err("a bad url is refused");
        assert!(matches!(err, ProbeError::Url { .. }), "{url}: {err}");
        assert!(err.to_string().starts_with("probe \"bad\": url"), "{err}");
    }
    let err = ProbeCollector::new(&[probe("zero", "http://127.0.0.1/", Duration::ZERO, MS)])
        .expect_err("a zero interval is refused");
    assert_eq!(
        err.to_string(),
        "probe \"zero\": every must be more than zero"
    );
}
