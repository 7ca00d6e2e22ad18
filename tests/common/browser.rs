//! A real headless Chromium for the web UI tests, driven over WebDriver
//! (fantoccini) through Debian's chromedriver, started on a free port with
//! a fresh profile in a temp folder. Chromium and chromedriver are
//! required: a missing one fails the test, it never skips it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use super::broker::{find_program, free_port, temp_dir};

/// How long one expected change on a page may take.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Phone and desktop viewports.
pub const PHONE: (u32, u32) = (412, 915);
pub const DESKTOP: (u32, u32) = (1366, 900);

pub fn chromium_binary() -> PathBuf {
    find_program("chromium", "/usr/bin/chromium").unwrap_or_else(|| {
        panic!(
            "chromium not found on PATH or at /usr/bin/chromium: the browser tests need a real \
             browser. Install Debian's: apt-get update && apt-get install -y chromium \
             chromium-driver"
        )
    })
}

pub fn chromedriver_binary() -> PathBuf {
    find_program("chromedriver", "/usr/bin/chromedriver").unwrap_or_else(|| {
        panic!(
            "chromedriver not found on PATH or at /usr/bin/chromedriver: the browser tests need \
             it. Install Debian's: apt-get update && apt-get install -y chromium-driver"
        )
    })
}

/// A chromedriver and one browser session.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _dir: PathBuf,
}

impl Browser {
    /// A new headless Chromium with a window of `size`.
    pub async fn start(name: &str, size: (u32, u32)) -> Browser {
        let dir = temp_dir(&format!("browser-{name}"));
        let port = free_port();
        let mut driver = Command::new(chromedriver_binary())
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = driver.try_wait() {
                panic!("chromedriver exited ({status}) before listening");
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = dir.join("profile");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium_binary(),
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--hide-scrollbars",
                    format!("--window-size={},{}", size.0, size.1),
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!("an object")
        };
        let client = tokio::time::timeout(
            Duration::from_secs(60),
            ClientBuilder::new(HttpConnector::new())
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .expect("chromium did not start within 60 s")
        .unwrap_or_else(|e| panic!("cannot start a chromium session: {e}"));
        let b = Browser {
            client,
            driver,
            _dir: dir,
        };
        b.resize(size).await;
        b
    }

    /// Sets the viewport (the page's inner size) to `size`.
    pub async fn resize(&self, size: (u32, u32)) {
        self.client
            .set_window_size(size.0, size.1)
            .await
            .expect("set the window size");
        // The window's frame, if any, is taken off the viewport: add it.
        let inner = self
            .client
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await
            .expect("read the viewport");
        let w = inner[0].as_u64().unwrap_or(u64::from(size.0)) as u32;
        let h = inner[1].as_u64().unwrap_or(u64::from(size.1)) as u32;
        if (w, h) != size {
            self.client
                .set_window_size(size.0 * 2 - w, size.1 * 2 - h)
                .await
                .expect("set the window size");
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("the current URL")
            .path()
            .to_owned()
    }

    pub async fn click(&self, css: &str) {
        let el = match self.client.find(Locator::Css(css)).await {
            Ok(el) => el,
            Err(e) => panic!("no {css} on the page: {e}\n{}", self.text().await),
        };
        el.click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"));
        el.send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Waits until the page's text contains every one of `wanted`;
    /// returns the text.
    pub async fn wait_text(&self, what: &str, wanted: &[&str]) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = self.text().await;
            if wanted.iter().all(|w| text.contains(w)) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the page did not show {wanted:?} within {PATIENCE:?}; it shows:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Marks the loaded document, to tell later whether it was reloaded.
    pub async fn mark_document(&self) {
        self.client
            .execute("window.__notReloaded = true; return true;", vec![])
            .await
            .expect("mark the page");
    }

    /// Whether the document marked by [`Browser::mark_document`] is
    /// still the one shown.
    pub async fn same_document(&self) -> bool {
        self.client
            .execute("return window.__notReloaded === true;", vec![])
            .await
            .expect("read the mark")
            .as_bool()
            .unwrap_or(false)
    }

    /// Scrolls the element `css` to the top of the viewport (for a
    /// screenshot of what is below the fold).
    pub async fn scroll_to(&self, css: &str) {
        let found = self
            .client
            .execute(
                "const e = document.querySelector(arguments[0]); \
                 if (!e) { return false; } e.scrollIntoView(); return true;",
                vec![serde_json::Value::String(css.to_owned())],
            )
            .await
            .expect("scroll");
        assert_eq!(found, serde_json::Value::Bool(true), "no {css} on the page");
    }

    /// Saves a screenshot as `target/screenshots/NAME.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("take a screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("create target/screenshots");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// `target/screenshots`: under `CARGO_TARGET_DIR` when set, else the
/// target folder this test binary was built in.
pub fn screenshot_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("screenshots");
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/debug/deps/browser-HASH
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("screenshots")
}
