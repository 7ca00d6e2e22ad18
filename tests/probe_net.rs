//! The network kinds of probe (icmp, tcp, dns, tls) against real peers on
//! loopback that the tests start: ping of 127.0.0.1 and ::1, an address
//! whose echoes an nftables rule drops (and then no longer does), TCP
//! listeners that accept, refuse and accept slowly, Debian's dnsmasq on a
//! free port, and a rustls server with certificates openssl makes at test
//! time. One test runs a tcp probe through the daemon, one a daemon that
//! may open no ICMP socket (as nobody, by setpriv); another checks the
//! `check` errors of bad probe settings.
//!
//! Nothing here skips: a missing tool (nft, dnsmasq, openssl, libfaketime)
//! or a process that may open no ICMP socket fails the test and says how
//! to fix it (.ci/run installs the tools and the tests run as root).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use beredskab::catalogue::Catalogue;
use beredskab::collect::net::icmp_socket;
use beredskab::collect::probe::{ProbeCollector, ProbeReport};
use beredskab::config::{LoadError, ProbeConfig, ProbeKind, load_str};
use beredskab::engine::intake::{ProbeClass, classify};
use beredskab::engine::{AlarmState, Effect, Engine, Event, Ts};
use common::broker::find_program;
use common::daemon::{Daemon, eventually, http, incidents, metric, wait_ready};
use common::tls::Pki;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const MS: Duration = Duration::from_millis(1);

fn probe(id: &str, kind: ProbeKind) -> ProbeConfig {
    ProbeConfig {
        id: id.into(),
        component: "c".into(),
        kind,
        every: 200 * MS,
        timeout: 1000 * MS,
        fail_after: 2,
        recover_after: 2,
        ..ProbeConfig::default()
    }
}

/// A running collector and its reports.
struct Running {
    rx: mpsc::Receiver<ProbeReport>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    fn start(collector: ProbeCollector) -> Running {
        let (tx, rx) = mpsc::channel(256);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(collector.run(tx, shutdown.clone()));
        Running { rx, shutdown, task }
    }

    fn of<P: std::borrow::Borrow<ProbeConfig>>(probes: &[P]) -> Running {
        Running::start(ProbeCollector::new(probes).expect("probes are valid"))
    }

