//! The demo's script: a morning in the server room, on real time.
//!
//! All is well at start. At t+10s mains power is lost and the generator,
//! started a few seconds earlier by the unstable voltage, carries the room;
//! its fuel drops over the minute until the runtime left is shorter than a
//! power cut is expected to last. At t+40s the fire alarm goes off in the
//! server room and four servers stop answering. At t+1m40s the fire clears,
//! at t+2m power returns and the generator stops; everything recovers.
//!
//! At t+1m the person on call raises the fire's incident to crisis level
//! (the crisis staff meets away from the burning town hall), logs a public
//! decision and gives the vendor's estimate, through the HTTP API
//! (`operator.rs`).
//!
//! Each step changes the simulated sensors (`sensors.rs`) or acts as the
//! person on call, and prints one line to stdout for the newcomer. The sensors' heartbeats run alongside.

use std::io::Write;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::broker::BrokerHandle;
use super::operator::{Deed, Operator};
use super::sensors::{GeneratorStatus, Heartbeat, Sensors};

/// The server room's fire alarm (`raadhus/serverrum/+/brand`, component
/// `{1}` = `serverrum`).
pub const FIRE_TOPIC: &str = "raadhus/serverrum/serverrum/brand";
/// The server room's mains power sensor.
pub const POWER_TOPIC: &str = "raadhus/serverrum/stroem";
/// One topic per `[[mqtt.subscription]]` of the example.
pub const SENSOR_TOPICS: [&str; 6] = [
    FIRE_TOPIC,
    "solhaven/teknikrum/brand",
    POWER_TOPIC,
    "raadhus/serverrum/ups",
    "raadhus/generator/alarm",
    "raadhus/serverrum/temperatur",
];
/// The servers the fire takes down (probe ids of the example).
pub const FIRE_SERVERS: [&str; 4] = ["srv-esdh", "srv-nexus", "srv-citrix", "srv-fil"];
/// The generator tank before the power cut, in percent.
pub const START_FUEL: u8 = 30;
/// How long the script waits for the daemon to subscribe before it starts
/// anyway; a message published before that would reach nobody.
pub const SUBSCRIBER_WAIT: Duration = Duration::from_secs(30);
/// The shortest real wait between two heartbeats of one topic.
const MIN_HEARTBEAT_EVERY: Duration = Duration::from_millis(100);
/// The width of the `t+…` column in printed lines.
const TIME_COLUMN: usize = 9;

/// What a step does to the sensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Publish on a sensor topic (and keep it as the heartbeat payload).
    Publish {
        topic: &'static str,
        payload: &'static str,
    },
    /// Make probe endpoints answer 200 (`healthy`) or 503.
    Health {
        probes: &'static [&'static str],
        healthy: bool,
    },
    /// Set what the generator controller reports.
    Generator(GeneratorStatus),
    /// The person on call acts through the API (skipped without one).
    Operator(Deed),
}

/// One moment of the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Since the start of the script.
    pub at: Duration,
    /// The line printed, if the step is worth one.
    pub say: Option<&'static str>,
    pub actions: Vec<Action>,
}

const POWER_LOST: &str = r#"{"state": "alarm", "message": "Netspænding tabt"}"#;
const POWER_BACK: &str = r#"{"state": "ok", "message": "Netspænding genetableret"}"#;
const FIRE: &str = r#"{"state": "alarm", "message": "Røg i serverrummet"}"#;
const FIRE_OUT: &str = r#"{"state": "ok", "message": "Brandalarm afstillet"}"#;
/// The plain-text form of SPEC §6, for the sensors that only say OK.
const OK: &str = "OK";

