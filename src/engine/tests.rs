//! Unit tests of the engine's rules on a small catalogue.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::catalogue::Catalogue;
use crate::config::load_str;

pub(super) const PLAN: &str = r#"
[site]
name = "Test"
language = "en"
timezone = "Europe/Copenhagen"

[mqtt]
url = "mqtt://127.0.0.1:1883"
max_payload = "100B"
[[mqtt.subscription]]
topic = "room/+/fire"
kind = "fire"
component = "{1}"

[[probe]]
id = "gen"
component = "generator"
url = "http://127.0.0.1:1/gen"
every = "10s"
fail_after = 2
recover_after = 2
[probe.generator]
running = "/running"
fuel_percent = "/fuel"
full_tank_runtime = "10h"
[[probe.check]]
pointer = "/fuel"
below = 10
then = "degraded"

[[component]]
id = "mains"
kind = "power"
building = "hall"
backup = "generator"
[[component]]
id = "generator"
kind = "generator"
building = "hall"
[[component]]
id = "room"
kind = "room"
building = "hall"
depends_on = ["mains"]
[[component]]
id = "srv-a"
kind = "server"
depends_on = ["room"]
[[component]]
id = "srv-b"
kind = "server"
depends_on = ["room"]
[[component]]
id = "o365"
kind = "external"

[[service]]
id = "alarms"
criticality = "life"
depends_on = ["srv-a"]
owner = "person:p-owner"
policy = "std"
recovery_notify = ["person:p-comm", "owner", "role:lead"]
[[service]]
id = "web"
criticality = "important"
depends_on = ["srv-b"]
policy = "std"
[[service]]
id = "mail"
criticality = "critical"
depends_on = ["o365"]
policy = "std"

[[person]]
id = "p-lead"
name = "Lead"
[[person]]
id = "p-dep1"
name = "Deputy one"
[[person]]
id = "p-dep2"
name = "Deputy two"
[[person]]
id = "p-chief"
name = "Chief"
[[person]]
id = "p-owner"
name = "Owner"
[[person]]
id = "p-comm"
name = "Comm"
[[person]]
id = "p-a"
name = "A"
[[person]]
id = "p-b"
name = "B"

[[role]]
id = "lead"
primary = "p-lead"
deputies = ["p-dep1", "p-dep2"]
[[role]]
id = "chief"
primary = "p-chief"
[[role]]
id = "oncall"
rotation = { every = "1w", start = "2026-03-02T08:00:00+01:00", people = ["p-a", "p-b"] }

[[channel]]
id = "sms"
kind = "sms-http"
url = "http://127.0.0.1:1/sms"
[[channel]]
id = "mail"
kind = "smtp"
url = "smtp://127.0.0.1:1"
from = "x@example.dk"
requires_service = "mail"
fallback = "sms"

[[policy]]
id = "std"
deputy_after = "10m"
status_every = "30m"
status_to = ["person:p-comm"]
[[policy.step]]
on = "open"
notify = ["role:lead"]
via = ["sms"]
[[policy.step]]
on = "expected > 30m"
notify = ["role:chief"]
via = ["sms", "mail"]
[[policy.step]]
on = "resolved"
notify = ["role:lead"]
via = ["sms"]

[estimate]
default = "20m"
by_kind = { fire = "1d", power = "45m" }
extend = "30m"
history = { min_samples = 3, quantile = 0.5 }

[correlation]
settle = "10s"

[[meeting_place]]
name = "Hall"
building = "hall"
priority = 1
[[meeting_place]]
name = "Annex"
building = "annex"
priority = 2

[crisis]
staff = ["role:chief"]
via = ["sms"]
"#;

pub(super) const T0: i64 = 1_772_434_800_000; // 2026-03-02T08:00:00+01:00

pub(super) fn engine() -> Engine {
    let loaded = load_str("plan.toml", PLAN).expect("test plan is valid");
    Engine::new(Arc::new(Catalogue::build(&loaded.config).unwrap()))
}

/// Incident ids from their numbers.
pub(super) fn ids(n: &[u64]) -> Vec<IncidentId> {
    n.iter().copied().map(IncidentId).collect()
}

pub(super) fn at(secs: i64) -> Ts {
    Ts(T0 + secs * 1000)
}

pub(super) fn alarm(component: &str, kind: AlarmKind, state: AlarmState) -> Event {
    Event::Alarm(AlarmInput {
        component: component.into(),
        kind,
        state,
        severity: AlarmSeverity::Critical,
        source: Source::Http,
        message: None,
        key: None,
    })
}

pub(super) fn fire(e: &mut Engine, secs: i64, component: &str, kind: AlarmKind) -> Vec<Effect> {
    e.handle(at(secs), alarm(component, kind, AlarmState::Firing))
        .unwrap()
}

pub(super) fn clear(e: &mut Engine, secs: i64, component: &str, kind: AlarmKind) -> Vec<Effect> {
    e.handle(at(secs), alarm(component, kind, AlarmState::Cleared))
        .unwrap()
}

/// Runs the clock to `secs`, firing every timer on the way.
pub(super) fn run_to(e: &mut Engine, secs: i64) -> Vec<(i64, Effect)> {
    let mut out = Vec::new();
    while let Some(t) = e.next_wakeup().filter(|t| *t <= at(secs)) {
        for eff in e.tick(t) {
            out.push(((t.0 - T0) / 1000, eff));
        }
    }
    out
}

pub(super) fn notes(effects: &[Effect]) -> Vec<(String, String, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Notification(n) => {
                Some((n.person.clone(), n.channel.clone(), n.reason.to_string()))
            }
            _ => None,
        })
        .collect()
}

