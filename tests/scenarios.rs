//! The preparedness plan, drilled. Each test replays a scenario from
//! `tests/scenarios/` against `tests/scenarios/plan.toml` in simulated time
//! and checks what SPEC §3 and §4 say must happen: who is told, when, why,
//! about which incident, how severe, and how long it is expected to last.
//! Every drill's output also has the drill format of SPEC §4, field by
//! field (see `common::drill_lint`).
//!
//! Reading aid for plan.toml: settle 10s; deputy_after 10m; status every
//! 30m to Communications (p-komm); estimates fire 1d, power 45m, network
//! 20m, server 1h, extended by 30m; Drift = p-drift (deputies p-server,
//! p-app), Support = p-support (deputy p-helpdesk), IT chief = p-itchef
//! (deputy p-afdleder), director = p-dir.

mod common;

use common::{Drill, channels, drill, drill_files, people, times, write_temp};
use serde_json::json;

const SETTLE: f64 = 10.0;
const DEPUTY_AFTER: f64 = 600.0;
const STATUS_EVERY: f64 = 1800.0;
const EXTEND: u64 = 1800;
const HOUR: u64 = 3600;
const WEEK: u64 = 7 * 24 * HOUR;

const ALL_SERVICES: [&str; 3] = ["mail", "omsorg", "web"];

/// The (t, person) pairs of these notifications, without channel repeats.
fn who_when(told: &[common::Told]) -> Vec<(f64, &str)> {
    let mut pairs: Vec<(f64, &str)> = told.iter().map(|n| (n.t, n.to.as_str())).collect();
    pairs.dedup();
    pairs
}

/// Asserts that nobody got the same (reason) on the same channel twice.
fn assert_one_per_person_channel_reason(d: &Drill) {
    let mut seen = std::collections::BTreeSet::new();
    for n in d.notifications() {
        let key = (
            n.incident,
            n.to.clone(),
            n.channel.clone(),
            n.reason.clone(),
        );
        assert!(seen.insert(key), "told twice: {n:?}\n{d}");
    }
}

// ---------------------------------------------------------------- fire

#[test]
fn fire_in_the_server_room_tells_leaders_at_once_without_settle() {
    let d = drill("fire_in_the_server_room");

    let alarm = d.only("alarm"); // the repeat at 1 min is deduplicated
    assert_eq!(alarm["component"], "serverrum");
    assert_eq!(alarm["kind"], "fire");
    assert_eq!(alarm["state"], "firing");
    assert_eq!(
        alarm["severity"], "critical",
        "severity defaults to critical"
    );
    assert_eq!(alarm["source"], "mqtt");

    // One incident for everything hosted in the room, critical (omsorg is life).
    let opened = d.only("incident_opened");
    assert_eq!(opened["t"], 0);
    assert_eq!(opened["incident"], 1);
    assert_eq!(opened["root"], "serverrum");
    assert_eq!(opened["services"], json!(ALL_SERVICES));
    assert_eq!(opened["severity"], "critical");
    assert_eq!(opened["expected_s"], 24 * HOUR);
    assert_eq!(
        d.estimates(),
        vec![(0.0, 24 * HOUR, "kind".into())],
        "by_kind fire = 1d\n{d}"
    );

    // A fire does not wait for settle: Drift and Support at t = 0, by SMS.
    let open = d.notifications_for("open");
    assert_eq!(people(&open), ["p-drift", "p-support"], "\n{d}");
    assert_eq!(times(&open), [0.0, 0.0], "\n{d}");
    assert_eq!(channels(&open), ["sms"]);
    // 1d > 30m: the IT chief too, at once.
    assert_eq!(
        people(&d.notifications_for("expected > 30m")),
        ["p-itchef"],
        "\n{d}"
    );
    assert!(
        d.notifications()
            .iter()
            .all(|n| n.t == 0.0 && n.incident == 1),
        "\n{d}"
    );
}

// ------------------------------------------------------- power and fuel

#[test]
fn mains_lost_while_the_generator_carries_is_a_minor_incident_without_services() {
    let d = drill("mains_lost_generator_carries");

    let opened = d.only("incident_opened");
    assert_eq!(opened["t"], 60);
    assert_eq!(opened["root"], "power-mains");
    assert_eq!(opened["services"], json!([]), "the generator carries\n{d}");
    assert_eq!(opened["severity"], "minor");
    assert_eq!(opened["expected_s"], 45 * 60, "by_kind power = 45m");

    // Not a fire, no life service down: settle applies. The incident follows
    // the policy of the services the mains feeds.
    let open = d.notifications_for("open");
    assert_eq!(people(&open), ["p-drift", "p-support"], "\n{d}");
    assert!(open.iter().all(|n| n.t == 60.0 + SETTLE), "\n{d}");
    // With 90 % and then 40 % of an 8 h tank, the fuel outlasts the outage.
    let before_fuel_low: Vec<_> = d.estimates().into_iter().filter(|e| e.0 < 600.0).collect();
    assert_eq!(before_fuel_low, [(60.0, 2700, "kind".into())], "\n{d}");
}