/// The script, in time order.
pub fn steps() -> Vec<Step> {
    let at = Duration::from_secs;
    let running = |fuel_percent| {
        Action::Generator(GeneratorStatus {
            running: true,
            fuel_percent,
        })
    };
    let fuel = |secs, percent, say| Step {
        at: at(secs),
        say,
        actions: vec![running(percent)],
    };
    let mut all_ok: Vec<Action> = SENSOR_TOPICS
        .iter()
        .map(|&topic| Action::Publish { topic, payload: OK })
        .collect();
    all_ok.push(Action::Generator(GeneratorStatus {
        running: false,
        fuel_percent: START_FUEL,
    }));
    vec![
        Step {
            at: at(0),
            say: Some(
                "demo: all is well – mains power on, generator on standby (tank 30 % full), every health check answers",
            ),
            actions: all_ok,
        },
        Step {
            at: at(4),
            say: Some("sensor: mains voltage unstable – the generator starts"),
            actions: vec![running(START_FUEL)],
        },
        Step {
            at: at(10),
            say: Some(
                "sensor: mains power lost (raadhus/serverrum/stroem); the generator carries the server room",
            ),
            actions: vec![Action::Publish {
                topic: POWER_TOPIC,
                payload: POWER_LOST,
            }],
        },
        fuel(15, 27, None),
        fuel(
            20,
            24,
            Some("sensor: generator fuel 24 % – below 25 % it counts as degraded"),
        ),
        fuel(25, 21, None),
        fuel(30, 18, None),
        fuel(35, 15, None),
        Step {
            at: at(40),
            say: Some("sensor: FIRE alarm in the server room (raadhus/serverrum/serverrum/brand)"),
            actions: vec![
                Action::Publish {
                    topic: FIRE_TOPIC,
                    payload: FIRE,
                },
                running(12),
            ],
        },
        fuel(
            45,
            9,
            Some(
                "sensor: generator fuel 9 % – 43 min left, less than a power cut is expected to last (45 min)",
            ),
        ),
        Step {
            at: at(48),
            say: Some(
                "sensor: 4 servers in the server room stop answering (srv-esdh, srv-nexus, srv-citrix, srv-fil)",
            ),
            actions: vec![Action::Health {
                probes: &FIRE_SERVERS,
                healthy: false,
            }],
        },
        fuel(50, 6, None),
        fuel(55, 4, None),
        Step {
            at: at(60),
            say: None,
            actions: vec![Action::Operator(Deed::RaiseCrisis)],
        },
        Step {
            at: at(65),
            say: None,
            actions: vec![Action::Operator(Deed::PublicDecision(
                "Brand i serverrummet på rådhuset. Sagssystemer og fildrev er nede; \
                 borgerservice skriver på papir indtil videre.",
            ))],
        },
        Step {
            at: at(70),
            say: None,
            actions: vec![Action::Operator(Deed::Remaining("2h"))],
        },
        Step {
            at: at(100),
            say: Some("sensor: the fire alarm in the server room clears"),
            actions: vec![Action::Publish {
                topic: FIRE_TOPIC,
                payload: FIRE_OUT,
            }],
        },
        Step {
            at: at(105),
            say: Some("sensor: the 4 servers answer again"),
            actions: vec![Action::Health {
                probes: &FIRE_SERVERS,
                healthy: true,
            }],
        },
        Step {
            at: at(120),
            say: Some("sensor: mains power is back (raadhus/serverrum/stroem)"),
            actions: vec![Action::Publish {
                topic: POWER_TOPIC,
                payload: POWER_BACK,
            }],
        },
        Step {
            at: at(130),
            say: Some("sensor: the generator stops and is refuelled (tank 100 %)"),
            actions: vec![Action::Generator(GeneratorStatus {
                running: false,
                fuel_percent: 100,
            })],
        },
        Step {
            at: at(150),
            say: Some(
                "demo: all recovered; the incidents resolve by themselves. Heartbeats go on; Ctrl-C stops the demo",
            ),
            actions: Vec::new(),
        },
    ]
}

/// How fast the script runs: real seconds per script second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace(f64);

impl Pace {
    pub const REAL_TIME: Pace = Pace(1.0);

    /// `factor` times faster than real time (tests).
    pub fn faster(factor: u32) -> Pace {
        Pace(1.0 / f64::from(factor.max(1)))
    }

    fn real(self, script: Duration) -> Duration {
        script.mul_f64(self.0)
    }
}

/// `t+10s`, `t+1m40s`, `t+2m`.
pub fn offset(at: Duration) -> String {
    let secs = at.as_secs();
    match (secs / 60, secs % 60) {
        (0, s) => format!("t+{s}s"),
        (m, 0) => format!("t+{m}m"),
        (m, s) => format!("t+{m}m{s}s"),
    }
}

/// One printed line: the time column, then the text.
pub fn line(at: Duration, text: &str) -> String {
    format!("{:<TIME_COLUMN$}{text}", offset(at))
}

