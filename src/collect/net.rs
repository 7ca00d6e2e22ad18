//! The network kinds of probe, for gear without an HTTP health endpoint:
//! ICMP echoes (surge-ping), a TCP connection, a DNS query (hickory-proto
//! messages over UDP, TCP when truncated) and a TLS handshake (rustls with
//! ring) whose certificate's expiry is read with x509-parser.
//!
//! Each check here is one attempt without its timeout: the probe
//! collector (`probe.rs`) runs them on the same timetable, timeout and
//! shared runtime as its HTTP requests, and the engine judges the result
//! (`engine::intake::classify`).
//!
//! ICMP uses unprivileged datagram sockets where the kernel allows them
//! (`net.ipv4.ping_group_range` holds the process's group), raw sockets
//! with CAP_NET_RAW otherwise: [`icmp_socket`] tells which, or why neither,
//! before anything runs.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tracing::debug;

use crate::engine::ProbeResult;

/// The payload of each echo: recognisable in a packet capture.
const ECHO_PAYLOAD: &[u8; 24] = b"beredskab icmp probe....";

/// The largest DNS answer read over UDP (EDNS is not asked for; 512 is
/// the classic limit, a little more costs nothing).
const DNS_UDP_MAX: usize = 4096;

// ---------------------------------------------------------------------------
// ICMP

/// What kind of ICMP socket the process may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpSocket {
    /// An unprivileged datagram socket (`net.ipv4.ping_group_range`).
    Datagram,
    /// A raw socket (CAP_NET_RAW).
    Raw,
}

/// Which ICMP socket for `v6` (IPv6) or IPv4 the process may open, tried
/// in that order; the error names both remedies.
pub fn icmp_socket(v6: bool) -> Result<IcmpSocket, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (domain, protocol, family) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6, "IPv6")
    } else {
        (Domain::IPV4, Protocol::ICMPV4, "IPv4")
    };
    let dgram = match Socket::new(domain, Type::DGRAM, Some(protocol)) {
        Ok(_) => return Ok(IcmpSocket::Datagram),
        Err(e) => e,
    };
    let raw = match Socket::new(domain, Type::RAW, Some(protocol)) {
        Ok(_) => return Ok(IcmpSocket::Raw),
        Err(e) => e,
    };
    Err(format!(
        "icmp probes cannot open an {family} ICMP socket: an unprivileged ping socket was \
         refused ({dgram}) and a raw one too ({raw}). Either allow unprivileged ping for the \
         service's group (sysctl -w net.ipv4.ping_group_range=\"0 2147483647\", or a range \
         holding its gid, in /etc/sysctl.d/) or give the service CAP_NET_RAW \
         (AmbientCapabilities=CAP_NET_RAW in its systemd unit)"
    ))
}

/// The shared ICMP clients, one socket per address family, opened on first
/// use: thousands of icmp probes share two sockets and their reader tasks.
#[derive(Default)]
pub(super) struct Icmp {
    v4: OnceCell<Result<surge_ping::Client, String>>,
    v6: OnceCell<Result<surge_ping::Client, String>>,
}

/// Echo sequence numbers, shared by every probe: two probes pinging one
/// host never wait for the same reply (datagram sockets leave the
/// identifier to the kernel, so replies are told apart by sequence).
static SEQUENCE: AtomicU16 = AtomicU16::new(0);

impl Icmp {
    async fn client(&self, ip: IpAddr) -> Result<&surge_ping::Client, String> {
        let (cell, kind) = match ip {
            IpAddr::V4(_) => (&self.v4, surge_ping::ICMP::V4),
            IpAddr::V6(_) => (&self.v6, surge_ping::ICMP::V6),
        };
        let client = cell
            .get_or_init(|| async move {
                icmp_socket(kind == surge_ping::ICMP::V6)?;
                let config = surge_ping::Config::builder().kind(kind).build();
                surge_ping::Client::new(&config).map_err(|e| format!("icmp socket: {e}"))
            })
            .await;
        client.as_ref().map_err(Clone::clone)
    }

