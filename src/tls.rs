//! The crate's one TLS stack: rustls with ring. Mail (lettre), the HTTP
//! clients (reqwest, built without a provider of their own), the MQTT
//! collector and the daemon all use the provider installed here.
//!
//! The HTTPS listener (`[server] tls_cert`, `tls_key`) reads its
//! certificate chain and key with [`load_server_key`] and serves them
//! through a [`ServerCert`], whose key a reload replaces for the
//! connections that come after it.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Installs ring as rustls's process-wide crypto provider. Safe to call
/// from every TLS user, in any order: the first call installs it, later
/// ones find it there.
pub fn install_provider() {
    // A second install fails only because the same provider is already in.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why a certificate and key pair cannot be served, by the file to blame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyPairError {
    /// The certificate file cannot be read or holds no certificate.
    #[error("{0}")]
    Cert(String),
    /// The key file cannot be read, holds no key, or a key ring cannot use.
    #[error("{0}")]
    Key(String),
    /// Both read, but the key is not the certificate's.
    #[error("{0}")]
    Mismatch(String),
}

/// Reads a PEM certificate chain (the server's certificate first) and its
/// PEM private key (PKCS #8, PKCS #1 or SEC1), and checks that they belong
/// together.
pub fn load_server_key(cert: &Path, key: &Path) -> Result<CertifiedKey, KeyPairError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| {
            KeyPairError::Cert(format!(
                "cannot read the certificate {}: {}",
                cert.display(),
                pem_error(&e)
            ))
        })?;
    if chain.is_empty() {
        return Err(KeyPairError::Cert(format!(
            "{} holds no PEM certificate",
            cert.display()
        )));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        KeyPairError::Key(format!(
            "cannot read the private key {}: {}",
            key.display(),
            pem_error(&e)
        ))
    })?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| KeyPairError::Key(format!("the private key {}: {e}", key.display())))?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(pair)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(KeyPairError::Mismatch(format!(
            "the private key {} is not the key of the certificate {}",
            key.display(),
            cert.display()
        ))),
        Err(e) => Err(KeyPairError::Cert(format!(
            "the certificate {}: {e}",
            cert.display()
        ))),
    }
}

/// What was wrong with a PEM file, in words (rustls-pki-types shows the
/// marker it missed as a list of bytes).
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => "no PEM item of that kind in it".into(),
        Error::MissingSectionEnd { .. } => "not PEM: a section has no END line".into(),
        Error::IllegalSectionStart { .. } => "not PEM: a malformed BEGIN line".into(),
        Error::Base64Decode(_) => "not PEM: a section is not base64".into(),
        other => format!("not PEM: {other}"),
    }
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The certificate the HTTPS listener presents: one pair at a time, which a
/// reload replaces; a handshake uses the pair current when it starts.
#[derive(Debug)]
pub struct ServerCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCert {
    pub fn new(pair: CertifiedKey) -> Arc<ServerCert> {
        Arc::new(ServerCert {
            current: RwLock::new(Arc::new(pair)),
        })
    }

    /// Serves `pair` to the connections that come after.
    pub fn replace(&self, pair: CertifiedKey) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
    }

    /// The pair served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// rustls's server settings: TLS 1.2 and 1.3 with ring, no client
    /// certificates, HTTP/1.1 by ALPN, the certificate from here.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}
