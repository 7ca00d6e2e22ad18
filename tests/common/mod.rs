//! Shared helpers for the scenario tests: run `beredskab drill` on a
//! scenario, check the output's form with [`drill_lint`] (SPEC §4), and
//! find the lines a test cares about.

#![allow(dead_code)] // each test binary uses a different subset

pub mod broker;
pub mod browser;
pub mod daemon;
pub mod drill_lint;
pub mod gateway;
pub mod pg;
pub mod smtp;
pub mod tls;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The test config every scenario runs against, relative to the crate root.
pub const PLAN: &str = "tests/scenarios/plan.toml";

/// The outcome of one drill: its JSON lines, in order.
pub struct Drill {
    pub name: String,
    pub stdout: String,
    pub lines: Vec<Value>,
}

/// One `notification` line, flattened for assertions.
#[derive(Debug, Clone, PartialEq)]
pub struct Told {
    pub t: f64,
    pub incident: u64,
    pub to: String,
    pub role: Option<String>,
    pub channel: String,
    pub reason: String,
    pub text: String,
}

fn crate_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `tests/scenarios/NAME.toml` against `tests/scenarios/plan.toml`.
pub fn drill(name: &str) -> Drill {
    let scenario = PathBuf::from(format!("tests/scenarios/{name}.toml"));
    drill_files(Path::new(PLAN), &scenario)
}

/// Runs a drill with any config and scenario (paths relative to the crate
/// root, or absolute), checks that it succeeded and that its output has the
/// drill format ([`drill_lint`]), and parses the lines.
pub fn drill_files(config: &Path, scenario: &Path) -> Drill {
    let name = scenario.display().to_string();
    let stdout = run_drill(config, scenario);
    lint(&name, &stdout);
    let lines = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {l}")))
        .collect();
    Drill {
        name,
        stdout,
        lines,
    }
}

/// The raw stdout of `beredskab drill`; panics with stderr on failure.
pub fn run_drill(config: &Path, scenario: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_beredskab"))
        .current_dir(crate_root())
        .env("RUST_LOG", "off")
        .arg("drill")
        .arg("-c")
        .arg(config)
        .arg("--scenario")
        .arg(scenario)
        .output()
        .expect("run beredskab drill");
    let stdout = String::from_utf8(out.stdout).expect("drill output is UTF-8");
    assert!(
        out.status.success(),
        "drill {} exited with {:?}\nstderr:\n{}\nstdout:\n{stdout}",
        scenario.display(),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
    );
    stdout
}

/// Checks drill output against the drill format (see [`drill_lint`]);
/// panics with every violation and the output.
pub fn lint(name: &str, stdout: &str) {
    if let Err(errors) = drill_lint::lint(stdout) {
        panic!(
            "the output of {name} breaks the drill format in {} place(s):\n{}\noutput:\n{stdout}",
            errors.len(),
            errors.join("\n")
        );
    }
}

/// Writes a generated file into the integration tests' temp folder.
pub fn write_temp(file: &str, contents: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(file);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Every scenario file in tests/scenarios/, by name, sorted.
pub fn all_scenarios() -> Vec<String> {
    let dir = crate_root().join("tests/scenarios");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("read tests/scenarios")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let stem = path.file_stem()?.to_str()?.to_owned();
            (path.extension()? == "toml" && stem != "plan").then_some(stem)
        })
        .collect();
    names.sort();
    names
}

/// `t` of a line, in seconds.
pub fn t(line: &Value) -> f64 {
    line["t"].as_f64().expect("every line has a numeric t")
}

impl Drill {
    /// Every line of this `type`, in order.
    pub fn lines_of_type(&self, kind: &str) -> Vec<&Value> {
        self.lines.iter().filter(|l| l["type"] == kind).collect()
    }

    /// The only line of this `type`; panics, showing the output, otherwise.
    pub fn only(&self, kind: &str) -> &Value {
        let found = self.lines_of_type(kind);
        assert_eq!(found.len(), 1, "expected exactly one `{kind}` line\n{self}");
        found[0]
    }

    /// Every notification, in order.
    pub fn notifications(&self) -> Vec<Told> {
        self.lines_of_type("notification")
            .into_iter()
            .map(|l| Told {
                t: t(l),
                incident: l["incident"].as_u64().expect("incident number"),
                to: l["to"].as_str().expect("to").to_owned(),
                role: l["role"].as_str().map(str::to_owned),
                channel: l["channel"].as_str().expect("channel").to_owned(),
                reason: l["reason"].as_str().expect("reason").to_owned(),
                text: l["text"].as_str().expect("text").to_owned(),
            })
            .collect()
    }

    /// Every notification to this person, in order.
    pub fn notifications_to(&self, person: &str) -> Vec<Told> {
        self.notifications()
            .into_iter()
            .filter(|n| n.to == person)
            .collect()
    }

    /// Every notification with this reason, in order.
    pub fn notifications_for(&self, reason: &str) -> Vec<Told> {
        self.notifications()
            .into_iter()
            .filter(|n| n.reason == reason)
            .collect()
    }

    /// Every `estimate` line as (t, expected_s, basis).
    pub fn estimates(&self) -> Vec<(f64, u64, String)> {
        self.lines_of_type("estimate")
            .into_iter()
            .map(|l| {
                (
                    t(l),
                    l["expected_s"].as_u64().expect("expected_s"),
                    l["basis"].as_str().expect("basis").to_owned(),
                )
            })
            .collect()
    }
}

/// The whole output, one line each, for failure messages.
impl fmt::Display for Drill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "--- drill output of {} ---", self.name)?;
        f.write_str(&self.stdout)?;
        write!(f, "--- end of {} ---", self.name)
    }
}

/// The people in these notifications, sorted and without repeats.
pub fn people(told: &[Told]) -> Vec<&str> {
    let mut people: Vec<&str> = told.iter().map(|n| n.to.as_str()).collect();
    people.sort();
    people.dedup();
    people
}

/// The channels in these notifications, sorted and without repeats.
pub fn channels(told: &[Told]) -> Vec<&str> {
    let mut channels: Vec<&str> = told.iter().map(|n| n.channel.as_str()).collect();
    channels.sort();
    channels.dedup();
    channels
}

/// The times of these notifications, in order.
pub fn times(told: &[Told]) -> Vec<f64> {
    told.iter().map(|n| n.t).collect()
}