pub(super) fn timed_notes(effects: &[(i64, Effect)]) -> Vec<(i64, String, String)> {
    effects
        .iter()
        .filter_map(|(t, e)| match e {
            Effect::Notification(n) => Some((*t, n.person.clone(), n.reason.to_string())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_repeated_alarm_state_changes_nothing() {
    let mut e = engine();
    assert!(!fire(&mut e, 0, "srv-b", AlarmKind::Server).is_empty());
    assert!(fire(&mut e, 5, "srv-b", AlarmKind::Server).is_empty());
    assert_eq!(e.incidents().len(), 1);
    assert!(clear(&mut e, 6, "o365", AlarmKind::Generic).is_empty());
}

#[test]
fn each_key_is_its_own_alarm_up_to_the_bound_per_component() {
    let mut e = engine();
    let keyed = |key: usize, state| {
        let mut ev = alarm("srv-b", AlarmKind::Server, state);
        if let Event::Alarm(a) = &mut ev {
            a.key = Some(format!("k{key}"));
        }
        ev
    };
    for k in 0..MAX_FIRING_PER_NODE {
        let applied = e.apply(at(0), keyed(k, AlarmState::Firing)).unwrap();
        assert!(applied.changed, "key {k} is a new alarm");
    }
    let full = e.handle(at(1), keyed(MAX_FIRING_PER_NODE, AlarmState::Firing));
    assert!(matches!(
        &full.unwrap()[..],
        [Effect::Rejected {
            reason: RejectReason::Oversized,
            ..
        }]
    ));
    // A known key is still found, and a cleared one makes room.
    assert!(
        e.handle(at(2), keyed(7, AlarmState::Firing))
            .unwrap()
            .is_empty()
    );
    assert!(
        !e.handle(at(3), keyed(7, AlarmState::Cleared))
            .unwrap()
            .is_empty()
    );
    let again = e.apply(at(4), keyed(MAX_FIRING_PER_NODE, AlarmState::Firing));
    assert!(again.unwrap().changed);
    let srv_b = e.catalogue().node_id("srv-b").unwrap();
    for k in (0..=MAX_FIRING_PER_NODE).filter(|&k| k != 7) {
        e.handle(at(5), keyed(k, AlarmState::Cleared)).unwrap();
    }
    assert_eq!(e.graph.own[srv_b.0 as usize], Health::Up);
    assert!(!e.firing.contains_key(&srv_b), "no empty list is kept");
}

#[test]
fn a_warning_degrades_and_a_critical_alarm_takes_down() {
    let mut e = engine();
    let web = e.catalogue().node_id("web").unwrap();
    let mut warn = alarm("srv-b", AlarmKind::Server, AlarmState::Firing);
    if let Event::Alarm(a) = &mut warn {
        a.severity = AlarmSeverity::Warning;
    }
    e.handle(at(0), warn).unwrap();
    assert_eq!(e.health(web), Health::Degraded);
    fire(&mut e, 1, "srv-b", AlarmKind::Server);
    assert_eq!(e.health(web), Health::Down);
}

#[test]
fn a_carrying_backup_stops_the_down_state_from_passing_on() {
    let mut e = engine();
    let alarms = e.catalogue().node_id("alarms").unwrap();
    let effects = fire(&mut e, 0, "mains", AlarmKind::Power);
    assert_eq!(e.health(alarms), Health::Up);
    let Some(Effect::IncidentOpened {
        services, severity, ..
    }) = effects
        .iter()
        .find(|x| matches!(x, Effect::IncidentOpened { .. }))
    else {
        panic!("no incident: {effects:?}");
    };
    assert!(services.is_empty());
    assert_eq!(*severity, Severity::Minor);
    // The generator stops: the mains' outage reaches the services.
    let gen_stopped = ProbeResult {
        status: Some(200),
        body: Some(br#"{"running":false,"fuel":50}"#.to_vec()),
        error: None,
        ..ProbeResult::default()
    };
    let effects = e
        .handle(
            at(20),
            Event::Probe {
                id: "gen".into(),
                result: gen_stopped,
            },
        )
        .unwrap();
    assert_eq!(e.health(alarms), Health::Down);
    assert!(effects.iter().any(|x| matches!(
        x,
        Effect::IncidentUpdated {
            severity: Severity::Critical,
            ..
        }
    )));
    assert_eq!(e.incidents().len(), 1, "still one incident");
}

#[test]
fn an_upstream_alarm_becomes_the_root_and_the_older_incident_absorbs_the_younger() {
    let mut e = engine();
    fire(&mut e, 0, "srv-a", AlarmKind::Server);
    fire(&mut e, 1, "srv-b", AlarmKind::Server);
    assert_eq!(e.incidents().len(), 2);
    let effects = fire(&mut e, 2, "room", AlarmKind::Environment);
    assert!(effects.contains(&Effect::IncidentMerged {
        incident: IncidentId(2),
        into: IncidentId(1)
    }));
    let one = e.incident(IncidentId(1)).unwrap();
    assert_eq!(e.catalogue().node(one.root).id, "room");
    assert_eq!(
        e.incident(IncidentId(2)).unwrap().state,
        IncidentState::Merged(IncidentId(1))
    );
    assert_eq!(e.incidents().len(), 2, "no third incident");
    // Acting on the absorbed incident acts on the one that absorbed it.
    let acked = e
        .handle(
            at(3),
            Event::Ack {
                incident: IncidentId(2),
                by: "p-lead".into(),
                note: None,
            },
        )
        .unwrap();
    assert!(acked.contains(&Effect::Acknowledged {
        incident: IncidentId(1),
        by: "p-lead".into()
    }));
}

#[test]
fn when_the_root_clears_the_most_upstream_member_still_down_takes_over() {
    let mut e = engine();
    fire(&mut e, 0, "room", AlarmKind::Environment);
    fire(&mut e, 1, "srv-a", AlarmKind::Server);
    let effects = clear(&mut e, 60, "room", AlarmKind::Environment);
    assert!(effects.iter().any(|x| matches!(
        x,
        Effect::IncidentUpdated { root, .. } if root == "srv-a"
    )));
    assert_eq!(
        e.incident(IncidentId(1)).unwrap().state,
        IncidentState::Open
    );
    let effects = clear(&mut e, 120, "srv-a", AlarmKind::Server);
    assert!(effects.contains(&Effect::IncidentResolved {
        incident: IncidentId(1),
        duration_ms: 120_000
    }));
}

#[test]
fn severity_follows_the_criticality_of_what_is_down() {
    let mut e = engine();
    fire(&mut e, 0, "srv-b", AlarmKind::Server);
    assert_eq!(
        e.incident(IncidentId(1)).unwrap().severity,
        Severity::Major,
        "important down"
    );
    fire(&mut e, 1, "o365", AlarmKind::Generic);
    assert_eq!(
        e.incident(IncidentId(2)).unwrap().severity,
        Severity::Critical,
        "critical down"
    );
}

#[test]
fn settle_holds_notifications_but_fire_and_life_services_do_not_wait() {
    let mut e = engine();
    let effects = fire(&mut e, 0, "srv-b", AlarmKind::Server);
    assert!(notes(&effects).is_empty(), "web is important: it settles");
    let later = run_to(&mut e, 10);
    assert_eq!(timed_notes(&later)[0], (10, "p-lead".into(), "open".into()));

    let mut e = engine();
    let effects = fire(&mut e, 0, "srv-a", AlarmKind::Server);
    assert!(notes(&effects).contains(&("p-lead".into(), "sms".into(), "open".into())));

    let mut e = engine();
    let effects = e
        .handle(
            at(0),
            Event::Mqtt {
                topic: "room/o365/fire".into(),
                payload: b"ALARM".to_vec(),
            },
        )
        .unwrap();
    assert!(!notes(&effects).is_empty(), "a fire does not wait");
}

#[test]
fn estimates_come_from_kind_default_history_and_people() {
    let mut e = engine();
    fire(&mut e, 0, "mains", AlarmKind::Power);
    let one = e.incident(IncidentId(1)).unwrap();
    assert_eq!((one.expected_s, one.basis), (45 * 60, Basis::Kind));

    let mut e = engine();
    fire(&mut e, 0, "srv-b", AlarmKind::Server);
    let one = e.incident(IncidentId(1)).unwrap();
    assert_eq!((one.expected_s, one.basis), (20 * 60, Basis::Default));

    let mut e = engine();
    let srv = e.catalogue().node_id("srv-b").unwrap();
    for h in [10, 40, 20, 30] {
        e.add_history(srv, Duration::from_secs(h * 60));
    }
    fire(&mut e, 0, "srv-b", AlarmKind::Server);
    // Sorted 10 20 30 40; q = 0.5, n = 4: index ⌈2⌉ − 1 = 1 → 20 minutes.
    let one = e.incident(IncidentId(1)).unwrap();
    assert_eq!((one.expected_s, one.basis), (20 * 60, Basis::History));

    run_to(&mut e, 60);
    let effects = e
        .handle(
            at(60),
            Event::Eta {
                incident: IncidentId(1),
                expected: Duration::from_secs(7200),
                by: None,
                from_now: false,
            },
        )
        .unwrap();
    assert!(effects.contains(&Effect::Estimate {
        incident: IncidentId(1),
        expected_s: 7200,
        basis: Basis::Manual
    }));
    // The ETA makes the outage longer than 30 minutes: the chief hears.
    assert!(notes(&effects).contains(&("p-chief".into(), "sms".into(), "expected > 30m".into())));
}

#[test]
fn an_outlived_estimate_is_extended_and_each_step_fires_once() {
    let mut e = engine();
    fire(&mut e, 0, "srv-b", AlarmKind::Server);
    let effects = run_to(&mut e, 20 * 60);
    assert!(effects.iter().any(|(t, x)| *t == 1200
        && *x
            == Effect::Estimate {
                incident: IncidentId(1),
                expected_s: 1200 + 1800,
                basis: Basis::Extended
            }));
    let chief = |fx: &[(i64, Effect)]| {
        fx.iter()
            .filter(|(_, x)| matches!(x, Effect::Notification(n) if n.person == "p-chief" && n.channel == "sms"))
            .count()
    };
    assert_eq!(chief(&effects), 1, "expected > 30m fired once");
    let effects = run_to(&mut e, 3 * 3600);
    assert_eq!(chief(&effects), 0, "and never again");
}

#[test]
fn deputies_follow_after_deputy_after_until_someone_acknowledges() {
    let mut e = engine();
    fire(&mut e, 0, "srv-a", AlarmKind::Server);
    let effects = run_to(&mut e, 25 * 60);
    let deputies: Vec<_> = timed_notes(&effects)
        .into_iter()
        .filter(|n| n.2 == "deputy")
        .collect();
    assert_eq!(
        deputies,
        vec![
            (600, "p-dep1".into(), "deputy".into()),
            (1200, "p-dep2".into(), "deputy".into())
        ]
    );

    let mut e = engine();
    fire(&mut e, 0, "srv-a", AlarmKind::Server);
    e.handle(
        at(300),
        Event::Ack {
            incident: IncidentId(1),
            by: "p-lead".into(),
            note: None,
        },
    )
    .unwrap();
    let effects = run_to(&mut e, 3600);
    assert!(timed_notes(&effects).iter().all(|n| n.2 != "deputy"));
}

#[test]
fn rotations_hand_over_at_the_same_local_time_across_daylight_saving() {
    let e = engine();
    let cat = e.catalogue();
    let role = cat.role_id("oncall").unwrap();
    let who = |s: &str| {
        cat.person(cat.on_duty(role, s.parse().unwrap()).0)
            .id
            .clone()
    };
    assert_eq!(who("2026-03-02T08:00:00+01:00"), "p-a");
    assert_eq!(who("2026-03-09T07:59:00+01:00"), "p-a");
    assert_eq!(who("2026-03-09T08:00:00+01:00"), "p-b");
    // Summer time began on 29 March: the handover is still 08:00 local.
    assert_eq!(who("2026-03-30T07:30:00+02:00"), "p-b");
    assert_eq!(who("2026-03-30T08:00:00+02:00"), "p-a");
    let (_, next) = cat.on_duty(role, "2026-03-02T09:00:00+01:00".parse().unwrap());
    assert_eq!(
        next.len(),
        1,
        "the next person in the rotation is the deputy"
    );
}

#[test]
fn a_channel_whose_service_is_down_falls_back() {
    let mut e = engine();
    fire(&mut e, 0, "o365", AlarmKind::Generic);
    let mut effects = run_to(&mut e, 60);
    let eta = Event::Eta {
        incident: IncidentId(1),
        expected: Duration::from_secs(7200),
        by: None,
        from_now: false,
    };
    effects.extend(e.handle(at(60), eta).unwrap().into_iter().map(|x| (60, x)));
    let chief: Vec<_> = timed_notes(&effects);
    // Mail is down, so the chief's mail goes by sms: one sms, not two.
    let all: Vec<_> = effects
        .iter()
        .filter_map(|(_, x)| match x {
            Effect::Notification(n) if n.person == "p-chief" => Some(n.channel.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(all, vec!["sms".to_owned()], "{chief:?}");
}

#[test]
fn status_reminders_repeat_until_a_manual_eta_and_resume_when_it_is_outlived() {
    let mut e = engine();
    fire(&mut e, 0, "o365", AlarmKind::Generic); // mail down: critical
    let effects = run_to(&mut e, 65 * 60);
    let status: Vec<i64> = timed_notes(&effects)
        .into_iter()
        .filter(|n| n.2 == "status")
        .map(|n| n.0)
        .collect();
    assert_eq!(status, vec![10 + 1800, 10 + 3600]);
    e.handle(
        at(65 * 60),
        Event::Eta {
            incident: IncidentId(1),
            expected: Duration::from_secs(2 * 3600),
            by: None,
            from_now: false,
        },
    )
    .unwrap();
    let effects = run_to(&mut e, 2 * 3600 + 1799);
    let status: Vec<i64> = timed_notes(&effects)
        .into_iter()
        .filter(|n| n.2 == "status")
        .map(|n| n.0)
        .collect();
    assert_eq!(status, vec![7200], "one at once when the ETA is outlived");
}

#[test]
fn recovery_goes_to_recovery_notify_except_those_the_resolved_step_told() {
    let mut e = engine();
    fire(&mut e, 0, "srv-a", AlarmKind::Server);
    let effects = clear(&mut e, 600, "srv-a", AlarmKind::Server);
    let n = notes(&effects);
    assert!(n.contains(&("p-lead".into(), "sms".into(), "resolved".into())));
    assert!(n.contains(&("p-comm".into(), "sms".into(), "recovery".into())));
    assert!(n.contains(&("p-owner".into(), "sms".into(), "recovery".into())));
    assert!(!n.iter().any(|x| x.0 == "p-lead" && x.2 == "recovery"));
}

#[test]
fn the_crisis_meets_where_no_fire_or_power_incident_is_open() {
    let mut e = engine();
    e.handle(
        at(0),
        Event::Mqtt {
            topic: "room/room/fire".into(),
            payload: b"1".to_vec(),
        },
    )
    .unwrap();
    let effects = e
        .handle(
            at(60),
            Event::SetLevel {
                incident: IncidentId(1),
                level: Level::Crisis,
                by: "p-chief".into(),
            },
        )
        .unwrap();
    assert_eq!(
        effects[0],
        Effect::Level {
            incident: IncidentId(1),
            level: Level::Crisis,
            meeting_place: Some("Annex".into())
        }
    );
    assert!(notes(&effects).contains(&("p-chief".into(), "sms".into(), "crisis".into())));
}

#[test]
fn a_generator_that_will_run_dry_takes_on_what_the_mains_feeds() {
    let mut e = engine();
    let reading = |fuel: u32| Event::Probe {
        id: "gen".into(),
        result: ProbeResult {
            status: Some(200),
            body: Some(format!(r#"{{"running":true,"fuel":{fuel}}}"#).into_bytes()),
            error: None,
            ..ProbeResult::default()
        },
    };
    e.handle(at(0), reading(50)).unwrap();
    fire(&mut e, 0, "mains", AlarmKind::Power);
    assert!(e.incident(IncidentId(1)).unwrap().services.is_empty());
    // 1 % of a 10 h tank is 6 minutes: less than the 45-minute outage.
    let effects = e.handle(at(60), reading(1)).unwrap();
    assert!(effects.contains(&Effect::Estimate {
        incident: IncidentId(1),
        expected_s: 2700,
        basis: Basis::Generator
    }));
    let one = e.incident(IncidentId(1)).unwrap();
    assert_eq!(one.services.len(), 2, "alarms and web hang off the mains");
    assert_eq!(one.severity, Severity::Critical);
    assert_eq!(one.fuel_out, Some(at(60 + 360)));
}

#[test]
fn a_probe_goes_down_after_fail_after_and_up_after_recover_after() {
    let mut e = engine();
    let bad = || Event::Probe {
        id: "gen".into(),
        result: ProbeResult {
            error: Some("timeout".into()),
            ..Default::default()
        },
    };
    let good = || Event::Probe {
        id: "gen".into(),
        result: ProbeResult {
            status: Some(200),
            ..Default::default()
        },
    };
    assert!(e.handle(at(0), bad()).unwrap().is_empty());
    assert!(
        e.handle(at(10), good()).unwrap().is_empty(),
        "a flap is no alarm"
    );
    assert!(e.handle(at(20), bad()).unwrap().is_empty());
    let down = e.handle(at(30), bad()).unwrap();
    assert!(matches!(
        down[0],
        Effect::Alarm {
            state: AlarmState::Firing,
            source: Source::Probe,
            ..
        }
    ));
    assert!(
        !e.handle(at(40), good())
            .unwrap()
            .iter()
            .any(|x| matches!(x, Effect::Alarm { .. }))
    );
    let up = e.handle(at(50), good()).unwrap();
    assert!(matches!(
        up[0],
        Effect::Alarm {
            state: AlarmState::Cleared,
            ..
        }
    ));
}

#[test]
fn bad_mqtt_input_is_rejected_with_its_reason() {
    let mut e = engine();
    let reason = |e: &mut Engine, topic: &str, payload: &[u8]| match &e
        .handle(
            at(0),
            Event::Mqtt {
                topic: topic.into(),
                payload: payload.to_vec(),
            },
        )
        .unwrap()[0]
    {
        Effect::Rejected { reason, .. } => *reason,
        other => panic!("not rejected: {other:?}"),
    };
    assert_eq!(reason(&mut e, "other/x", b"1"), RejectReason::UnknownTopic);
    assert_eq!(
        reason(&mut e, "room/nope/fire", b"1"),
        RejectReason::UnknownComponent
    );
    assert_eq!(
        reason(&mut e, "room/room/fire", b"{oops"),
        RejectReason::BadPayload
    );
    assert_eq!(
        reason(&mut e, "room/room/fire", b"smoke"),
        RejectReason::BadState
    );
    assert_eq!(
        reason(&mut e, "room/room/fire", &[b'1'; 101]),
        RejectReason::Oversized
    );
    assert_eq!(
        e.handle(
            at(1),
            Event::Ack {
                incident: IncidentId(9),
                by: "x".into(),
                note: None
            }
        ),
        Err(EngineError::UnknownIncident(IncidentId(9)))
    );
}

#[test]
fn a_manually_resolved_incident_stays_closed_until_a_new_alarm_transition() {
    let mut e = engine();
    fire(&mut e, 0, "srv-b", AlarmKind::Server);
    e.handle(
        at(60),
        Event::Resolve {
            incident: IncidentId(1),
            by: "p-lead".into(),
            note: None,
        },
    )
    .unwrap();
    assert_eq!(
        e.handle(
            at(61),
            Event::Ack {
                incident: IncidentId(1),
                by: "p-lead".into(),
                note: None
            }
        ),
        Err(EngineError::Resolved(IncidentId(1)))
    );
    assert!(
        fire(&mut e, 70, "srv-b", AlarmKind::Server).is_empty(),
        "no transition"
    );
    let mut other = alarm("srv-b", AlarmKind::Server, AlarmState::Firing);
    if let Event::Alarm(a) = &mut other {
        a.key = Some("disk".into());
    }
    e.handle(at(80), other).unwrap();
    assert_eq!(e.incidents().len(), 2, "a new alarm opens a new incident");
}

#[test]
fn a_policy_that_joins_later_does_not_repeat_a_step_reason_already_sent() {
    // Found by fuzzing: a fire warning on the website (policy `lav`) tells
    // Drift at once; a second later the server room burns and the services
    // of `standard` and `livskritisk` join, whose `open` steps also name
    // Drift by SMS. Drift gets the severity rise, not a second "open".
    let example = include_str!("../../deploy/example/beredskab.toml");
    let loaded = load_str("beredskab.toml", example).expect("example is valid");
    let mut e = Engine::new(Arc::new(Catalogue::build(&loaded.config).unwrap()));
    let mut warn = alarm("hjemmeside", AlarmKind::Fire, AlarmState::Firing);
    if let Event::Alarm(a) = &mut warn {
        a.severity = AlarmSeverity::Warning;
    }
    let mut all = e.handle(at(0), warn).unwrap();
    all.extend(
        e.handle(
            at(1),
            Event::Mqtt {
                topic: "raadhus/serverrum/serverrum/brand".into(),
                payload: b"ALARM".to_vec(),
            },
        )
        .unwrap(),
    );
    let to_drift: Vec<_> = notes(&all)
        .into_iter()
        .filter(|n| n.0 == "p-drift" && n.1 == "sms")
        .map(|n| n.2)
        .collect();
    assert_eq!(
        to_drift.iter().filter(|r| *r == "open").count(),
        1,
        "{to_drift:?}"
    );
    assert!(to_drift.contains(&"severity".to_owned()), "{to_drift:?}");
}

// ------------------------------------------- inputs that change nothing

/// The plan with a heartbeat topic: `room/+/temp`, 5 minutes.
fn engine_with_heartbeat() -> Engine {
    let text = format!(
        "{PLAN}\n[[mqtt.subscription]]\ntopic = \"room/+/temp\"\nkind = \"environment\"\n\
         component = \"{{1}}\"\nheartbeat = \"5m\"\n"
    );
    let loaded = load_str("plan.toml", &text).expect("plan with heartbeat is valid");
    Engine::new(Arc::new(Catalogue::build(&loaded.config).unwrap()))
}

fn mqtt(topic: &str, payload: &str) -> Event {
    Event::Mqtt {
        topic: topic.into(),
        payload: payload.as_bytes().to_vec(),
    }
}

/// The engine's snapshot as JSON: a copy that outlives the engine's next
/// change (a snapshot borrows the engine).
fn state(e: &Engine) -> serde_json::Value {
    serde_json::to_value(e.snapshot()).expect("serializes")
}

/// Applies `event` and checks that `changed` says truly whether the
/// snapshot changed; returns `changed`.
fn changed(e: &mut Engine, secs: i64, event: Event) -> bool {
    let before = state(e);
    let applied = e.apply(at(secs), event).expect("accepted");
    let same = state(e) == before;
    assert_eq!(
        applied.changed,
        !same,
        "changed = {} but the snapshot {}",
        applied.changed,
        if same { "is the same" } else { "changed" }
    );
    applied.changed
}

#[test]
fn steady_probe_results_change_nothing_once_the_counts_saturate() {
    let mut e = engine();
    let ok = || Event::Probe {
        id: "gen".into(),
        result: ProbeResult {
            status: Some(200),
            body: Some(br#"{"running": true, "fuel": 80}"#.to_vec()),
            error: None,
            ..ProbeResult::default()
        },
    };
    let failed = || Event::Probe {
        id: "gen".into(),
        result: ProbeResult {
            error: Some("timeout".into()),
            ..Default::default()
        },
    };
    // fail_after = recover_after = 2: the counts stop at 2.
    assert!(changed(&mut e, 0, ok()), "first success and first reading");
    assert!(changed(&mut e, 10, ok()), "second success");
    for t in 2..10 {
        assert!(!changed(&mut e, t * 10, ok()), "steady success at {t}");
    }
    assert!(changed(&mut e, 100, failed()));
    assert!(changed(&mut e, 110, failed()), "down at the second failure");
    for t in 12..20 {
        assert!(!changed(&mut e, t * 10, failed()), "steady failure at {t}");
    }
    assert_eq!(
        e.health(e.catalogue().node_id("generator").unwrap()),
        Health::Down
    );
    // Saturation changes no verdict: two successes still bring it back.
    assert!(changed(&mut e, 200, ok()));
    assert_eq!(
        e.health(e.catalogue().node_id("generator").unwrap()),
        Health::Down
    );
    assert!(changed(&mut e, 210, ok()));
    assert_eq!(
        e.health(e.catalogue().node_id("generator").unwrap()),
        Health::Up
    );
    // A new fuel level is a change even when the verdict is the same.
    let lower = Event::Probe {
        id: "gen".into(),
        result: ProbeResult {
            status: Some(200),
            body: Some(br#"{"running": true, "fuel": 70}"#.to_vec()),
            error: None,
            ..ProbeResult::default()
        },
    };
    assert!(changed(&mut e, 220, lower.clone()));
    assert!(!changed(&mut e, 230, lower));
}

#[test]
fn a_repeated_mqtt_state_without_heartbeat_changes_nothing() {
    let mut e = engine();
    assert!(changed(&mut e, 0, mqtt("room/room/fire", "alarm")));
    assert!(!changed(&mut e, 1, mqtt("room/room/fire", "alarm")));
    assert!(!changed(
        &mut e,
        2,
        mqtt("room/room/fire", "{\"state\": \"on\"}")
    ));
    // Rejected input changes nothing.
    assert!(!changed(&mut e, 3, mqtt("room/room/fire", "smoke")));
    assert!(!changed(&mut e, 4, mqtt("no/such/topic", "alarm")));
    assert!(!changed(&mut e, 5, mqtt("room/nope/fire", "alarm")));
    assert!(!changed(
        &mut e,
        6,
        Event::Alarm(AlarmInput {
            component: "nope".into(),
            kind: AlarmKind::Server,
            state: AlarmState::Firing,
            severity: AlarmSeverity::Critical,
            source: Source::Http,
            message: None,
            key: None,
        })
    ));
    assert!(!changed(
        &mut e,
        7,
        alarm("srv-a", AlarmKind::Server, AlarmState::Cleared)
    ));
    assert!(!changed(
        &mut e,
        8,
        Event::Probe {
            id: "nope".into(),
            result: ProbeResult::default(),
        }
    ));
    assert!(changed(&mut e, 9, mqtt("room/room/fire", "ok")));
}

#[test]
fn any_message_on_a_heartbeat_topic_is_a_change() {
    let mut e = engine_with_heartbeat();
    assert!(
        changed(&mut e, 0, mqtt("room/room/temp", "ok")),
        "first message"
    );
    assert!(
        changed(&mut e, 60, mqtt("room/room/temp", "ok")),
        "deadline moves"
    );
    let bad = e.apply(at(120), mqtt("room/room/temp", "smoke")).unwrap();
    assert!(
        matches!(bad.effects[..], [Effect::Rejected { .. }]),
        "{:?}",
        bad.effects
    );
    assert!(
        bad.changed,
        "a malformed message still shows the sensor alive"
    );
    // The heartbeat was refreshed at 120 s: lost at 420 s, not 360 s.
    assert!(e.run_timers_until(at(419)).iter().all(|t| t.1.is_empty()));
    let lost = e.run_timers_until(at(420));
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].0, at(420));
    assert!(
        matches!(&lost[0].1[0], Effect::Alarm { key, .. } if key == "heartbeat:room/room/temp")
    );
}

#[test]
fn actions_on_incidents_are_changes_and_refusals_are_errors() {
    let mut e = engine();
    fire(&mut e, 0, "srv-b", AlarmKind::Server);
    let ack = Event::Ack {
        incident: IncidentId(1),
        by: "p-lead".into(),
        note: None,
    };
    assert!(changed(&mut e, 20, ack.clone()));
    assert!(changed(&mut e, 21, ack), "a repeated ack is recorded");
    assert!(changed(
        &mut e,
        22,
        Event::Note {
            incident: IncidentId(1),
            by: "p-lead".into(),
            text: "looking".into(),
            decision: false,
            public: false,
        }
    ));
    assert!(changed(
        &mut e,
        23,
        Event::Eta {
            incident: IncidentId(1),
            expected: Duration::from_secs(3600),
            by: None,
            from_now: false,
        }
    ));
    assert!(
        changed(
            &mut e,
            24,
            Event::SetLevel {
                incident: IncidentId(1),
                level: Level::Department,
                by: "p-lead".into(),
            }
        ),
        "the same level again is recorded"
    );
    assert!(changed(
        &mut e,
        25,
        Event::Resolve {
            incident: IncidentId(1),
            by: "p-lead".into(),
            note: None,
        }
    ));
    let before = state(&e);
    assert_eq!(
        e.apply(
            at(26),
            Event::Note {
                incident: IncidentId(1),
                by: "x".into(),
                text: "late".into(),
                decision: false,
                public: false,
            }
        ),
        Err(EngineError::Resolved(IncidentId(1)))
    );
    assert_eq!(
        e.apply(
            at(27),
            Event::Ack {
                incident: IncidentId(7),
                by: "x".into(),
                note: None,
            }
        ),
        Err(EngineError::UnknownIncident(IncidentId(7)))
    );
    assert_eq!(state(&e), before, "a refusal changes nothing");
}

#[test]
fn alarm_effects_carry_their_identity_key() {
    let mut e = engine_with_heartbeat();
    let key = |effects: &[Effect]| -> Vec<String> {
        effects
            .iter()
            .filter_map(|x| match x {
                Effect::Alarm { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        key(&e.handle(at(0), mqtt("room/room/fire", "alarm")).unwrap()),
        ["room/room/fire"]
    );
    assert_eq!(
        key(&e
            .handle(
                at(1),
                mqtt("room/srv-a/fire", r#"{"state":"alarm","key":"det-7"}"#)
            )
            .unwrap()),
        ["det-7"]
    );
    assert_eq!(key(&fire(&mut e, 2, "srv-b", AlarmKind::Server)), [""]);
    let mut keyed = alarm("o365", AlarmKind::Application, AlarmState::Firing);
    if let Event::Alarm(a) = &mut keyed {
        a.key = Some("vendor".into());
    }
    assert_eq!(key(&e.handle(at(3), keyed).unwrap()), ["vendor"]);
    let failed = || Event::Probe {
        id: "gen".into(),
        result: ProbeResult {
            error: Some("timeout".into()),
            ..Default::default()
        },
    };
    e.handle(at(4), failed()).unwrap();
    assert_eq!(key(&e.handle(at(5), failed()).unwrap()), ["gen"]);
    e.handle(at(6), mqtt("room/room/temp", "ok")).unwrap();
    let lost: Vec<Effect> = e
        .run_timers_until(at(1000))
        .into_iter()
        .flat_map(|t| t.1)
        .collect();
    assert!(
        key(&lost).contains(&"heartbeat:room/room/temp".to_owned()),
        "{lost:?}"
    );
}

#[test]
fn health_changes_are_reported_once_each_until_taken() {
    let mut e = engine();
    assert!(e.take_health_changes().is_empty());
    fire(&mut e, 0, "room", AlarmKind::Environment);
    let cat = e.catalogue().clone();
    let name = |changes: Vec<(NodeId, Health)>| -> Vec<(String, Health)> {
        let mut v: Vec<_> = changes
            .into_iter()
            .map(|(n, h)| (cat.node(n).id.clone(), h))
            .collect();
        v.sort();
        v
    };
    let down = [
        ("alarms".to_owned(), Health::Down),
        ("room".to_owned(), Health::Down),
        ("srv-a".to_owned(), Health::Down),
        ("srv-b".to_owned(), Health::Down),
        ("web".to_owned(), Health::Down),
    ];
    assert_eq!(name(e.take_health_changes()), down);
    assert!(e.take_health_changes().is_empty(), "taken");
    // Down, then degraded and up again before the next call: once, as up.
    fire(&mut e, 1, "srv-b", AlarmKind::Server);
    clear(&mut e, 2, "room", AlarmKind::Environment);
    assert_eq!(
        name(e.take_health_changes()),
        [
            ("alarms".to_owned(), Health::Up),
            ("room".to_owned(), Health::Up),
            ("srv-a".to_owned(), Health::Up),
        ]
    );
    clear(&mut e, 3, "srv-b", AlarmKind::Server);
    let warn = Event::Alarm(AlarmInput {
        severity: AlarmSeverity::Warning,
        ..match alarm("srv-b", AlarmKind::Server, AlarmState::Firing) {
            Event::Alarm(a) => a,
            _ => unreachable!(),
        }
    });
    e.handle(at(4), warn).unwrap();
    assert_eq!(
        name(e.take_health_changes()),
        [
            ("srv-b".to_owned(), Health::Degraded),
            ("web".to_owned(), Health::Degraded),
        ]
    );
}

#[test]
fn live_incidents_are_the_open_and_acknowledged_ones() {
    let mut e = engine();
    assert!(e.live_incidents().is_empty());
    fire(&mut e, 0, "srv-b", AlarmKind::Server);
    fire(&mut e, 1, "o365", AlarmKind::Application);
    fire(&mut e, 2, "srv-a", AlarmKind::Server);
    assert_eq!(e.live_incidents(), ids(&[1, 2, 3]));
    e.handle(
        at(3),
        Event::Ack {
            incident: IncidentId(2),
            by: "p-lead".into(),
            note: None,
        },
    )
    .unwrap();
    clear(&mut e, 4, "srv-b", AlarmKind::Server);
    assert_eq!(e.live_incidents(), ids(&[2, 3]));
    // The room takes in both servers' incidents: the older absorbs the younger.
    fire(&mut e, 5, "srv-b", AlarmKind::Server);
    fire(&mut e, 6, "room", AlarmKind::Environment);
    assert_eq!(e.live_incidents(), ids(&[2, 3]));
    assert!(matches!(
        e.incident(IncidentId(4)).unwrap().state,
        IncidentState::Merged(IncidentId(3))
    ));
}

#[test]
fn timers_run_at_their_own_times_and_never_before_the_latest_input() {
    let mut e = engine();
    fire(&mut e, 0, "srv-b", AlarmKind::Server);
    assert!(e.run_timers_until(at(9)).is_empty(), "settle runs to 10 s");
    let ticks = e.run_timers_until(at(100));
    let times: Vec<Ts> = ticks.iter().map(|t| t.0).collect();
    assert_eq!(times, [at(10)], "settle ends at 10 s, not at 100 s");
    assert_eq!(
        notes(&ticks[0].1),
        [("p-lead".into(), "sms".into(), "open".into())]
    );
    // An ETA already outlived (0 s from opening) is due at once, in the
    // past: it runs at the ETA's time, like drill's tick at that instant.
    e.handle(
        at(200),
        Event::Eta {
            incident: IncidentId(1),
            expected: Duration::ZERO,
            by: None,
            from_now: false,
        },
    )
    .unwrap();
    assert_eq!(e.next_wakeup(), Some(at(0)));
    let ticks = e.run_timers_until(at(300));
    assert_eq!(ticks.len(), 1, "{ticks:?}");
    assert_eq!(ticks[0].0, at(200));
    assert!(
        ticks[0].1.iter().any(|x| matches!(
            x,
            Effect::Estimate {
                basis: Basis::Extended,
                expected_s: 2000,
                ..
            }
        )),
        "extended from 200 s: {:?}",
        ticks[0].1
    );
    assert!(e.next_wakeup().is_some_and(|w| w > at(300)));
}

#[test]
fn resolved_incidents_leave_memory_and_keep_their_numbers() {
    let mut e = engine();
    for round in 0..3 {
        let t = round * 100;
        fire(&mut e, t, "srv-b", AlarmKind::Server);
        clear(&mut e, t + 50, "srv-b", AlarmKind::Server);
    }
    fire(&mut e, 400, "o365", AlarmKind::Application);
    assert_eq!(e.incidents().len(), 4, "held until forgotten");
    assert_eq!(e.forget_resolved(), ids(&[1, 2, 3]));
    assert_eq!(
        e.incidents().iter().map(|i| i.id).collect::<Vec<_>>(),
        ids(&[4])
    );
    // An incident that is gone is over: acting on it is refused as such.
    let ack = Event::Ack {
        incident: IncidentId(2),
        by: "p-lead".into(),
        note: None,
    };
    assert_eq!(
        e.handle(at(401), ack),
        Err(EngineError::Resolved(IncidentId(2)))
    );
    let ack = Event::Ack {
        incident: IncidentId(9),
        by: "p-lead".into(),
        note: None,
    };
    assert_eq!(
        e.handle(at(401), ack),
        Err(EngineError::UnknownIncident(IncidentId(9)))
    );
    // The history estimate still knows the three outages of srv-b.
    assert_eq!(
        e.history
            .get(&e.cat.node_id("srv-b").unwrap())
            .map(|h| h.len()),
        Some(3)
    );
    // A snapshot holds what is open; a restore numbers on from 5.
    let snap = e.snapshot();
    let (mut r, warnings) = Engine::restore(e.catalogue().clone(), &snap);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(r.incidents().len(), 1);
    let opened = fire(&mut r, 500, "srv-a", AlarmKind::Server);
    assert!(
        opened.iter().any(|x| matches!(
            x,
            Effect::IncidentOpened {
                incident: IncidentId(5),
                ..
            }
        )),
        "{opened:?}"
    );
}

#[test]
fn a_merged_incident_leaves_memory_with_the_one_that_absorbed_it() {
    let mut e = engine();
    fire(&mut e, 0, "srv-a", AlarmKind::Server);
    fire(&mut e, 1, "srv-b", AlarmKind::Server);
    fire(&mut e, 2, "room", AlarmKind::Environment);
    assert!(matches!(
        e.incident(IncidentId(2)).unwrap().state,
        IncidentState::Merged(IncidentId(1))
    ));
    assert!(
        e.forget_resolved().is_empty(),
        "1 is open, and 2 stands for it"
    );
    // A batch that changed only a live incident ends nothing.
    fire(&mut e, 3, "o365", AlarmKind::Application);
    assert!(e.forget_resolved().is_empty());
    clear(&mut e, 4, "o365", AlarmKind::Application);
    assert_eq!(e.forget_resolved(), ids(&[3]), "1 is still open");
    for c in ["room", "srv-a", "srv-b"] {
        let kind = if c == "room" {
            AlarmKind::Environment
        } else {
            AlarmKind::Server
        };
        clear(&mut e, 10, c, kind);
    }
    assert_eq!(e.forget_resolved(), ids(&[1, 2]));
    assert!(e.incidents().is_empty());
}

#[test]
fn history_keeps_the_latest_outages_of_each_root() {
    let mut e = engine();
    let root = e.cat.node_id("srv-b").unwrap();
    for s in 0..(HISTORY_PER_ROOT as u64 + 10) {
        e.add_history(root, Duration::from_secs(s));
    }
    let h = &e.history[&root];
    assert_eq!(h.len(), HISTORY_PER_ROOT);
    assert_eq!(h.front(), Some(&10), "the oldest ten are gone");
}

#[test]
fn absurd_durations_saturate_instead_of_panicking_or_wrapping() {
    let mut e = engine();
    fire(&mut e, 0, "srv-b", AlarmKind::Server);
    for expected in [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::from_secs(1),
    ] {
        e.handle(
            at(1),
            Event::Eta {
                incident: IncidentId(1),
                expected,
                by: None,
                from_now: false,
            },
        )
        .unwrap();
        let inc = e.incident(IncidentId(1)).unwrap();
        assert!(inc.expected_end() >= inc.opened, "{expected:?}");
        let _ = e.run_timers_until(at(3600));
    }
    // An expected duration beyond the bound counts as the bound, which is
    // long enough for every `expected > DUR` step a config can hold.
    e.handle(
        at(3601),
        Event::Eta {
            incident: IncidentId(1),
            expected: Duration::MAX,
            by: None,
            from_now: false,
        },
    )
    .unwrap();
    assert_eq!(
        e.incident(IncidentId(1)).unwrap().expected_s,
        secs(crate::config::MAX_DURATION)
    );
    assert_eq!(Ts(i64::MAX).plus(Duration::MAX), Ts(i64::MAX));
    assert_eq!(Ts(i64::MIN).millis_since(Ts(i64::MAX)), i64::MIN);
    // Times past what a calendar names are clamped, not made 1970.
    let epoch = Ts(0).to_timestamp();
    assert!(Ts(i64::MAX).to_timestamp() > epoch);
    assert!(Ts(i64::MIN).to_timestamp() < epoch);
}

#[test]
fn a_link_acknowledges_once_and_the_snapshot_remembers_it() {
    let mut e = engine();
    fire(&mut e, 0, "srv-a", AlarmKind::Server);
    let link = |id: u64| Event::AckLink {
        incident: IncidentId(id),
        by: "p-lead".into(),
        link: "L1".into(),
    };
    let first = e.apply(at(5), link(1)).unwrap();
    assert!(first.changed);
    assert!(first.effects.iter().any(|x| matches!(
        x,
        Effect::Acknowledged {
            incident: IncidentId(1),
            ..
        }
    )));
    assert_eq!(
        e.apply(at(6), link(1)),
        Err(EngineError::LinkUsed(IncidentId(1)))
    );
    // A replay or a restart: the snapshot carries the used link.
    let (mut r, warnings) = Engine::restore(e.catalogue().clone(), &e.snapshot());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        r.apply(at(7), link(1)),
        Err(EngineError::LinkUsed(IncidentId(1)))
    );
    // A link used on an incident that is then absorbed still counts.
    fire(&mut r, 8, "srv-b", AlarmKind::Server);
    r.apply(
        at(9),
        Event::AckLink {
            incident: IncidentId(2),
            by: "p-lead".into(),
            link: "L2".into(),
        },
    )
    .unwrap();
    fire(&mut r, 10, "room", AlarmKind::Environment);
    assert!(matches!(
        r.incident(IncidentId(2)).unwrap().state,
        IncidentState::Merged(IncidentId(1))
    ));
    let again = Event::AckLink {
        incident: IncidentId(2),
        by: "p-lead".into(),
        link: "L2".into(),
    };
    assert_eq!(
        r.apply(at(11), again),
        Err(EngineError::LinkUsed(IncidentId(1)))
    );
}

#[test]
fn a_report_counts_its_expected_duration_from_the_report() {
    let mut e = engine();
    fire(&mut e, 0, "srv-a", AlarmKind::Server);
    let report = Event::Report {
        alarm: AlarmInput {
            component: "srv-a".into(),
            kind: AlarmKind::Server,
            state: AlarmState::Firing,
            severity: AlarmSeverity::Critical,
            source: Source::Manual,
            message: Some("vendor: back in two hours".into()),
            key: Some("report:vendor".into()),
        },
        expected: Some(Duration::from_secs(7200)),
    };
    let applied = e.apply(at(600), report).unwrap();
    assert!(applied.changed);
    let inc = e.incident(IncidentId(1)).unwrap();
    assert_eq!(inc.basis, Basis::Manual);
    assert_eq!(
        inc.expected_s,
        600 + 7200,
        "from opening: ten minutes in, two hours on"
    );
    // An absurd one saturates at the bound instead of overflowing.
    let absurd = Event::Report {
        alarm: AlarmInput {
            component: "srv-a".into(),
            kind: AlarmKind::Server,
            state: AlarmState::Firing,
            severity: AlarmSeverity::Critical,
            source: Source::Manual,
            message: None,
            key: Some("report:user".into()),
        },
        expected: Some(Duration::MAX),
    };
    e.apply(at(700), absurd).unwrap();
    assert_eq!(
        e.incident(IncidentId(1)).unwrap().expected_s,
        secs(crate::config::MAX_DURATION)
    );
}

#[test]
fn what_is_due_next_names_the_deputy_until_someone_acknowledges() {
    let mut e = engine();
    fire(&mut e, 0, "srv-a", AlarmKind::Server);
    run_to(&mut e, 60);
    let up = e.upcoming(IncidentId(1)).expect("something is due");
    assert_eq!(up.at, at(600), "{up:?}");
    let Next::Deputy { person, role, via } = &up.what else {
        panic!("the deputy is due first: {up:?}");
    };
    assert_eq!(person, "Deputy one");
    assert_eq!(role, &e.cat.role(e.cat.role_id("lead").unwrap()).name);
    assert_eq!(via, &["sms".to_owned()]);

    // Once the first deputy is told, the second is next.
    run_to(&mut e, 700);
    let up = e.upcoming(IncidentId(1)).expect("something is due");
    assert!(
        matches!(&up.what, Next::Deputy { person, .. } if person == "Deputy two")
            && up.at == at(1200),
        "{up:?}"
    );

    e.handle(
        at(800),
        Event::Ack {
            incident: IncidentId(1),
            by: "p-lead".into(),
            note: None,
        },
    )
    .unwrap();
    let up = e.upcoming(IncidentId(1));
    assert!(
        !matches!(
            up,
            Some(Upcoming {
                what: Next::Deputy { .. },
                ..
            })
        ),
        "no deputy after an acknowledgement: {up:?}"
    );
    e.handle(
        at(900),
        Event::Resolve {
            incident: IncidentId(1),
            by: "p-lead".into(),
            note: None,
        },
    )
    .unwrap();
    assert_eq!(
        e.upcoming(IncidentId(1)),
        None,
        "nothing is due once it is over"
    );
}

#[test]
fn an_mqtt_payload_is_logged_as_text_when_it_is_utf8_and_read_back_in_either_form() {
    let text = Event::Mqtt {
        topic: "site/room/fire".into(),
        payload: br#"{"state":"firing","key":"\u00e6"}"#.to_vec(),
    };
    let json = serde_json::to_string(&text).unwrap();
    assert!(
        json.contains(r#""payload":"{\"state\":\"firing\""#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), text);

    let binary = Event::Mqtt {
        topic: "t".into(),
        payload: vec![0xff, 0x00, 0x41],
    };
    let json = serde_json::to_string(&binary).unwrap();
    assert!(json.contains(r#""payload":[255,0,65]"#), "{json}");
    assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), binary);

    // A log written before payloads were text still replays.
    let old = r#"{"mqtt":{"topic":"t","payload":[123,125]}}"#;
    assert_eq!(
        serde_json::from_str::<Event>(old).unwrap(),
        Event::Mqtt {
            topic: "t".into(),
            payload: b"{}".to_vec(),
        }
    );
}
