//! `beredskab demo` as a newcomer runs it: it needs no external service,
//! prints what to open with a token, and within seconds the scripted power
//! cut is an incident in the API; Ctrl-C stops it cleanly.
#![cfg(feature = "demo")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::broker::free_port;
use common::daemon::{eventually, http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_a_power_cut_as_an_incident_and_stops_on_ctrl_c() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_beredskab"))
        .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start beredskab demo");
    // The plan names the read token: "vagttelefon (read, ack, …): SECRET".
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let token = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "no read token in the demo's output:\n{}",
                    printed.join("\n")
                )
            });
        printed.push(line.clone());
        if line.trim_start().starts_with("vagttelefon (read")
            && let Some((_, secret)) = line.rsplit_once(": ")
        {
            break secret.trim().to_owned();
        }
    };
    let client = http();
    let url = format!("http://127.0.0.1:{port}/api/v1/incidents?state=all");
    let list = eventually(
        "the power cut becomes an incident",
        Duration::from_secs(60),
        || async {
            // The plan comes before the daemon listens: refused is "not yet".
            let resp = client.get(&url).bearer_auth(&token).send().await.ok()?;
            let body: serde_json::Value = serde_json::from_str(&resp.text().await.ok()?).ok()?;
            let list = body.as_array().cloned().unwrap_or_default();
            list.iter()
                .any(|i| i["root"] == "power-mains")
                .then_some(list)
        },
    )
    .await;
    assert!(!list.is_empty());
    let lines: Vec<String> = rx.try_iter().collect();
    printed.extend(lines);
    assert!(
        printed.iter().any(|l| l.contains("mains power lost")),
        "the script says what it does:\n{}",
        printed.join("\n")
    );

    // At t+1m the person on call raises the fire to crisis level through
    // the API: the crisis staff meets away from the burning town hall.
    let url = format!("http://127.0.0.1:{port}/api/v1/incidents?state=open");
    let crisis = eventually(
        "the fire's incident is raised to crisis level",
        Duration::from_secs(120),
        || async {
            let resp = client.get(&url).bearer_auth(&token).send().await.ok()?;
            let body: serde_json::Value = serde_json::from_str(&resp.text().await.ok()?).ok()?;
            body.as_array()?
                .iter()
                .find(|i| i["level"] == "crisis")
                .cloned()
        },
    )
    .await;
    assert_eq!(crisis["root"], "serverrum", "{crisis}");
    assert_eq!(
        crisis["meeting_place"], "Plejecenter Solhaven, personalestuen",
        "not the town hall, where the fire is: {crisis}"
    );
    let detail = eventually(
        "the public decision is on the fire's timeline",
        Duration::from_secs(30),
        || async {
            let url = format!("http://127.0.0.1:{port}/api/v1/incidents/{}", crisis["id"]);
            let resp = client.get(&url).bearer_auth(&token).send().await.ok()?;
            let body: serde_json::Value = serde_json::from_str(&resp.text().await.ok()?).ok()?;
            body["timeline"]
                .as_array()?
                .iter()
                .any(|e| e["type"] == "decision" && e["public"] == true)
                .then_some(body)
        },
    )
    .await;
    assert_eq!(detail["level"], "crisis");
    printed.extend(rx.try_iter());
    assert!(
        printed
            .iter()
            .any(|l| l.contains("raises incident") && l.contains("Solhaven")),
        "the script says what the person on call did:\n{}",
        printed.join("\n")
    );

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the demo did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "the demo exits 0 on Ctrl-C: {exit}");
}
