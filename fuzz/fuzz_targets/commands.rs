//! The daemon's command path with extreme values: report bodies (with
//! `expected` from "0s" to "18446744073709551615s" and arbitrary text)
//! through `api::ingest::parse_report`, turned into the alarm and the ETA
//! exactly as the core does (`engine::report_eta`), and
//! acknowledgements, ETAs, levels, notes and resolves on any incident id
//! with any duration, all at times that jump by up to a year, into the
//! engine over the example catalogue. Resolved incidents are let go of as
//! the daemon does after each commit. Nothing may panic, and the engine's
//! times stay sane.
//!
//! Input format (decoded by hand): per step, one byte choosing the time
//! jump, one byte choosing the command, then the bytes it needs.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use beredskab::api::ingest::parse_report;
use beredskab::catalogue::Catalogue;
use beredskab::engine::report_eta;
use beredskab::engine::{
    AlarmInput, AlarmSeverity, AlarmState, Engine, Event, IncidentId, Level, Source, Ts,
};
use libfuzzer_sys::fuzz_target;

/// 2026-03-02T08:00:00+01:00.
const START_MS: i64 = 1_772_434_800_000;
const MAX_STEPS: usize = 64;

const EXPECTED: &[&str] = &[
    "0s",
    "1s",
    "3h",
    "1w",
    "100y",
    "101y",
    "500years",
    "18446744073709551615s",
    "18446744073709551615ns",
    "584942417355y",
    "-1s",
    "",
    "1h 30m",
    "ever",
];

const SOURCE_TYPES: &[&str] = &[
    "user",
    "superuser",
    "vendor",
    "cert",
    "dpo",
    "police",
    "utility",
    "x",
];

const JUMPS_S: &[i64] = &[0, 1, 10, 60, 600, 3600, 86_400, 7 * 86_400, 365 * 86_400];

const DURATIONS: &[Duration] = &[
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(3600),
    Duration::from_secs(100 * 365 * 86_400),
    Duration::from_secs(u64::MAX),
    Duration::MAX,
];

struct Fixture {
    cat: Arc<Catalogue>,
    targets: Vec<String>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let text = include_str!("../../deploy/example/beredskab.toml");
        let loaded = beredskab::config::load_str("beredskab.toml", text).expect("example loads");
        let cat = Arc::new(Catalogue::build(&loaded.config).expect("example builds"));
        let mut targets: Vec<String> = cat.nodes.iter().map(|n| n.id.clone()).collect();
        targets.push("no-such-thing".into());
        Fixture { cat, targets }
    })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn pick<'t, T>(&mut self, list: &'t [T]) -> &'t T {
        &list[self.u8() as usize % list.len()]
    }
    /// Up to 16 raw bytes as (lossy) text.
    fn text(&mut self) -> String {
        let n = (self.u8() % 17) as usize;
        let bytes: Vec<u8> = (0..n).map(|_| self.u8()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
    fn incident(&mut self) -> IncidentId {
        IncidentId(match self.u8() % 4 {
            0 => 0,
            1 => u64::MAX,
            _ => u64::from(self.u8() % 8),
        })
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// The report's alarm as the API builds it.
fn report_alarm(f: &Fixture, target: &str, source_type: &str, message: &str) -> Option<AlarmInput> {
    let node = f.cat.node_id(target)?;
    Some(AlarmInput {
        component: target.to_owned(),
        kind: f.cat.node(node).probe_alarm_kind(),
        state: AlarmState::Firing,
        severity: AlarmSeverity::Critical,
        source: Source::Manual,
        message: Some(format!("{source_type} (fuzz): {message}")),
        key: Some(format!("report:{source_type}")),
    })
}

fn check(engine: &Engine) {
    for inc in engine.incidents() {
        assert!(
            inc.expected_end() >= inc.opened,
            "incident {} ends before it opens",
            inc.id
        );
        let _ = inc.expected_end().to_timestamp();
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut engine = Engine::new(f.cat.clone());
    let mut r = Reader(data);
    let mut now = Ts(START_MS);
    let mut steps = 0;
    while !r.done() && steps < MAX_STEPS {
        steps += 1;
        now = now.plus(Duration::from_secs(*r.pick(JUMPS_S) as u64));
        let _ = engine.run_timers_until(now);
        let by = "p-drift".to_owned();
        match r.u8() % 7 {
            0 | 1 => {
                let target = r.pick(&f.targets).clone();
                let source_type = *r.pick(SOURCE_TYPES);
                let expected = if r.u8() % 4 == 0 {
                    r.text()
                } else {
                    r.pick(EXPECTED).to_string()
                };
                let body = serde_json::json!({
                    "component": target,
                    "source_type": source_type,
                    "message": r.text(),
                    "expected": expected,
                })
                .to_string();
                let Ok(report) = parse_report(body.as_bytes()) else {
                    continue;
                };
                let Some(alarm) =
                    report_alarm(f, &report.target, report.source_type, &report.message)
                else {
                    continue;
                };
                let node = f.cat.node_id(&report.target).expect("known");
                let _ = engine.apply(now, Event::Alarm(alarm));
                if let (Some(id), Some(expected)) = (engine.incident_of(node), report.expected)
                    && let Some(inc) = engine.incident(id)
                {
                    let eta = Event::Eta {
                        incident: id,
                        expected: report_eta(now, inc.opened, expected),
                        by: None,
                        from_now: false,
                    };
                    let _ = engine.apply(now, eta);
                }
            }
            2 => {
                let incident = r.incident();
                let _ = engine.apply(
                    now,
                    Event::Ack {
                        incident,
                        by,
                        note: Some(r.text()),
                    },
                );
            }
            3 => {
                let incident = r.incident();
                let expected = *r.pick(DURATIONS);
                let _ = engine.apply(
                    now,
                    Event::Eta {
                        incident,
                        expected,
                        by: Some(by),
                        from_now: false,
                    },
                );
            }
            4 => {
                let incident = r.incident();
                let level = if r.u8() % 2 == 0 {
                    Level::Crisis
                } else {
                    Level::Department
                };
                let _ = engine.apply(
                    now,
                    Event::SetLevel {
                        incident,
                        level,
                        by,
                    },
                );
            }
            5 => {
                let incident = r.incident();
                let (text, decision) = (r.text(), r.u8() % 2 == 0);
                let _ = engine.apply(
                    now,
                    Event::Note {
                        incident,
                        by,
                        text,
                        decision,
                        public: false,
                    },
                );
            }
            _ => {
                let incident = r.incident();
                let _ = engine.apply(
                    now,
                    Event::Resolve {
                        incident,
                        by,
                        note: None,
                    },
                );
            }
        }
        check(&engine);
        if r.u8() % 2 == 0 {
            // As the daemon does once the batch is stored.
            let _ = engine.forget_resolved();
        }
    }
    let _ = engine.run_timers_until(now.plus(Duration::from_secs(86_400)));
    check(&engine);
});