    /// `count` echoes to `host`, one after the other, each waiting up to
    /// `wait`: answered with the mean round trip when any came back.
    pub(super) async fn ping(&self, host: &str, count: u32, wait: Duration) -> ProbeResult {
        let ip = match resolve_ip(host).await {
            Ok(ip) => ip,
            Err(e) => return ProbeResult::failed(e),
        };
        let client = match self.client(ip).await {
            Ok(c) => c,
            Err(e) => return ProbeResult::failed(e),
        };
        let mut pinger = client
            .pinger(ip, surge_ping::PingIdentifier(fastrand::u16(..)))
            .await;
        pinger.timeout(wait);
        let mut rtts = Vec::with_capacity(count as usize);
        let mut other = None;
        for _ in 0..count {
            let seq = surge_ping::PingSequence(SEQUENCE.fetch_add(1, Ordering::Relaxed));
            match pinger.ping(seq, ECHO_PAYLOAD).await {
                Ok((_, rtt)) => rtts.push(rtt),
                Err(surge_ping::SurgeError::Timeout { .. }) => {}
                Err(e) => other = Some(e.to_string()),
            }
        }
        if rtts.is_empty() {
            let why = match other {
                Some(e) => format!("all {count} echoes lost: {e}"),
                None => format!("all {count} echoes lost"),
            };
            return ProbeResult::failed(why);
        }
        let mean = rtts.iter().sum::<Duration>() / rtts.len() as u32;
        if rtts.len() < count as usize {
            debug!(
                host,
                lost = count as usize - rtts.len(),
                count,
                "icmp echoes lost"
            );
        }
        ProbeResult {
            rtt_ms: Some(mean.as_secs_f64() * 1000.0),
            ..ProbeResult::answered()
        }
    }
}

/// An IP address as written, or the first address of a host name.
async fn resolve_ip(host: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    match tokio::net::lookup_host((host, 0)).await {
        Ok(mut addrs) => addrs
            .next()
            .map(|a| a.ip())
            .ok_or_else(|| format!("{host}: no address")),
        Err(e) => Err(format!("{host}: {e}")),
    }
}

// ---------------------------------------------------------------------------
// TCP

/// A TCP connection to `address` (`HOST:PORT`), closed at once: answered
/// with the time it took.
pub(super) async fn connect(address: &str) -> ProbeResult {
    let started = Instant::now();
    match TcpStream::connect(address).await {
        Ok(stream) => {
            let rtt = started.elapsed();
            drop(stream);
            ProbeResult {
                rtt_ms: Some(rtt.as_secs_f64() * 1000.0),
                ..ProbeResult::answered()
            }
        }
        Err(e) => ProbeResult::failed(io_error(&e)),
    }
}

/// `connection refused`, `host unreachable`, … or the error's own words.
pub(super) fn io_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        io::ErrorKind::ConnectionAborted => "connection aborted".to_owned(),
        io::ErrorKind::HostUnreachable => "host unreachable".to_owned(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".to_owned(),
        io::ErrorKind::UnexpectedEof => "connection closed".to_owned(),
        _ => e.to_string(),
    }
}

// ---------------------------------------------------------------------------
// DNS

/// What a dns probe asks.
#[derive(Debug, Clone)]
pub(super) struct DnsQuestion {
    pub server: SocketAddr,
    pub name: Name,
    pub record: RecordType,
}

impl DnsQuestion {
    /// From a checked config: `server`, `name` and `record`.
    pub(super) fn new(server: &str, name: &str, record: &str) -> Result<DnsQuestion, String> {
        let server = crate::config::dns_server(server)
            .ok_or_else(|| format!("server {server:?} is not an IP address with a port"))?;
        let mut name =
            Name::from_ascii(name).map_err(|e| format!("name {name:?} is not a DNS name: {e}"))?;
        // Asked as written: a resolver's search domains play no part.
        name.set_fqdn(true);
        let record = record
            .to_ascii_uppercase()
            .parse()
            .ok()
            .filter(|_| crate::config::is_record_type(record))
            .ok_or_else(|| format!("record {record:?} is not a DNS record type"))?;
        Ok(DnsQuestion {
            server,
            name,
            record,
        })
    }