/// Prints a line to stdout. A closed stdout (a pipe to `head`) must not
/// stop the demo, so write errors are ignored.
pub fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Plays the script against `sensors`, then keeps the heartbeats going,
/// until `shutdown`. Starts once a session subscribes to the power topic,
/// or after [`SUBSCRIBER_WAIT`].
pub async fn play(
    sensors: &Sensors,
    broker: &BrokerHandle,
    operator: Option<&Operator>,
    pace: Pace,
    shutdown: &CancellationToken,
    say: &mut (dyn FnMut(&str) + Send),
) {
    if !broker.has_subscriber(POWER_TOPIC) {
        say("demo: waiting for beredskab to subscribe to the sensor topics …");
        let waited = tokio::select! {
            () = shutdown.cancelled() => return,
            waited = tokio::time::timeout(SUBSCRIBER_WAIT, broker.wait_for_subscriber(POWER_TOPIC)) => waited,
        };
        if waited.is_err() {
            say("demo: nobody has subscribed yet – starting anyway");
        }
    }

    let start = Instant::now();
    let steps = steps();
    let every = |h: &Heartbeat| pace.real(h.every()).max(MIN_HEARTBEAT_EVERY);
    let mut beats: Vec<(Heartbeat, Instant)> = SENSOR_TOPICS
        .iter()
        .filter_map(|t| sensors.heartbeat(t))
        .map(|h| {
            let due = start + every(&h);
            (h, due)
        })
        .collect();
    let mut next = steps.iter().peekable();
    loop {
        let step_due = next.peek().map(|s| start + pace.real(s.at));
        let beat_due = beats.iter().map(|(_, due)| *due).min();
        let Some(due) = step_due.into_iter().chain(beat_due).min() else {
            shutdown.cancelled().await;
            return;
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(due) => {}
        }
        let now = Instant::now();
        while let Some(step) = next.next_if(|s| start + pace.real(s.at) <= now) {
            if let Some(text) = step.say {
                say(&line(step.at, text));
            }
            for action in &step.actions {
                if let Action::Operator(deed) = action {
                    let Some(operator) = operator else { continue };
                    match operator.act(deed).await {
                        Ok(text) => say(&line(step.at, &text)),
                        Err(e) => say(&line(step.at, &format!("on call: {e}"))),
                    }
                } else {
                    apply(sensors, action).await;
                }
            }
        }
        for (heartbeat, due) in &mut beats {
            if *due <= now {
                if let Err(error) = sensors.republish(&heartbeat.topic).await {
                    warn!(%error, topic = heartbeat.topic, "demo heartbeat not sent");
                }
                *due = now + every(heartbeat);
            }
        }
    }
}

