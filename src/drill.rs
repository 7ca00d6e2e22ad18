//! Drills: scenarios (SPEC §4) replayed through the same engine the daemon
//! runs, on a simulated clock, printed as JSON lines.
//!
//! At each instant the scenario's events apply first, in file order, then
//! the probe evaluations due, then the engine's timers.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::catalogue::{Catalogue, Staffing};
use crate::config::{AlarmKind, Config, ProbeKind};
use crate::engine::{
    AlarmInput, AlarmSeverity, AlarmState, Effect, Engine, EngineError, Event, IncidentId, Level,
    ProbeResult, RejectReason, Source, Ts,
};

/// Why a drill could not run.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The scenario is not valid; the message says where.
    #[error("{0}")]
    Scenario(String),
    #[error("catalogue: {0}")]
    Catalogue(#[from] crate::catalogue::CatalogueError),
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
}

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Run the clock from 0 to this, inclusive.
    #[serde(with = "humantime_serde")]
    pub end: Duration,
    /// The wall-clock time of t = 0 (RFC 3339).
    pub start: Option<String>,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    #[serde(default, rename = "event")]
    pub events: Vec<ScenarioEvent>,
}

/// A past resolved incident.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    pub component: String,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

/// One thing that happens at `at`; exactly one of the other fields is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioEvent {
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    pub mqtt: Option<MqttEvent>,
    pub probe: Option<ProbeEvent>,
    pub alarm: Option<AlarmEvent>,
    pub ack: Option<AckEvent>,
    pub eta: Option<EtaEvent>,
    pub level: Option<LevelEvent>,
    pub resolve: Option<ResolveEvent>,
    pub note: Option<NoteEvent>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttEvent {
    pub topic: String,
    pub payload: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeEvent {
    pub id: String,
    pub status: Option<u16>,
    pub ok: Option<bool>,
    pub body: Option<String>,
    /// tcp and icmp: the round trip in milliseconds.
    pub rtt_ms: Option<f64>,
    /// tls: how long the certificate has left.
    #[serde(default, with = "humantime_serde")]
    pub expires_in: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmEvent {
    pub component: String,
    pub kind: String,
    pub state: String,
    pub severity: Option<String>,
    pub message: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckEvent {
    pub incident: u64,
    pub by: String,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtaEvent {
    pub incident: u64,
    #[serde(with = "humantime_serde")]
    pub expected: Duration,
    pub by: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelEvent {
    pub incident: u64,
    pub level: String,
    pub by: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveEvent {
    pub incident: u64,
    pub by: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteEvent {
    pub incident: u64,
    pub by: Option<String>,
    pub text: String,
    #[serde(default)]
    pub decision: bool,
}

/// Who acts when a scenario does not say.
const DRILL_ACTOR: &str = "drill";
/// The wall-clock start when neither the scenario nor a rotation gives one.
const DEFAULT_START: &str = "2026-01-01T00:00:00Z";

impl Scenario {
    /// Parses a scenario; errors name the file, line and column.
    pub fn parse(name: &str, text: &str) -> Result<Scenario, String> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            format!("{name}:{line}:{col}: {}", e.message().trim())
        })?;
        // A scenario runs its clock to `end`: a bound keeps it finite and
        // every time inside it sane, as `check` does for a config.
        let too_long = |what: String, d: Duration| -> Result<(), String> {
            if crate::config::duration_in_bounds(d) {
                Ok(())
            } else {
                Err(format!(
                    "{name}: {what} {} is longer than 100 years",
                    humantime::format_duration(d)
                ))
            }
        };
        too_long("end".into(), scenario.end)?;
        for h in &scenario.history {
            too_long(
                format!("history of {:?}: duration", h.component),
                h.duration,
            )?;
        }
        for (i, e) in scenario.events.iter().enumerate() {
            too_long(format!("event {}: at", i + 1), e.at)?;
            if let Some(eta) = &e.eta {
                too_long(format!("event {}: eta expected", i + 1), eta.expected)?;
            }
        }
        for (i, e) in scenario.events.iter().enumerate() {
            let set = [
                e.mqtt.is_some(),
                e.probe.is_some(),
                e.alarm.is_some(),
                e.ack.is_some(),
                e.eta.is_some(),
                e.level.is_some(),
                e.resolve.is_some(),
                e.note.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if set != 1 {
                return Err(format!(
                    "{name}: event {} (at {}) must have exactly one of mqtt, probe, alarm, ack, eta, level, resolve, note",
                    i + 1,
                    humantime::format_duration(e.at)
                ));
            }
        }
        Ok(scenario)
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The wall-clock time of t = 0: the scenario's `start`, else the earliest
/// rotation start, else 2026-01-01T00:00:00Z.
fn start_time(cat: &Catalogue, scenario: &Scenario) -> Result<jiff::Timestamp, DrillError> {
    if let Some(s) = &scenario.start {
        return s
            .parse()
            .map_err(|e| DrillError::Scenario(format!("start {s:?}: {e}")));
    }
    let earliest = cat
        .roles
        .iter()
        .filter_map(|r| match &r.staffing {
            Staffing::Rotation { start, .. } => Some(*start),
            Staffing::Fixed { .. } => None,
        })
        .min();
    Ok(earliest.unwrap_or_else(|| DEFAULT_START.parse().expect("constant is RFC 3339")))
}

/// Runs a scenario and writes its JSON lines to `out`.
pub fn run(config: &Config, scenario: &Scenario, out: &mut impl Write) -> Result<(), DrillError> {
    let cat = Arc::new(Catalogue::build(config)?);
    let start = Ts::from_timestamp(start_time(&cat, scenario)?);
    let mut printer = Printer { out, start };
    drive(
        cat,
        scenario,
        |now, effects| printer.print(now, effects),
        |_, _| {},
    )?;
    printer.out.flush()?;
    Ok(())
}

/// What [`drive`] just did, for its hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// An event or a probe evaluation went to the engine; `changed` as in
    /// [`crate::engine::Applied`] (`false` when the engine refused it).
    Input { changed: bool },
    /// The engine was ticked.
    Tick,
}

/// Runs a scenario through a new engine over `cat` on the simulated
/// clock: each step's effects go to `sink` with their time, and after each
/// step that reached the engine, `hook` may inspect or replace it (the
/// snapshot tests restore it there). [`run`] is this with a printer.
pub fn drive(
    cat: Arc<Catalogue>,
    scenario: &Scenario,
    mut sink: impl FnMut(Ts, &[Effect]) -> std::io::Result<()>,
    mut hook: impl FnMut(&mut Engine, Done),
) -> Result<(), DrillError> {
    let start = Ts::from_timestamp(start_time(&cat, scenario)?);
    let mut engine = Engine::new(cat.clone());
    for h in &scenario.history {
        let node = cat.node_id(&h.component).ok_or_else(|| {
            DrillError::Scenario(format!("history names unknown component {:?}", h.component))
        })?;
        engine.add_history(node, h.duration);
    }
    let mut events = compile_events(&cat, scenario)?.into_iter().peekable();
    let end = start.plus(scenario.end);

    let healthy = ProbeResult {
        status: Some(200),
        ..ProbeResult::default()
    };
    let mut results = vec![healthy; cat.probes.len()];
    let mut next_probe: Vec<Ts> = vec![start; cat.probes.len()];
    let every: Vec<Duration> = cat
        .probes
        .iter()
        .map(|p| p.config.every.max(Duration::from_millis(1)))
        .collect();

    loop {
        let candidates = [
            events.peek().map(|e| e.0),
            next_probe.iter().min().copied(),
            engine.next_wakeup(),
        ];
        let Some(now) = candidates.into_iter().flatten().min() else {
            break;
        };
        if now > end {
            break;
        }
        while let Some((at, event)) = events.next_if(|e| e.0 == now) {
            match event {
                Step::Probe(i, result) => results[i] = result,
                Step::Reject(source, reason) => sink(
                    now,
                    &[Effect::Rejected {
                        source,
                        reason,
                        detail: String::new(),
                    }],
                )?,
                Step::Engine(ev) => {
                    let changed = match engine.apply(at, ev) {
                        Ok(applied) => {
                            sink(now, &applied.effects)?;
                            applied.changed
                        }
                        Err(EngineError::UnknownIncident(_)) => {
                            sink(
                                now,
                                &[Effect::Rejected {
                                    source: Source::Manual,
                                    reason: RejectReason::UnknownIncident,
                                    detail: String::new(),
                                }],
                            )?;
                            false
                        }
                        // Acting on a resolved incident changes nothing.
                        Err(EngineError::Resolved(_) | EngineError::LinkUsed(_)) => false,
                    };
                    hook(&mut engine, Done::Input { changed });
                }
            }
        }
        for (i, p) in cat.probes.iter().enumerate() {
            if next_probe[i] == now {
                next_probe[i] = now.plus(every[i]);
                // Borrowed, as the daemon applies it: a month of 10 s
                // probes is millions of evaluations of a few results.
                let applied = engine.apply_probe(now, &p.config.id, &results[i]);
                sink(now, &applied.effects)?;
                hook(
                    &mut engine,
                    Done::Input {
                        changed: applied.changed,
                    },
                );
            }
        }
        let effects = engine.tick(now);
        sink(now, &effects)?;
        hook(&mut engine, Done::Tick);
    }
    Ok(())
}

enum Step {
    /// A probe's result changes; it is evaluated on its own schedule.
    Probe(usize, ProbeResult),
    Engine(Event),
    /// Input the daemon would refuse before it reaches the engine.
    Reject(Source, RejectReason),
}

/// An `alarm` event is what `POST /api/v1/alarms` would receive: a kind,
/// state or severity it does not know is rejected, not a broken scenario.
fn alarm_step(a: &AlarmEvent) -> Step {
    let reject = |reason| Step::Reject(Source::Http, reason);
    let Some(kind) = AlarmKind::parse(&a.kind) else {
        return reject(RejectReason::BadPayload);
    };
    let Some(state) = AlarmState::parse(&a.state) else {
        return reject(RejectReason::BadState);
    };
    let severity = match a.severity.as_deref().map(AlarmSeverity::parse) {
        None => AlarmSeverity::Critical,
        Some(Some(s)) => s,
        Some(None) => return reject(RejectReason::BadPayload),
    };
    Step::Engine(Event::Alarm(AlarmInput {
        component: a.component.clone(),
        kind,
        state,
        severity,
        source: Source::Http,
        message: a.message.clone(),
        key: a.key.clone(),
    }))
}

/// The result a probe event gives its probe: `status` alone, `body` alone
/// (with status 200) or `ok` for http; `ok`, and `rtt_ms` for tcp and icmp
/// or `expires_in` for tls, for the network kinds.
fn probe_result(kind: ProbeKind, p: &ProbeEvent) -> Result<ProbeResult, String> {
    let only = |key: &str, present: bool, kinds: &[ProbeKind]| {
        if present && !kinds.contains(&kind) {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            Err(format!("{key} is for {} probes", names.join(" and ")))
        } else {
            Ok(())
        }
    };
    only("status", p.status.is_some(), &[ProbeKind::Http])?;
    only("body", p.body.is_some(), &[ProbeKind::Http])?;
    only(
        "rtt_ms",
        p.rtt_ms.is_some(),
        &[ProbeKind::Tcp, ProbeKind::Icmp],
    )?;
    only("expires_in", p.expires_in.is_some(), &[ProbeKind::Tls])?;
    if p.rtt_ms.is_some_and(|ms| !ms.is_finite() || ms < 0.0) {
        return Err("rtt_ms must be a number of milliseconds, 0 or more".into());
    }
    if let Some(d) = p.expires_in
        && !crate::config::duration_in_bounds(d)
    {
        return Err("expires_in is longer than 100 years".into());
    }
    let failed = p.ok == Some(false);
    Ok(match kind {
        ProbeKind::Http if failed => ProbeResult::failed("probe failed"),
        ProbeKind::Http => ProbeResult {
            status: Some(p.status.unwrap_or(200)),
            body: p.body.as_ref().map(|b| b.clone().into_bytes()),
            ..ProbeResult::default()
        },
        _ => ProbeResult {
            error: failed.then(|| "probe failed".to_owned()),
            rtt_ms: p.rtt_ms,
            expires_in_s: p
                .expires_in
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            ..ProbeResult::default()
        },
    })
}

fn compile_events(cat: &Catalogue, scenario: &Scenario) -> Result<Vec<(Ts, Step)>, DrillError> {
    let start = Ts::from_timestamp(start_time(cat, scenario)?);
    let bad = |m: String| DrillError::Scenario(m);
    let mut out = Vec::new();
    for e in &scenario.events {
        let at = start.plus(e.at);
        let step = if let Some(m) = &e.mqtt {
            Step::Engine(Event::Mqtt {
                topic: m.topic.clone(),
                payload: m.payload.clone().into_bytes(),
            })
        } else if let Some(p) = &e.probe {
            let i = cat
                .probe_id(&p.id)
                .ok_or_else(|| bad(format!("probe event names unknown probe {:?}", p.id)))?;
            let kind = cat.probe(i).config.kind;
            let result = probe_result(kind, p).map_err(|why| {
                bad(format!(
                    "probe event at {} for {kind} probe {:?}: {why}",
                    humantime::format_duration(e.at),
                    p.id
                ))
            })?;
            Step::Probe(i.0 as usize, result)
        } else if let Some(a) = &e.alarm {
            alarm_step(a)
        } else if let Some(a) = &e.ack {
            Step::Engine(Event::Ack {
                incident: IncidentId(a.incident),
                by: a.by.clone(),
                note: a.note.clone(),
            })
        } else if let Some(a) = &e.eta {
            Step::Engine(Event::Eta {
                incident: IncidentId(a.incident),
                expected: a.expected,
                by: a.by.clone(),
                from_now: false,
            })
        } else if let Some(l) = &e.level {
            let level = Level::parse(&l.level).ok_or_else(|| {
                bad(format!(
                    "level event: {:?} is not crisis or department",
                    l.level
                ))
            })?;
            Step::Engine(Event::SetLevel {
                incident: IncidentId(l.incident),
                level,
                by: l.by.clone(),
            })
        } else if let Some(r) = &e.resolve {
            Step::Engine(Event::Resolve {
                incident: IncidentId(r.incident),
                by: r.by.clone().unwrap_or_else(|| DRILL_ACTOR.to_owned()),
                note: r.note.clone(),
            })
        } else if let Some(n) = &e.note {
            Step::Engine(Event::Note {
                incident: IncidentId(n.incident),
                by: n.by.clone().unwrap_or_else(|| DRILL_ACTOR.to_owned()),
                text: n.text.clone(),
                decision: n.decision,
                public: false,
            })
        } else {
            unreachable!("Scenario::parse checks each event has one kind")
        };
        out.push((at, step));
    }
    // Events apply in time order, file order within an instant.
    out.sort_by_key(|e| e.0);
    Ok(out)
}

struct Printer<'w, W: Write> {
    out: &'w mut W,
    start: Ts,
}

impl<W: Write> Printer<'_, W> {
    fn print(&mut self, now: Ts, effects: &[Effect]) -> std::io::Result<()> {
        for e in effects {
            let (kind, fields) = describe(e);
            let mut line = String::with_capacity(128);
            line.push_str("{\"t\":");
            line.push_str(&seconds(now.millis_since(self.start)).to_string());
            line.push_str(",\"type\":");
            line.push_str(&Value::from(kind).to_string());
            for (k, v) in fields {
                line.push_str(",\"");
                line.push_str(k);
                line.push_str("\":");
                line.push_str(&v.to_string());
            }
            line.push_str("}\n");
            self.out.write_all(line.as_bytes())?;
        }
        Ok(())
    }
}

/// Seconds as a JSON number: an integer when whole.
fn seconds(ms: i64) -> Value {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

/// The drill line of an effect: its type and fields in SPEC §4's order.
fn describe(e: &Effect) -> (&'static str, Vec<(&'static str, Value)>) {
    match e {
        Effect::Alarm {
            component,
            kind,
            state,
            severity,
            source,
            ..
        } => (
            "alarm",
            vec![
                ("component", json!(component)),
                ("kind", json!(kind.as_str())),
                ("state", json!(state.as_str())),
                ("severity", json!(severity.as_str())),
                ("source", json!(source.as_str())),
            ],
        ),
        Effect::Rejected { source, reason, .. } => (
            "rejected",
            vec![
                ("source", json!(source.as_str())),
                ("reason", json!(reason.as_str())),
            ],
        ),
        Effect::IncidentOpened {
            incident,
            root,
            services,
            severity,
            expected_s,
        } => (
            "incident_opened",
            vec![
                ("incident", json!(incident)),
                ("root", json!(root)),
                ("services", json!(services)),
                ("severity", json!(severity.as_str())),
                ("expected_s", json!(expected_s)),
            ],
        ),
        Effect::IncidentUpdated {
            incident,
            root,
            services,
            severity,
        } => (
            "incident_updated",
            vec![
                ("incident", json!(incident)),
                ("root", json!(root)),
                ("services", json!(services)),
                ("severity", json!(severity.as_str())),
            ],
        ),
        Effect::IncidentMerged { incident, into } => (
            "incident_merged",
            vec![("incident", json!(incident)), ("into", json!(into))],
        ),
        Effect::Estimate {
            incident,
            expected_s,
            basis,
        } => (
            "estimate",
            vec![
                ("incident", json!(incident)),
                ("expected_s", json!(expected_s)),
                ("basis", json!(basis.as_str())),
            ],
        ),
        Effect::Notification(n) => (
            "notification",
            vec![
                ("incident", json!(n.incident)),
                ("to", json!(n.person)),
                ("role", json!(n.role)),
                ("channel", json!(n.channel)),
                ("reason", json!(n.reason.as_str())),
                ("text", json!(n.text)),
            ],
        ),
        Effect::Acknowledged { incident, by } => (
            "acknowledged",
            vec![("incident", json!(incident)), ("by", json!(by))],
        ),
        Effect::Level {
            incident,
            level,
            meeting_place,
        } => (
            "level",
            vec![
                ("incident", json!(incident)),
                ("level", json!(level.as_str())),
                ("meeting_place", json!(meeting_place)),
            ],
        ),
        Effect::IncidentResolved {
            incident,
            duration_ms,
        } => (
            "incident_resolved",
            vec![
                ("incident", json!(incident)),
                ("duration_s", seconds(*duration_ms)),
            ],
        ),
    }
}
