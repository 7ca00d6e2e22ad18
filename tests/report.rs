//! `beredskab report` on the store of a real daemon: an incident opened by
//! a pushed alarm, acknowledged through a signed link, resolved by clearing
//! the alarm, reported in Markdown and JSON while the daemon runs and
//! after it stopped; an unknown incident is exit 1, a bad config exit 2,
//! a missing store exit 1 (and is not created).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use beredskab::clock::wall_now;
use beredskab::links::{self, LinkSettings};
use common::daemon::{
    Daemon, INGEST_TOKEN, READ_TOKEN, config_without_mqtt, count, eventually, get, http, post,
};
use serde_json::Value;

/// How long any one expected outcome may take (tests run side by side on
/// two cores).
const PATIENCE: Duration = Duration::from_secs(60);
const SECRET_ENV: &str = "BEREDSKAB_TEST_SECRET";
const SECRET: &str = "the ack link secret of the report tests";

fn report(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_beredskab"))
        .env("RUST_LOG", "off")
        .env_remove(SECRET_ENV)
        .arg("report")
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .expect("run beredskab report")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "report exited {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8")
}

/// Every section of both formats, and the rows they come from.
fn assert_report(config: &Path, notifications: usize, deliveries: usize) {
    let md = stdout(&report(config, &["--incident", "1"]));
    for heading in [
        "# Incident report #1: srv-2",
        "## Summary",
        "## Affected services",
        "## Root cause",
        "## Timeline of events and decisions",
        "## Who was told when",
        "### Notifications",
        "### Delivery attempts",
        "## Durations",
        "### Estimates",
        "## Evaluation",
        "### Experiences",
        "### Improvement potential",
    ] {
        assert!(md.lines().any(|l| l == heading), "no {heading:?}:\n{md}");
    }
    assert!(
        md.lines()
            .any(|l| l.starts_with("| Acknowledged | ")
                && l.ends_with(" by Leder af Drift (p-drift) |")),
        "{md}"
    );
    assert!(
        md.lines().any(|l| l.starts_with("| Resolved | ")
            && l.ends_with(" by automatically, all components up |")),
        "{md}"
    );
    assert!(
        md.lines()
            .any(|l| l.starts_with("| Case systems (apps) | important | ")),
        "{md}"
    );
    assert!(md.contains("- Time to acknowledge: "), "{md}");
    assert!(
        md.contains("- Expected duration: 10 minutes (basis: kind)"),
        "{md}"
    );

    let json = stdout(&report(config, &["--incident", "1", "--format", "json"]));
    let v: Value = serde_json::from_str(&json).expect("the JSON report parses");
    assert_eq!(v["incident"]["id"], 1, "{v}");
    assert_eq!(v["incident"]["state"], "resolved", "{v}");
    assert_eq!(v["incident"]["root"], "srv-2", "{v}");
    assert_eq!(v["summary"]["acknowledged_by"], "p-drift", "{v}");
    assert_eq!(v["summary"]["resolved_automatically"], true, "{v}");
    assert_eq!(v["services"][0]["id"], "apps", "{v}");
    assert_eq!(v["services"][0]["criticality"], "important", "{v}");
    assert_eq!(v["root_cause"]["component"], "srv-2", "{v}");
    let types: Vec<&str> = v["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    // The first estimate is part of the opening; `estimate` entries record
    // changes, and this incident had none.
    for t in ["opened", "step", "notification", "ack", "resolved"] {
        assert!(types.contains(&t), "no {t} in {types:?}");
    }
    let told = v["notifications"].as_array().expect("notifications");
    assert_eq!(told.len(), notifications, "{v}");
    assert!(
        told.iter()
            .any(|n| n["person"] == "p-drift" && n["reason"] == "open" && n["channel"] == "sms"),
        "{v}"
    );
    assert!(told.iter().any(|n| n["reason"] == "resolved"), "{v}");
    let attempts = v["deliveries"].as_array().expect("deliveries");
    assert_eq!(attempts.len(), deliveries, "{v}");
    assert!(
        attempts
            .iter()
            .any(|d| d["outcome"] == "sent" && d["person"] == "p-drift"),
        "{v}"
    );
    assert!(v["durations"]["time_to_acknowledge_s"].is_number(), "{v}");
    assert_eq!(v["durations"]["expected_s"], 600, "{v}");
    assert!(v["durations"]["actual_s"].is_number(), "{v}");
    assert!(v["durations"]["estimates"].is_array(), "{v}");
    assert!(
        v["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .any(|e| e["type"] == "step" && e["decision"] == true),
        "{v}"
    );
    assert_eq!(v["evaluation"]["experiences"], "", "{v}");
    assert_eq!(v["evaluation"]["improvement_potential"], "", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_while_the_daemon_runs_and_after_it_stopped() {
    let config = config_without_mqtt().replace(
        "[server]\n",
        &format!("[server]\nsecret_env = \"{SECRET_ENV}\"\n"),
    );
    let mut d = Daemon::start_with_env("report", &config, &[(SECRET_ENV, SECRET)]);
    let client = http();
    let alarms = d.url("/api/v1/alarms");
    let alarm = |state: &'static str| {
        post(
            &client,
            &alarms,
            Some(INGEST_TOKEN),
            format!(r#"{{"component":"srv-2","kind":"server","state":"{state}"}}"#),
        )
    };
    let (status, body) = alarm("firing").await;
    assert_eq!(status, 202, "{body}");
    let incident = || async {
        let (status, inc) = get(&client, &d.url("/api/v1/incidents/1"), Some(READ_TOKEN)).await;
        (status == 200).then_some(inc)
    };
    eventually("incident 1 opens", PATIENCE, || async {
        incident().await.filter(|i| i["state"] == "open")
    })
    .await;

    // The on-call leader is paged once the correlation settles.
    eventually("the opening page is delivered", PATIENCE, || async {
        let sent = count(
            &d.db(),
            "SELECT count(*) FROM deliveries WHERE incident = 1 AND outcome = 'sent'",
        )
        .await;
        (sent >= 1).then_some(())
    })
    .await;

    // Acknowledged through the link the SMS carries.
    let link = links::url(
        &LinkSettings {
            key: SECRET.as_bytes().to_vec(),
            public_url: d.url(""),
            ttl: Duration::from_secs(3600),
        },
        1,
        "p-drift",
        wall_now(),
    );
    let resp = client
        .post(&link)
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .expect("follow the link");
    assert_eq!(resp.status().as_u16(), 200);
    eventually("incident 1 is acknowledged", PATIENCE, || async {
        incident().await.filter(|i| i["state"] == "acknowledged")
    })
    .await;

    let (status, body) = alarm("cleared").await;
    assert_eq!(status, 202, "{body}");
    eventually("incident 1 is resolved", PATIENCE, || async {
        incident().await.filter(|i| i["state"] == "resolved")
    })
    .await;
    // Every notification decided is delivered (the log channel).
    let (notifications, deliveries) =
        eventually("every notification is delivered", PATIENCE, || async {
            let n = count(&d.db(), "SELECT count(*) FROM outbox WHERE incident = 1").await;
            let pending = count(
                &d.db(),
                "SELECT count(*) FROM outbox WHERE incident = 1 AND state = 'pending'",
            )
            .await;
            let attempts = count(
                &d.db(),
                "SELECT count(*) FROM deliveries WHERE incident = 1",
            )
            .await;
            (n >= 2 && pending == 0 && attempts >= n).then_some((n as usize, attempts as usize))
        })
        .await;

    // While the daemon runs.
    assert_report(&d.config, notifications, deliveries);
    let unknown = report(&d.config, &["--incident", "99"]);
    assert_eq!(unknown.status.code(), Some(1));
    let err = String::from_utf8_lossy(&unknown.stderr);
    // One line of error; the secret the report does not need (the link
    // key is not in its environment) is only a warning.
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("no incident 99"), "{err}");
    assert!(
        err.lines()
            .all(|l| l.starts_with("error: ") || l.contains(": warning: ")),
        "{err}"
    );
    // The daemon is untouched and ready.
    let (status, body) = get(&client, &d.url("/readyz"), None).await;
    assert_eq!(status, 200, "{body}");

    // After it stopped.
    assert!(d.terminate().success());
    assert_report(&d.config, notifications, deliveries);
    assert_eq!(
        report(&d.config, &["--incident", "99", "--format", "json"])
            .status
            .code(),
        Some(1)
    );

    // A bad config is exit 2, like check and plan.
    let bad = d.dir.join("bad.toml");
    std::fs::write(&bad, "[site]\nname = 3\n").expect("write the bad config");
    let out = report(&bad, &["--incident", "1"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Bad usage too.
    let out = report(&d.config, &["--incident", "one"]);
    assert_eq!(out.status.code(), Some(2));

    // A store that is not there is not created.
    let elsewhere = d.dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    let moved = elsewhere.join("beredskab.toml");
    std::fs::copy(&d.config, &moved).expect("copy the config");
    let out = report(&moved, &["--incident", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("there is no store at"), "{err}");
    assert!(!elsewhere.join("beredskab.db").exists());
}
