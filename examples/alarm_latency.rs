//! The load side of bench/alarm-latency.sh: the time from an alarm's
//! arrival to the webhook request it causes, for the daemon (alarms pushed
//! over HTTP and published over MQTT) and for Alertmanager (the same
//! alerts posted to its `/api/v2/alerts`), with one receiver for both.
//!
//! Each phase sends N distinct alarms, open loop: at a fixed rate (each
//! alarm's time is when it was due to be sent, so a sender that falls
//! behind is not hidden) or all at once (a burst: every alarm's time is
//! the burst's start). Alarm `i` fires on component `kmp{i}`, a root of
//! its own (it depends on nothing), so it opens an incident of its own and
//! yields exactly one webhook request; at Alertmanager the alert carries the
//! component and the phase as labels and is its own group. A phase fails
//! (exit 1) when a notification is missing, comes twice, or names an alarm
//! that was not sent. Between phases the daemon's alarms are cleared
//! (through the path that raised them) and the next phase waits until no
//! incident is open, so every phase starts from the same state.
//!
//! Prints, per phase and path, the median over the repetitions of p50, p99
//! and max, one `RESULT {json}` line each; progress goes to stderr.
//!
//! `alarm_latency --api PORT --token TOKEN --mqtt PORT --alertmanager PORT
//!  --listen PORT [--quick] [--reps N] [--phases 100,1000,10000,burst]`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

/// Requests in flight at once from the HTTP senders.
const HTTP_CONCURRENCY: usize = 256;
/// How long after its last alarm is sent a phase waits for notifications.
const PATIENCE: Duration = Duration::from_secs(30);
/// How long the receiver keeps listening for doubles once all arrived.
const GRACE: Duration = Duration::from_millis(500);
/// The component names' prefix: the daemon's texts name the component.
const PREFIX: &str = "kmp";

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Path {
    Http,
    Mqtt,
    Alertmanager,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Http => "http",
            Path::Mqtt => "mqtt",
            Path::Alertmanager => "alertmanager",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Phase {
    /// Alarms per second; `None` for a burst.
    rate: Option<u32>,
    alarms: usize,
}

impl Phase {
    fn name(self) -> String {
        match self.rate {
            Some(r) => format!("{r}/s"),
            None => "burst".into(),
        }
    }
    /// When alarm `i` is due, from the phase's start.
    fn due(self, i: usize) -> Duration {
        match self.rate {
            Some(r) => Duration::from_secs_f64(i as f64 / f64::from(r)),
            None => Duration::ZERO,
        }
    }
}

/// What the receiver heard in the current phase.
#[derive(Default)]
struct Heard {
    state: Mutex<Round>,
    notify: Notify,
}

#[derive(Default)]
struct Round {
    /// The phase label Alertmanager's alerts must carry.
    run: String,
    /// By alarm index: the first arrival and how many came.
    by_alarm: HashMap<usize, (Instant, u32)>,
    /// Requests that named no alarm of this phase.
    strays: Vec<String>,
}

impl Heard {
    fn record(&self, alarm: Option<usize>, run: Option<&str>, what: &str) {
        let now = Instant::now();
        let mut s = self.state.lock().expect("heard");
        match alarm {
            Some(i) if run.is_none_or(|r| r == s.run) => {
                let e = s.by_alarm.entry(i).or_insert((now, 0));
                e.1 += 1;
            }
            _ => s.strays.push(what.chars().take(300).collect()),
        }
        drop(s);
        self.notify.notify_waiters();
    }

    fn reset(&self, run: &str) {
        let mut s = self.state.lock().expect("heard");
        s.run = run.to_owned();
        s.by_alarm.clear();
        s.strays.clear();
    }

    fn count(&self) -> usize {
        self.state.lock().expect("heard").by_alarm.len()
    }
}

/// The alarm index a daemon text names (`kmp123`).
fn alarm_in_text(text: &str) -> Option<usize> {
    let at = text.find(PREFIX)? + PREFIX.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

async fn from_daemon(State(heard): State<Arc<Heard>>, body: Bytes) -> &'static str {
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let alarm = v["text"].as_str().and_then(alarm_in_text);
    heard.record(alarm, None, &String::from_utf8_lossy(&body));
    "ok"
}

async fn from_alertmanager(State(heard): State<Arc<Heard>>, body: Bytes) -> &'static str {
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let alerts = v["alerts"].as_array().cloned().unwrap_or_default();
    if alerts.is_empty() {
        heard.record(None, None, &String::from_utf8_lossy(&body));
    }
    for a in alerts {
        let alarm = a["labels"]["component"]
            .as_str()
            .and_then(|c| c.strip_prefix(PREFIX))
            .and_then(|n| n.parse().ok());
        heard.record(alarm, a["labels"]["run"].as_str(), &a.to_string());
    }
    "ok"
}

