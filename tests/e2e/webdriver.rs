//! A small W3C WebDriver client over hyper, enough to drive headless Chromium through Debian's
//! `chromedriver`: open pages, find elements by CSS selector, type, click, read text and the
//! page source, run a script, take screenshots.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};
use ums_testkit::{ChildGuard, free_port, wait_for_tcp};

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running `chromedriver` with one browser session; both end on drop.
pub struct Browser {
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
    _driver: ChildGuard,
}

/// An element of the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Browser {
    /// Starts `chromedriver` and a headless Chromium that accepts the test CA's self-signed
    /// certificates, with a fresh profile.
    pub async fn start() -> Browser {
        let chromium = ums_testkit::chromium_path().expect(
            "headless Chromium drives the console: install `chromium` (`cargo xtask test` does)",
        );
        let driver = ums_testkit::chromedriver_path().expect(
            "chromedriver drives Chromium: install `chromium-driver` (`cargo xtask test` does)",
        );
        let port = free_port();
        let log = std::env::temp_dir().join(format!("chromedriver-{port}.log"));
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let guard = ChildGuard::new(child);
        let started = Instant::now();
        while wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not listen on {port}"
            );
        }
        let profile = tempfile::tempdir().expect("browser profile");
        let mut args = vec![
            "--headless=new".to_owned(),
            "--ignore-certificate-errors".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1400,1400".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        if nix::unistd::geteuid().is_root() {
            args.push("--no-sandbox".to_owned());
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let answer = raw(port, "POST", "/session", Some(&caps))
            .await
            .unwrap_or_else(|e| panic!("start a browser session: {e}"));
        let session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {answer}"))
            .to_owned();
        Browser {
            port,
            session,
            _profile: profile,
            _driver: guard,
        }
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        raw(self.port, method, &path, body)
            .await
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"))
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url }))).await;
    }

    /// The address of the current page.
    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn title(&self) -> String {
        self.cmd("GET", "/title", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The visible text of the whole page.
    pub async fn text(&self) -> String {
        self.find("body").await.text().await
    }

    /// The first element matching the CSS `selector`; panics when there is none.
    pub async fn find(&self, selector: &str) -> Element<'_> {
        let answer = self
            .cmd(
                "POST",
                "/element",
                Some(&json!({"using": "css selector", "value": selector})),
            )
            .await;
        let id = answer[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element `{selector}`: {answer}"))
            .to_owned();
        Element { browser: self, id }
    }

    /// Runs `script` in the page and returns its value.
    pub async fn script(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": []})),
        )
        .await
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let answer = self.cmd("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(answer.as_str().expect("base64 screenshot"))
            .expect("decode the screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser; the driver's guard then stops chromedriver.
        let (port, path) = (self.port, format!("/session/{}", self.session));
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                let _ = rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(10), raw(port, "DELETE", &path, None))
                        .await
                });
            }
        })
        .join();
    }
}

impl Element<'_> {
    async fn cmd(&self, method: &str, what: &str, body: Option<&Value>) -> Value {
        self.browser
            .cmd(method, &format!("/element/{}{what}", self.id), body)
            .await
    }

    /// Types `text` into the element.
    pub async fn send_keys(&self, text: &str) {
        self.cmd("POST", "/value", Some(&json!({ "text": text })))
            .await;
    }

    /// Clicks the element (an option of a select, a checkbox): no new page.
    pub async fn click(&self) {
        self.cmd("POST", "/click", Some(&json!({}))).await;
    }

    /// Clicks a button or link that loads a new page, and waits until the new page has
    /// loaded: the old page is marked first, and the wait ends at a loaded page without the
    /// mark.
    pub async fn click_and_load(&self) {
        let b = self.browser;
        b.script("window.__umsOldPage = true; return null").await;
        self.click().await;
        let started = Instant::now();
        loop {
            let loaded = b
                .script("return !window.__umsOldPage && document.readyState === 'complete'")
                .await;
            if loaded == Value::Bool(true) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no new page within 20 s of the click (at {})",
                b.url().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn text(&self) -> String {
        self.cmd("GET", "/text", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// One WebDriver call: `method path` with a JSON body; the answer's `value`, or its error.
async fn raw(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect to chromedriver: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| format!("http handshake: {e}"))?;
    tokio::spawn(conn);
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, format!("127.0.0.1:{port}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(60), sender.send_request(request))
        .await
        .map_err(|_| "no answer within 60 s".to_owned())?
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("read the answer: {e}"))?
        .to_bytes();
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))?;
    if status.is_success() {
        Ok(value["value"].clone())
    } else {
        Err(format!("{status}: {}", value["value"]))
    }
}
