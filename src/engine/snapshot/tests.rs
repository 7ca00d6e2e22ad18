//! Snapshots restored against the same config and against edited ones:
//! what is gone is dropped with a warning and the engine goes on.

use std::sync::Arc;

use super::super::tests::{PLAN, T0, alarm, at, clear, engine, fire, ids, notes, run_to};
use super::*;
use crate::config::load_str;
use crate::engine::{AlarmState, Event, ProbeResult, Reason};

fn cat_of(text: &str) -> Arc<Catalogue> {
    let loaded = load_str("plan.toml", text).expect("edited plan is valid");
    Arc::new(Catalogue::build(&loaded.config).expect("edited plan resolves"))
}

/// The plan with every `from` replaced by `to` (which must occur).
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the plan has no {from:?}");
    text.replace(from, to)
}

/// Snapshot, through JSON, restored against `text`.
fn reload(e: &Engine, text: &str) -> (Engine, Vec<String>) {
    let json = serde_json::to_string(&e.snapshot()).expect("serializes");
    let snap: Snapshot = serde_json::from_str(&json).expect("reads back");
    Engine::restore(cat_of(text), &snap)
}

fn mentions(warnings: &[String], what: &str) -> bool {
    warnings.iter().any(|w| w.contains(what))
}

/// Effects of the timers up to `secs`, with their times in seconds.
fn timers_to(e: &mut Engine, secs: i64) -> Vec<(i64, Effect)> {
    e.run_timers_until(at(secs))
        .into_iter()
        .flat_map(|(t, effects)| effects.into_iter().map(move |x| ((t.0 - T0) / 1000, x)))
        .collect()
}

fn only_effects(timed: &[(i64, Effect)]) -> Vec<Effect> {
    timed.iter().map(|t| t.1.clone()).collect()
}

fn resolved(effects: &[Effect]) -> Vec<IncidentId> {
    effects
        .iter()
        .filter_map(|x| match x {
            Effect::IncidentResolved { incident, .. } => Some(*incident),
            _ => None,
        })
        .collect()
}

fn generator_probe(body: &str) -> Event {
    Event::Probe {
        id: "gen".into(),
        result: ProbeResult {
            status: Some(200),
            body: Some(body.as_bytes().to_vec()),
            error: None,
            ..ProbeResult::default()
        },
    }
}

fn generator_fails() -> Event {
    Event::Probe {
        id: "gen".into(),
        result: ProbeResult {
            error: Some("timeout".into()),
            ..Default::default()
        },
    }
}

