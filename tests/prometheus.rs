//! beredskab in the monitoring stack, checked with the real parts:
//! Debian's `prometheus` scrapes a running daemon (fed alarms through a
//! real Mosquitto, probing an HTTP endpoint served here, acknowledged
//! through the API) with the shipped alert rules loaded, and every PromQL
//! expression of dashboards/*.json must parse and return data; every metric
//! of SPEC §7 is in `/metrics` with its type and labels; `promtool` checks
//! the shipped config and rules and runs their unit tests; the compose file
//! and the Grafana provisioning parse and point at what exists.
//! `prometheus` and `promtool` are required: a missing one fails the tests
//! (Debian: apt-get install -y prometheus), it never skips them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::broker::{Broker, Publisher, client_id, find_program, free_port, temp_dir};
use common::daemon::{
    ACK_TOKEN, Daemon, READ_TOKEN, eventually, get, http, incidents, post, wait_ready,
};

/// How long Prometheus may take to see what the scenario did.
const PATIENCE: Duration = Duration::from_secs(120);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn prometheus_binary() -> PathBuf {
    find_program("prometheus", "/usr/bin/prometheus").unwrap_or_else(|| {
        panic!(
            "prometheus not found on PATH or at /usr/bin/prometheus: these tests run a real \
             Prometheus. Install Debian's: apt-get update && apt-get install -y prometheus"
        )
    })
}

fn promtool_binary() -> PathBuf {
    find_program("promtool", "/usr/bin/promtool").unwrap_or_else(|| {
        panic!(
            "promtool not found on PATH or at /usr/bin/promtool: Debian's prometheus package \
             ships it. Install it: apt-get update && apt-get install -y prometheus"
        )
    })
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

// ---------------------------------------------------------------------------
// The metrics contract (SPEC §7)

/// Name, type and label names of every metric of SPEC §7.
const SPEC: [(&str, &str, &[&str]); 18] = [
    ("beredskab_service_up", "gauge", &["service", "criticality"]),
    ("beredskab_component_up", "gauge", &["component", "kind"]),
    ("beredskab_alarms_total", "counter", &["source", "kind"]),
    (
        "beredskab_alarms_rejected_total",
        "counter",
        &["source", "reason"],
    ),
    ("beredskab_incidents_open", "gauge", &["severity"]),
    ("beredskab_incidents_total", "counter", &["severity"]),
    (
        "beredskab_notifications_total",
        "counter",
        &["channel", "outcome"],
    ),
    ("beredskab_ack_seconds", "histogram", &[]),
    ("beredskab_probe_duration_seconds", "histogram", &["probe"]),
    ("beredskab_probe_up", "gauge", &["probe"]),
    ("beredskab_tls_expiry_seconds", "gauge", &["probe"]),
    ("beredskab_mqtt_connected", "gauge", &[]),
    ("beredskab_ingest_seconds", "histogram", &["source"]),
    (
        "beredskab_generator_runtime_seconds",
        "gauge",
        &["component"],
    ),
    ("beredskab_estimate_ratio", "histogram", &["basis"]),
    (
        "beredskab_build_info",
        "gauge",
        &["version", "config", "leader"],
    ),
    ("beredskab_outbox_pending", "gauge", &["channel"]),
    ("beredskab_outbox_oldest_seconds", "gauge", &["channel"]),
];

/// The test daemon has no `tls` probes: the metric is registered without
/// series (tests/probe_net.rs covers the expiry a tls probe reads).
const WITHOUT_SERIES: [&str; 1] = ["beredskab_tls_expiry_seconds"];

/// The samples of a text exposition: (name, labels) → value.
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once('=').expect("label=value");
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
            };
            (name, labels, value.parse().unwrap_or(f64::NAN))
        })
        .collect()
}

