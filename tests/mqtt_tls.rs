//! The MQTT collector over TLS with a username and password, against a real
//! Mosquitto that each test starts with two listeners: a TLS one that wants
//! a password (for the collector), and a plain anonymous one on loopback
//! (for the publisher), as the shipped deploy/mosquitto/mosquitto.conf suggests. The
//! certificates are made at test time with `openssl`, the password file with
//! `mosquitto_passwd`.
//!
//! The collector tests name their CA with
//! `MqttCollector::with_root_certificates`: `SSL_CERT_FILE` is process-wide
//! and these tests run in parallel threads. The daemon tests check the
//! `SSL_CERT_FILE` and `password_env` path, each daemon a process of its own.
//!
//! Mosquitto, mosquitto_passwd and openssl are required: a missing one fails
//! the tests, it never skips them.

mod common;

use std::collections::VecDeque;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use beredskab::collect::mqtt::{MqttCollector, MqttInput, Received};
use beredskab::config::MqttConfig;
use common::broker::{
    Broker, Publisher, STEP, alarm, client_id, free_port, key_of, password_file, temp_dir,
};
use common::daemon::{Daemon, config, eventually, get, http, incidents};
use common::tls::Pki;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const USER: &str = "beredskab";
const PASSWORD: &str = "correct horse battery staple";
/// A topic of the daemon's test config (tests/common/daemon.rs).
const FIRE: &str = "site/serverrum/fire";

// ---------------------------------------------------------------------------
// The broker

/// A Mosquitto with TLS and passwords on `tls_port`, and the CA that signed
/// its certificate.
struct TlsBroker {
    /// `broker.port` is the plain, anonymous listener.
    broker: Broker,
    tls_port: u16,
    pki: Pki,
}

fn start_tls_broker(name: &str) -> TlsBroker {
    let dir = temp_dir(&format!("tls-{name}"));
    let pki = Pki::generate(&dir, "broker");
    let passwd = password_file(&dir, USER, PASSWORD);
    let tls_port = free_port();
    // per_listener_settings (shipped) makes these apply to this listener only.
    let extra = format!(
        "listener {tls_port} 127.0.0.1\n\
         cafile {ca}\n\
         certfile {cert}\n\
         keyfile {key}\n\
         allow_anonymous false\n\
         password_file {passwd}\n",
        ca = pki.ca.display(),
        cert = pki.cert.display(),
        key = pki.key.display(),
        passwd = passwd.display(),
    );
    let broker = Broker::start_with(name, &extra);
    // Mosquitto opens its listeners one after the other.
    let deadline = Instant::now() + STEP;
    while TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "mosquitto did not listen with TLS on {tls_port} within {STEP:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    TlsBroker {
        broker,
        tls_port,
        pki,
    }
}

/// Another CA, unrelated to the broker's.
fn other_ca(name: &str) -> Pki {
    Pki::generate(&temp_dir(&format!("tls-{name}-other")), "other")
}

// ---------------------------------------------------------------------------
// The collector under test

fn tls_config(port: u16, client_id: &str, username: Option<&str>) -> MqttConfig {
    let mut text = format!("url = \"mqtts://127.0.0.1:{port}\"\nclient_id = \"{client_id}\"\n");
    if let Some(user) = username {
        text.push_str(&format!("username = \"{user}\"\n"));
    }
    text.push_str(
        "[[subscription]]\ntopic = \"site/+/fire\"\nkind = \"fire\"\ncomponent = \"{1}\"\n",
    );
    toml::from_str(&text).expect("test mqtt config")
}