#[test]
fn restoring_against_the_same_config_gives_back_the_same_snapshot() {
    let mut e = engine();
    e.handle(
        at(0),
        generator_probe(r#"{"running": true, "fuel": 12.3456789}"#),
    )
    .unwrap();
    fire(&mut e, 1, "mains", AlarmKind::Power);
    fire(&mut e, 2, "srv-b", AlarmKind::Server);
    fire(&mut e, 3, "o365", AlarmKind::Application);
    run_to(&mut e, 700);
    e.handle(
        at(700),
        Event::Ack {
            incident: IncidentId(2),
            by: "p-lead".into(),
            note: Some("on it".into()),
        },
    )
    .unwrap();
    clear(&mut e, 800, "o365", AlarmKind::Application);
    let snap = e.snapshot();
    let (r, warnings) = reload(&e, PLAN);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(r.snapshot(), snap);
    assert_eq!(r.live_incidents(), e.live_incidents());
    assert_eq!(r.next_wakeup(), e.next_wakeup());
}

#[test]
fn a_removed_person_leaves_the_deputy_chain_and_the_next_deputy_is_called() {
    let mut e = engine();
    fire(&mut e, 0, "srv-b", AlarmKind::Server);
    run_to(&mut e, 300); // the open step told p-lead at 10 s; deputies follow at 610 s, 1210 s
    let text = edit(
        &edit(
            PLAN,
            "[[person]]\nid = \"p-dep1\"\nname = \"Deputy one\"\n",
            "",
        ),
        "deputies = [\"p-dep1\", \"p-dep2\"]",
        "deputies = [\"p-dep2\"]",
    );
    let (mut r, warnings) = reload(&e, &text);
    assert!(mentions(&warnings, "\"p-dep1\""), "{warnings:?}");
    let later = timers_to(&mut r, 2000);
    let deputies: Vec<(i64, String)> = later
        .iter()
        .filter_map(|(t, x)| match x {
            Effect::Notification(n) if n.reason == Reason::Deputy => Some((*t, n.person.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(deputies, [(610, "p-dep2".to_owned())], "{later:?}");
    // And the engine goes on: the incident resolves as usual.
    let effects = clear(&mut r, 2100, "srv-b", AlarmKind::Server);
    assert_eq!(resolved(&effects), ids(&[1]));
}

#[test]
fn a_chain_whose_role_is_removed_is_dropped() {
    let mut e = engine();
    fire(&mut e, 0, "srv-b", AlarmKind::Server);
    run_to(&mut e, 300); // the open step told the lead at 10 s: a chain runs
    let text = edit(
        &edit(
            PLAN,
            "[[role]]\nid = \"lead\"\nprimary = \"p-lead\"\ndeputies = [\"p-dep1\", \"p-dep2\"]\n",
            "",
        ),
        "role:lead",
        "person:p-lead",
    );
    let (mut r, warnings) = reload(&e, &text);
    assert!(
        mentions(
            &warnings,
            "role \"lead\" no longer exists: its deputy chain in incident 1 is dropped"
        ),
        "{warnings:?}"
    );
    let later = only_effects(&timers_to(&mut r, 2000));
    assert!(notes(&later).iter().all(|n| n.2 != "deputy"), "{later:?}");
    let effects = clear(&mut r, 2100, "srv-b", AlarmKind::Server);
    assert_eq!(resolved(&effects), ids(&[1]));
}

#[test]
fn a_removed_step_is_dropped_from_what_fired_and_the_incident_goes_on() {
    let step = "[[policy.step]]\non = \"expected > 30m\"\nnotify = [\"role:chief\"]\nvia = [\"sms\", \"mail\"]\n";
    let mut e = engine();
    fire(&mut e, 0, "srv-b", AlarmKind::Server);
    let before = run_to(&mut e, 1300); // extended at 1200 s to 50 min: the chief is told
    assert!(
        notes(&only_effects(&before))
            .iter()
            .any(|n| n.2 == "expected > 30m"),
        "{before:?}"
    );
    let (mut r, warnings) = reload(&e, &edit(PLAN, step, ""));
    assert!(
        mentions(&warnings, "no step \"expected > 30m\""),
        "{warnings:?}"
    );
    let later = only_effects(&timers_to(&mut r, 4000));
    assert!(
        notes(&later).iter().all(|n| n.2 != "expected > 30m"),
        "{later:?}"
    );
    let effects = clear(&mut r, 4100, "srv-b", AlarmKind::Server);
    assert_eq!(resolved(&effects), ids(&[1]));
    assert_eq!(
        notes(&effects),
        [("p-lead".into(), "sms".into(), "resolved".into())]
    );
}

#[test]
fn a_step_added_to_a_policy_fires_for_a_restored_incident_when_already_true() {
    let mut e = engine();
    fire(&mut e, 0, "srv-b", AlarmKind::Server);
    run_to(&mut e, 100); // the open step fired at 10 s
    let text = edit(
        PLAN,
        "[[policy.step]]\non = \"resolved\"",
        "[[policy.step]]\non = \"expected > 10m\"\nnotify = [\"person:p-owner\"]\nvia = [\"sms\"]\n\
         [[policy.step]]\non = \"resolved\"",
    );
    let (mut r, warnings) = reload(&e, &text);
    assert!(warnings.is_empty(), "{warnings:?}");
    // The estimate is 20 min, more than 10: the new step is already true
    // and fires at the first tick, at the snapshot's time; nothing else
    // is said again.
    let ticks = r.run_timers_until(at(100));
    assert_eq!(ticks.len(), 1, "{ticks:?}");
    assert_eq!(ticks[0].0, at(10));
    assert_eq!(
        notes(&ticks[0].1),
        [("p-owner".into(), "sms".into(), "expected > 10m".into())]
    );
    // Restored against the old config, the same snapshot says nothing.
    let (mut same, warnings) = reload(&e, PLAN);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(same.run_timers_until(at(100)).is_empty());
}

#[test]
fn a_removed_member_component_leaves_its_incident() {
    let mut e = engine();
    fire(&mut e, 0, "room", AlarmKind::Environment);
    fire(&mut e, 5, "srv-b", AlarmKind::Server); // joins below the room
    assert_eq!(e.incident(IncidentId(1)).map(|i| i.members.len()), Some(2));
    let text = edit(
        &edit(
            PLAN,
            "[[component]]\nid = \"srv-b\"\nkind = \"server\"\ndepends_on = [\"room\"]\n",
            "",
        ),
        "depends_on = [\"srv-b\"]",
        "depends_on = [\"room\"]",
    );
    let (mut r, warnings) = reload(&e, &text);
    assert!(mentions(&warnings, "\"srv-b\""), "{warnings:?}");
    let room = r.catalogue().node_id("room").unwrap();
    assert_eq!(
        r.incident(IncidentId(1)).map(|i| i.members.clone()),
        Some(vec![room])
    );
    timers_to(&mut r, 60);
    let effects = clear(&mut r, 100, "room", AlarmKind::Environment);
    assert_eq!(resolved(&effects), ids(&[1]));
}

#[test]
fn an_incident_whose_root_is_removed_takes_its_first_remaining_member() {
    let mut e = engine();
    fire(&mut e, 0, "srv-b", AlarmKind::Server);
    fire(&mut e, 1, "room", AlarmKind::Environment); // the new root, upstream
    let room_of = |e: &Engine| {
        e.catalogue()
            .node(e.incident(IncidentId(1)).unwrap().root)
            .id
            .clone()
    };
    assert_eq!(room_of(&e), "room");
    let text = edit(
        &edit(
            PLAN,
            "[[component]]\nid = \"room\"\nkind = \"room\"\nbuilding = \"hall\"\ndepends_on = [\"mains\"]\n",
            "",
        ),
        "depends_on = [\"room\"]",
        "depends_on = [\"mains\"]",
    );
    let (mut r, warnings) = reload(&e, &text);
    assert!(
        mentions(&warnings, "incident 1 takes \"srv-b\" as its root"),
        "{warnings:?}"
    );
    assert_eq!(room_of(&r), "srv-b");
    let effects = only_effects(&timers_to(&mut r, 5));
    assert!(
        effects.iter().any(|x| matches!(
            x,
            Effect::IncidentUpdated { incident: IncidentId(1), root, services, .. }
                // Every service it has affected stays on the incident.
                if root == "srv-b" && services == &["alarms".to_owned(), "web".to_owned()]
        )),
        "the reconcile tick reports the new root: {effects:?}"
    );
}

#[test]
fn an_incident_with_nothing_left_is_resolved_quietly_and_numbering_goes_on() {
    let mut e = engine();
    fire(&mut e, 0, "srv-b", AlarmKind::Server);
    run_to(&mut e, 100);
    let text = edit(
        &edit(
            PLAN,
            "[[component]]\nid = \"srv-b\"\nkind = \"server\"\ndepends_on = [\"room\"]\n",
            "",
        ),
        "depends_on = [\"srv-b\"]",
        "depends_on = [\"room\"]",
    );
    let (mut r, warnings) = reload(&e, &text);
    assert!(mentions(&warnings, "\"srv-b\""), "{warnings:?}");
    assert_eq!(r.live_incidents(), ids(&[1]), "resolved by the first tick");
    let effects = only_effects(&timers_to(&mut r, 100));
    assert_eq!(resolved(&effects), ids(&[1]));
    assert!(notes(&effects).is_empty(), "{effects:?}");
    assert!(r.live_incidents().is_empty());
    assert!(r.next_wakeup().is_none());
    let opened = fire(&mut r, 200, "o365", AlarmKind::Application);
    assert!(
        opened.iter().any(|x| matches!(
            x,
            Effect::IncidentOpened {
                incident: IncidentId(2),
                ..
            }
        )),
        "{opened:?}"
    );
}

/// A healthy probe's entry leaves out its zero failures and false flags (a
/// snapshot lists every probe, and most are healthy); a failing one's
/// carries them. Both read back to the same state.
#[test]
fn a_healthy_probe_is_written_without_its_zero_counts_and_both_read_back() {
    let probe_entry = |e: &Engine| {
        let json = serde_json::to_value(e.snapshot()).expect("serializes");
        json["probes"][0].clone()
    };
    let mut e = engine();
    e.handle(at(0), generator_probe(r#"{"running": true, "fuel": 50}"#))
        .unwrap();
    let healthy = probe_entry(&e);
    assert_eq!(
        healthy,
        serde_json::json!({"id": "gen", "node": "generator", "successes": 1})
    );
    let (r, _) = reload(&e, PLAN);
    assert_eq!(probe_entry(&r), healthy);

    e.handle(at(10), generator_fails()).unwrap();
    e.handle(at(20), generator_fails()).unwrap();
    let failing = probe_entry(&e);
    assert_eq!(failing["failures"], 2);
    assert_eq!(failing["down"], true);
    let (r, _) = reload(&e, PLAN);
    assert_eq!(probe_entry(&r), failing);
    let generator = e.catalogue().node_id("generator").unwrap();
    assert_eq!(r.health(generator), Health::Down);
}

#[test]
fn a_removed_probe_takes_its_state_its_alarm_and_its_reading_along() {
    let mut e = engine();
    e.handle(at(0), generator_probe(r#"{"running": true, "fuel": 50}"#))
        .unwrap();
    e.handle(at(10), generator_fails()).unwrap();
    e.handle(at(20), generator_fails()).unwrap();
    let generator = e.catalogue().node_id("generator").unwrap();
    assert_eq!(e.health(generator), Health::Down);
    assert_eq!(e.live_incidents(), ids(&[1]));
    let start = PLAN.find("[[probe]]").unwrap();
    let end = PLAN.find("then = \"degraded\"\n").unwrap() + "then = \"degraded\"\n".len();
    let text = PLAN[..start].to_owned() + &PLAN[end..];
    let (mut r, warnings) = reload(&e, &text);
    assert!(
        mentions(&warnings, "probe \"gen\" no longer exists"),
        "{warnings:?}"
    );
    assert!(
        mentions(&warnings, "probe \"gen\" no longer watches"),
        "{warnings:?}"
    );
    assert!(mentions(&warnings, "generator reading"), "{warnings:?}");
    assert_eq!(r.health(generator), Health::Up);
    let effects = only_effects(&timers_to(&mut r, 30));
    assert_eq!(
        resolved(&effects),
        ids(&[1]),
        "all its members are up: {effects:?}"
    );
    // The probe's id is now unknown input.
    let after = r.apply(at(40), generator_fails()).unwrap();
    assert!(!after.changed);
    assert!(matches!(after.effects[..], [Effect::Rejected { .. }]));
}

#[test]
fn a_removed_heartbeat_takes_its_lost_sensor_alarm_along() {
    let sub = "\n[[mqtt.subscription]]\ntopic = \"room/+/temp\"\nkind = \"environment\"\ncomponent = \"{1}\"\n";
    let with = format!("{PLAN}{sub}heartbeat = \"5m\"\n");
    let without = format!("{PLAN}{sub}");
    let (mut e, _) = Engine::restore(cat_of(&with), &Engine::new(cat_of(&with)).snapshot());
    e.handle(
        at(0),
        Event::Mqtt {
            topic: "room/room/temp".into(),
            payload: b"ok".to_vec(),
        },
    )
    .unwrap();
    timers_to(&mut e, 400); // lost at 300 s: a warning on the room
    let room = e.catalogue().node_id("room").unwrap();
    assert_eq!(e.health(room), Health::Degraded);
    let (mut r, warnings) = reload(&e, &without);
    assert!(mentions(&warnings, "heartbeat is dropped"), "{warnings:?}");
    assert!(mentions(&warnings, "lost-sensor alarm"), "{warnings:?}");
    assert_eq!(r.health(room), Health::Up);
    assert_eq!(resolved(&only_effects(&timers_to(&mut r, 500))), ids(&[1]));
    // Kept when the heartbeat stays.
    let (kept, warnings) = reload(&e, &with);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(kept.health(room), Health::Degraded);
}

#[test]
fn a_snapshot_of_another_version_restores_nothing() {
    let mut e = engine();
    fire(&mut e, 0, "srv-b", AlarmKind::Server);
    let mut snap = e.snapshot();
    snap.version = SNAPSHOT_VERSION + 1;
    let (r, warnings) = Engine::restore(e.catalogue().clone(), &snap);
    assert!(mentions(&warnings, "nothing restored"), "{warnings:?}");
    assert!(r.incidents().is_empty());
}

#[test]
fn a_tampered_snapshot_is_warned_about_not_a_panic() {
    let mut e = engine();
    fire(&mut e, 0, "srv-b", AlarmKind::Server);
    fire(&mut e, 1, "o365", AlarmKind::Application);
    run_to(&mut e, 700);
    let mut json: serde_json::Value = serde_json::to_value(e.snapshot()).unwrap();
    json["incidents"][0]["state"] = serde_json::json!({"merged": {"into": 2}});
    json["incidents"][1]["id"] = serde_json::json!(9);
    json["incidents"][1]["chains"][0]["every_ms"] = serde_json::json!(u64::MAX);
    json["alarms"][0]["node"] = serde_json::json!("no-such-node");
    json["generators"] =
        serde_json::json!([{"node": "generator", "running": true, "fuel_percent": "lots"}]);
    json["probes"][0]["failures"] = serde_json::json!(u32::MAX);
    let snap: Snapshot = serde_json::from_value(json).unwrap();
    let (mut r, warnings) = Engine::restore(e.catalogue().clone(), &snap);
    assert!(
        mentions(&warnings, "merged into incident 2"),
        "{warnings:?}"
    );
    // Numbers may have gaps (resolved incidents leave memory): incident 9
    // keeps its number, and the next one counts on from it.
    assert_eq!(r.incident(IncidentId(9)).map(|i| i.id), Some(IncidentId(9)));
    assert_eq!(r.incidents().next_id(), IncidentId(10));
    assert!(mentions(&warnings, "\"no-such-node\""), "{warnings:?}");
    assert!(mentions(&warnings, "\"lots\""), "{warnings:?}");
    assert!(matches!(
        r.incident(IncidentId(1)).unwrap().state,
        IncidentState::Resolved
    ));
    // It runs on.
    r.run_timers_until(at(100_000));
    r.handle(at(100_001), generator_fails()).unwrap();
    r.handle(
        at(100_002),
        alarm("srv-a", AlarmKind::Server, AlarmState::Firing),
    )
    .unwrap();
}

#[test]
fn a_config_with_no_nodes_left_drops_the_incidents() {
    let bare = "[site]\nname = \"Bare\"\nlanguage = \"en\"\ntimezone = \"Europe/Copenhagen\"\n";
    let loaded = load_str("bare.toml", bare).expect("a config without components loads");
    let cat = Catalogue::build(&loaded.config).expect("and resolves");
    let mut e = engine();
    fire(&mut e, 0, "srv-b", AlarmKind::Server);
    let (mut r, warnings) = Engine::restore(Arc::new(cat), &e.snapshot());
    assert!(mentions(&warnings, "numbering starts over"), "{warnings:?}");
    assert!(r.incidents().is_empty());
    assert!(r.run_timers_until(at(10_000)).is_empty());
}