/// Checks every SPEC §7 metric in a running daemon's `/metrics`.
fn check_contract(text: &str, fingerprint: &str) {
    let samples = samples(text);
    let mut problems = Vec::new();
    for (name, kind, labels) in SPEC {
        if !text.contains(&format!("\n# TYPE {name} {kind}\n")) {
            problems.push(format!("no `# TYPE {name} {kind}` line"));
        }
        if !text.contains(&format!("\n# HELP {name} ")) {
            problems.push(format!("no `# HELP {name}` line"));
        }
        if WITHOUT_SERIES.contains(&name) {
            continue;
        }
        let sample = if kind == "histogram" {
            format!("{name}_count")
        } else {
            name.to_owned()
        };
        let want: BTreeSet<&str> = labels.iter().copied().collect();
        let found: Vec<_> = samples.iter().filter(|(n, _, _)| *n == sample).collect();
        if found.is_empty() {
            problems.push(format!("no series of {sample}"));
        }
        for (_, l, _) in &found {
            let got: BTreeSet<&str> = l.keys().map(String::as_str).collect();
            if got != want {
                problems.push(format!("{sample} has labels {got:?}, not {want:?}"));
            }
        }
        // Moved by the scenario, not just registered.
        let moved = match name {
            "beredskab_ack_seconds"
            | "beredskab_probe_duration_seconds"
            | "beredskab_ingest_seconds"
            | "beredskab_estimate_ratio"
            | "beredskab_alarms_total"
            | "beredskab_alarms_rejected_total"
            | "beredskab_incidents_total"
            | "beredskab_notifications_total"
            | "beredskab_mqtt_connected"
            | "beredskab_probe_up"
            | "beredskab_generator_runtime_seconds"
            | "beredskab_build_info" => found.iter().any(|(_, _, v)| *v > 0.0),
            _ => true,
        };
        if !moved {
            problems.push(format!("{sample} never moved: {found:?}"));
        }
    }
    // Some service and component are down, and the gauges say so.
    for name in ["beredskab_service_up", "beredskab_component_up"] {
        if !samples.iter().any(|(n, _, v)| n == name && *v == 0.0) {
            problems.push(format!("{name}: nothing down"));
        }
    }
    let build: Vec<_> = samples
        .iter()
        .filter(|(n, _, _)| n == "beredskab_build_info")
        .collect();
    if build.len() != 1
        || build[0].1.get("config").map(String::as_str) != Some(fingerprint)
        || build[0].1.get("version").map(String::as_str) != Some(env!("CARGO_PKG_VERSION"))
    {
        problems.push(format!(
            "beredskab_build_info is not one series of version {} and config {fingerprint}: {build:?}",
            env!("CARGO_PKG_VERSION")
        ));
    }
    assert!(
        problems.is_empty(),
        "the metrics contract is broken:\n{}\n/metrics:\n{text}",
        problems.join("\n")
    );
}

/// The fingerprint of the config at `path`, as the daemon computes it.
fn fingerprint(path: &Path) -> String {
    let loaded = beredskab::config::load(path).expect("the test config loads");
    beredskab::catalogue::Catalogue::build(&loaded.config)
        .expect("the test config builds")
        .fingerprint()
        .to_owned()
}

// ---------------------------------------------------------------------------
// The dashboards

struct Dashboard {
    file: String,
    json: Value,
}

fn dashboards() -> Vec<Dashboard> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("dashboards"))
        .expect("read dashboards/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "dashboards/ has {files:?}");
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read a dashboard");
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            Dashboard {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            }
        })
        .collect()
}

/// Every panel, rows' collapsed panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// (panel title, expression) of every query of a dashboard, and of its
/// query variables (`label_values(M, L)` as `count by (L) (M)`).
fn expressions(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_else(|| {
                panic!("a target of panel {:?} has no expr", p["title"].as_str())
            });
            out.push((
                p["title"].as_str().unwrap_or("").to_owned(),
                expr.to_owned(),
            ));
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["definition"]
                .as_str()
                .expect("a query variable's definition");
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or_else(|| panic!("variable query {q:?} is not label_values(M, L)"));
            let (metric, label) = inner.rsplit_once(',').expect("label_values(M, L)");
            out.push((
                format!("variable {}", v["name"]),
                format!("count by ({}) ({})", label.trim(), metric.trim()),
            ));
        }
    }
    out
}

