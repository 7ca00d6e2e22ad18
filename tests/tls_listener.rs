//! HTTPS on the daemon's own listener (`[server] tls_cert`, `tls_key`),
//! against the real daemon with certificates openssl makes here: it
//! serves the API over TLS only, bounds the handshake, takes a new
//! certificate on SIGHUP and refuses a broken one, keeping the old; and
//! `check` and `run` refuse a pair that is incomplete or does not read.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, READ_TOKEN, config_without_mqtt, eventually};
use common::tls::{Pki, der, https_client};
use serde_json::Value;

/// How long any one expected outcome may take (tests run side by side on
/// two cores).
const PATIENCE: Duration = Duration::from_secs(60);

/// The test config serving HTTPS with `cert.pem` and `key.pem` beside it
/// (relative paths, taken from the config's folder).
fn https_config() -> String {
    let base = config_without_mqtt();
    assert!(base.contains("public_url = \"http://127.0.0.1:{http}\"\n"));
    base.replace(
        "public_url = \"http://127.0.0.1:{http}\"\n",
        "public_url = \"https://127.0.0.1:{http}\"\n\
         tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
    )
}

/// Puts a certificate and its key where the config names them.
fn install(pki: &Pki, dir: &Path) {
    std::fs::copy(&pki.cert, dir.join("cert.pem")).expect("copy the certificate");
    std::fs::copy(&pki.key, dir.join("key.pem")).expect("copy the key");
}

/// Starts the daemon on HTTPS with a new CA's certificate, installed as
/// `cert.pem` and `key.pem` in a folder of their own (named absolutely:
/// the daemon's folder is made as it starts).
fn start(name: &str, pki_name: &str) -> (Pki, Daemon) {
    let dir = common::broker::temp_dir(&format!("pki-{name}"));
    let pki = Pki::generate(&dir, pki_name);
    let config = https_config()
        .replace("\"cert.pem\"", &format!("{:?}", pki.dir.join("cert.pem")))
        .replace("\"key.pem\"", &format!("{:?}", pki.dir.join("key.pem")));
    install(&pki, &pki.dir);
    let d = Daemon::start(name, &config);
    (pki, d)
}

fn https(d: &Daemon, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", d.port)
}

/// GET over HTTPS: the status, the JSON body and the peer's certificate.
async fn get(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Result<(u16, Value, Vec<u8>), reqwest::Error> {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    let peer = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let status = resp.status().as_u16();
    let body = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&body).unwrap_or(Value::Null),
        peer,
    ))
}

/// The daemon serves `/healthz` and the authenticated API over HTTPS to a
/// client that trusts only the test CA; plain HTTP on the same port gets
/// no answer; a client that connects and says nothing is cut off after the
/// handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_https_only() {
    let (pki, mut d) = start("tls-serves", "serves");
    let client = https_client(&pki.ca);

    let (status, _, peer) = get(&client, &https(&d, "/healthz"), None)
        .await
        .expect("GET /healthz over https");
    assert_eq!(status, 200);
    assert_eq!(peer, der(&pki.cert), "the configured certificate is served");

    let (status, body, _) = get(
        &client,
        &https(&d, "/api/v1/incidents?state=all"),
        Some(READ_TOKEN),
    )
    .await
    .expect("GET /api/v1/incidents over https");
    assert_eq!(status, 200, "{body}");
    assert!(body.is_array(), "{body}");
    let (status, _, _) = get(&client, &https(&d, "/api/v1/incidents"), None)
        .await
        .expect("an unauthenticated request still gets an answer");
    assert_eq!(status, 401);

    // Plain HTTP on the HTTPS port.
    let plain = common::daemon::http();
    let refused = plain.get(d.url("/healthz")).send().await;
    assert!(
        refused.is_err(),
        "plain HTTP was answered: {:?}",
        refused.map(|r| r.status())
    );

    // A client that trusts another CA is refused by its own side.
    let other = Pki::generate(&pki.dir, "serves-other");
    let stranger = https_client(&other.ca);
    let err = get(&stranger, &https(&d, "/healthz"), None)
        .await
        .expect_err("a certificate from another CA is not trusted");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");

    // Silence after connecting: closed once the handshake timeout passes.
    let mut silent = TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
    silent
        .set_read_timeout(Some(PATIENCE))
        .expect("set a read timeout");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = silent.read(&mut buf);
    let closed = match &read {
        Ok(n) => *n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    assert!(
        closed,
        "the silent connection was not closed: {read:?} after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "closed before the handshake timeout: {:?}",
        started.elapsed()
    );

    // Still serving after all of that.
    let (status, _, _) = get(&https_client(&pki.ca), &https(&d, "/healthz"), None)
        .await
        .expect("GET /healthz over https");
    assert_eq!(status, 200);
    assert!(d.terminate().success());
}

