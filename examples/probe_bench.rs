//! Load check of the probe collector, driven by `bench/probes.sh`.
//!
//! `probe_bench serve N` starts N HTTP servers on 127.0.0.1 (port 0), prints
//! `ports: P1,P2,…` and serves until killed: every path answers 200 with a
//! small JSON body (a running generator with 80 % fuel, for the example
//! configuration's generator probe), so thousands of probes can each have a
//! URL of their own (`bench/probes.sh` points both the daemon and
//! blackbox_exporter at them, `bench/memory.sh` the example's probes);
//! `/answered` says how many requests the servers have answered so far.
//! `probe_bench serve-tls CERT KEY N` does the same with N TLS servers
//! (rustls) that complete a handshake and close.
//! `probe_bench probe PORTS PROBES EVERY SECS [KIND [CA]]` runs PROBES
//! probes of KIND (http, the default; tcp, tls, dns or icmp) spread over
//! those ports, every EVERY, for SECS, and prints the CPU time the collector
//! process used and how late probe starts were against their timetable.
//! tcp connects to the ports, tls handshakes with them trusting CA, dns
//! asks the server at each port (dnsmasq, started by the script) for
//! `bench.example.dk`, and icmp pings 127.0.0.1 (3 echoes per check; the
//! ports are ignored).
//!
//! A report carries no deadline, so lateness is estimated per probe: each
//! start (received − elapsed) is placed on the grid `first + k × every`, and
//! its lateness is its offset from that grid less the probe's smallest
//! offset. It is a lower bound where every start of a probe was late.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use beredskab::collect::probe::{ProbeCollector, ProbeReport};
use beredskab::config::{ProbeConfig, ProbeKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage: probe_bench serve N | serve-tls CERT KEY N | \
                     probe PORTS PROBES EVERY SECS [KIND [CA]]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", n] => serve(n.parse()?).await,
        ["serve-tls", cert, key, n] => serve_tls(cert, key, n.parse()?).await,
        ["probe", ports, probes, every, secs, ref rest @ ..] if rest.len() <= 2 => {
            let ports = ports
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<u16>, _>>()?;
            let kind = match rest.first().copied().unwrap_or("http") {
                "http" => ProbeKind::Http,
                "tcp" => ProbeKind::Tcp,
                "tls" => ProbeKind::Tls,
                "dns" => ProbeKind::Dns,
                "icmp" => ProbeKind::Icmp,
                other => anyhow::bail!("unknown kind {other:?}\n{USAGE}"),
            };
            probe(
                &ports,
                probes.parse()?,
                humantime::parse_duration(every)?,
                Duration::from_secs(secs.parse()?),
                kind,
                rest.get(1).copied(),
            )
            .await
        }
        _ => anyhow::bail!(USAGE),
    }
}

async fn serve(n: usize) -> anyhow::Result<()> {
    static ANSWERED: AtomicU64 = AtomicU64::new(0);
    let app = axum::Router::new()
        .route(
            "/answered",
            axum::routing::get(|| async { ANSWERED.load(Ordering::Relaxed).to_string() }),
        )
        .fallback(axum::routing::get(|| async {
            ANSWERED.fetch_add(1, Ordering::Relaxed);
            r#"{"ok":true,"running":true,"fuel_percent":80}"#
        }));
    let mut ports = Vec::new();
    for _ in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        ports.push(listener.local_addr()?.port().to_string());
        tokio::spawn(axum::serve(listener, app.clone()).into_future());
    }
    println!("ports: {}", ports.join(","));
    std::future::pending().await
}

async fn serve_tls(cert: &str, key: &str, n: usize) -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    beredskab::tls::install_provider();
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let mut ports = Vec::new();
    for _ in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        ports.push(listener.local_addr()?.port().to_string());
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                    }
                });
            }
        });
    }
    println!("ports: {}", ports.join(","));
    std::future::pending().await
}