#[test]
fn an_outage_longer_than_the_fuel_takes_every_service_the_mains_feeds() {
    let d = drill("mains_lost_generator_carries");

    // At 10 min: 5 % × 8 h = 24 min of fuel, 36 min of outage left.
    assert_eq!(
        d.estimates(),
        vec![
            (60.0, 2700, "kind".into()),
            (600.0, 2700, "generator".into())
        ],
        "the generator estimate keeps the expected duration\n{d}"
    );
    let updated = d.only("incident_updated");
    assert_eq!(updated["t"], 600);
    assert_eq!(updated["incident"], 1);
    assert_eq!(updated["root"], "power-mains");
    assert_eq!(updated["services"], json!(ALL_SERVICES));
    assert_eq!(updated["severity"], "critical");

    // Severity rose after the steps fired: everyone they told is told again.
    let again = d.notifications_for("severity");
    assert_eq!(
        people(&again),
        ["p-drift", "p-itchef", "p-support"],
        "\n{d}"
    );
    assert!(again.iter().all(|n| n.t == 600.0), "\n{d}");
    // ... and told when the fuel runs out: 08:10 + 24 min.
    assert!(
        d.notifications()
            .iter()
            .any(|n| n.t == 600.0 && n.text.contains("08:34")),
        "no notification at 08:10 says the fuel runs out at 08:34\n{d}"
    );
}

#[test]
fn a_generator_that_stops_belongs_to_the_mains_incident() {
    let d = drill("generator_stops");

    let opened = d.only("incident_opened");
    assert_eq!(
        (&opened["t"], &opened["severity"]),
        (&json!(60), &json!("minor"))
    );
    // Evaluated at 5 min: not running, so it no longer carries the room.
    let updated = d.only("incident_updated");
    assert_eq!(updated["t"], 300);
    assert_eq!(updated["incident"], 1);
    assert_eq!(updated["root"], "power-mains");
    assert_eq!(updated["services"], json!(ALL_SERVICES));
    assert_eq!(updated["severity"], "critical");
    let again = d.notifications_for("severity");
    assert_eq!(
        people(&again),
        ["p-drift", "p-itchef", "p-support"],
        "\n{d}"
    );
    // Critical from 5 min: the first status 30 min after that, not after the open step.
    assert_eq!(
        times(&d.notifications_for("status")),
        [300.0 + STATUS_EVERY],
        "\n{d}"
    );
}

// ------------------------------------------------------------- probes

#[test]
fn a_flapping_switch_opens_no_incident_until_it_fails_for_good() {
    let d = drill("flapping_switch");

    // Two failures at a time never reach fail_after = 3; 60, 70, 80 do.
    let alarm = d.only("alarm");
    assert_eq!(alarm["t"], 80, "down at the third consecutive failure\n{d}");
    assert_eq!(alarm["component"], "net-core");
    assert_eq!(
        alarm["kind"], "network",
        "a probe's alarm kind is its component's kind"
    );
    assert_eq!(alarm["source"], "probe");
    assert_eq!(alarm["state"], "firing");

    let opened = d.only("incident_opened");
    assert_eq!(opened["t"], 80);
    assert_eq!(opened["incident"], 1);
    assert_eq!(opened["root"], "net-core");
}

#[test]
fn a_switch_comes_back_after_recover_after_consecutive_successes() {
    let d = drill("switch_recovers");

    let alarms: Vec<_> = d
        .lines_of_type("alarm")
        .iter()
        .map(|a| (a["t"].clone(), a["state"].clone()))
        .collect();
    assert_eq!(
        alarms,
        [(json!(20), json!("firing")), (json!(90), json!("cleared"))],
        "\n{d}"
    );
    let resolved = d.only("incident_resolved");
    assert_eq!(
        (&resolved["t"], &resolved["duration_s"]),
        (&json!(90), &json!(70))
    );
}