struct Args {
    api: u16,
    token: String,
    mqtt: u16,
    alertmanager: u16,
    listen: u16,
    quick: bool,
    reps: usize,
    /// Only the phases named (`100`, `1000`, `10000`, `burst`), for
    /// looking at one of them while working on it.
    only: Option<Vec<String>>,
}

fn args() -> Args {
    let usage = "usage: alarm_latency --api PORT --token TOKEN --mqtt PORT --alertmanager PORT \
                 --listen PORT [--quick] [--reps N] [--phases 100,1000,10000,burst]";
    let mut a = Args {
        api: 0,
        token: String::new(),
        mqtt: 0,
        alertmanager: 0,
        listen: 0,
        quick: false,
        reps: 1,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--quick" {
            a.quick = true;
            continue;
        }
        let value = it.next().expect(usage);
        let port = || value.parse::<u16>().expect(usage);
        match flag.as_str() {
            "--api" => a.api = port(),
            "--token" => a.token = value.clone(),
            "--mqtt" => a.mqtt = port(),
            "--alertmanager" => a.alertmanager = port(),
            "--listen" => a.listen = port(),
            "--reps" => a.reps = value.parse().expect(usage),
            "--phases" => a.only = Some(value.split(',').map(str::to_owned).collect()),
            _ => panic!("{usage}"),
        }
    }
    assert!(
        a.api > 0 && a.mqtt > 0 && a.alertmanager > 0 && a.listen > 0 && !a.token.is_empty(),
        "{usage}"
    );
    a
}

/// The phases of a run.
fn phases(a: &Args) -> Vec<Phase> {
    let mut all = every_phase(a.quick);
    if let Some(only) = &a.only {
        all.retain(|p| {
            only.iter()
                .any(|o| *o == p.rate.map_or("burst".into(), |r| r.to_string()))
        });
    }
    all
}

fn every_phase(quick: bool) -> Vec<Phase> {
    if quick {
        vec![
            Phase {
                rate: Some(100),
                alarms: 200,
            },
            Phase {
                rate: None,
                alarms: 200,
            },
        ]
    } else {
        vec![
            Phase {
                rate: Some(100),
                alarms: 1000,
            },
            Phase {
                rate: Some(1000),
                alarms: 5000,
            },
            Phase {
                rate: Some(10_000),
                alarms: 10_000,
            },
            Phase {
                rate: None,
                alarms: 5000,
            },
        ]
    }
}

/// Sends alarms and clears them again.
struct Senders {
    http: reqwest::Client,
    mqtt: AsyncClient,
    api: u16,
    token: String,
    alertmanager: u16,
    limit: Arc<Semaphore>,
}

