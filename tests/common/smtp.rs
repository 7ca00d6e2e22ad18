//! A real SMTP server for tests: Python's aiosmtpd (tests/common/smtp_sink.py)
//! on a free port, writing each accepted mail as JSON into a folder. A
//! missing aiosmtpd fails the tests with how to install it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

/// A python3 that has aiosmtpd: the one on PATH, else Debian's (a pyenv or
/// venv python3 on PATH does not see Debian's python3-aiosmtpd).
pub fn python_with_aiosmtpd() -> &'static str {
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|python| {
            Command::new(python)
                .args(["-c", "import aiosmtpd"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .unwrap_or_else(|| {
            panic!(
                "aiosmtpd is not installed for python3 or /usr/bin/python3: the SMTP tests need \
                 a real SMTP server. Install Debian's: apt-get update && apt-get install -y \
                 python3-aiosmtpd (or: pip install aiosmtpd)"
            )
        })
}

/// aiosmtpd on a free port, writing each accepted mail to `dir/N.json`.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl SmtpSink {
    pub fn start(name: &str) -> SmtpSink {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "smtp-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/smtp_sink.py");
        let mut child = Command::new(python_with_aiosmtpd())
            .arg("-u")
            .arg(&script)
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start smtp_sink.py");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("sink stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the sink's port");
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("smtp_sink.py did not start: {line:?}"));
        SmtpSink { child, port, dir }
    }

    pub fn channel(&self, rest: &str) -> String {
        format!(
            "id = \"mail\"\nkind = \"smtp\"\nurl = \"smtp://127.0.0.1:{}\"\nfrom = \"beredskab@example.dk\"\ntimeout = \"5s\"\n{rest}",
            self.port
        )
    }

    /// The mails accepted so far, in order. A mail is on disk before the
    /// sink answers 250, so a send that returned is already here.
    pub fn mails(&self) -> Vec<Value> {
        let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(&self.dir)
            .expect("read sink dir")
            .filter_map(|e| {
                let path = e.ok()?.path();
                let n = path.file_stem()?.to_str()?.parse().ok()?;
                (path.extension()? == "json").then_some((n, path))
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|(_, path)| {
                let text = std::fs::read_to_string(&path).expect("read mail");
                serde_json::from_str(&text).expect("mail json")
            })
            .collect()
    }

    pub fn only(&self) -> Value {
        let mails = self.mails();
        assert_eq!(mails.len(), 1, "expected exactly one mail: {mails:#?}");
        mails[0].clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
