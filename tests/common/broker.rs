//! A real Mosquitto for tests, started on a free port with its own
//! persistence directory and the settings of the shipped
//! deploy/mosquitto/mosquitto.conf, and a QoS 1 publisher that knows which keys the
//! broker acknowledged. Mosquitto is required: a missing broker fails the
//! tests, it never skips them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::task::JoinHandle;

/// The shipped broker config whose settings every test broker uses.
pub const SHIPPED_CONF: &str = "deploy/mosquitto/mosquitto.conf";
/// Keys of the shipped config that each test sets for itself.
pub const OWN_KEYS: [&str; 12] = [
    "listener",
    "allow_anonymous",
    "password_file",
    "acl_file",
    "certfile",
    "keyfile",
    "cafile",
    "persistence_location",
    "log_dest",
    "pid_file",
    "user",
    "include_dir",
];
/// How long any single expected event may take.
pub const STEP: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The broker

pub fn mosquitto_binary() -> PathBuf {
    find_program("mosquitto", "/usr/sbin/mosquitto").unwrap_or_else(|| {
        panic!(
            "mosquitto not found on PATH or at /usr/sbin/mosquitto: these tests need a real \
             broker. Install Debian's: apt-get update && apt-get install -y mosquitto"
        )
    })
}

/// `mosquitto_passwd`, which Debian ships in the mosquitto package.
pub fn mosquitto_passwd_binary() -> PathBuf {
    find_program("mosquitto_passwd", "/usr/bin/mosquitto_passwd").unwrap_or_else(|| {
        panic!(
            "mosquitto_passwd not found on PATH or at /usr/bin/mosquitto_passwd: the password \
             tests need it. Install Debian's: apt-get update && apt-get install -y mosquitto"
        )
    })
}

/// `name` on PATH, or else at `fallback` (sbin is not always on PATH).
pub fn find_program(name: &str, fallback: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .chain([PathBuf::from(fallback)])
        .find(|p| p.is_file())
}

/// Writes a Mosquitto password file with one user.
pub fn password_file(dir: &Path, user: &str, password: &str) -> PathBuf {
    let path = dir.join("passwd");
    let out = Command::new(mosquitto_passwd_binary())
        .arg("-b")
        .arg("-c")
        .arg(&path)
        .args([user, password])
        .output()
        .unwrap_or_else(|e| panic!("cannot run mosquitto_passwd: {e}"));
    assert!(
        out.status.success(),
        "mosquitto_passwd failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// A fresh directory under the target's temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "mqtt-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// The shipped config's settings, without those each test sets itself.
pub fn shipped_settings() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(SHIPPED_CONF);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| !OWN_KEYS.contains(&l.split_whitespace().next().unwrap_or("")))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A Mosquitto child process, killed when dropped.
pub struct Broker {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
}

impl Broker {
    /// A new broker on a free port with an empty persistence directory.
    pub fn start(name: &str) -> Broker {
        Broker::start_on(free_port(), temp_dir(name))
    }

    /// A new broker like [`Broker::start`], with `extra` appended to its
    /// config: more listeners, each with its own authentication (the shipped
    /// config sets `per_listener_settings true`). `port` stays the plain,
    /// anonymous listener.
    pub fn start_with(name: &str, extra: &str) -> Broker {
        Broker::start_on_with(free_port(), temp_dir(name), extra)
    }

    /// A broker on `port` keeping its database in `dir`.
    pub fn start_on(port: u16, dir: PathBuf) -> Broker {
        Broker::start_on_with(port, dir, "")
    }

    fn start_on_with(port: u16, dir: PathBuf, extra: &str) -> Broker {
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        let log = dir.join("mosquitto.log");
        let text = format!(
            "# from {SHIPPED_CONF}\n{shipped}\
             # this test's own\n\
             listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence true\n\
             persistence_location {dir}/\n\
             log_dest file {log}\n\
             user root\n\
             {extra}",
            shipped = shipped_settings(),
            dir = dir.display(),
            log = log.display(),
        );
        std::fs::write(&conf, text).expect("write mosquitto config");
        let mut child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start mosquitto: {e}"));
        let deadline = Instant::now() + STEP;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "mosquitto exited ({status}) before listening on {port}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port} within {STEP:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker {
            child: Some(child),
            port,
            dir,
        }
    }

    /// Stops the broker with SIGTERM, which makes it save its database.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -TERM mosquitto failed");
            let status = child.wait().expect("wait for mosquitto");
            assert!(status.success(), "mosquitto did not exit cleanly: {status}");
        }
    }

    /// Kills the broker without letting it save anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// The publisher: a second rumqttc client that knows which keys were PubAcked

#[derive(Default)]
pub struct Published {
    /// Keys handed to the client, not yet sent (in request order).
    pub queued: VecDeque<String>,
    /// Keys sent, by packet id, not yet acknowledged.
    pub inflight: HashMap<u16, String>,
    /// Keys the broker acknowledged.
    pub acked: HashSet<String>,
    pub connects: usize,
    pub lost_session: bool,
}

/// A QoS 1 publisher with a persistent session: rumqttc resends whatever was
/// not acknowledged after a reconnect, and `acked` holds exactly the keys the
/// broker acknowledged.
pub struct Publisher {
    pub client: AsyncClient,
    pub state: Arc<Mutex<Published>>,
    pub task: JoinHandle<()>,
}

impl Publisher {
    pub fn start(port: u16, client_id: &str) -> Publisher {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options
            .set_clean_session(false)
            .set_inflight(100)
            .set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let state = Arc::new(Mutex::new(Published::default()));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let mut s = shared.lock().unwrap();
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        if s.connects > 0 && !ack.session_present {
                            s.lost_session = true;
                        }
                        s.connects += 1;
                    }
                    // A resent publish keeps its packet id, still in `inflight`.
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if !s.inflight.contains_key(&pkid) {
                            let key = s.queued.pop_front().expect("a queued key");
                            s.inflight.insert(pkid, key);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(key) = s.inflight.remove(&ack.pkid) {
                            s.acked.insert(key);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        drop(s);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Publisher {
            client,
            state,
            task,
        }
    }

    /// Publishes one message at QoS 1 (waits only for room in the channel).
    pub async fn publish(&self, topic: &str, key: &str, payload: impl Into<Vec<u8>>) {
        self.state.lock().unwrap().queued.push_back(key.to_owned());
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish request");
    }

    pub fn acked(&self) -> HashSet<String> {
        self.state.lock().unwrap().acked.clone()
    }

    /// Waits until the broker has acknowledged `n` keys.
    pub async fn wait_acked(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.state.lock().unwrap().acked.len();
            if got >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "broker acknowledged {got} of {n} publishes within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn alarm(key: &str) -> Vec<u8> {
    format!(r#"{{"state":"alarm","key":"{key}"}}"#).into_bytes()
}

/// The `key` of an alarm payload.
pub fn key_of(payload: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(payload).expect("json payload");
    v["key"].as_str().expect("key").to_owned()
}

/// A unique client id for this process and test.
pub fn client_id(test: &str) -> String {
    format!("beredskab-{test}-{}", std::process::id())
}