/// The core switch watched by ping flaps like the HTTP one: lost echoes two
/// at a time never reach fail_after; it is down at the third in a row, up
/// after recover_after answers, and a slow answer (rtt over max_rtt) is a
/// warning, not a failure.
#[test]
fn a_switch_that_flaps_on_ping_is_down_only_when_it_fails_for_good() {
    let d = drill("switch_flaps_on_ping");
    let alarms: Vec<_> = d
        .lines_of_type("alarm")
        .iter()
        .map(|a| {
            assert_eq!(a["component"], "net-core");
            assert_eq!(a["kind"], "network");
            assert_eq!(a["source"], "probe");
            (a["t"].clone(), a["state"].clone(), a["severity"].clone())
        })
        .collect();
    assert_eq!(
        alarms,
        [
            (json!(80), json!("firing"), json!("critical")),
            (json!(130), json!("cleared"), json!("critical")),
            (json!(200), json!("firing"), json!("warning")),
        ],
        "\n{d}"
    );
    let opened = d.lines_of_type("incident_opened");
    assert_eq!(opened.len(), 2, "\n{d}");
    assert_eq!(opened[0]["t"], 80);
    assert_eq!(opened[0]["root"], "net-core");
    assert_eq!(opened[0]["services"], json!(["mail", "omsorg", "web"]));
    assert_eq!(opened[0]["severity"], "critical");
    assert_eq!(opened[1]["t"], 200);
    assert_eq!(opened[1]["severity"], "major", "degraded, not down");
    let resolved = d.only("incident_resolved");
    assert_eq!(
        (&resolved["t"], &resolved["duration_s"]),
        (&json!(130), &json!(50))
    );
}

/// The website's certificate: a month left is fine, ten days (under
/// warn_before 14d) is a warning on srv-web, expired is the web down, and
/// the renewed certificate resolves the incident.
#[test]
fn a_certificate_nearing_expiry_warns_then_fails_and_renewal_resolves() {
    let d = drill("certificate_nearing_expiry");
    let alarms: Vec<_> = d
        .lines_of_type("alarm")
        .iter()
        .map(|a| {
            assert_eq!(a["component"], "srv-web");
            (a["t"].clone(), a["state"].clone(), a["severity"].clone())
        })
        .collect();
    assert_eq!(
        alarms,
        [
            (json!(3600), json!("firing"), json!("warning")),
            (json!(10800), json!("firing"), json!("critical")),
            (json!(18000), json!("cleared"), json!("critical")),
        ],
        "\n{d}"
    );
    let opened = d.only("incident_opened");
    assert_eq!(opened["t"], 3600);
    assert_eq!(opened["root"], "srv-web");
    assert_eq!(opened["services"], json!(["web"]));
    assert_eq!(opened["severity"], "minor");
    let updated = d.only("incident_updated");
    assert_eq!(
        (&updated["t"], &updated["severity"]),
        (&json!(10800), &json!("major"))
    );
    let resolved = d.only("incident_resolved");
    assert_eq!(resolved["t"], 18000);
}