/// A collector that trusts `ca`, running, and the receiving end of its
/// channel.
struct Running {
    rx: mpsc::Receiver<MqttInput>,
    /// Messages that came between a ConnAck and its SubAck (redelivered).
    early: VecDeque<Received>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

fn start_collector(config: &MqttConfig, password: Option<&str>, ca: &Path) -> Running {
    let collector = MqttCollector::with_root_certificates(config, password.map(str::to_owned), ca)
        .expect("collector");
    let (tx, rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(collector.run(tx, shutdown.clone()));
    Running {
        rx,
        early: VecDeque::new(),
        shutdown,
        task,
    }
}

impl Running {
    /// The next input, within `STEP`.
    async fn next(&mut self) -> MqttInput {
        match tokio::time::timeout(STEP, self.rx.recv()).await {
            Ok(Some(input)) => input,
            Ok(None) => panic!("collector stopped"),
            Err(_) => panic!("no input from the collector within {STEP:?}"),
        }
    }

    /// Waits for the ConnAck and the SubAck, keeping messages redelivered
    /// in between; returns `session_present`.
    async fn connected(&mut self) -> bool {
        let session_present = match self.next().await {
            MqttInput::Connected { session_present } => session_present,
            other => panic!("expected Connected, got {other:?}"),
        };
        loop {
            match self.next().await {
                MqttInput::Subscribed { refused } => {
                    assert!(refused.is_empty(), "{refused:?}");
                    return session_present;
                }
                MqttInput::Message(m) => self.early.push_back(m),
                other => panic!("expected Subscribed, got {other:?}"),
            }
        }
    }

    /// The next message, within `STEP`.
    async fn message(&mut self) -> Received {
        if let Some(m) = self.early.pop_front() {
            return m;
        }
        match self.next().await {
            MqttInput::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Expects `attempts` refused connections in a row, and the collector
    /// still running (retrying) after them; returns their error texts.
    async fn refused(&mut self, attempts: usize) -> Vec<String> {
        let mut errors = Vec::new();
        for _ in 0..attempts {
            match self.next().await {
                MqttInput::Disconnected { error } => errors.push(error),
                other => panic!("expected a refused connection, got {other:?}"),
            }
        }
        assert!(
            !self.task.is_finished(),
            "the collector gave up (or panicked) after a refused connection"
        );
        errors
    }

    /// Cancels the collector and waits until it has stopped.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(STEP, self.task)
            .await
            .expect("collector stops within STEP")
            .expect("collector task");
    }
}

// ---------------------------------------------------------------------------
// The collector

/// With the broker's CA and the right password the collector connects over
/// TLS, subscribes, and receives a QoS 1 alarm; its ack travels back over
/// TLS too, so a new connection of the same session gets only the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_the_right_password_a_qos1_alarm_arrives() {
    let b = start_tls_broker("right-password");
    let id = client_id("tls-right");
    let config = tls_config(b.tls_port, &id, Some(USER));
    let mut c = start_collector(&config, Some(PASSWORD), &b.pki.ca);
    assert!(!c.connected().await, "a new session");

    let publisher = Publisher::start(b.broker.port, &client_id("tls-right-pub"));
    publisher.publish(FIRE, "one", alarm("one")).await;
    publisher.wait_acked(1, STEP).await;
    let m = c.message().await;
    assert_eq!(m.topic, FIRE);
    assert_eq!(m.qos, 1);
    assert_eq!(key_of(&m.payload), "one");
    m.ack();
    c.stop().await;

    publisher.publish(FIRE, "two", alarm("two")).await;
    publisher.wait_acked(2, STEP).await;
    let mut c = start_collector(&config, Some(PASSWORD), &b.pki.ca);
    assert!(c.connected().await, "the session was kept");
    let m = c.message().await;
    assert_eq!(
        key_of(&m.payload),
        "two",
        "\"one\" was acked, so not redelivered"
    );
    m.ack();
    c.stop().await;
}

/// A wrong password, no password and no username are refused by the
/// broker: each is reported as a disconnection that says why, and the
/// collector keeps retrying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_password_is_refused_and_retried() {
    let b = start_tls_broker("wrong-password");
    let cases = [
        ("wrong", Some(USER), Some("not the password")),
        ("empty", Some(USER), None),
        ("anonymous", None, None),
    ];
    for (case, user, password) in cases {
        let config = tls_config(b.tls_port, &client_id(&format!("tls-{case}")), user);
        let mut c = start_collector(&config, password, &b.pki.ca);
        for error in c.refused(2).await {
            assert!(
                error.contains("refused") && error.contains("username or password"),
                "{case}: the error should say the credentials were refused: {error}"
            );
        }
        c.stop().await;
    }
}

/// A server certificate from a CA the collector does not trust is refused,
/// reported as a disconnection that names the certificate, and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_an_unknown_ca_is_refused_and_retried() {
    let b = start_tls_broker("unknown-ca");
    let other = other_ca("unknown-ca");
    let config = tls_config(b.tls_port, &client_id("tls-unknown-ca"), Some(USER));
    let mut c = start_collector(&config, Some(PASSWORD), &other.ca);
    for error in c.refused(2).await {
        assert!(
            error.contains("invalid peer certificate") && error.contains("UnknownIssuer"),
            "the error should say the certificate is not trusted: {error}"
        );
    }
    c.stop().await;
}

