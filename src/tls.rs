//! The crate's one TLS stack: rustls with ring. Mail (lettre), the HTTP
//! clients (reqwest, built without a provider of their own), the MQTT
//! collector and the daemon all use the provider installed here.

/// Installs ring as rustls's process-wide crypto provider. Safe to call
/// from every TLS user, in any order: the first call installs it, later
/// ones find it there.
pub fn install_provider() {
    // A second install fails only because the same provider is already in.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
