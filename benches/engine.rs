//! Micro-benchmarks of the engine's hot paths: an alarm in and its effects
//! out, which services an alarm on a component affects in a large
//! catalogue, the escalation timers of an incident, and the encoding of a
//! snapshot of many open incidents.
//!
//! `cargo bench --bench engine` measures; `cargo test --benches` runs each
//! routine once, so the benchmarks keep compiling and working.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use beredskab::catalogue::Catalogue;
use beredskab::config::AlarmKind;
use beredskab::config::{ComponentConfig, ComponentKind, Criticality, ServiceConfig, load_str};
use beredskab::engine::{AlarmInput, AlarmSeverity, AlarmState, Engine, Event, Source, Ts};
use criterion::{Criterion, criterion_group, criterion_main};

/// People, a role, a log channel and a policy with deputies, status
/// reminders and an escalation step: what every generated catalogue shares.
const BASE: &str = r#"
[site]
name = "Bench"
language = "en"
timezone = "Europe/Copenhagen"

[[person]]
id = "p-lead"
name = "Lead"
[[person]]
id = "p-dep"
name = "Deputy"
[[person]]
id = "p-chief"
name = "Chief"
[[role]]
id = "lead"
primary = "p-lead"
deputies = ["p-dep"]
[[role]]
id = "chief"
primary = "p-chief"
[[channel]]
id = "log"
kind = "log"
[[policy]]
id = "std"
deputy_after = "10m"
status_every = "15m"
status_to = ["role:chief"]
[[policy.step]]
on = "open"
notify = ["role:lead"]
via = ["log"]
[[policy.step]]
on = "expected > 30m"
notify = ["role:chief"]
via = ["log"]
[[policy.step]]
on = "resolved"
notify = ["role:lead"]
via = ["log"]

[[component]]
id = "mains"
kind = "power"
"#;

/// 2026-03-02T08:00:00+01:00.
const T0: i64 = 1_772_434_800_000;

fn at(ms: i64) -> Ts {
    Ts(T0 + ms)
}

/// `mains`, `rooms` rooms on it, `servers` servers spread over the rooms,
/// and a service on every hundred servers.
fn catalogue(rooms: usize, servers: usize) -> Arc<Catalogue> {
    let mut config = load_str("bench.toml", BASE)
        .expect("the bench catalogue is valid")
        .config;
    let component = |id: String, kind, depends_on: Vec<String>| ComponentConfig {
        id,
        name: None,
        kind,
        building: None,
        depends_on,
        backup: None,
    };
    for r in 0..rooms {
        config.components.push(component(
            format!("room-{r}"),
            ComponentKind::Room,
            vec!["mains".into()],
        ));
    }
    for s in 0..servers {
        config.components.push(component(
            format!("srv-{s}"),
            ComponentKind::Server,
            vec![format!("room-{}", s % rooms)],
        ));
    }
    for first in (0..servers).step_by(100) {
        config.services.push(ServiceConfig {
            id: format!("svc-{first}"),
            name: None,
            criticality: Criticality::Critical,
            depends_on: (first..servers.min(first + 100))
                .map(|s| format!("srv-{s}"))
                .collect(),
            owner: None,
            contacts: Vec::new(),
            policy: Some("std".into()),
            recovery_notify: Vec::new(),
        });
    }
    Arc::new(Catalogue::build(&config).expect("the bench catalogue builds"))
}

fn alarm(component: &str, key: Option<String>, state: AlarmState) -> Event {
    Event::Alarm(AlarmInput {
        component: component.into(),
        kind: AlarmKind::Server,
        state,
        severity: AlarmSeverity::Critical,
        source: Source::Mqtt,
        message: None,
        key,
    })
}

/// Runs `routine` `iters` times on engines made by `setup`, a fresh one
/// every `chunk` runs (so what the runs leave behind, such as timeline
/// entries, stays bounded), timing the runs alone.
fn chunked(
    iters: u64,
    chunk: u64,
    mut setup: impl FnMut() -> Engine,
    mut routine: impl FnMut(&mut Engine, u64),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = chunk.min(iters - done);
        let mut engine = setup();
        let start = Instant::now();
        for i in 0..n {
            routine(&mut engine, i);
        }
        total += start.elapsed();
        done += n;
    }
    total
}