    /// The next report of `id`, within `within`.
    async fn next_of(&mut self, id: &str, within: Duration) -> ProbeReport {
        let until = tokio::time::Instant::now() + within;
        loop {
            let r = tokio::time::timeout_at(until, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("a report of {id} in time"))
                .expect("the collector is running");
            if r.id == id {
                return r;
            }
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("the collector stops");
    }
}

/// The process may open an ICMP socket, or the test says how to allow it.
fn require_icmp() {
    for v6 in [false, true] {
        if let Err(e) = icmp_socket(v6) {
            panic!(
                "{e}\n(.ci/run runs the tests as root; as another user, enable unprivileged \
                 ping first)"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// ICMP

#[tokio::test]
async fn icmp_echoes_to_the_loopback_addresses_are_answered() {
    require_icmp();
    let mut v4 = probe("v4", ProbeKind::Icmp);
    v4.host = Some("127.0.0.1".into());
    v4.count = Some(2);
    let mut v6 = probe("v6", ProbeKind::Icmp);
    v6.host = Some("::1".into());
    v6.count = Some(3);
    let mut name = probe("name", ProbeKind::Icmp);
    name.host = Some("localhost".into());
    let mut run = Running::of(&[v4.clone(), v6.clone(), name.clone()]);
    for (config, id) in [(&v4, "v4"), (&v6, "v6"), (&name, "name")] {
        for _ in 0..2 {
            let r = run.next_of(id, 3000 * MS).await;
            assert_eq!(r.result.error, None, "{id}: {r:?}");
            let rtt = r.result.rtt_ms.expect("a round trip");
            assert!((0.0..100.0).contains(&rtt), "{id}: {rtt} ms on loopback");
            assert_eq!(classify(config, &r.result).0, ProbeClass::Ok);
        }
    }
    run.stop().await;
}

/// An nftables table of the test's own that drops ICMP echo requests to
/// one loopback address; deleted when dropped (or by [`Dropper::lift`]).
struct Dropper {
    table: String,
    lifted: bool,
}

fn nft() -> PathBuf {
    find_program("nft", "/usr/sbin/nft").unwrap_or_else(|| {
        panic!(
            "nft not found: the ICMP test drops echoes with an nftables rule. Install Debian's: \
             apt-get update && apt-get install -y nftables"
        )
    })
}

fn nft_run(args: &[&str]) {
    let out = Command::new(nft()).args(args).output().expect("run nft");
    assert!(
        out.status.success(),
        "nft {args:?} failed: {} (the test runs as root with CAP_NET_ADMIN)",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Dropper {
    fn drop_echoes_to(address: &str) -> Dropper {
        let table = format!("beredskab_test_{}", std::process::id());
        nft_run(&["add", "table", "ip", &table]);
        let dropper = Dropper {
            table: table.clone(),
            lifted: false,
        };
        nft_run(&[
            "add",
            "chain",
            "ip",
            &table,
            "input",
            "{ type filter hook input priority 0 ; }",
        ]);
        nft_run(&[
            "add",
            "rule",
            "ip",
            &table,
            "input",
            "ip",
            "daddr",
            address,
            "icmp",
            "type",
            "echo-request",
            "drop",
        ]);
        dropper
    }

    fn lift(&mut self) {
        if !self.lifted {
            self.lifted = true;
            nft_run(&["delete", "table", "ip", &self.table]);
        }
    }
}

impl Drop for Dropper {
    fn drop(&mut self) {
        if !self.lifted {
            self.lifted = true;
            let _ = Command::new(nft())
                .args(["delete", "table", "ip", &self.table])
                .output();
        }
    }
}

const NET_PLAN: &str = r#"
[site]
name = "Test"
[[component]]
id = "switch"
kind = "network"
[[service]]
id = "net"
criticality = "important"
depends_on = ["switch"]
policy = "p"
[[person]]
id = "x"
name = "X"
[[channel]]
id = "log"
kind = "log"
[[policy]]
id = "p"
[[policy.step]]
on = "open"
notify = ["person:x"]
via = ["log"]
"#;

/// Feeds a probe's reports to an engine until its component's alarm is in
/// `state`; returns how many reports that took.
async fn reports_until(
    run: &mut Running,
    engine: &mut Engine,
    id: &str,
    state: AlarmState,
    most: usize,
) -> Vec<ProbeReport> {
    let t0 = Ts(1_772_434_800_000);
    let started = tokio::time::Instant::now();
    let mut seen = Vec::new();
    for _ in 0..most {
        let r = run.next_of(id, 5000 * MS).await;
        seen.push(r.clone());
        let now = t0.plus(started.elapsed());
        let effects = engine
            .handle(
                now,
                Event::Probe {
                    id: r.id,
                    result: r.result,
                },
            )
            .expect("probe result accepted");
        if effects.iter().any(|e| {
            matches!(e, Effect::Alarm { component, state: s, .. } if component == "switch" && *s == state)
        }) {
            return seen;
        }
    }
    panic!("no {state:?} alarm after {most} reports: {seen:?}");
}

/// A switch that stops answering ping: each check loses all its echoes;
/// after `fail_after` (2) such checks its component is down, and once the
/// rule is lifted it is up again after `recover_after` (3) answers.
#[tokio::test]
async fn an_address_that_drops_echoes_fails_after_fail_after_and_recovers_after_recover_after() {
    require_icmp();
    // An address of the loopback range of this test's own.
    let pid = std::process::id();
    let address = format!("127.{}.{}.{}", 100 + pid % 100, (pid / 100) % 250, 7);
    let mut config = probe("switch-ping", ProbeKind::Icmp);
    config.component = "switch".into();
    config.host = Some(address.clone());
    config.count = Some(2);
    config.every = 300 * MS;
    config.timeout = 250 * MS;
    config.recover_after = 3;
    let text = format!(
        "{NET_PLAN}[[probe]]\nid = \"switch-ping\"\ncomponent = \"switch\"\nkind = \"icmp\"\n\
         host = \"{address}\"\ncount = 2\nevery = \"300ms\"\ntimeout = \"250ms\"\n\
         fail_after = 2\nrecover_after = 3\n"
    );
    let loaded = load_str("net.toml", &text).expect("the plan is valid");
    let catalogue = Arc::new(Catalogue::build(&loaded.config).expect("the plan builds"));
    let mut engine = Engine::new(catalogue);

    let mut dropper = Dropper::drop_echoes_to(&address);
    let mut run = Running::of(&loaded.config.probes);
    let failing = reports_until(&mut run, &mut engine, "switch-ping", AlarmState::Firing, 6).await;
    assert_eq!(failing.len(), 2, "down after fail_after: {failing:?}");
    for r in &failing {
        assert_eq!(
            r.result.error.as_deref(),
            Some("all 2 echoes lost"),
            "{r:?}"
        );
        assert!(r.elapsed < 250 * MS, "lost echoes end before the timeout");
    }

    dropper.lift();
    let answering =
        reports_until(&mut run, &mut engine, "switch-ping", AlarmState::Cleared, 8).await;
    // A check in flight as the rule went may still have lost its echoes.
    let answered: Vec<_> = answering
        .iter()
        .skip_while(|r| r.result.error.is_some())
        .collect();
    assert_eq!(answered.len(), 3, "up after recover_after: {answering:?}");
    assert!(answered.iter().all(|r| r.result.rtt_ms.is_some()));
    run.stop().await;
}

// ---------------------------------------------------------------------------
// TCP

#[tokio::test]
async fn tcp_connects_to_an_open_port_and_fails_on_a_closed_one() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accept = tokio::spawn(async move {
        loop {
            let _ = listener.accept().await;
        }
    });
    let mut config = probe("ssh", ProbeKind::Tcp);
    config.address = Some(addr.to_string());
    config.max_rtt = Some(200 * MS);
    let mut run = Running::of(std::slice::from_ref(&config));
    let r = run.next_of("ssh", 2000 * MS).await;
    assert_eq!(r.result.error, None, "{r:?}");
    assert!(r.result.rtt_ms.is_some_and(|ms| ms < 100.0), "{r:?}");
    assert_eq!(classify(&config, &r.result).0, ProbeClass::Ok);

    // The listener closes: the port refuses.
    accept.abort();
    let _ = accept.await;
    let r = loop {
        let r = run.next_of("ssh", 2000 * MS).await;
        if r.result.error.is_some() {
            break r;
        }
    };
    assert_eq!(r.result.error.as_deref(), Some("connection refused"));
    assert!(matches!(
        classify(&config, &r.result).0,
        ProbeClass::Failed(_)
    ));
    run.stop().await;
}

/// A listener whose accept queue is full drops new SYNs: the kernel's
/// retransmission (after about a second) gets through once the test has
/// accepted one, so the connect is slow and the component degraded by
/// `max_rtt`, not failed.
#[tokio::test]
async fn a_listener_that_accepts_slowly_makes_tcp_degraded_by_max_rtt() {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    // A backlog of 1 holds 2 connections; fill it.
    let listener = socket.listen(1).expect("listen");
    let mut fillers = Vec::new();
    for _ in 0..2 {
        fillers.push(
            tokio::net::TcpStream::connect(addr)
                .await
                .expect("a filler connects"),
        );
    }
    let mut config = probe("slow", ProbeKind::Tcp);
    config.address = Some(addr.to_string());
    config.max_rtt = Some(300 * MS);
    config.timeout = 5000 * MS;
    config.every = 1000 * MS;
    // Room for one more, a little after the probe's SYN was dropped (the
    // kernel counts it as a listen overflow).
    let before = listen_overflows();
    let accepter = tokio::spawn(async move {
        while listen_overflows() == before {
            tokio::time::sleep(10 * MS).await;
        }
        tokio::time::sleep(300 * MS).await;
        let held = listener.accept().await;
        std::future::pending::<()>().await;
        drop(held);
    });
    let mut run = Running::of(std::slice::from_ref(&config));
    let r = run.next_of("slow", 12_000 * MS).await;
    assert_eq!(r.result.error, None, "{r:?}");
    let rtt = r.result.rtt_ms.expect("a connect time");
    assert!(
        rtt > 300.0,
        "the connect waited for a retransmission: {rtt} ms"
    );
    match classify(&config, &r.result).0 {
        ProbeClass::Degraded(why) => assert!(why.contains("over max_rtt 300ms"), "{why}"),
        other => panic!("{other:?}"),
    }
    run.stop().await;
    accepter.abort();
    drop(fillers);
}

/// The kernel's count of SYNs dropped on a full accept queue
/// (`TcpExt: ListenOverflows` in /proc/net/netstat).
fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").expect("read /proc/net/netstat");
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (
        lines.next().expect("TcpExt names"),
        lines.next().expect("TcpExt values"),
    );
    let at = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")
        .expect("ListenOverflows is counted");
    values
        .split_whitespace()
        .nth(at)
        .and_then(|v| v.parse().ok())
        .expect("a count")
}

// ---------------------------------------------------------------------------
// DNS

/// Debian's dnsmasq on a free port, answering from a hosts file only.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

impl Dnsmasq {
    fn start(hosts: &str) -> Dnsmasq {
        let program = find_program("dnsmasq", "/usr/sbin/dnsmasq").unwrap_or_else(|| {
            panic!(
                "dnsmasq not found: the dns probe tests ask a real DNS server. Install Debian's: \
                 apt-get update && apt-get install -y dnsmasq-base"
            )
        });
        let file = common::write_temp(&format!("hosts-{}", std::process::id()), hosts);
        let port = free_udp_port();
        let child = Command::new(program)
            .arg("--no-daemon")
            .arg(format!("--port={port}"))
            .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
            .args(["--no-resolv", "--no-hosts", "--conf-file=/dev/null"])
            .arg(format!("--addn-hosts={}", file.display()))
            .args(["--user=root", "--pid-file="])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dnsmasq");
        Dnsmasq {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

fn dns_probe(id: &str, server: SocketAddr, name: &str, record: Option<&str>) -> ProbeConfig {
    let mut p = probe(id, ProbeKind::Dns);
    p.server = Some(server.to_string());
    p.name = Some(name.into());
    p.record = record.map(str::to_owned);
    p
}

#[tokio::test]
async fn dns_answers_a_known_name_and_fails_an_unknown_one() {
    let dns = Dnsmasq::start("10.0.0.80 intranet.example.dk\nfd00::80 v6.example.dk\n");
    let probes = [
        dns_probe("known", dns.addr, "intranet.example.dk", None),
        dns_probe("aaaa", dns.addr, "v6.example.dk", Some("AAAA")),
        dns_probe("unknown", dns.addr, "nowhere.example.dk", None),
        dns_probe("no-aaaa", dns.addr, "intranet.example.dk", Some("aaaa")),
    ];
    let mut run = Running::of(&probes);
    // dnsmasq may take a moment to listen: wait for a first answer.
    let known = loop {
        let r = run.next_of("known", 3000 * MS).await;
        if r.result.error.is_none() {
            break r;
        }
    };
    assert_eq!(classify(&probes[0], &known.result).0, ProbeClass::Ok);
    let r = run.next_of("aaaa", 3000 * MS).await;
    assert_eq!(r.result.error, None, "{r:?}");
    let r = run.next_of("unknown", 3000 * MS).await;
    let error = r.result.error.clone().expect("an unknown name fails");
    assert!(
        ["NXDOMAIN", "REFUSED", "SERVFAIL"]
            .iter()
            .any(|w| error.starts_with(w)),
        "{error}"
    );
    assert!(matches!(
        classify(&probes[2], &r.result).0,
        ProbeClass::Failed(_)
    ));
    // A name with an A record only has no AAAA answer (dnsmasq, with no
    // upstream, refuses the question).
    let r = run.next_of("no-aaaa", 3000 * MS).await;
    let error = r.result.error.expect("no AAAA answer fails");
    assert!(
        error == "no AAAA answer for intranet.example.dk."
            || error == "REFUSED for intranet.example.dk. AAAA",
        "{error}"
    );
    run.stop().await;
    drop(dns);
}

// ---------------------------------------------------------------------------
// TLS

/// A rustls server on 127.0.0.1 that completes handshakes with `cert`.
async fn tls_server(cert: &Path, key: &Path) -> (SocketAddr, JoinHandle<()>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    beredskab::tls::install_provider();
    let chain = CertificateDer::pem_file_iter(cert)
        .expect("read cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert is PEM");
    let key = PrivateKeyDer::from_pem_file(key).expect("key is PEM");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                }
            });
        }
    });
    (addr, task)
}

fn tls_probe(id: &str, addr: SocketAddr) -> ProbeConfig {
    let mut p = probe(id, ProbeKind::Tls);
    p.address = Some(addr.to_string());
    p.warn_before = Some(Duration::from_secs(14 * 86_400));
    p
}

const DAY: i64 = 86_400;

#[tokio::test]
async fn tls_certificates_are_up_near_expiry_degraded_and_expired_or_untrusted_failed() {
    let dir = common::write_temp("tls-probe-marker", "")
        .with_file_name(format!("tls-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let pki = Pki::generate(&dir, "probe");
    let other = Pki::generate(&dir, "stranger");
    let (year, year_key) = pki.sign_server("year", 365, None);
    let (soon, soon_key) = pki.sign_server("soon", 3, None);
    let (expired, expired_key) = pki.sign_server("expired", 1, Some("-3d"));
    let (later, later_key) = pki.sign_server("later", 30, Some("+3d"));

    let mut servers = Vec::new();
    let mut probes = Vec::new();
    for (id, cert, key) in [
        ("year", &year, &year_key),
        ("soon", &soon, &soon_key),
        ("expired", &expired, &expired_key),
        ("later", &later, &later_key),
        ("stranger", &other.cert, &other.key),
    ] {
        let (addr, task) = tls_server(cert, key).await;
        servers.push(task);
        probes.push(tls_probe(id, addr));
    }
    let collector =
        ProbeCollector::with_root_certificates(&probes, &pki.ca).expect("probes are valid");
    let mut run = Running::start(collector);
    let mut got = std::collections::BTreeMap::new();
    for p in &probes {
        let r = run.next_of(&p.id, 3000 * MS).await;
        got.insert(p.id.clone(), (classify(p, &r.result).0, r.result));
    }
    run.stop().await;

    let (class, r) = &got["year"];
    assert_eq!(*class, ProbeClass::Ok, "{r:?}");
    let left = r.expires_in_s.expect("expiry");
    assert!((364 * DAY..=365 * DAY).contains(&left), "{left}");

    let (class, r) = &got["soon"];
    let left = r.expires_in_s.expect("expiry");
    assert!((2 * DAY..=3 * DAY).contains(&left), "{left}");
    match class {
        ProbeClass::Degraded(why) => assert!(
            why == "certificate expires in 3d" || why.starts_with("certificate expires in 2d 23h"),
            "{why}"
        ),
        other => panic!("soon: {other:?}"),
    }

    let (class, r) = &got["expired"];
    assert_eq!(r.error.as_deref(), Some("certificate expired"), "{r:?}");
    let left = r.expires_in_s.expect("the expiry of a refused certificate");
    assert!((-2 * DAY - 60..=-2 * DAY + 60).contains(&left), "{left}");
    assert!(matches!(class, ProbeClass::Failed(_)));

    let (class, r) = &got["later"];
    assert_eq!(
        r.error.as_deref(),
        Some("certificate not yet valid"),
        "{r:?}"
    );
    assert!(matches!(class, ProbeClass::Failed(_)));

    let (class, r) = &got["stranger"];
    assert_eq!(
        r.error.as_deref(),
        Some("certificate not trusted: unknown issuer"),
        "{r:?}"
    );
    assert!(matches!(class, ProbeClass::Failed(_)));
    for s in servers {
        s.abort();
    }
}

// ---------------------------------------------------------------------------
// Through the daemon

/// A tcp probe of a server's port: the port closes, the component is down
/// and an incident opens with the service that needs it; the port opens
/// again and the incident resolves. The tls probe's expiry is a metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_tcp_probe_opens_an_incident_through_the_daemon_and_recovers() {
    // A port of our own, refusing until the test listens on it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let server = listen_on(port);
    let probes = format!(
        r#"
[[probe]]
id = "srv-8-ssh"
component = "srv-8"
kind = "tcp"
address = "127.0.0.1:{port}"
max_rtt = "500ms"
every = "200ms"
timeout = "150ms"
fail_after = 2
recover_after = 2
"#
    );
    let d = Daemon::start(
        "probe-tcp",
        &(common::daemon::config_without_mqtt() + &probes),
    );
    let client = http();
    wait_ready(&client, &d).await;
    eventually("the open port is up", Duration::from_secs(20), || async {
        (metric(&client, &d, "beredskab_probe_up{probe=\"srv-8-ssh\"}").await == 1.0).then_some(())
    })
    .await;
    server.abort();
    let _ = server.await;
    let list = eventually(
        "the closed port opens an incident",
        Duration::from_secs(20),
        || async {
            let list = incidents(&client, &d).await;
            (!list.is_empty()).then_some(list)
        },
    )
    .await;
    assert_eq!(list[0]["root"], "srv-8", "{list:?}");
    assert_eq!(list[0]["services"], serde_json::json!(["apps"]), "{list:?}");
    assert_eq!(
        metric(&client, &d, "beredskab_probe_up{probe=\"srv-8-ssh\"}").await,
        0.0
    );
    let _server = listen_on(port);
    eventually(
        "the port answers again and the incident resolves",
        Duration::from_secs(20),
        || async {
            let list = incidents(&client, &d).await;
            (list[0]["state"] == "resolved").then_some(())
        },
    )
    .await;
    let mut d = d;
    assert!(d.terminate().success());
}

/// Accepts connections on 127.0.0.1:`port` (and holds them) until aborted.
fn listen_on(port: u16) -> JoinHandle<()> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the probed port");
    listener.set_nonblocking(true).expect("nonblocking");
    let listener = TcpListener::from_std(listener).expect("a tokio listener");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    })
}