    /// Asks once (over TCP when the UDP answer is truncated): answered when
    /// the reply holds a record of the type asked for.
    pub(super) async fn ask(&self) -> ProbeResult {
        match self.exchange().await {
            Ok(reply) => self.judge(&reply),
            Err(e) => ProbeResult::failed(e),
        }
    }

    fn judge(&self, reply: &Message) -> ProbeResult {
        let code = reply.metadata.response_code;
        if code != ResponseCode::NoError {
            let word = match code {
                ResponseCode::NXDomain => "NXDOMAIN".to_owned(),
                ResponseCode::ServFail => "SERVFAIL".to_owned(),
                ResponseCode::Refused => "REFUSED".to_owned(),
                other => other.to_string(),
            };
            return ProbeResult::failed(format!("{word} for {} {}", self.name, self.record));
        }
        if reply.answers.iter().any(|r| r.record_type() == self.record) {
            ProbeResult::answered()
        } else {
            ProbeResult::failed(format!("no {} answer for {}", self.record, self.name))
        }
    }

    async fn exchange(&self) -> Result<Message, String> {
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(self.name.clone(), self.record));
        let id = query.metadata.id;
        let bytes = query.to_vec().map_err(|e| format!("dns query: {e}"))?;
        let bind: SocketAddr = if self.server.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(bind).await.map_err(|e| io_error(&e))?;
        socket
            .connect(self.server)
            .await
            .map_err(|e| io_error(&e))?;
        socket.send(&bytes).await.map_err(|e| io_error(&e))?;
        let mut buf = vec![0u8; DNS_UDP_MAX];
        let reply = loop {
            let n = socket.recv(&mut buf).await.map_err(|e| io_error(&e))?;
            // A stray or forged datagram is skipped; the timeout bounds the wait.
            if let Ok(reply) = Message::from_vec(&buf[..n])
                && reply.metadata.id == id
            {
                break reply;
            }
        };
        if !reply.metadata.truncation {
            return Ok(reply);
        }
        self.exchange_tcp(&bytes, id).await
    }

    async fn exchange_tcp(&self, query: &[u8], id: u16) -> Result<Message, String> {
        let mut stream = TcpStream::connect(self.server)
            .await
            .map_err(|e| format!("dns over tcp: {}", io_error(&e)))?;
        let len = u16::try_from(query.len()).map_err(|_| "dns query too long".to_owned())?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(query);
        stream
            .write_all(&framed)
            .await
            .map_err(|e| format!("dns over tcp: {}", io_error(&e)))?;
        let len = stream
            .read_u16()
            .await
            .map_err(|e| format!("dns over tcp: {}", io_error(&e)))?;
        let mut buf = vec![0u8; usize::from(len)];
        stream
            .read_exact(&mut buf)
            .await
            .map_err(|e| format!("dns over tcp: {}", io_error(&e)))?;
        let reply = Message::from_vec(&buf).map_err(|e| format!("dns reply: {e}"))?;
        if reply.metadata.id != id {
            return Err("dns reply to another query".to_owned());
        }
        Ok(reply)
    }
}

// ---------------------------------------------------------------------------
// TLS

/// The root certificates tls probes trust: those in `roots`, or else those
/// `rustls-native-certs` finds (`SSL_CERT_FILE`, `SSL_CERT_DIR`, or the
/// system's store).
pub(super) fn load_roots(roots: Option<&Path>) -> Result<Arc<RootCertStore>, String> {
    let (found, source) = match roots {
        Some(path) => (
            rustls_native_certs::load_certs_from_paths(Some(path), None),
            path.display().to_string(),
        ),
        None => (
            rustls_native_certs::load_native_certs(),
            "the system's roots".to_owned(),
        ),
    };
    let problems: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
    let mut store = RootCertStore::empty();
    let (added, skipped) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let mut error = match roots {
            Some(_) => format!("tls probes: {source}: no usable root certificate"),
            None => "tls probes: no usable root certificate: set SSL_CERT_FILE or install the \
                     system's CA certificates"
                .to_owned(),
        };
        if !problems.is_empty() {
            error.push_str(&format!(" ({})", problems.join("; ")));
        }
        return Err(error);
    }
    debug!(roots = %source, added, skipped, unreadable = ?problems, "tls probe roots loaded");
    Ok(Arc::new(store))
}