/// A probe event gives a probe only what its kind can report.
#[test]
fn a_probe_event_of_the_wrong_kind_is_a_scenario_error() {
    for (event, why) in [
        (
            r#"{ id = "core-switch-ping", status = 503 }"#,
            r#"for icmp probe "core-switch-ping": status is for http probes"#,
        ),
        (
            r#"{ id = "web-cert", rtt_ms = 5 }"#,
            r#"for tls probe "web-cert": rtt_ms is for tcp and icmp probes"#,
        ),
        (
            r#"{ id = "core-switch", expires_in = "3d" }"#,
            r#"for http probe "core-switch": expires_in is for tls probes"#,
        ),
    ] {
        let scenario = common::write_temp(
            "wrong_kind.toml",
            &format!("end = \"1m\"\n[[event]]\nat = \"0s\"\nprobe = {event}\n"),
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_beredskab"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["drill", "-c", common::PLAN, "--scenario"])
            .arg(&scenario)
            .output()
            .expect("run drill");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{event}");
        assert!(stderr.contains(why), "{event}: {stderr}");
    }
}

// -------------------------------------------------------- correlation

#[test]
fn a_power_loss_and_fifty_server_alarms_are_one_incident() {
    let d = drill_files(
        &fifty_servers_plan(),
        &power_loss_then_fifty_server_alarms(),
    );

    let servers = d.lines_of_type("alarm");
    let servers: Vec<_> = servers.iter().filter(|a| a["kind"] == "server").collect();
    assert_eq!(servers.len(), 50, "every server alarm is printed\n{d}");

    let opened = d.only("incident_opened");
    assert_eq!(opened["t"], 60);
    assert_eq!(
        opened["root"], "power-mains",
        "the generator is not running\n{d}"
    );
    assert_eq!(
        opened["services"],
        json!(["mail", "omsorg", "sager", "web"])
    );
    assert_eq!(opened["severity"], "critical");
    for line in d.lines_of_type("incident_updated") {
        assert_eq!(
            line["root"], "power-mains",
            "the servers join below the root\n{d}"
        );
    }

    // The leaders are told once each, on each channel.
    assert_eq!(d.notifications_to("p-drift").len(), 1, "\n{d}");
    assert_eq!(d.notifications_to("p-support").len(), 1, "\n{d}");
    assert!(
        d.notifications()
            .iter()
            .all(|n| n.incident == 1 && n.t == 60.0),
        "\n{d}"
    );
    assert_one_per_person_channel_reason(&d);
}

/// plan.toml plus fifty servers in the server room, srv-01 … srv-50,
/// hosting the case systems ("sager", important).
fn fifty_servers_plan() -> std::path::PathBuf {
    let mut config = std::fs::read_to_string(common::PLAN).expect("read plan.toml");
    let ids: Vec<String> = (1..=50).map(|i| format!("\"srv-{i:02}\"")).collect();
    for id in &ids {
        config += &format!(
            "\n[[component]]\nid = {id}\nkind = \"server\"\nbuilding = \"raadhus\"\n\
             depends_on = [\"serverrum\"]\n"
        );
    }
    config += &format!(
        "\n[[service]]\nid = \"sager\"\ncriticality = \"important\"\n\
         depends_on = [{}]\npolicy = \"standard\"\n",
        ids.join(", ")
    );
    write_temp("fifty-servers-plan.toml", &config)
}

/// The generator does not start; mains is lost at 1 min; then each of the
/// fifty servers raises an alarm, one a second, from 61 s to 110 s.
fn power_loss_then_fifty_server_alarms() -> std::path::PathBuf {
    let mut scenario = String::from(
        "end = \"5m\"\n\n\
         [[event]]\nat = \"0s\"\n\
         probe = { id = \"generator\", body = '{\"running\": false, \"fuel_percent\": 100}' }\n\n\
         [[event]]\nat = \"1m\"\n\
         mqtt = { topic = \"raadhus/serverrum/stroem\", payload = \"ALARM\" }\n",
    );
    for i in 1..=50 {
        scenario += &format!(
            "\n[[event]]\nat = \"{}s\"\n\
             mqtt = {{ topic = \"servere/srv-{i:02}/alarm\", payload = \"ALARM\" }}\n",
            60 + i
        );
    }
    write_temp("fifty-servers.toml", &scenario)
}

#[test]
fn a_server_alarm_notifies_nobody_until_settle_ends() {
    let d = drill("web_server_down");

    let opened = d.only("incident_opened");
    assert_eq!(opened["t"], 0, "the incident opens at its first alarm");
    assert_eq!(opened["services"], json!(["web"]));
    assert_eq!(opened["severity"], "major", "an important service is down");
    assert!(d.notifications().iter().all(|n| n.t >= SETTLE), "\n{d}");

    let open = d.notifications_for("open");
    assert_eq!(people(&open), ["p-drift", "p-support"], "\n{d}");
    assert_eq!(
        times(&open),
        [SETTLE, SETTLE],
        "the open step fires when settle ends\n{d}"
    );
}

#[test]
fn related_alarms_during_settle_join_the_same_incident() {
    let d = drill("related_alarms_during_settle");

    let opened = d.only("incident_opened");
    assert_eq!(opened["root"], "srv-web");
    let updated = d.lines_of_type("incident_updated");
    let last = updated
        .last()
        .unwrap_or_else(|| panic!("no incident_updated\n{d}"));
    assert_eq!(last["incident"], 1);
    assert_eq!(
        last["root"], "vm-vaert",
        "the host is upstream of the web server\n{d}"
    );
    assert_eq!(last["services"], json!(["mail", "web"]));
    assert_eq!(last["severity"], "critical");

    // One round of notifications at the end of settle, for incident 1 only.
    let open = d.notifications_for("open");
    assert_eq!(
        who_when(&open),
        [(SETTLE, "p-drift"), (SETTLE, "p-support")],
        "\n{d}"
    );
    assert!(d.notifications().iter().all(|n| n.incident == 1), "\n{d}");
    assert!(
        d.notifications_for("severity").is_empty(),
        "nobody was told before\n{d}"
    );
}

#[test]
fn incidents_are_numbered_in_order_of_opening() {
    let d = drill("incident_numbering");

    let opened: Vec<_> = d
        .lines_of_type("incident_opened")
        .iter()
        .map(|l| (l["incident"].clone(), l["t"].clone(), l["root"].clone()))
        .collect();
    assert_eq!(
        opened,
        [
            (json!(1), json!(0), json!("srv-web")),
            (json!(2), json!(60), json!("srv-omsorg")),
            (json!(3), json!(180), json!("srv-web")),
        ],
        "\n{d}"
    );
    let resolved = d.only("incident_resolved");
    assert_eq!(
        (&resolved["incident"], &resolved["t"]),
        (&json!(1), &json!(120))
    );
}

#[test]
fn two_incidents_that_come_to_share_a_root_merge_into_the_older() {
    let d = drill("two_incidents_merge");

    let merged = d.only("incident_merged");
    assert_eq!(merged["t"], 120);
    assert_eq!(merged["incident"], 2);
    assert_eq!(merged["into"], 1);
    let updated = d.lines_of_type("incident_updated");
    let at_merge = updated
        .iter()
        .find(|l| l["t"] == 120)
        .unwrap_or_else(|| panic!("no update at 2 min\n{d}"));
    assert_eq!(at_merge["incident"], 1);
    assert_eq!(at_merge["root"], "vm-vaert");
    assert_eq!(at_merge["services"], json!(["mail", "web"]));
    assert!(
        d.notifications()
            .iter()
            .all(|n| n.t < 120.0 || n.incident == 1),
        "\n{d}"
    );
    // The absorbed incident gets no recovery of its own.
    let resolved = d.only("incident_resolved");
    assert_eq!(
        (&resolved["t"], &resolved["incident"]),
        (&json!(240), &json!(1))
    );
}

#[test]
fn a_new_root_re_estimates_from_its_kind() {
    let d = drill("new_root_re_estimates");

    let updated = d.only("incident_updated");
    assert_eq!(
        (&updated["t"], &updated["root"]),
        (&json!(60), &json!("net-core"))
    );
    assert_eq!(
        d.estimates(),
        vec![(0.0, HOUR, "kind".into()), (60.0, 1200, "kind".into())],
        "server 1h, then network 20m\n{d}"
    );
}

// ---------------------------------------------------------- deputies

#[test]
fn an_unacknowledged_incident_reaches_the_deputies_in_turn() {
    let d = drill("web_server_down");
    let deputies = d.notifications_for("deputy");
    let of_role = |role: &str| -> Vec<common::Told> {
        deputies
            .iter()
            .filter(|n| n.role.as_deref() == Some(role))
            .cloned()
            .collect()
    };

    // Told at the end of settle; deputy_after later, the next deputy; and so
    // on to the last.
    let first = SETTLE + DEPUTY_AFTER;
    let second = first + DEPUTY_AFTER;
    assert_eq!(
        who_when(&of_role("drift-leder")),
        [(first, "p-server"), (second, "p-app")],
        "\n{d}"
    );
    assert_eq!(
        who_when(&of_role("support-leder")),
        [(first, "p-helpdesk")],
        "\n{d}"
    );
    assert_eq!(
        who_when(&of_role("it-chef")),
        [(first, "p-afdleder")],
        "\n{d}"
    );
    assert_eq!(
        people(&deputies),
        ["p-afdleder", "p-app", "p-helpdesk", "p-server"],
        "\n{d}"
    );
}

#[test]
fn an_acknowledged_incident_reaches_no_deputy() {
    let d = drill("web_server_down_acknowledged");

    let acks: Vec<_> = d
        .lines_of_type("acknowledged")
        .iter()
        .map(|a| (a["t"].clone(), a["incident"].clone(), a["by"].clone()))
        .collect();
    assert_eq!(
        acks,
        [
            (json!(300), json!(1), json!("p-drift")),
            (json!(360), json!(1), json!("p-support"))
        ],
        "a second acknowledgement is allowed and recorded\n{d}"
    );
    assert_eq!(
        d.notifications_for("deputy"),
        [],
        "the ack stops every chain\n{d}"
    );
}

#[test]
fn an_acknowledgement_stops_only_the_chains_started_before_it() {
    let d = drill("ack_then_new_step");

    // Drift and Support were told at 10 s, acknowledged at 5 min: no deputies.
    // The director, called at 6 min for "ten days", gets a deputy at 16 min.
    let deputies = d.notifications_for("deputy");
    assert_eq!(
        who_when(&deputies),
        [(360.0 + DEPUTY_AFTER, "p-vicedir")],
        "\n{d}"
    );
    assert!(
        deputies
            .iter()
            .all(|n| n.role.as_deref() == Some("direktoer"))
    );
}

// ---------------------------------------------------------- channels

#[test]
fn with_mail_down_mail_notifications_go_by_sms_once() {
    let d = drill("mail_down");

    let opened = d.only("incident_opened");
    assert_eq!(opened["services"], json!(["mail"]));
    assert_eq!(opened["severity"], "critical");

    // The IT chief's step says sms and mail; mail falls back to sms: one SMS.
    let chief = d.notifications_to("p-itchef");
    assert_eq!(chief.len(), 1, "\n{d}");
    assert_eq!((chief[0].t, chief[0].channel.as_str()), (SETTLE, "sms"));
    assert_eq!(chief[0].reason, "expected > 30m");
    assert!(
        d.notifications().iter().all(|n| n.channel != "mail"),
        "\n{d}"
    );
    assert_one_per_person_channel_reason(&d);
}

#[test]
fn with_mail_up_the_it_chief_gets_both_sms_and_mail() {
    let d = drill("web_server_down");

    let chief = d.notifications_for("expected > 30m");
    assert_eq!(people(&chief), ["p-itchef"], "\n{d}");
    assert_eq!(channels(&chief), ["mail", "sms"], "\n{d}");
    assert_eq!(times(&chief), [SETTLE, SETTLE]);
}

// --------------------------------------------------------- estimates

#[test]
fn an_outage_that_outlives_its_estimate_is_extended_until_the_vendor_says_ten_days() {
    let d = drill("outage_outlives_its_estimate");

    // 20 min by kind; reached at 20 min: 20 + 30 min; then the vendor's ten
    // days (manual), which nothing extends before they are outlived.
    assert_eq!(
        d.estimates(),
        vec![
            (0.0, 1200, "kind".into()),
            (1200.0, 1200 + EXTEND, "extended".into()),
            (1800.0, 10 * 24 * HOUR, "manual".into()),
        ],
        "\n{d}"
    );

    // The extension makes it "expected > 30m": the IT chief, at 20 min.
    let chief = d.notifications_for("expected > 30m");
    assert_eq!(people(&chief), ["p-itchef"], "\n{d}");
    assert!(chief.iter().all(|n| n.t == 1200.0), "\n{d}");
    // Ten days > 1w: the director, by call and (mail being down) sms.
    let director = d.notifications_for("expected > 1w");
    assert_eq!(people(&director), ["p-dir"], "\n{d}");
    assert_eq!(channels(&director), ["call", "sms"], "\n{d}");
    assert!(director.iter().all(|n| n.t == 1800.0), "\n{d}");
}

#[test]
fn an_estimate_from_history_is_the_nearest_rank_quantile() {
    let d = drill("estimate_from_history");

    // Six past outages of srv-web, sorted: 10m 20m 40m 50m 1h30m 2h.
    // quantile 0.8, nearest rank: index ⌈0.8 × 6⌉ − 1 = ⌈4.8⌉ − 1 = 4 -> 1h30m.
    let mut past = [600, 3000, 1200, 7200, 2400, 5400];
    past.sort();
    let index = (0.8 * past.len() as f64).ceil() as usize - 1;
    assert_eq!((index, past[index]), (4, 5400));

    assert_eq!(
        d.estimates(),
        vec![(0.0, past[index], "history".into())],
        "\n{d}"
    );
    assert_eq!(d.only("incident_opened")["expected_s"], past[index]);
}

#[test]
fn with_fewer_than_min_samples_the_kind_decides() {
    let d = drill("too_little_history");
    assert_eq!(
        d.estimates(),
        vec![(0.0, HOUR, "kind".into())],
        "by_kind server = 1h\n{d}"
    );
}

#[test]
fn a_week_long_outage_runs_to_the_end_and_reaches_the_director_at_one_week() {
    let d = drill("week_long_outage");

    assert!(d.lines_of_type("incident_resolved").is_empty(), "\n{d}");
    // 1h, then +30m each time it is reached: at t = 1w − 30m it becomes
    // exactly 1w (not > 1w), at t = 1w it becomes 1w + 30m.
    let last = d.estimates().pop().expect("estimates");
    assert_eq!(last, (WEEK as f64, WEEK + EXTEND, "extended".into()));
    let director = d.notifications_for("expected > 1w");
    assert_eq!(people(&director), ["p-dir"]);
    assert!(
        director.iter().all(|n| n.t == WEEK as f64),
        "expected is not > 1w before\n{d}"
    );
}

// ------------------------------------------------- status and recovery

#[test]
fn status_reminders_stop_while_an_eta_is_known_and_resume_when_it_is_outlived() {
    let d = drill("status_reminders");

    let status = d.notifications_for("status");
    assert_eq!(
        people(&status),
        ["p-komm"],
        "status_to = Communications\n{d}"
    );
    assert_eq!(
        channels(&status),
        ["sms"],
        "the via of the resolved step\n{d}"
    );
    let first = SETTLE + STATUS_EVERY;
    let eta_outlived = 7200.0;
    assert_eq!(
        times(&status),
        [
            first,
            first + STATUS_EVERY,
            // ETA given at 1h10m: 1h30m10s is skipped.
            eta_outlived,
            eta_outlived + STATUS_EVERY,
            eta_outlived + 2.0 * STATUS_EVERY,
        ],
        "\n{d}"
    );
}

#[test]
fn recovery_tells_the_affected_services_people_except_those_the_resolved_step_told() {
    let d = drill("web_outage_recovers");

    let resolved = d.only("incident_resolved");
    assert_eq!(
        (&resolved["t"], &resolved["duration_s"]),
        (&json!(300), &json!(300))
    );

    // Drift: the resolved step, and no recovery message on top.
    let drift: Vec<_> = d
        .notifications_to("p-drift")
        .into_iter()
        .filter(|n| n.t == 300.0)
        .collect();
    assert_eq!(drift.len(), 1, "\n{d}");
    assert_eq!(
        (drift[0].reason.as_str(), drift[0].channel.as_str()),
        ("resolved", "sms")
    );
    // The web's owner (Communications) is told of the recovery.
    let recovery = d.notifications_for("recovery");
    assert_eq!(who_when(&recovery), [(300.0, "p-komm")], "\n{d}");
    assert_eq!(channels(&recovery), ["sms"]);
    assert!(
        d.notifications().iter().all(|n| n.t <= 300.0),
        "resolution ends the chains\n{d}"
    );
}

#[test]
fn a_manually_resolved_incident_stays_closed_until_a_new_alarm() {
    let d = drill("manual_resolve");

    let resolved = d.only("incident_resolved");
    assert_eq!(
        (&resolved["t"], &resolved["incident"]),
        (&json!(300), &json!(1))
    );
    // Still down, but nobody hears of incident 1 again.
    assert!(
        d.notifications()
            .iter()
            .all(|n| n.incident != 1 || n.t <= 300.0),
        "\n{d}"
    );
    // Cleared at 20 min, firing at 25 min: a new incident.
    let opened: Vec<_> = d
        .lines_of_type("incident_opened")
        .iter()
        .map(|l| (l["incident"].clone(), l["t"].clone()))
        .collect();
    assert_eq!(
        opened,
        [(json!(1), json!(0)), (json!(2), json!(1500))],
        "\n{d}"
    );
}

#[test]
fn the_network_on_call_of_the_week_is_told_on_recovery() {
    let d = drill("care_alarms_recover_in_week_two");

    // omsorg: owner p-sundhed, contacts = the on-call (week 2: p-net-b), Communications.
    let recovery = d.notifications_for("recovery");
    assert_eq!(
        people(&recovery),
        ["p-komm", "p-net-b", "p-sundhed"],
        "\n{d}"
    );
    assert!(
        d.notifications_to("p-net-a").is_empty(),
        "p-net-a is off duty\n{d}"
    );
}

#[test]
fn the_rotation_hands_over_at_the_same_local_time_after_summer_time_begins() {
    let d = drill("on_call_after_summer_time");

    // 08:30 CEST is after the 08:00 local handover (06:00 UTC), though
    // before 08:00 winter time would be (07:00 UTC): week 13, p-net-a.
    assert_eq!(
        people(&d.notifications_for("recovery")),
        ["p-komm", "p-net-a", "p-sundhed"],
        "\n{d}"
    );
}

// ------------------------------------------------------------- crisis

#[test]
fn crisis_with_the_town_hall_on_fire_summons_the_staff_to_solhaven() {
    let d = drill("crisis_town_hall_on_fire");

    let level = d.only("level");
    assert_eq!(level["t"], 300);
    assert_eq!(level["level"], "crisis");
    assert_eq!(
        level["meeting_place"], "Plejecenter Solhaven, personalestuen",
        "\n{d}"
    );

    // The policy's `level crisis` step: management, by call.
    let step = d.notifications_for("level crisis");
    assert_eq!(people(&step), ["p-dir", "p-itchef"], "\n{d}");
    assert_eq!(channels(&step), ["call"]);
    // [crisis] staff, by call and sms, told where to meet.
    let staff = d.notifications_for("crisis");
    assert_eq!(
        people(&staff),
        ["p-afdleder", "p-komm", "p-sekretaer"],
        "\n{d}"
    );
    assert_eq!(staff.len(), 6, "each by call and by sms\n{d}");
    assert!(
        staff
            .iter()
            .all(|n| n.t == 300.0 && n.text.contains("Solhaven")),
        "\n{d}"
    );
    // The summons starts deputy chains: unanswered, the next deputies at 15 min.
    let deputies = d.notifications_for("deputy");
    let crisis_deputies: Vec<_> = deputies
        .iter()
        .filter(|n| matches!(n.role.as_deref(), Some("kriseleder" | "kommunikation")))
        .map(|n| (n.t, n.to.as_str(), n.role.as_deref().unwrap_or("")))
        .collect();
    let at = 300.0 + DEPUTY_AFTER;
    assert!(
        crisis_deputies.contains(&(at, "p-itchef", "kriseleder")),
        "\n{d}"
    );
    assert!(
        crisis_deputies.contains(&(at, "p-web", "kommunikation")),
        "\n{d}"
    );
}

#[test]
fn crisis_without_fire_meets_at_the_first_meeting_place() {
    let d = drill("crisis_without_fire");
    assert_eq!(
        d.only("level")["meeting_place"],
        "C335 – IT's mødelokale",
        "\n{d}"
    );
}

// ---------------------------------------------------------- bad input

#[test]
fn bad_input_is_rejected_with_a_reason_and_the_engine_keeps_going() {
    let d = drill("bad_input");

    let rejected = d.lines_of_type("rejected");
    let reasons: Vec<_> = rejected
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        reasons,
        [
            "bad_payload",
            "bad_payload",
            "bad_payload",
            "bad_state",
            "bad_state",
            "unknown_topic",
            "unknown_component",
            "unknown_component",
            "oversized",
            "unknown_incident",
        ],
        "\n{d}"
    );
    let sources: Vec<_> = rejected[..9]
        .iter()
        .map(|r| r["source"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        sources,
        [&["mqtt"; 7][..], &["http", "mqtt"]].concat(),
        "\n{d}"
    );
    assert!(rejected.iter().all(|r| r["t"] == 0));

    // Nothing of it became an alarm; the fire alarm at 1 min does.
    let alarm = d.only("alarm");
    assert_eq!(
        (&alarm["t"], &alarm["component"]),
        (&json!(60), &json!("serverrum"))
    );
    let opened = d.only("incident_opened");
    assert_eq!((&opened["t"], &opened["incident"]), (&json!(60), &json!(1)));
}

#[test]
fn mqtt_payloads_are_understood_in_every_accepted_form() {
    let d = drill("mqtt_state_words");

    assert!(d.lines_of_type("rejected").is_empty(), "\n{d}");
    let states: Vec<_> = d
        .lines_of_type("alarm")
        .iter()
        .map(|a| (a["t"].clone(), a["state"].clone()))
        .collect();
    let expected: Vec<_> = (0..10)
        .map(|i| {
            (
                json!(i * 10),
                json!(if i % 2 == 0 { "firing" } else { "cleared" }),
            )
        })
        .collect();
    assert_eq!(states, expected, "\n{d}");
    let warning = d.lines_of_type("alarm").into_iter().find(|a| a["t"] == 60);
    assert_eq!(
        warning.map(|a| a["severity"].clone()),
        Some(json!("warning"))
    );
}

#[test]
fn a_silent_sensor_raises_a_sensor_lost_warning_until_it_speaks_again() {
    let d = drill("sensor_lost");

    let lost: Vec<_> = d
        .lines_of_type("alarm")
        .into_iter()
        .filter(|a| a["kind"] == "generic")
        .map(|a| (a["t"].clone(), a["component"].clone(), a["state"].clone()))
        .collect();
    assert_eq!(
        lost,
        [
            (json!(300), json!("serverrum"), json!("firing")),
            (json!(600), json!("serverrum"), json!("cleared")),
        ],
        "heartbeat 5m after the message at 0; cleared by the next\n{d}"
    );
    let firing = d
        .lines_of_type("alarm")
        .into_iter()
        .find(|a| a["kind"] == "generic");
    assert_eq!(
        firing.map(|a| a["severity"].clone()),
        Some(json!("warning"))
    );
}

// ---------------------------------------------------- every scenario

#[test]
fn every_scenario_gives_the_same_output_twice() {
    for name in common::all_scenarios() {
        let scenario = std::path::PathBuf::from(format!("tests/scenarios/{name}.toml"));
        let plan = std::path::Path::new(common::PLAN);
        let first = common::run_drill(plan, &scenario);
        let second = common::run_drill(plan, &scenario);
        assert!(first == second, "{name}: two runs differ");
    }
}

#[test]
fn every_notification_text_fits_in_three_sms() {
    for name in common::all_scenarios() {
        let d = drill(&name);
        for n in d.notifications() {
            let len = n.text.chars().count();
            assert!(
                len > 0 && len <= 480,
                "{name}: a text of {len} characters: {n:?}"
            );
        }
    }
}