// ---------------------------------------------------------------------------
// check

fn check_errors(probe: &str) -> Vec<String> {
    let text = format!("{NET_PLAN}{probe}");
    match load_str("t.toml", &text) {
        Ok(_) => Vec::new(),
        Err(LoadError::Invalid(d)) => d
            .iter()
            .map(|d| {
                // Lines counted from the probe's own first line.
                let line = d.line - NET_PLAN.lines().count();
                format!("{line}:{}: {}", d.col, d.message)
            })
            .collect(),
        Err(e) => vec![e.to_string()],
    }
}

#[test]
fn bad_probe_settings_are_check_errors_at_their_line_and_column() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[[probe]]\nid = \"a\"\ncomponent = \"switch\"\nkind = \"tcp\"\naddress = \"10.0.0.2\"\n",
            &["5:11: probe \"a\": address \"10.0.0.2\" has no port (HOST:PORT)"],
        ),
        (
            "[[probe]]\nid = \"a\"\ncomponent = \"switch\"\nkind = \"tcp\"\naddress = \"fw:22\"\nurl = \"http://x/\"\n",
            &["6:1: probe \"a\": url is a key of http probes, not of a tcp probe"],
        ),
        (
            "[[probe]]\nid = \"a\"\ncomponent = \"switch\"\nkind = \"icmp\"\nhost = \"10.0.0.1\"\ncount = 0\n",
            &["6:9: probe \"a\": count must be 1 to 100 echoes, not 0"],
        ),
        (
            "[[probe]]\nid = \"a\"\ncomponent = \"switch\"\nkind = \"dns\"\nserver = \"10.0.0.53:53\"\nname = \"x.dk\"\nrecord = \"AX\"\n",
            &[
                "7:10: probe \"a\": record \"AX\" is not a DNS record type a probe can ask for \
                 (A, AAAA, MX, TXT, CNAME, NS, SRV, PTR, SOA, …)",
            ],
        ),
        (
            "[[probe]]\nid = \"a\"\ncomponent = \"switch\"\nkind = \"dns\"\nserver = \"dns.example.dk\"\nname = \"x.dk\"\n",
            &[
                "5:10: probe \"a\": server \"dns.example.dk\" is not an IP address, with or without \
                 a port (10.0.0.53, 10.0.0.53:53, [fd00::53]:53)",
            ],
        ),
        (
            "[[probe]]\nid = \"a\"\ncomponent = \"switch\"\nkind = \"tls\"\naddress = \"www.example.dk:443\"\nmax_rtt = \"1s\"\nwarn_before = \"0s\"\n",
            &[
                "6:1: probe \"a\": max_rtt is a key of icmp and tcp probes, not of a tls probe",
                "7:15: probe \"a\": warn_before must be greater than zero",
            ],
        ),
        (
            "[[probe]]\nid = \"a\"\ncomponent = \"switch\"\nkind = \"icmp\"\n",
            &["1:1: probe \"a\": icmp probes need host"],
        ),
        (
            "[[probe]]\nid = \"a\"\ncomponent = \"switch\"\nkind = \"snmp\"\nhost = \"x\"\n",
            &[
                "4:8: kind in [[probe]]: unknown variant \"snmp\", expected one of \"http\", \"icmp\", \"tcp\", \"dns\", \"tls\"",
            ],
        ),
    ];
    for (probe, expected) in cases {
        assert_eq!(check_errors(probe), *expected, "{probe}");
    }
    // Every kind as the SPEC writes it is valid.
    let spec = r#"[[probe]]