async fn probe(
    ports: &[u16],
    n: usize,
    every: Duration,
    secs: Duration,
    kind: ProbeKind,
    ca: Option<&str>,
) -> anyhow::Result<()> {
    anyhow::ensure!(!ports.is_empty(), "no ports");
    let probes: Vec<ProbeConfig> = (0..n)
        .map(|i| {
            let port = ports[i % ports.len()];
            let mut p = ProbeConfig {
                id: format!("p{i}"),
                component: "c".into(),
                kind,
                every,
                timeout: Duration::from_secs(2),
                ..ProbeConfig::default()
            };
            match kind {
                ProbeKind::Http => p.url = Some(format!("http://127.0.0.1:{port}/health")),
                ProbeKind::Tcp | ProbeKind::Tls => p.address = Some(format!("127.0.0.1:{port}")),
                ProbeKind::Dns => {
                    p.server = Some(format!("127.0.0.1:{port}"));
                    p.name = Some("bench.example.dk".into());
                }
                ProbeKind::Icmp => p.host = Some("127.0.0.1".into()),
            }
            p
        })
        .collect();
    let collector = match ca {
        Some(ca) => ProbeCollector::with_root_certificates(&probes, std::path::Path::new(ca))?,
        None => ProbeCollector::new(&probes)?,
    };
    let (tx, mut rx) = mpsc::channel::<ProbeReport>(4096);
    let shutdown = CancellationToken::new();
    let cpu_before = cpu_seconds()?;
    let started = Instant::now();
    let task = tokio::spawn(collector.run(tx, shutdown.clone()));

    let mut starts: HashMap<String, Vec<Instant>> = HashMap::new();
    let mut errors = 0usize;
    let mut reports = 0usize;
    let until = started + secs;
    while let Ok(Some(r)) = tokio::time::timeout_at(until, rx.recv()).await {
        let at = Instant::now();
        reports += 1;
        errors += usize::from(r.result.error.is_some());
        starts.entry(r.id).or_default().push(at - r.elapsed);
    }
    shutdown.cancel();
    task.await?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds()? - cpu_before;

    let mut late_ms = Vec::new();
    let mut skipped = 0u64;
    for s in starts.values() {
        let every_ms = every.as_secs_f64() * 1e3;
        let offsets: Vec<(f64, f64)> = s
            .iter()
            .map(|t| {
                let since = (*t - s[0]).as_secs_f64() * 1e3;
                let k = (since / every_ms).round();
                (k, since - k * every_ms)
            })
            .collect();
        let min = offsets.iter().map(|o| o.1).fold(f64::MAX, f64::min);
        late_ms.extend(offsets.iter().map(|o| o.1 - min));
        skipped += offsets
            .windows(2)
            .map(|w| (w[1].0 - w[0].0 - 1.0).max(0.0) as u64)
            .sum::<u64>();
    }
    late_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| late_ms[((late_ms.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    anyhow::ensure!(!late_ms.is_empty(), "no reports");
    println!(
        "probes: {n} {kind} every {} over {} servers for {wall:.1} s",
        humantime::format_duration(every),
        ports.len()
    );
    println!("reports: {reports} ({errors} errors, {skipped} deadlines skipped)");
    println!(
        "cpu: {cpu:.2} s ({:.1} % of one core), {:.0} µs per probe check",
        cpu / wall * 100.0,
        cpu / reports.max(1) as f64 * 1e6
    );
    println!(
        "start lateness: median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.5),
        pct(0.99),
        late_ms[late_ms.len() - 1]
    );
    if let Some(hwm) = peak_rss_kib() {
        println!("peak rss: {} MiB", hwm / 1024);
    }
    Ok(())
}

/// User plus system CPU time of this process, from /proc/self/stat; the
/// clock tick comes from `CLK_TCK` (the script passes `getconf CLK_TCK`).
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses: state is
    // field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("odd /proc/self/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/self/stat"))?
            .parse::<f64>()?)
    };
    let hz: f64 = std::env::var("CLK_TCK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100.0);
    Ok((ticks(11)? + ticks(12)?) / hz)
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