/// SIGHUP reads the certificate files again: a new certificate (another CA,
/// another serial and name) serves the connections after the reload; a
/// broken file refuses the reload and the certificate before it keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_takes_a_new_certificate_and_refuses_a_broken_one() {
    let (first, mut d) = start("tls-reload", "first");
    let (status, _, peer) = get(&https_client(&first.ca), &https(&d, "/healthz"), None)
        .await
        .expect("GET /healthz with the first certificate");
    assert_eq!(status, 200);
    assert_eq!(peer, der(&first.cert));

    let second = Pki::generate(&first.dir, "second");
    assert_ne!(der(&first.cert), der(&second.cert));
    install(&second, &first.dir);
    d.hup();
    let peer = eventually(
        "a new connection sees the new certificate",
        PATIENCE,
        || async {
            // A new client each time: a new connection, a new handshake.
            match get(&https_client(&second.ca), &https(&d, "/healthz"), None).await {
                Ok((200, _, peer)) => Some(peer),
                _ => None,
            }
        },
    )
    .await;
    assert_eq!(peer, der(&second.cert));
    let err = get(&https_client(&first.ca), &https(&d, "/healthz"), None)
        .await
        .expect_err("the first CA does not vouch for the new certificate");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");

    // A broken certificate file: the reload is refused and logged.
    std::fs::write(
        first.dir.join("cert.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n",
    )
    .expect("break the certificate");
    let refusals = |d: &Daemon| {
        d.log_lines()
            .into_iter()
            .filter(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("reload refused"))
            })
            .count()
    };
    assert_eq!(refusals(&d), 0, "{}", d.log_text());
    d.hup();
    eventually("the broken certificate is refused", PATIENCE, || async {
        (refusals(&d) == 1).then_some(())
    })
    .await;
    let refusal = d
        .log_lines()
        .into_iter()
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("reload refused"))
        })
        .expect("the refusal");
    let message = refusal["fields"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("cannot read the certificate"), "{message}");
    assert!(message.contains("cert.pem: not PEM"), "{message}");
    let (status, _, peer) = get(&https_client(&second.ca), &https(&d, "/healthz"), None)
        .await
        .expect("the second certificate still serves");
    assert_eq!(status, 200);
    assert_eq!(peer, der(&second.cert));

    // A key that is not the certificate's: refused the same way.
    install(&first, &first.dir);
    std::fs::copy(&second.key, first.dir.join("key.pem")).expect("copy the wrong key");
    d.hup();
    eventually("the mismatched key is refused", PATIENCE, || async {
        (refusals(&d) == 2).then_some(())
    })
    .await;
    let (status, _, peer) = get(&https_client(&second.ca), &https(&d, "/healthz"), None)
        .await
        .expect("the second certificate still serves");
    assert_eq!(status, 200);
    assert_eq!(peer, der(&second.cert));
    assert!(d.exited().is_none(), "the daemon keeps running");
    assert!(d.terminate().success());
}

