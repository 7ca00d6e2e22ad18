//! The text log on stderr when stderr is not a terminal (a file, a pipe,
//! the journal): plain lines a person or `grep` can read, without ANSI
//! escape codes, whether or not `NO_COLOR` is set.
//!
//! Each test starts `beredskab run` on a config of its own (no MQTT, no
//! probes, a SQLite store in a temp folder, HTTP on 127.0.0.1:0) with
//! stderr going to a file, waits until it logs that it is running, stops
//! it with SIGTERM and reads the file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the daemon may take to start, and to stop after SIGTERM.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One service on one component, and a spare component that feeds nothing,
/// so that starting logs a warning as well as information.
const CONFIG: &str = r#"
[site]
name = "Logs"

[server]
listen = "127.0.0.1:0"

[store]
url = "sqlite://beredskab.db"

[[component]]
id = "srv-mail"
kind = "server"

[[component]]
id = "srv-spare"
kind = "server"

[[service]]
id = "mail"
criticality = "important"
depends_on = ["srv-mail"]
"#;

fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("logs-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Runs the daemon with `NO_COLOR` set to this (or unset) and stderr into
/// a file, from start to a clean stop; returns what it logged.
fn log_of_a_run(name: &str, no_color: Option<&str>) -> String {
    let dir = temp_dir(name);
    let config = dir.join("beredskab.toml");
    std::fs::write(&config, CONFIG).expect("write config");
    let log = dir.join("stderr.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_beredskab"));
    cmd.args(["run", "-c"])
        .arg(&config)
        .env("RUST_LOG", "info,sqlx=warn")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create log file"));
    if let Some(value) = no_color {
        cmd.env("NO_COLOR", value);
    }
    let mut child = cmd.spawn().expect("start beredskab run");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();

    let deadline = Instant::now() + TIMEOUT;
    while !read().contains("beredskab running") {
        if let Some(status) = child.try_wait().expect("wait for beredskab run") {
            panic!(
                "beredskab run exited ({status}) before running; log:\n{}",
                read()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "beredskab run did not start within {TIMEOUT:?}; log:\n{}",
                read()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for beredskab run") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("beredskab run did not stop within {TIMEOUT:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "exit after SIGTERM: {status}; log:\n{}",
        read()
    );
    read()
}

/// The log has its lines, at both levels, and not one escape code.
fn assert_plain(log: &str) {
    for expected in [
        "WARN",
        "component \"srv-spare\" feeds no service",
        "INFO",
        "store open",
        "beredskab running",
        "stopped",
    ] {
        assert!(log.contains(expected), "no {expected:?} in the log:\n{log}");
    }
    assert!(
        !log.contains("\x1b["),
        "ANSI escape codes in a log that is not on a terminal:\n{}",
        log.escape_debug()
    );
}

#[test]
fn a_log_into_a_file_has_no_colour_codes() {
    assert_plain(&log_of_a_run("file", None));
}

/// `with_ansi` overrides tracing-subscriber's own reading of `NO_COLOR`, so
/// the daemon must honour it itself.
#[test]
fn a_log_into_a_file_has_no_colour_codes_with_no_color_set() {
    assert_plain(&log_of_a_run("no-color", Some("1")));
}