impl Senders {
    /// Sends alarm `i` of `run` on `path` (`firing` false clears it).
    async fn send(&self, path: Path, i: usize, run: &str, firing: bool) -> Result<(), String> {
        let component = format!("{PREFIX}{i}");
        match path {
            Path::Mqtt => {
                let payload = if firing {
                    r#"{"state":"alarm"}"#
                } else {
                    r#"{"state":"ok"}"#
                };
                self.mqtt
                    .publish(
                        format!("site/{component}/fire"),
                        QoS::AtLeastOnce,
                        false,
                        payload,
                    )
                    .await
                    .map_err(|e| format!("publish: {e}"))
            }
            Path::Http => {
                let state = if firing { "firing" } else { "cleared" };
                let r = self
                    .http
                    .post(format!("http://127.0.0.1:{}/api/v1/alarms", self.api))
                    .bearer_auth(&self.token)
                    .header("content-type", "application/json")
                    .body(
                        json!({"component": component, "kind": "fire", "state": state}).to_string(),
                    )
                    .send()
                    .await
                    .map_err(|e| format!("push: {e}"))?;
                if r.status() != reqwest::StatusCode::ACCEPTED {
                    return Err(format!("push answered {}", r.status()));
                }
                Ok(())
            }
            Path::Alertmanager => {
                let body = json!([{
                    "labels": {"alertname": "Fire", "component": component, "run": run},
                    "annotations": {"summary": format!("fire at {component}")},
                }]);
                let r = self
                    .http
                    .post(format!(
                        "http://127.0.0.1:{}/api/v2/alerts",
                        self.alertmanager
                    ))
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .map_err(|e| format!("alertmanager: {e}"))?;
                if !r.status().is_success() {
                    return Err(format!("alertmanager answered {}", r.status()));
                }
                Ok(())
            }
        }
    }