/// A handshake with `address`, verifying its certificate for `server_name`
/// against `roots`: answered with the seconds the certificate has left;
/// failed (with those seconds, when a certificate came) when it does not
/// verify.
pub(super) async fn handshake(
    address: &str,
    server_name: &ServerName<'static>,
    roots: &Arc<RootCertStore>,
) -> ProbeResult {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = match WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
    {
        Ok(v) => v,
        Err(e) => return ProbeResult::failed(format!("tls: {e}")),
    };
    let verifier = Arc::new(Recording {
        inner,
        leaf: Mutex::new(None),
    });
    let mut config = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth(),
        Err(e) => return ProbeResult::failed(format!("tls: {e}")),
    };
    // Every check sees the certificate: a resumed session would skip it.
    config.resumption = Resumption::disabled();
    let tcp = match TcpStream::connect(address).await {
        Ok(s) => s,
        Err(e) => return ProbeResult::failed(io_error(&e)),
    };
    let outcome = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name.clone(), tcp)
        .await;
    let leaf = verifier
        .leaf
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let expires_in_s = leaf.as_deref().and_then(seconds_left);
    match outcome {
        Ok(mut stream) => {
            // A polite close; the result does not depend on it.
            let _ = stream.shutdown().await;
            match expires_in_s {
                Some(left) => ProbeResult {
                    expires_in_s: Some(left),
                    ..ProbeResult::answered()
                },
                None => ProbeResult::failed("certificate: cannot read its expiry"),
            }
        }
        Err(e) => ProbeResult {
            error: Some(tls_error(&e, server_name)),
            expires_in_s,
            ..ProbeResult::default()
        },
    }
}

/// Seconds from now until the certificate's notAfter (negative once past).
pub fn seconds_left(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(not_after.saturating_sub(i64::try_from(now).ok()?))
}

/// What went wrong in a handshake, in a few words.
fn tls_error(e: &io::Error, server_name: &ServerName<'_>) -> String {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return io_error(e);
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not yet valid".to_owned()
            }
            CertificateError::UnknownIssuer => "certificate not trusted: unknown issuer".to_owned(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("certificate not valid for {}", server_name.to_str())
            }
            other => format!("certificate invalid: {other:?}"),
        },
        other => format!("tls: {other}"),
    }
}

/// The webpki verifier, keeping the end-entity certificate it was shown
/// so that its expiry is known even when it does not verify.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    leaf: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self
            .leaf
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(end_entity.to_vec());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_questions_are_checked() {
        let q = DnsQuestion::new("127.0.0.1:5353", "intranet.example.dk", "aaaa").unwrap();
        assert_eq!(q.server, "127.0.0.1:5353".parse().unwrap());
        assert_eq!(q.record, RecordType::AAAA);
        assert!(q.name.is_fqdn());
        assert_eq!(
            DnsQuestion::new("10.0.0.53", "x.dk", "A").unwrap().server,
            "10.0.0.53:53".parse().unwrap()
        );
        assert!(DnsQuestion::new("dns.example.dk:53", "x.dk", "A").is_err());
        assert!(DnsQuestion::new("10.0.0.53", "x.dk", "AXFR").is_err());
        assert!(DnsQuestion::new("10.0.0.53", "x.dk", "BOGUS").is_err());
    }

    /// The socket layer of ICMP on this machine: whichever socket the
    /// process may open, or an error that names both remedies.
    #[test]
    fn icmp_sockets_are_opened_or_refused_with_both_remedies() {
        for v6 in [false, true] {
            match icmp_socket(v6) {
                Ok(kind) => assert!(matches!(kind, IcmpSocket::Datagram | IcmpSocket::Raw)),
                Err(e) => {
                    assert!(e.contains("ping_group_range"), "{e}");
                    assert!(e.contains("CAP_NET_RAW"), "{e}");
                }
            }
        }
    }
}