/// An expression with Grafana's variables replaced as a dashboard at
/// "last hour" would.
fn substitute(expr: &str) -> String {
    let mut e = expr.to_owned();
    for (var, value) in [
        ("__rate_interval", "1m"),
        ("__interval", "15s"),
        ("__range", "1h"),
        ("criticality", ".*"),
    ] {
        e = e
            .replace(&format!("${{{var}}}"), value)
            .replace(&format!("${var}"), value);
    }
    assert!(!e.contains('$'), "a variable left in {expr:?}: {e}");
    e
}

/// The beredskab metric names an expression uses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("beredskab_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// A metric family name as `# TYPE` names it (a histogram's series are
/// `_bucket`, `_count` and `_sum`).
fn family(name: &str, text: &str) -> Option<String> {
    let has = |n: &str| text.contains(&format!("\n# TYPE {n} "));
    if has(name) {
        return Some(name.to_owned());
    }
    ["_bucket", "_count", "_sum"].iter().find_map(|s| {
        name.strip_suffix(s)
            .filter(|f| text.contains(&format!("\n# TYPE {f} histogram\n")))
            .map(str::to_owned)
    })
}

#[test]
fn dashboards_are_ready_for_file_provisioning() {
    let mut uids = BTreeSet::new();
    for d in dashboards() {
        let j = &d.json;
        let file = &d.file;
        assert!(j["title"].is_string(), "{file}: no title");
        assert!(
            uids.insert(
                j["uid"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file}: no uid"))
                    .to_owned()
            ),
            "{file}: its uid is taken"
        );
        let vars = j["templating"]["list"].as_array().expect("templating.list");
        let ds = vars
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{file}: no datasource variable"));
        assert_eq!(ds["type"], "datasource", "{file}");
        assert_eq!(ds["query"], "prometheus", "{file}");
        // Every data source reference is the variable: no hard-coded uid.
        let text = serde_json::to_string(j).unwrap();
        let mut uses = 0;
        for p in panels(j).into_iter().chain(vars) {
            for target in std::iter::once(p).chain(p["targets"].as_array().into_iter().flatten()) {
                let source = &target["datasource"];
                if source.is_null() {
                    continue;
                }
                uses += 1;
                assert_eq!(
                    source["uid"], "${datasource}",
                    "{file}: {:?} names a data source of its own",
                    p["title"]
                );
                assert_eq!(source["type"], "prometheus", "{file}");
            }
        }
        assert!(uses > 0, "{file}: no data source at all");
        assert_eq!(
            text.matches("\"uid\":").count(),
            uses + 1,
            "{file}: a uid besides the dashboard's own and ${{datasource}}"
        );
        let exprs = expressions(j);
        assert!(!exprs.is_empty(), "{file}: no queries");
        for p in panels(j) {
            if p["type"] != "row" {
                assert!(
                    p["targets"].as_array().is_some_and(|t| !t.is_empty()),
                    "{file}: panel {:?} has no query",
                    p["title"]
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// promtool

fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool_binary())
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    text
}

#[test]
fn promtool_checks_the_shipped_config_and_unit_tests_every_alert() {
    let dir = repo().join("deploy/prometheus");
    promtool(&dir, &["check", "config", "prometheus.yml"]);
    promtool(&dir, &["check", "rules", "rules.yml"]);
    let out = promtool(&dir, &["test", "rules", "rules_test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");

    // Every alert is tested firing and, but for the Watchdog (which fires
    // always), not firing.
    let rules = yaml("deploy/prometheus/rules.yml");
    let alerts: BTreeSet<String> = rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect();
    for required in [
        "BeredskabDown",
        "BeredskabMqttDisconnected",
        "BeredskabNotificationsFailing",
        "BeredskabOutboxStuck",
        "BeredskabGeneratorRuntimeLow",
        "BeredskabCriticalServicePastEstimate",
        "Watchdog",
    ] {
        assert!(alerts.contains(required), "no alert {required}: {alerts:?}");
    }
    let tests = yaml("deploy/prometheus/rules_test.yml");
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in tests["tests"].as_array().expect("tests") {
        for a in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = a["alertname"].as_str().expect("alertname").to_owned();
            if a["exp_alerts"].as_array().is_some_and(|e| !e.is_empty()) {
                firing.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    for alert in &alerts {
        assert!(firing.contains(alert), "{alert} is never tested firing");
        assert!(
            alert == "Watchdog" || quiet.contains(alert),
            "{alert} is never tested not firing"
        );
    }
}

// ---------------------------------------------------------------------------
// The deploy files

#[test]
fn compose_and_grafana_provisioning_parse_and_point_at_what_exists() {
    let deploy = repo().join("deploy");
    let compose = yaml("deploy/compose.yaml");
    let services = compose["services"].as_object().expect("services");
    for s in ["mosquitto", "beredskab", "prometheus", "grafana"] {
        assert!(services.contains_key(s), "compose.yaml has no {s}");
    }
    // Every file or folder it mounts from the repository is there.
    let mut mounts = BTreeMap::new();
    for (name, s) in services {
        for v in s["volumes"].as_array().into_iter().flatten() {
            let v = v.as_str().expect("short volume syntax");
            let mut parts = v.split(':');
            let (from, to) = (parts.next().unwrap(), parts.next().expect("a target"));
            if from.starts_with('.') {
                let path = deploy.join(from);
                assert!(path.exists(), "{name} mounts {from}, which does not exist");
                mounts.insert(to.to_owned(), path);
            }
        }
    }
    let build = &services["beredskab"]["build"];
    assert!(
        deploy
            .join(build["context"].as_str().expect("context"))
            .join(build["dockerfile"].as_str().expect("dockerfile"))
            .is_file(),
        "the Dockerfile compose.yaml builds is not there"
    );

    // Grafana: the data source is Prometheus, and the dashboards folder it
    // reads is where compose mounts dashboards/.
    let ds = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let source = &ds["datasources"][0];
    assert_eq!(source["type"], "prometheus", "{ds}");
    assert!(
        source["url"]
            .as_str()
            .is_some_and(|u| u.contains("prometheus:9090")),
        "{ds}"
    );
    let provider = yaml("deploy/grafana/provisioning/dashboards/beredskab.yml");
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .expect("the provider's path");
    let mounted = mounts
        .get(path)
        .unwrap_or_else(|| panic!("compose mounts nothing at {path}: {mounts:?}"));
    assert_eq!(
        mounted.canonicalize().unwrap(),
        repo().join("dashboards").canonicalize().unwrap()
    );
    for dir in ["datasources", "dashboards"] {
        let target = format!("/etc/grafana/provisioning/{dir}");
        assert!(
            mounts.contains_key(&target),
            "compose mounts nothing at {target}"
        );
    }

    // Prometheus scrapes the compose service on its port, with the rules.
    let prom = yaml("deploy/prometheus/prometheus.yml");
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["job_name"], "beredskab");
    assert_eq!(job["static_configs"][0]["targets"][0], "beredskab:8080");
    assert_eq!(prom["rule_files"][0], "rules.yml");
    assert!(mounts.contains_key("/etc/prometheus/rules.yml"));

    // The config compose runs beredskab on is the example's, pointed at the
    // broker, and it checks.
    let dir = temp_dir("compose-config");
    let out_path = dir.join("beredskab.toml");
    let run = Command::new("sh")
        .arg(deploy.join("compose/beredskab-config.sh"))
        .env("IN", deploy.join("example/beredskab.toml"))
        .env("OUT", &out_path)
        .env("STORE", dir.join("beredskab.db"))
        .output()
        .expect("run beredskab-config.sh");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let config = std::fs::read_to_string(&out_path).expect("the written config");
    assert!(
        config.contains("url = \"mqtt://mosquitto:1883\""),
        "{config}"
    );
    assert!(config.contains("\nusername = \"beredskab\""), "{config}");
    let check = Command::new(env!("CARGO_BIN_EXE_beredskab"))
        .args(["check", "-c"])
        .arg(&out_path)
        .env("MQTT_PASSWORD", "x")
        .env("BEREDSKAB_SECRET", "x")
        .env("SMS_TOKEN", "x")
        .output()
        .expect("run beredskab check");
    assert!(
        check.status.success() && check.stderr.is_empty(),
        "the compose config does not check:\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn the_systemd_unit_and_the_broker_config_are_locked_down() {
    let unit = read("deploy/systemd/beredskab.service");
    let lines: BTreeSet<&str> = unit.lines().map(str::trim).collect();
    for want in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=beredskab",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(lines.contains(want), "the unit lacks {want}");
    }

    let conf = read("deploy/mosquitto/mosquitto.conf");
    let settings: Vec<(&str, &str)> = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once(' ').unwrap_or((l, "")))
        .collect();
    let all = |k: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(key, _)| *key == k)
            .map(|(_, v)| *v)
            .collect()
    };
    assert_eq!(all("allow_anonymous"), ["false"]);
    assert_eq!(all("password_file").len(), 1);
    assert_eq!(all("persistence"), ["true"]);
    let queued: u64 = all("max_queued_messages")[0].parse().unwrap();
    assert!(
        queued > 1000,
        "max_queued_messages {queued} is the default or less"
    );
    // The broker's limit lies between what beredskab keeps and the packet
    // size its client takes (a larger message would break the connection).
    let limit: u64 = all("message_size_limit")[0].parse().unwrap();
    let example = beredskab::config::load(&repo().join("deploy/example/beredskab.toml"))
        .expect("the example loads")
        .config;
    let mqtt = example.mqtt.expect("the example has [mqtt]");
    assert!(
        limit < mqtt.max_packet.0 && limit < beredskab::config::DEFAULT_MAX_PACKET.0,
        "message_size_limit {limit} is not below the client's max_packet"
    );
    assert!(limit > mqtt.max_payload.0, "message_size_limit {limit}");
}

// ---------------------------------------------------------------------------
// A real Prometheus scraping a real daemon

/// Debian's prometheus on a free port, storing in a temp folder; killed
/// when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Prometheus {
    fn start(name: &str, target_port: u16) -> Prometheus {
        let dir = temp_dir(&format!("prometheus-{name}"));
        std::fs::copy(
            repo().join("deploy/prometheus/rules.yml"),
            dir.join("rules.yml"),
        )
        .expect("copy rules.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - rules.yml\n\
             scrape_configs:\n  - job_name: beredskab\n    static_configs:\n      \
             - targets: [\"127.0.0.1:{target_port}\"]\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
        let port = free_port();
        let log = dir.join("prometheus.log");
        let child = Command::new(prometheus_binary())
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start prometheus: {e}"));
        Prometheus { child, port, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/api/v1/query`: the result, or the error Prometheus gives.
    async fn query(&self, client: &reqwest::Client, expr: &str) -> Result<Value, String> {
        let url = url::Url::parse_with_params(
            &format!("http://127.0.0.1:{}/api/v1/query", self.port),
            &[("query", expr)],
        )
        .expect("a query URL");
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET /api/v1/query: {e}"))?;
        let text = resp.text().await.map_err(|e| format!("no body: {e}"))?;
        let body: Value =
            serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text}"))?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"].clone())
    }

    async fn api(&self, client: &reqwest::Client, path: &str) -> Value {
        let (status, body) = get(
            client,
            &format!("http://127.0.0.1:{}{path}", self.port),
            None,
        )
        .await;
        assert_eq!(status, 200, "{path}: {body}");
        body["data"].clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The values of a query result that are numbers (not NaN).
fn finite_values(data: &Value) -> Vec<f64> {
    let value = |v: &Value| v[1].as_str().and_then(|s| s.parse::<f64>().ok());
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| value(&r["value"]))
            .filter(|v| v.is_finite())
            .collect(),
        Some("scalar") => value(&data["result"])
            .filter(|v| v.is_finite())
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// A health endpoint and a generator's fuel reading.
async fn serve_endpoints(fuel: Arc<AtomicU32>) -> u16 {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/generator",
            get(move || {
                let fuel = fuel.load(Ordering::Relaxed);
                async move { format!(r#"{{"running": true, "fuel": {fuel}}}"#) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the endpoints");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

/// The scenario: Prometheus scrapes the daemon from its start; a server
/// alarm flaps over MQTT (incidents open, notify and resolve, so that
/// estimates meet durations), a payload that does not parse is rejected,
/// a fire in the server room stays open and is acknowledged, probes poll
/// an endpoint and a generator. Then every dashboard query has data, the
/// shipped rules evaluate, and `/metrics` keeps the contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_daemon_and_every_dashboard_query_has_data() {
    let fuel = Arc::new(AtomicU32::new(90));
    let port = serve_endpoints(fuel.clone()).await;
    let probes = format!(
        r#"
[[probe]]
id = "srv-8-health"
component = "srv-8"
url = "http://127.0.0.1:{port}/health"
every = "200ms"
timeout = "150ms"

[[probe]]
id = "generator"
component = "generator"
url = "http://127.0.0.1:{port}/generator"
every = "200ms"
timeout = "150ms"
[probe.generator]
running = "/running"
fuel_percent = "/fuel"
full_tank_runtime = "10h"
"#
    );
    let broker = Broker::start("prometheus");
    let d = Daemon::start(
        "prometheus",
        &common::daemon::config_with(broker.port, &client_id("prometheus"), &probes),
    );
    let client = http();
    wait_ready(&client, &d).await;
    let prom = Prometheus::start("scrape", d.port);

    // Prometheus has scraped the daemon before anything happens, so that
    // increase() sees every event.
    eventually("prometheus scrapes beredskab", PATIENCE, || async {
        let data = prom.query(&client, "beredskab_build_info").await.ok()?;
        (!finite_values(&data).is_empty()).then_some(())
    })
    .await;

    let publisher = Arc::new(Publisher::start(broker.port, &client_id("prometheus-pub")));
    publisher
        .publish("site/srv-1/fire", "garbage", b"not json".to_vec())
        .await;

    // A server alarm flaps until the test is done.
    let stop = Arc::new(AtomicBool::new(false));
    let flapping = {
        let stop = stop.clone();
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let mut firing = true;
            while !stop.load(Ordering::Relaxed) {
                let state = if firing { "alarm" } else { "ok" };
                let payload = format!(r#"{{"state":"{state}","key":"flap"}}"#);
                publisher
                    .publish("burst/srv-9/alarm", "flap", payload.into_bytes())
                    .await;
                firing = !firing;
                tokio::time::sleep(Duration::from_millis(2500)).await;
            }
        })
    };
    eventually(
        "a flap of srv-9 is an incident, resolved",
        PATIENCE,
        || async {
            incidents(&client, &d)
                .await
                .into_iter()
                .find(|i| i["root"] == "srv-9" && i["state"] == "resolved")
        },
    )
    .await;

    // A fire in the server room, open until the end, acknowledged.
    publisher
        .publish(
            "site/serverrum/fire",
            "fire",
            br#"{"state":"alarm","key":"fire"}"#.to_vec(),
        )
        .await;
    let fire = eventually("the fire is an incident", PATIENCE, || async {
        incidents(&client, &d)
            .await
            .into_iter()
            .find(|i| i["root"] == "serverrum" && i["state"] != "resolved")
    })
    .await;
    let id = fire["id"].as_u64().expect("id");
    let (status, body) = post(
        &client,
        &d.url(&format!("/api/v1/incidents/{id}/ack")),
        Some(ACK_TOKEN),
        r#"{"note":"on my way"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The generator's tank empties a little.
    fuel.store(40, Ordering::Relaxed);

    // Every dashboard query parses and has data.
    let dashboards = dashboards();
    let mut pending: Vec<(String, String, String, String)> = Vec::new();
    for db in &dashboards {
        for (panel, expr) in expressions(&db.json) {
            let q = substitute(&expr);
            pending.push((db.file.clone(), panel, q, String::new()));
        }
    }
    let total = pending.len();
    let deadline = Instant::now() + PATIENCE;
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for (file, panel, q, _) in pending {
            match prom.query(&client, &q).await {
                Ok(data) if !finite_values(&data).is_empty() => {}
                Ok(data) => still.push((file, panel, q, format!("no data: {data}"))),
                Err(e) => still.push((file, panel, q, e)),
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert!(
        pending.is_empty(),
        "{} of {total} dashboard queries have no data after {PATIENCE:?}:\n{}\nprometheus log:\n{}",
        pending.len(),
        pending
            .iter()
            .map(|(f, p, q, why)| format!("{f} / {p}: {q}\n    {why}"))
            .collect::<Vec<_>>()
            .join("\n"),
        prom.log_text()
    );
    assert!(total >= 20, "only {total} queries");

    // The shipped rules load and evaluate; the Watchdog fires.
    eventually("every rule evaluates without error", PATIENCE, || async {
        let rules = prom.api(&client, "/api/v1/rules").await;
        let all: Vec<&Value> = rules["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        (!all.is_empty() && all.iter().all(|r| r["health"] == "ok")).then_some(())
    })
    .await;
    eventually("the Watchdog fires", PATIENCE, || async {
        let alerts = prom.api(&client, "/api/v1/alerts").await;
        alerts["alerts"]
            .as_array()?
            .iter()
            .any(|a| a["labels"]["alertname"] == "Watchdog" && a["state"] == "firing")
            .then_some(())
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    let _ = flapping.await;

    // The metrics contract, through the running daemon.
    let text = client
        .get(d.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let text = format!("\n{text}");
    check_contract(&text, &fingerprint(&d.config));
    // Every metric a dashboard uses is one the daemon exposes.
    for db in &dashboards {
        for (panel, expr) in expressions(&db.json) {
            for name in metric_names(&expr) {
                assert!(
                    family(&name, &text).is_some(),
                    "{} / {panel}: {name} is not in /metrics",
                    db.file
                );
            }
        }
    }
    // Label values are config ids and kinds, never incident or alarm ids.
    for (name, labels, _) in samples(&text) {
        for (k, v) in labels {
            assert!(
                k == "le"
                    || k == "config"
                    || !v.chars().all(|c| c.is_ascii_digit())
                    || v.is_empty(),
                "{name} has the number {v:?} as its {k}"
            );
        }
    }
    let (status, _) = get(&client, &d.url("/api/v1/incidents"), Some(READ_TOKEN)).await;
    assert_eq!(status, 200);
    // The fire (expected to last a day, as fires are) took the care alarms
    // down: they are expected back a day after it opened.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let back: Vec<_> = samples(&text)
        .into_iter()
        .filter(|(n, l, _)| {
            n == "beredskab_service_first_expected_back_timestamp_seconds"
                && l.get("service").map(String::as_str) == Some("omsorg")
                && l.get("criticality").map(String::as_str) == Some("life")
        })
        .collect();
    assert_eq!(back.len(), 1, "{back:?}");
    assert!(
        (now + 86_400.0 - 300.0..=now + 86_400.0).contains(&back[0].2),
        "omsorg expected back at {}, now is {now}",
        back[0].2
    );
    // Where a probe's state is counted, its change is logged, once.
    let ok = d.logged("probe ok");
    assert_eq!(
        ok.iter()
            .filter(|l| l["fields"]["probe"] == "srv-8-health")
            .count(),
        1,
        "{ok:?}"
    );
}

/// `beredskab_build_info` names the config it runs on, and a reload that
/// changes the engine's config changes it (leaving no series of the old).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_info_names_the_config_and_follows_a_reload() {
    let config = common::daemon::config_without_mqtt();
    let d = Daemon::start("build-info", &config);
    let client = http();
    wait_ready(&client, &d).await;
    let build_info = |text: &str| -> Vec<BTreeMap<String, String>> {
        samples(text)
            .into_iter()
            .filter(|(n, _, _)| n == "beredskab_build_info")
            .map(|(_, l, _)| l)
            .collect()
    };
    let metrics = || async {
        client
            .get(d.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("text")
    };
    let before = fingerprint(&d.config);
    let series = build_info(&metrics().await);
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series[0]["config"], before);
    assert_eq!(series[0]["version"], env!("CARGO_PKG_VERSION"));
    // Without [mqtt] there is no connection to alert on.
    let text = metrics().await;
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("beredskab_mqtt_connected")),
        "{text}"
    );
    assert!(text.contains("# TYPE beredskab_mqtt_connected gauge\n"));

    let edited = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("default = \"1h\"", "default = \"2h\"");
    std::fs::write(&d.config, edited).unwrap();
    let after = fingerprint(&d.config);
    assert_ne!(before, after);
    d.hup();
    let series = eventually("the reload renames the config", PATIENCE, || async {
        let series = build_info(&metrics().await);
        (series.len() == 1 && series[0]["config"] == after).then_some(series)
    })
    .await;
    assert_eq!(series[0]["version"], env!("CARGO_PKG_VERSION"));
}