async fn apply(sensors: &Sensors, action: &Action) {
    match action {
        Action::Publish { topic, payload } => {
            if let Err(error) = sensors.publish(topic, payload).await {
                warn!(%error, topic, "demo sensor message not sent");
            }
        }
        Action::Health { probes, healthy } => {
            for probe in *probes {
                if !sensors.set_healthy(probe, *healthy) {
                    warn!(probe, "demo script names a probe the config does not have");
                }
            }
        }
        Action::Generator(status) => sensors.set_generator(*status),
        Action::Operator(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::catalogue::Catalogue;
    use crate::config::{AlarmKind, Config, load_str};
    use crate::engine::AlarmState;
    use crate::engine::intake::{parse_payload, route};

    fn example() -> Config {
        load_str("example", super::super::EXAMPLE_CONFIG)
            .expect("the example validates")
            .config
    }

    #[test]
    fn lines_have_a_time_column() {
        assert_eq!(offset(Duration::from_secs(10)), "t+10s");
        assert_eq!(offset(Duration::from_secs(100)), "t+1m40s");
        assert_eq!(offset(Duration::from_secs(120)), "t+2m");
        assert_eq!(
            line(Duration::from_secs(10), "sensor: x"),
            "t+10s    sensor: x"
        );
    }

    #[test]
    fn steps_are_in_time_order_and_payloads_parse() {
        let steps = steps();
        assert!(steps.windows(2).all(|w| w[0].at < w[1].at));
        for step in &steps {
            for action in &step.actions {
                if let Action::Publish { payload, .. } = action {
                    assert!(parse_payload(payload.as_bytes()).is_ok(), "{payload}");
                }
            }
        }
    }

    /// When a topic is first published with `state` after `after`.
    fn first(steps: &[Step], topic: &str, state: AlarmState, after: Duration) -> Duration {
        let says = |a: &Action| match a {
            Action::Publish { topic: t, payload } => {
                *t == topic && parse_payload(payload.as_bytes()).map(|p| p.state) == Ok(state)
            }
            _ => false,
        };
        steps
            .iter()
            .find(|s| s.at > after && s.actions.iter().any(says))
            .map(|s| s.at)
            .unwrap_or_else(|| panic!("{topic} never {state:?} after {after:?}"))
    }

    #[test]
    fn power_fails_and_fire_starts_within_the_first_minute() {
        let steps = steps();
        let lost = first(&steps, POWER_TOPIC, AlarmState::Firing, Duration::ZERO);
        let fire = first(&steps, FIRE_TOPIC, AlarmState::Firing, Duration::ZERO);
        assert!(lost >= Duration::from_secs(5) && lost <= Duration::from_secs(15));
        assert!(fire >= Duration::from_secs(30) && fire <= Duration::from_secs(50));
        // The generator runs before the mains alarm: its probe must have
        // seen it running, or the room looks unpowered for a moment.
        let started = steps
            .iter()
            .find(|s| {
                s.actions
                    .iter()
                    .any(|a| matches!(a, Action::Generator(g) if g.running))
            })
            .map(|s| s.at)
            .expect("the generator starts");
        assert!(started + super::super::DEMO_PROBE_EVERY <= lost);
        let back = first(&steps, POWER_TOPIC, AlarmState::Cleared, lost);
        let out = first(&steps, FIRE_TOPIC, AlarmState::Cleared, fire);
        assert!(back.max(out) <= Duration::from_secs(180));
    }

    #[test]
    fn fuel_runs_short_of_the_expected_outage_within_the_minute() {
        let config = example();
        let probe = config
            .probes
            .iter()
            .find(|p| p.generator.is_some())
            .expect("a generator probe");
        let full = probe
            .generator
            .as_ref()
            .expect("generator")
            .full_tank_runtime;
        let expected = config
            .estimate
            .by_kind
            .get(AlarmKind::Power.as_str())
            .expect("a power estimate")
            .0;
        let steps = steps();
        let lost = first(&steps, POWER_TOPIC, AlarmState::Firing, Duration::ZERO);
        let short = steps.iter().find_map(|s| {
            s.actions.iter().find_map(|a| match a {
                Action::Generator(g) if g.running => {
                    let left = full.mul_f64(f64::from(g.fuel_percent) / 100.0);
                    let remaining = expected.saturating_sub(s.at.saturating_sub(lost));
                    (s.at > lost && left < remaining).then_some((s.at, g.fuel_percent, left, s.say))
                }
                _ => None,
            })
        });
        let (at, percent, left, say) = short.expect("the fuel runs short");
        assert!(at <= Duration::from_secs(60), "at {at:?}");
        let say = say.expect("the moment is announced");
        assert!(say.contains(&format!("{percent} %")), "{say}");
        assert!(
            say.contains(&format!("{} min left", left.as_secs() / 60)),
            "{say}"
        );
        assert!(
            say.contains(&format!("({} min)", expected.as_secs() / 60)),
            "{say}"
        );
    }

    #[test]
    fn everything_recovers_by_the_end() {
        let config = example();
        let mut topics = BTreeMap::new();
        let mut healthy: BTreeMap<&str, bool> = BTreeMap::new();
        let mut generator = None;
        for step in steps() {
            for action in step.actions {
                match action {
                    Action::Publish { topic, payload } => {
                        topics.insert(topic, payload);
                    }
                    Action::Health { probes, healthy: h } => {
                        for p in probes {
                            assert!(config.probes.iter().any(|c| c.id == *p), "{p}");
                            healthy.insert(p, h);
                        }
                    }
                    Action::Generator(g) => generator = Some(g),
                    Action::Operator(_) => {}
                }
            }
        }
        assert_eq!(topics.len(), SENSOR_TOPICS.len());
        for (topic, payload) in topics {
            let parsed = parse_payload(payload.as_bytes()).expect("parses");
            assert_eq!(parsed.state, AlarmState::Cleared, "{topic}");
        }
        assert!(healthy.values().all(|h| *h));
        assert_eq!(
            generator,
            Some(GeneratorStatus {
                running: false,
                fuel_percent: 100
            })
        );
    }

    #[test]
    fn sensor_topics_cover_every_subscription_and_route_to_components() {
        let config = example();
        let catalogue = Catalogue::build(&config).expect("catalogue");
        let mut covered = vec![false; catalogue.subscriptions.len()];
        for topic in SENSOR_TOPICS {
            let (i, _, component) = route(&catalogue, topic)
                .unwrap_or_else(|| panic!("{topic} matches no subscription"));
            assert!(
                config.components.iter().any(|c| c.id == component),
                "{topic} routes to unknown component {component}"
            );
            covered[i] = true;
        }
        assert!(covered.iter().all(|c| *c), "a subscription has no sensor");
        assert_eq!(
            route(&catalogue, FIRE_TOPIC).map(|(_, _, c)| c).as_deref(),
            Some("serverrum")
        );
        assert_eq!(
            route(&catalogue, POWER_TOPIC).map(|(_, _, c)| c).as_deref(),
            Some("power-mains")
        );
    }

    /// The script as a drill scenario (SPEC §4): what the daemon's engine
    /// would see, on a simulated clock.
    fn as_scenario(config: &Config, end: Duration) -> String {
        use toml::{Table, Value};
        let generators: Vec<&str> = config
            .probes
            .iter()
            .filter(|p| p.generator.is_some())
            .map(|p| p.id.as_str())
            .collect();
        let mut events = Vec::new();
        let mut event = |at: Duration, key: &str, body: Table| {
            let mut e = Table::new();
            e.insert("at".into(), Value::String(format!("{}s", at.as_secs())));
            e.insert(key.into(), Value::Table(body));
            events.push(Value::Table(e));
        };
        let table = |pairs: Vec<(&str, Value)>| -> Table {
            pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
        };
        for step in steps() {
            for action in step.actions {
                match action {
                    Action::Publish { topic, payload } => event(
                        step.at,
                        "mqtt",
                        table(vec![
                            ("topic", Value::String(topic.into())),
                            ("payload", Value::String(payload.into())),
                        ]),
                    ),
                    Action::Health { probes, healthy } => {
                        for id in probes {
                            let status = if healthy { 200 } else { 503 };
                            event(
                                step.at,
                                "probe",
                                table(vec![
                                    ("id", Value::String((*id).into())),
                                    ("status", Value::Integer(status)),
                                ]),
                            );
                        }
                    }
                    // What the person on call does is checked against a
                    // running daemon (tests/demo.rs).
                    Action::Operator(_) => {}
                    Action::Generator(g) => {
                        let body = serde_json::to_string(&g).expect("json");
                        for id in &generators {
                            event(
                                step.at,
                                "probe",
                                table(vec![
                                    ("id", Value::String((*id).into())),
                                    ("body", Value::String(body.clone())),
                                ]),
                            );
                        }
                    }
                }
            }
        }
        let mut doc = Table::new();
        doc.insert("end".into(), Value::String(format!("{}s", end.as_secs())));
        doc.insert("event".into(), Value::Array(events));
        toml::to_string(&doc).expect("scenario")
    }

    /// The script tells the story its lines tell: a minor power incident
    /// whose generator runs short within the minute, a separate critical
    /// fire incident that the failing servers join, and both resolved by
    /// the recovery, in the engine the daemon runs.
    #[test]
    fn the_engine_sees_the_story_the_lines_tell() {
        use serde_json::Value as Json;

        let at = super::super::DemoAddrs {
            listen: "127.0.0.1:8080".parse().expect("addr"),
            broker: "127.0.0.1:1883".parse().expect("addr"),
            sensors: "127.0.0.1:9200".parse().expect("addr"),
            store: "/tmp/demo.db".into(),
        };
        let demo = super::super::demo_config(super::super::EXAMPLE_CONFIG, &at).expect("demo");
        let config = load_str("demo", &demo.text).expect("valid").config;
        let text = as_scenario(&config, Duration::from_secs(240));
        let scenario = crate::drill::Scenario::parse("script", &text).expect("a scenario");
        let mut out = Vec::new();
        crate::drill::run(&config, &scenario, &mut out).expect("drill");
        let lines: Vec<Json> = String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        let of = |ty: &str| -> Vec<&Json> { lines.iter().filter(|l| l["type"] == ty).collect() };
        let t = |l: &Json| l["t"].as_f64().expect("t");

        assert_eq!(
            of("rejected"),
            Vec::<&Json>::new(),
            "the sensors speak SPEC §6"
        );
        let opened = of("incident_opened");
        assert_eq!(opened.len(), 2, "{opened:?}");
        let (power, fire) = (opened[0], opened[1]);
        assert_eq!((t(power), &power["root"]), (10.0, &"power-mains".into()));
        assert_eq!(power["severity"], "minor", "the generator carries");
        assert_eq!((t(fire), &fire["root"]), (40.0, &"serverrum".into()));
        assert_eq!(fire["severity"], "critical");
        let short = of("estimate")
            .into_iter()
            .find(|e| e["incident"] == power["incident"] && e["basis"] == "generator")
            .expect("the generator runs short");
        assert!(t(short) <= 60.0, "{short}");
        let resolved = of("incident_resolved");
        assert_eq!(resolved.len(), 2);
        assert!(resolved.iter().all(|r| t(r) <= 180.0), "{resolved:?}");
        assert!(!of("notification").is_empty());
    }
}