/// Roots that cannot be used are reported when the collector is built, not
/// when it first connects.
#[test]
fn unusable_root_certificates_are_reported_up_front() {
    let pki = Pki::generate(&temp_dir("tls-unusable"), "unusable");
    let tls = tls_config(8883, "beredskab", Some(USER));
    let plain: MqttConfig =
        toml::from_str("url = \"mqtt://127.0.0.1:1883\"\n").expect("plain config");
    let error = |config: &MqttConfig, roots: &Path| {
        MqttCollector::with_root_certificates(config, None, roots)
            .expect_err("an unusable root bundle")
            .to_string()
    };

    let missing = pki.dir.join("missing.pem");
    let e = error(&tls, &missing);
    assert!(e.contains("missing.pem"), "{e}");
    // A private key, but no certificate.
    let e = error(&tls, &pki.key);
    assert!(e.contains("no usable root certificate"), "{e}");
    let e = error(&plain, &pki.ca);
    assert!(e.contains("not mqtts://"), "{e}");
    MqttCollector::with_root_certificates(&tls, Some(PASSWORD.to_owned()), &pki.ca)
        .expect("the CA is usable");
}

// ---------------------------------------------------------------------------
// The daemon: SSL_CERT_FILE and password_env

/// The daemon's test config pointed at the TLS listener, with a username
/// and the password in `MQTT_PASSWORD`.
fn daemon_config(tls_port: u16, client_id: &str) -> String {
    let plain = format!("url = \"mqtt://127.0.0.1:{tls_port}\"\n");
    let text = config(tls_port, client_id);
    assert!(text.contains(&plain), "the daemon test config changed");
    text.replace(
        &plain,
        &format!(
            "url = \"mqtts://127.0.0.1:{tls_port}\"\n\
             username = \"{USER}\"\n\
             password_env = \"MQTT_PASSWORD\"\n"
        ),
    )
}

async fn mqtt_status(client: &reqwest::Client, d: &Daemon) -> String {
    let (_, body) = get(client, &d.url("/readyz"), None).await;
    body["mqtt"].as_str().unwrap_or_default().to_owned()
}

/// `beredskab run` trusts the CA in `SSL_CERT_FILE` and logs in with the
/// password from `password_env`: it reports MQTT connected and turns an
/// alarm into an incident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_trusts_ssl_cert_file_and_logs_in_with_password_env() {
    let b = start_tls_broker("daemon-tls");
    let ca = b.pki.ca.display().to_string();
    let d = Daemon::start_with_env(
        "tls",
        &daemon_config(b.tls_port, &client_id("daemon-tls")),
        &[("SSL_CERT_FILE", &ca), ("MQTT_PASSWORD", PASSWORD)],
    );
    let client = http();
    eventually("mqtt connects over tls", STEP, || async {
        (mqtt_status(&client, &d).await == "connected").then_some(())
    })
    .await;

    let publisher = Publisher::start(b.broker.port, &client_id("daemon-tls-pub"));
    publisher.publish(FIRE, "fire", alarm("fire")).await;
    publisher.wait_acked(1, STEP).await;
    let list = eventually("an incident opens", STEP, || async {
        let list = incidents(&client, &d).await;
        (!list.is_empty()).then_some(list)
    })
    .await;
    assert_eq!(list[0]["root"], "serverrum", "{list:?}");
}

/// With `SSL_CERT_FILE` naming another CA the daemon refuses the broker's
/// certificate: it logs why, keeps retrying and reports MQTT disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_refuses_a_broker_that_ssl_cert_file_does_not_vouch_for() {
    let b = start_tls_broker("daemon-unknown-ca");
    let other = other_ca("daemon-unknown-ca");
    let ca = other.ca.display().to_string();
    let mut d = Daemon::start_with_env(
        "tls-unknown-ca",
        &daemon_config(b.tls_port, &client_id("daemon-unknown-ca")),
        &[("SSL_CERT_FILE", &ca), ("MQTT_PASSWORD", PASSWORD)],
    );
    let client = http();
    let errors = eventually("two refused connections are logged", STEP, || async {
        let errors: Vec<String> = d
            .logged("mqtt connection lost or refused")
            .iter()
            .map(|l| l["fields"]["error"].as_str().unwrap_or_default().to_owned())
            .collect();
        (errors.len() >= 2).then_some(errors)
    })
    .await;
    for error in errors {
        assert!(error.contains("UnknownIssuer"), "{error}");
    }
    assert_eq!(mqtt_status(&client, &d).await, "disconnected");
    assert!(d.exited().is_none(), "the daemon keeps running");
}