    /// Alarms `0..n` at the phase's pace; returns when each was due.
    async fn send_phase(
        self: &Arc<Self>,
        path: Path,
        phase: Phase,
        run: &str,
        firing: bool,
    ) -> Result<Vec<Instant>, String> {
        let start = Instant::now() + Duration::from_millis(5);
        let mut due = Vec::with_capacity(phase.alarms);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..phase.alarms {
            let at = start + phase.due(i);
            due.push(at);
            tokio::time::sleep_until(at).await;
            let permit = self
                .limit
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            let (this, run) = (self.clone(), run.to_owned());
            tasks.spawn(async move {
                let r = this.send(path, i, &run, firing).await;
                drop(permit);
                r
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| e.to_string())??;
        }
        Ok(due)
    }

    /// How many incidents the daemon has open.
    async fn open_incidents(&self) -> Result<usize, String> {
        let body = self
            .http
            .get(format!(
                "http://127.0.0.1:{}/api/v1/incidents?state=open&limit=1",
                self.api
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("incidents: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("incidents: {e}"))?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("incidents: {e}: {}", String::from_utf8_lossy(&body)))?;
        let list = v
            .as_array()
            .or_else(|| v["incidents"].as_array())
            .ok_or_else(|| format!("incidents: unexpected answer {v}"))?;
        Ok(list.len())
    }

    /// Clears the phase's alarms and waits until no incident is open.
    async fn settle(self: &Arc<Self>, path: Path, phase: Phase, run: &str) -> Result<(), String> {
        if path == Path::Alertmanager {
            return Ok(());
        }
        let clear = Phase {
            rate: None,
            ..phase
        };
        self.send_phase(path, clear, run, false).await?;
        let deadline = Instant::now() + PATIENCE;
        while self.open_incidents().await? > 0 {
            if Instant::now() > deadline {
                return Err(format!("incidents still open {PATIENCE:?} after clearing"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

/// Percentiles of one phase on one path, in milliseconds.
#[derive(Clone, Copy, Debug)]
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
}

fn latency(mut ms: Vec<f64>) -> Latency {
    ms.sort_by(f64::total_cmp);
    let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    Latency {
        p50: rank(0.5),
        p99: rank(0.99),
        max: ms[ms.len() - 1],
    }
}

/// Waits for every alarm's notification, then for doubles; the latencies.
async fn collect(heard: &Heard, due: &[Instant]) -> Result<Vec<f64>, String> {
    let deadline = Instant::now() + PATIENCE;
    while heard.count() < due.len() {
        let notified = heard.notify.notified();
        if heard.count() >= due.len() {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            break;
        }
    }
    tokio::time::sleep(GRACE).await;
    let s = heard.state.lock().expect("heard");
    let missing: Vec<usize> = (0..due.len())
        .filter(|i| !s.by_alarm.contains_key(i))
        .collect();
    let doubled: Vec<(usize, u32)> = s
        .by_alarm
        .iter()
        .filter(|(_, (_, n))| *n > 1)
        .map(|(i, (_, n))| (*i, *n))
        .collect();
    let unknown: Vec<usize> = s
        .by_alarm
        .keys()
        .copied()
        .filter(|i| *i >= due.len())
        .collect();
    if !missing.is_empty() || !doubled.is_empty() || !unknown.is_empty() || !s.strays.is_empty() {
        return Err(format!(
            "{} of {} notifications missing (first: {:?}), {} doubled (first: {:?}), {} for \
             alarms not sent, {} naming no alarm (first: {:?})",
            missing.len(),
            due.len(),
            missing.first(),
            doubled.len(),
            doubled.first(),
            unknown.len(),
            s.strays.len(),
            s.strays.first()
        ));
    }
    Ok((0..due.len())
        .map(|i| {
            let (at, _) = s.by_alarm[&i];
            at.saturating_duration_since(due[i]).as_secs_f64() * 1000.0
        })
        .collect())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(args()).await {
        eprintln!("alarm_latency: {e}");
        std::process::exit(1);
    }
}

async fn run(a: Args) -> Result<(), String> {
    let heard = Arc::new(Heard::default());
    let app = axum::Router::new()
        .route("/beredskab", post(from_daemon))
        .route("/alertmanager", post(from_alertmanager))
        .with_state(heard.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", a.listen))
        .await
        .map_err(|e| format!("bind the receiver: {e}"))?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let mut options = MqttOptions::new(
        format!("latency-{}", fastrand::u32(..)),
        "127.0.0.1",
        a.mqtt,
    );
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(100);
    let (mqtt, mut eventloop) = AsyncClient::new(options, 20_000);
    tokio::spawn(async move {
        loop {
            if let Err(e) = eventloop.poll().await {
                eprintln!("publisher: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    beredskab::tls::install_provider();
    let senders = Arc::new(Senders {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(HTTP_CONCURRENCY)
            .build()
            .map_err(|e| e.to_string())?,
        mqtt,
        api: a.api,
        token: a.token.clone(),
        alertmanager: a.alertmanager,
        limit: Arc::new(Semaphore::new(HTTP_CONCURRENCY)),
    });

    let paths = [Path::Http, Path::Mqtt, Path::Alertmanager];
    let mut results: HashMap<(String, Path), Vec<Latency>> = HashMap::new();
    for rep in 0..a.reps {
        for phase in phases(&a) {
            for path in paths {
                let run = format!("r{rep}-{}-{}", phase.name(), path.name());
                heard.reset(&run);
                let due = senders.send_phase(path, phase, &run, true).await?;
                let ms = collect(&heard, &due)
                    .await
                    .map_err(|e| format!("{run}: {e}"))?;
                let l = latency(ms);
                eprintln!(
                    "{run}: {} alarms, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    phase.alarms, l.p50, l.p99, l.max
                );
                results.entry((phase.name(), path)).or_default().push(l);
                senders
                    .settle(path, phase, &run)
                    .await
                    .map_err(|e| format!("{run}: {e}"))?;
            }
        }
    }
    for phase in phases(&a) {
        for path in paths {
            let l = &results[&(phase.name(), path)];
            let m = |f: fn(&Latency) -> f64| median(l.iter().map(f).collect());
            println!(
                "RESULT {}",
                json!({
                    "phase": phase.name(),
                    "rate": phase.rate,
                    "alarms": phase.alarms,
                    "path": path.name(),
                    "p50_ms": m(|l| l.p50),
                    "p99_ms": m(|l| l.p99),
                    "max_ms": m(|l| l.max),
                    "reps": l.len(),
                })
            );
        }
    }
    Ok(())
}
