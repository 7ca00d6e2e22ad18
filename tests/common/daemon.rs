//! `beredskab run` as a child process: started on a free port in a temp
//! folder, waited for until `/healthz` answers, stopped with SIGTERM or
//! killed with SIGKILL, started again on the same folder. Its log (JSON
//! lines on stderr) is kept in the folder, appended across restarts.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::broker::{free_port, temp_dir};

/// How long the daemon may take to answer `/healthz` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Test tokens and what they may do (their SHA-256 goes into the config).
pub const INGEST_TOKEN: &str = "test-ingest-token";
pub const READ_TOKEN: &str = "test-read-token";
pub const ACK_TOKEN: &str = "test-ack-token";

/// A daemon child process in its own folder.
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    /// Environment variables the child gets, on every start.
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Writes `config` (with `{http}` replaced by a free port) into a new
    /// folder and starts the daemon on it.
    pub fn start(name: &str, config: &str) -> Daemon {
        Daemon::start_with_env(name, config, &[])
    }

    /// Like [`Daemon::start`], with these environment variables set for
    /// the child (a secret named by `secret_env`, say), here and on every
    /// restart.
    pub fn start_with_env(name: &str, config: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = temp_dir(&format!("daemon-{name}"));
        let port = free_port();
        let path = dir.join("beredskab.toml");
        std::fs::write(&path, config.replace("{http}", &port.to_string()))
            .expect("write the test config");
        let mut d = Daemon {
            child: None,
            log: dir.join("daemon.log"),
            dir,
            config: path,
            port,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        d.spawn();
        d
    }

    /// Starts the daemon (again) on the same folder and config.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the daemon is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the daemon log");
        let child = Command::new(env!("CARGO_BIN_EXE_beredskab"))
            .args(["--log-format", "json", "run", "-c"])
            .arg(&self.config)
            .env("RUST_LOG", "info,sqlx=warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start beredskab run");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "beredskab run exited ({status}) before listening; log:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "beredskab run did not listen on {} within {START_TIMEOUT:?}; log:\n{}",
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no chance to save anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("beredskab did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGHUP: reload the config.
    pub fn hup(&self) {
        signal(self.pid(), "-HUP");
    }

    /// Whether the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Forgets a child that has exited on its own, so that it can be
    /// started again.
    pub fn forget_child(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn db(&self) -> PathBuf {
        self.dir.join("beredskab.db")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's JSON lines.
    pub fn log_lines(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Log lines whose message is `message`.
    pub fn logged(&self, message: &str) -> Vec<Value> {
        self.log_lines()
            .into_iter()
            .filter(|l| l["fields"]["message"] == message)
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}

/// An HTTP client for talking to the daemon.
pub fn http() -> reqwest::Client {
    beredskab::tls::install_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// GET with a bearer token; the status and the JSON body (Null if none).
pub async fn get(client: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// POST a body with a bearer token; the status and the JSON body.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Waits until `check` returns `Some`, polling every 50 ms.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The incidents the API lists (state `all`).
pub async fn incidents(client: &reqwest::Client, d: &Daemon) -> Vec<Value> {
    let (status, body) = get(
        client,
        &d.url("/api/v1/incidents?state=all"),
        Some(READ_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body.as_array().cloned().unwrap_or_default()
}

/// A value of the Prometheus text at `/metrics`: the sample named like
/// `series`, with the same labels in any order (e.g.
/// `beredskab_alarms_rejected_total{source="mqtt",reason="bad_payload"}`);
/// 0 when there is none.
pub async fn metric(client: &reqwest::Client, d: &Daemon, series: &str) -> f64 {
    let text = client
        .get(d.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let want = parse_series(series);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (parse_series(name) == want)
                .then(|| value.parse().ok())
                .flatten()
        })
        .unwrap_or(0.0)
}

/// A series' name and its labels, sorted.
fn parse_series(s: &str) -> (String, Vec<String>) {
    match s.split_once('{') {
        None => (s.to_owned(), Vec::new()),
        Some((name, labels)) => {
            let mut labels: Vec<String> = labels
                .trim_end_matches('}')
                .split(',')
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            labels.sort();
            (name.to_owned(), labels)
        }
    }
}

/// A daemon on the test configuration, on a broker of its own.
pub fn start_with_broker(name: &str) -> (super::broker::Broker, Daemon) {
    let broker = super::broker::Broker::start(name);
    let daemon = Daemon::start(name, &config(broker.port, &super::broker::client_id(name)));
    (broker, daemon)
}

/// Waits until `/readyz` answers 200 (within a minute).
pub async fn wait_ready(client: &reqwest::Client, d: &Daemon) {
    eventually("the daemon is ready", Duration::from_secs(60), || async {
        let (status, body) = get(client, &d.url("/readyz"), None).await;
        (status == 200).then_some(body)
    })
    .await;
}

/// The test configuration: a town hall server room with mains power and a
/// generator, ten servers, log channels, short timers. `{http}` is the
/// HTTP port, `MQTT_PORT` and `CLIENT_ID` are replaced here.
pub fn config(mqtt_port: u16, client_id: &str) -> String {
    config_with(mqtt_port, client_id, "")
}

/// The test configuration with `extra` TOML appended (probes, say).
pub fn config_with(mqtt_port: u16, client_id: &str, extra: &str) -> String {
    let sha = |t: &str| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(t.as_bytes()))
    };
    let mut servers = String::new();
    let mut ids = Vec::new();
    for i in 0..10 {
        servers.push_str(&format!(
            "[[component]]\nid = \"srv-{i}\"\nkind = \"server\"\nbuilding = \"raadhus\"\ndepends_on = [\"serverrum\"]\n"
        ));
        ids.push(format!("\"srv-{i}\""));
    }
    TEST_CONFIG
        .replace("MQTT_PORT", &mqtt_port.to_string())
        .replace("CLIENT_ID", client_id)
        .replace("INGEST_SHA", &sha(INGEST_TOKEN))
        .replace("READ_SHA", &sha(READ_TOKEN))
        .replace("ACK_SHA", &sha(ACK_TOKEN))
        .replace("SERVERS", &servers)
        .replace("SERVER_IDS", &ids.join(", "))
        + extra
}

/// The test configuration without `[mqtt]` and its subscriptions, for a
/// daemon that needs no broker (alarms come by HTTP). `{http}` is the
/// HTTP port.
pub fn config_without_mqtt() -> String {
    let full = config(1, "unused");
    let start = full.find("[mqtt]\n").expect("the test config has [mqtt]");
    let end = full
        .find("[[component]]")
        .expect("the test config has components");
    format!("{}{}", &full[..start], &full[end..])
}

const TEST_CONFIG: &str = r#"
[site]
name = "Testkommune IT"
language = "en"
timezone = "Europe/Copenhagen"

[server]
listen = "127.0.0.1:{http}"
public_url = "http://127.0.0.1:{http}"
metrics_public = true

[[token]]
name = "sensors"
sha256 = "INGEST_SHA"
scopes = ["ingest"]
[[token]]
name = "vagttelefon"
sha256 = "READ_SHA"
scopes = ["read"]
person = "p-drift"
[[token]]
name = "leder"
sha256 = "ACK_SHA"
scopes = ["read", "ack"]
person = "p-chef"

[store]
url = "sqlite://beredskab.db"

[mqtt]
url = "mqtt://127.0.0.1:MQTT_PORT"
client_id = "CLIENT_ID"
max_payload = "1KiB"

[[mqtt.subscription]]
topic = "site/+/fire"
kind = "fire"
component = "{1}"
[[mqtt.subscription]]
topic = "site/+/power"
kind = "power"
component = "{1}"
[[mqtt.subscription]]
topic = "burst/+/alarm"
kind = "server"
component = "{1}"
[[mqtt.subscription]]
topic = "hb/+/state"
kind = "environment"
component = "{1}"
heartbeat = "2s"

[[component]]
id = "power-mains"
kind = "power"
building = "raadhus"
backup = "generator"
[[component]]
id = "generator"
kind = "generator"
building = "raadhus"
[[component]]
id = "serverrum"
kind = "room"
building = "raadhus"
depends_on = ["power-mains"]
SERVERS
[[service]]
id = "omsorg"
name = "Care alarms"
criticality = "life"
depends_on = ["serverrum"]
policy = "standard"
[[service]]
id = "apps"
name = "Case systems"
criticality = "important"
depends_on = [SERVER_IDS]
policy = "standard"
recovery_notify = ["role:drift-leder"]

[[person]]
id = "p-drift"
name = "Leder af Drift"
phone = "+4511111111"
[[person]]
id = "p-vagt2"
name = "Anden vagt"
phone = "+4522222222"
[[person]]
id = "p-chef"
name = "IT-chef"
phone = "+4533333333"

[[role]]
id = "drift-leder"
primary = "p-drift"
deputies = ["p-vagt2"]
[[role]]
id = "it-chef"
primary = "p-chef"

[[channel]]
id = "sms"
kind = "log"

[[policy]]
id = "standard"
deputy_after = "3s"
[[policy.step]]
on = "open"
notify = ["role:drift-leder"]
via = ["sms"]
[[policy.step]]
on = "expected > 30m"
notify = ["role:it-chef"]
via = ["sms"]
[[policy.step]]
on = "resolved"
notify = ["role:drift-leder"]
via = ["sms"]

[estimate]
default = "1h"
by_kind = { server = "10m", fire = "1d", power = "45m" }

[correlation]
settle = "1s"
"#;

/// Reads a count from the daemon's SQLite file (read-only, beside a
/// running daemon: WAL lets it).
pub async fn count(db: &Path, sql: &str) -> i64 {
    use sqlx::Connection;
    let url = format!("sqlite://{}?mode=ro", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
    n
}
