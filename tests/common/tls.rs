//! Throwaway certificates for TLS tests, made at test time with the
//! `openssl` command: a CA, and a server certificate for 127.0.0.1 and
//! localhost signed by it. OpenSSL is required: a missing `openssl` fails
//! the tests, it never skips them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::broker::find_program;

/// The CA's extensions, in a config of our own: the system's openssl.cnf
/// decides nothing.
const CA_CONF: &str = "\
[req]
distinguished_name = dn
prompt = no
x509_extensions = ca
[dn]
CN = beredskab test server
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
";

/// What a server certificate needs for rustls (webpki): v3, the address in
/// subjectAltName, serverAuth.
const SERVER_EXT: &str = "\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// A CA and one server certificate it signed, as PEM files in `dir`.
pub struct Pki {
    pub dir: PathBuf,
    /// The CA certificate: what clients trust.
    pub ca: PathBuf,
    /// The CA's key, to sign more server certificates ([`Pki::sign_server`]).
    pub ca_key: PathBuf,
    /// The server's certificate and its (unencrypted) key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn openssl_binary() -> PathBuf {
    find_program("openssl", "/usr/bin/openssl").unwrap_or_else(|| {
        panic!(
            "openssl not found on PATH or at /usr/bin/openssl: the TLS tests make their \
             certificates with it. Install Debian's: apt-get update && apt-get install -y openssl"
        )
    })
}

impl Pki {
    /// A new CA (`NAME-ca.pem`) and a server certificate for 127.0.0.1
    /// (`NAME-server.pem`, `NAME-server.key`) in `dir`. P-256 keys: made in
    /// milliseconds, and supported by both Mosquitto's OpenSSL and ring.
    pub fn generate(dir: &Path, name: &str) -> Pki {
        let file = |suffix: &str| dir.join(format!("{name}-{suffix}"));
        let (ca_conf, ca_key, ca) = (file("ca.cnf"), file("ca.key"), file("ca.pem"));
        let (server_ext, csr) = (file("server.ext"), file("server.csr"));
        let (key, cert) = (file("server.key"), file("server.pem"));
        write(&ca_conf, CA_CONF);
        write(&server_ext, SERVER_EXT);

        let p256 = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        // A name of its own: a client that trusts another test CA must not
        // take this one for it (it would report a bad signature, not an
        // unknown issuer).
        static N: AtomicU32 = AtomicU32::new(0);
        let subject = format!(
            "/CN=beredskab test CA {name} {}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run(openssl()
            .args(["req", "-x509", "-days", "2", "-subj", &subject, "-config"])
            .arg(&ca_conf)
            .args(p256)
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca));
        run(openssl()
            .args(["req", "-new", "-subj", "/CN=127.0.0.1", "-config"])
            .arg(&ca_conf)
            .args(p256)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        run(openssl()
            .args(["x509", "-req", "-days", "2", "-sha256", "-set_serial", "2"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&server_ext)
            .arg("-out")
            .arg(&cert));
        Pki {
            dir: dir.to_path_buf(),
            ca,
            ca_key,
            cert,
            key,
        }
    }

    /// Another server certificate for 127.0.0.1 and localhost signed by
    /// this CA (`NAME.pem`, `NAME.key`), valid for `days` from now, or from
    /// `shift` (libfaketime's `FAKETIME`, e.g. `-3d`) when given: openssl
    /// takes no date in the past, so an expired certificate is made under
    /// libfaketime. Returns the certificate and its key.
    pub fn sign_server(&self, name: &str, days: u32, shift: Option<&str>) -> (PathBuf, PathBuf) {
        let file = |suffix: &str| self.dir.join(format!("{name}.{suffix}"));
        let (ext, csr, key, cert) = (file("ext"), file("csr"), file("key"), file("pem"));
        write(&ext, SERVER_EXT);
        run(openssl()
            .args(["req", "-new", "-subj", "/CN=127.0.0.1", "-newkey", "ec"])
            .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        let mut sign = openssl();
        if let Some(shift) = shift {
            sign.env("LD_PRELOAD", libfaketime()).env("FAKETIME", shift);
        }
        run(sign
            .args(["x509", "-req", "-sha256", "-set_serial"])
            .arg(format!("{}", 100 + days))
            .arg("-days")
            .arg(days.to_string())
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&self.ca)
            .arg("-CAkey")
            .arg(&self.ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert));
        (cert, key)
    }
}

/// Debian's libfaketime; a missing one fails the test that needs it.
pub fn libfaketime() -> PathBuf {
    for dir in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ] {
        let path = Path::new(dir).join("faketime/libfaketime.so.1");
        if path.exists() {
            return path;
        }
    }
    panic!(
        "libfaketime not found: an expired certificate is made under it. Install Debian's: \
         apt-get update && apt-get install -y faketime"
    )
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn openssl() -> Command {
    Command::new(openssl_binary())
}

/// Runs an openssl command; panics with its output when it fails.
fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// An HTTPS client that trusts only the CA in `ca` (no system roots) and
/// keeps what it learnt of each connection's TLS (`TlsInfo`), with a fresh
/// connection pool: every client makes its own handshakes.
pub fn https_client(ca: &Path) -> reqwest::Client {
    beredskab::tls::install_provider();
    let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("read {}: {e}", ca.display()));
    let cert = reqwest::Certificate::from_pem(&pem).expect("the CA is PEM");
    reqwest::Client::builder()
        .tls_certs_only([cert])
        .tls_info(true)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("https client")
}

/// The DER of the first certificate in a PEM file: what a client sees as
/// the peer's certificate.
pub fn der(pem: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(pem)
        .unwrap_or_else(|e| panic!("read {}: {e}", pem.display()))
        .to_vec()
}