/// `beredskab check` in `dir` on a config with these `[server]` lines.
fn check(dir: &Path, server_lines: &str) -> (i32, String, String) {
    let config = config_without_mqtt()
        .replace("{http}", "8443")
        .replace("[server]\n", &format!("[server]\n{server_lines}"));
    let file = dir.join("beredskab.toml");
    std::fs::write(&file, config).expect("write the config");
    let out = Command::new(env!("CARGO_BIN_EXE_beredskab"))
        .env("RUST_LOG", "off")
        .arg("check")
        .arg("-c")
        .arg(&file)
        .output()
        .expect("run beredskab check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `FILE:LINE:COL: ` prefix of an error at the line of `[server]` plus
/// `n` (1: the first line after it) in the config `check` wrote.
fn at(dir: &Path, n: usize, col: usize) -> String {
    let text = std::fs::read_to_string(dir.join("beredskab.toml")).expect("read the config");
    let server = text
        .lines()
        .position(|l| l == "[server]")
        .expect("[server]")
        + 1;
    format!(
        "{}:{}:{col}: ",
        dir.join("beredskab.toml").display(),
        server + n
    )
}

/// `check` refuses a certificate without a key and the other way round,
/// files that do not read or are no PEM, and a key that is not the
/// certificate's; each at its line; a good pair passes.
#[test]
fn check_refuses_an_incomplete_or_unreadable_pair() {
    let dir = common::broker::temp_dir("tls-check");
    let pki = Pki::generate(&dir, "check");
    let other = Pki::generate(&dir, "check-other");
    install(&pki, &dir);

    let (code, out, err) = check(&dir, "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ok: "), "{out}");

    let (code, _, err) = check(&dir, "tls_cert = \"cert.pem\"\n");
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err.trim(),
        format!("{}tls_cert needs tls_key as well", at(&dir, 1, 12))
    );
    let (code, _, err) = check(&dir, "tls_key = \"key.pem\"\n");
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err.trim(),
        format!("{}tls_key needs tls_cert as well", at(&dir, 1, 11))
    );

    let (code, _, err) = check(&dir, "tls_cert = \"missing.pem\"\ntls_key = \"key.pem\"\n");
    assert_eq!(code, 2, "{err}");
    let prefix = at(&dir, 1, 12);
    assert!(
        err.starts_with(&format!("{prefix}cannot read the certificate ")),
        "{err}"
    );
    assert!(err.contains("missing.pem"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    std::fs::write(dir.join("garbage.pem"), "no certificate here\n").expect("write");
    let (code, _, err) = check(&dir, "tls_cert = \"cert.pem\"\ntls_key = \"garbage.pem\"\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with(&format!("{}cannot read the private key ", at(&dir, 2, 11))),
        "{err}"
    );

    let wrong_key = other.key.display().to_string();
    let (code, _, err) = check(
        &dir,
        &format!("tls_cert = \"cert.pem\"\ntls_key = {wrong_key:?}\n"),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with(&format!("{}the private key ", at(&dir, 2, 11))),
        "{err}"
    );
    assert!(err.contains("is not the key of the certificate"), "{err}");
}

/// `run` with a certificate file that does not read does not start: it
/// says why and exits 2.
#[test]
fn run_refuses_to_start_with_an_unreadable_certificate() {
    let dir = common::broker::temp_dir("tls-run");
    let pki = Pki::generate(&dir, "run");
    install(&pki, &dir);
    std::fs::remove_file(dir.join("cert.pem")).expect("remove the certificate");
    let config = https_config().replace("{http}", &common::broker::free_port().to_string());
    let file = dir.join("beredskab.toml");
    std::fs::write(&file, config).expect("write the config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_beredskab"))
        .env("RUST_LOG", "off")
        .arg("run")
        .arg("-c")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start beredskab run");
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("beredskab run started with a missing certificate");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("cannot read the certificate"), "{err}");
    assert!(err.contains("cert.pem"), "{err}");
}