fn alarm_path(c: &mut Criterion) {
    let cat = catalogue(10, 1_000);
    let mut group = c.benchmark_group("alarm");
    // A server fails and recovers: an incident opens, its first step is
    // decided, then it resolves and is let go.
    group.bench_function("open_and_resolve", |b| {
        let mut engine = Engine::new(cat.clone());
        let mut t = 0;
        b.iter(|| {
            t += 1_000;
            let fired = engine.handle(at(t), alarm("srv-7", None, AlarmState::Firing));
            let cleared = engine.handle(at(t + 1), alarm("srv-7", None, AlarmState::Cleared));
            engine.forget_resolved();
            black_box((fired, cleared))
        });
    });
    // The same firing alarm again (a broker's redelivery): nothing changes.
    group.bench_function("repeated", |b| {
        let mut engine = Engine::new(cat.clone());
        engine
            .handle(at(0), alarm("srv-7", None, AlarmState::Firing))
            .unwrap();
        b.iter(|| black_box(engine.handle(at(1), alarm("srv-7", None, AlarmState::Firing))));
    });
    // A new key fires and clears on a server that already holds 5,000
    // firing alarms and belongs to an open incident: the lookup by
    // identity, the incident's timeline and its services.
    group.bench_function("new_key_among_5000", |b| {
        let setup = || {
            let mut engine = Engine::new(cat.clone());
            for k in 0..5_000 {
                engine
                    .handle(
                        at(0),
                        alarm("srv-7", Some(format!("k{k}")), AlarmState::Firing),
                    )
                    .unwrap();
            }
            engine
        };
        b.iter_custom(|iters| {
            chunked(iters, 20_000, setup, |engine, i| {
                let key = Some(format!("new-{i}"));
                let fired = engine.handle(at(1), alarm("srv-7", key.clone(), AlarmState::Firing));
                let cleared = engine.handle(at(1), alarm("srv-7", key, AlarmState::Cleared));
                black_box((fired.unwrap(), cleared.unwrap()));
            })
        });
    });
    group.finish();
}

fn impact_lookup(c: &mut Criterion) {
    // 100,000 components: mains, 1,000 rooms, 98,999 servers; 990 services.
    let cat = catalogue(1_000, 98_999);
    let mut group = c.benchmark_group("impact");
    for id in ["srv-4242", "room-42", "mains"] {
        let node = cat.node_id(id).expect("generated");
        group.bench_function(format!("fed_services/{id}"), |b| {
            b.iter(|| black_box(cat.fed_services(black_box(node))))
        });
    }
    // The engine's own answer: a room's alarm, its servers' services down
    // and an incident opened, then the clear.
    group.bench_function("room_alarm_and_clear", |b| {
        let mut engine = Engine::new(cat.clone());
        let mut t = 0;
        b.iter(|| {
            t += 1_000;
            let fired = engine.handle(at(t), alarm("room-42", None, AlarmState::Firing));
            let cleared = engine.handle(at(t + 1), alarm("room-42", None, AlarmState::Cleared));
            engine.forget_resolved();
            black_box((fired, cleared))
        });
    });
    group.finish();
}

fn escalation_tick(c: &mut Criterion) {
    let cat = catalogue(10, 1_000);
    let mut group = c.benchmark_group("tick");
    // One incident's first two hours of timers: the open step, the deputy,
    // the estimate running out and its step, status reminders.
    group.bench_function("one_incident_two_hours", |b| {
        b.iter_batched(
            || {
                let mut engine = Engine::new(cat.clone());
                engine
                    .handle(at(0), alarm("srv-7", None, AlarmState::Firing))
                    .unwrap();
                engine
            },
            |mut engine| black_box(engine.run_timers_until(at(2 * 3_600_000))),
            criterion::BatchSize::SmallInput,
        )
    });
    // A tick with 100 open incidents and nothing due.
    group.bench_function("nothing_due_100_open", |b| {
        let mut engine = Engine::new(cat.clone());
        for s in 0..100 {
            engine
                .handle(
                    at(0),
                    alarm(&format!("srv-{}", s * 10), None, AlarmState::Firing),
                )
                .unwrap();
        }
        let quiet = engine.next_wakeup().expect("timers are set").0 - T0 - 1;
        b.iter(|| black_box(engine.tick(at(quiet))));
    });
    group.finish();
}

fn snapshot(c: &mut Criterion) {
    let cat = catalogue(10, 1_000);
    // A thousand servers failing one after another, each alarm answered by
    // its incident's first step: the state the daemon snapshots at 1,000
    // alarms/s.
    let mut engine = Engine::new(cat);
    for s in 0..1_000 {
        engine
            .handle(at(s), alarm(&format!("srv-{s}"), None, AlarmState::Firing))
            .unwrap();
    }
    let mut group = c.benchmark_group("snapshot");
    // What the core does on its path when a snapshot is due.
    group.bench_function("encode_1000_open", |b| {
        b.iter(|| black_box(serde_json::to_string(&engine.snapshot()).unwrap()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = alarm_path, impact_lookup, escalation_tick, snapshot
}
criterion_main!(benches);