id = "core-switch-ping"
component = "switch"
kind = "icmp"
host = "10.0.0.1"
count = 3
max_rtt = "200ms"
every = "10s"
[[probe]]
id = "firewall-ssh"
component = "switch"
kind = "tcp"
address = "10.0.0.2:22"
[[probe]]
id = "intern-dns"
component = "switch"
kind = "dns"
server = "10.0.0.53:53"
name = "intranet.example.dk"
record = "A"
[[probe]]
id = "web-cert"
component = "switch"
kind = "tls"
address = "www.example.dk:443"
warn_before = "14d"
"#;
    assert_eq!(check_errors(spec), Vec::<String>::new());
}

/// Without unprivileged ping for its group and without CAP_NET_RAW, a
/// daemon with an icmp probe refuses to start and names both remedies. The
/// daemon runs as nobody with no capabilities (setpriv); where the sysctl
/// allows ping for nobody's group, it starts instead.
#[test]
fn a_daemon_that_may_open_no_icmp_socket_refuses_to_start_naming_both_remedies() {
    assert_eq!(
        Command::new("id").arg("-u").output().expect("id").stdout,
        b"0\n",
        "this test drops root's privileges with setpriv: run it as root"
    );
    let setpriv = find_program("setpriv", "/usr/bin/setpriv")
        .unwrap_or_else(|| panic!("setpriv not found (Debian's util-linux)"));
    let dir = common::write_temp("icmp-refused-marker", "")
        .with_file_name(format!("icmp-refused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let config = dir.join("beredskab.toml");
    std::fs::write(
        &config,
        format!(
            "{NET_PLAN}[server]\nlisten = \"127.0.0.1:0\"\n[[probe]]\nid = \"ping\"\n\
             component = \"switch\"\nkind = \"icmp\"\nhost = \"127.0.0.1\"\n"
        ),
    )
    .expect("write config");
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .expect("read net.ipv4.ping_group_range");
    let bounds: Vec<u64> = range
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let nobody_may_ping = bounds.len() == 2 && (bounds[0]..=bounds[1]).contains(&65534);
    // A copy nobody can reach: the build directory may sit below a home
    // folder that only root may enter.
    let binary = dir.join("beredskab");
    std::fs::copy(env!("CARGO_BIN_EXE_beredskab"), &binary).expect("copy the binary");
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut child = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["--inh-caps=-all", "--bounding-set=-all"])
        .arg(&binary)
        .args(["run", "-c"])
        .arg(&config)
        .current_dir(&dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon as nobody");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(50 * MS);
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    let _ = std::fs::remove_dir_all(&dir);
    if nobody_may_ping {
        assert!(status.is_none(), "the daemon stopped: {stderr}");
        assert!(stderr.contains("probe collector started"), "{stderr}");
    } else {
        let status = status.expect("the daemon refuses to start");
        assert!(!status.success());
        assert!(
            stderr.contains("icmp probes cannot open an IPv4 ICMP socket")
                && stderr.contains("net.ipv4.ping_group_range")
                && stderr.contains("AmbientCapabilities=CAP_NET_RAW"),
            "{stderr}"
        );
    }
}
