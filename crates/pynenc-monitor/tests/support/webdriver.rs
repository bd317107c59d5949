//! A small W3C WebDriver client (HTTP + JSON over the test's own HTTP
//! client) driving headless Chromium through `chromedriver`, which it starts
//! on a free port and stops when dropped.
//!
//! Without `chromium` and `chromedriver` on `PATH` (or `PYNENC_CHROMIUM` /
//! `PYNENC_CHROMEDRIVER`), [`Browser::start`] returns `None` after printing
//! [`SKIP_MESSAGE`]; with `PYNENC_REQUIRE_BROWSER=1` it panics instead.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use super::http::Req;

/// Printed when the browser tests are skipped.
pub const SKIP_MESSAGE: &str = "chromium and chromedriver not found on PATH; install them \
     (Debian: apt-get install chromium chromium-driver) or set PYNENC_REQUIRE_BROWSER=1 to make this a failure";

/// The failure when the browser is required and missing.
const REQUIRED_MESSAGE: &str = "PYNENC_REQUIRE_BROWSER=1 but chromium and chromedriver are not \
     found on PATH (nor named by PYNENC_CHROMIUM and PYNENC_CHROMEDRIVER); install them \
     (Debian: apt-get install chromium chromium-driver)";

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// A headless Chromium session.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium session; `None` (after a
    /// message) when they are not installed, unless they are required.
    pub async fn start() -> Option<Browser> {
        let chromium = find(
            "PYNENC_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        );
        let driver = find("PYNENC_CHROMEDRIVER", &["chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            if std::env::var("PYNENC_REQUIRE_BROWSER").as_deref() == Ok("1") {
                panic!("{REQUIRED_MESSAGE}");
            }
            eprintln!("skipped: {SKIP_MESSAGE}");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut b = Browser {
            driver: child,
            addr,
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                let status = Req::get("/status").send(addr).await;
                if status.status == 200 && status.json()["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", "--no-first-run", "--disable-extensions"]
            },
            "goog:loggingPrefs": { "browser": "ALL" }
        } } });
        let v = b.call("POST", "/session", Some(caps)).await;
        b.session = v["sessionId"].as_str().expect("a session id").to_string();
        Some(b)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.try_call(method, path, body).await;
        assert_eq!(status, 200, "webdriver {method} {path}: {v}");
        v["value"].clone()
    }

    /// The status and the whole answer.
    async fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = Req::get(path);
        req.method = method.into();
        if let Some(b) = body {
            req = req.json(&b);
        } else if method == "POST" {
            req = req.json(&json!({}));
        }
        let r = req.send(self.addr).await;
        (r.status, r.json())
    }

    /// Runs `action` on the element matching `css`, again on a fresh one when
    /// a live page replaced it meanwhile ("stale element reference").
    async fn on_element(
        &self,
        css: &str,
        method: &str,
        action: &str,
        body: Option<Value>,
    ) -> Value {
        for _ in 0..20 {
            let e = self.find(css).await;
            let path = self.at(&format!("/element/{}{action}", e.0));
            let (status, v) = self.try_call(method, &path, body.clone()).await;
            if status == 200 {
                return v["value"].clone();
            }
            assert!(
                v["value"]["error"] == "stale element reference",
                "webdriver {method} {path}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("'{css}' kept being replaced");
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({ "url": url })))
            .await;
    }

    pub async fn url(&self) -> String {
        self.call("GET", &self.at("/url"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Waits up to 5 s for the current URL to contain `part` (after a click
    /// that navigates).
    pub async fn wait_url(&self, part: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let url = self.url().await;
            if url.contains(part) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the URL is still {url}, without '{part}'"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first element matching a CSS selector, waiting up to 5 s for it.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut req = Req::post(&self.at("/element"));
            req = req.json(&json!({ "using": "css selector", "value": css }));
            let r = req.send(self.addr).await;
            if r.status == 200 {
                let id = r.json()["value"][ELEMENT]
                    .as_str()
                    .expect("an element id")
                    .to_string();
                return Element(id);
            }
            assert!(
                Instant::now() < deadline,
                "no element '{css}' on {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many elements match a CSS selector.
    pub async fn count(&self, css: &str) -> usize {
        self.call(
            "POST",
            &self.at("/elements"),
            Some(json!({ "using": "css selector", "value": css })),
        )
        .await
        .as_array()
        .map_or(0, Vec::len)
    }

    pub async fn click(&self, css: &str) {
        self.on_element(css, "POST", "/click", Some(json!({})))
            .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        self.on_element(css, "POST", "/value", Some(json!({ "text": text })))
            .await;
    }

    pub async fn text(&self, css: &str) -> String {
        self.on_element(css, "GET", "/text", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Waits up to `within` for `css`'s text to be `want`.
    pub async fn wait_text(&self, css: &str, want: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.text(css).await;
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "'{css}' shows '{got}', not '{want}', after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs a script in the page (WebDriver's own channel: not subject to
    /// the page's CSP) and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.at("/execute/sync"),
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// The browser console since the last call (chromedriver's log endpoint).
    pub async fn console(&self) -> Vec<String> {
        self.call(
            "POST",
            &self.at("/se/log"),
            Some(json!({ "type": "browser" })),
        )
        .await
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["level"].as_str().unwrap_or(""),
                        e["message"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
    }

    /// A PNG screenshot of the page, written to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let v = self.call("GET", &self.at("/screenshot"), None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 PNG"))
            .expect("decodable screenshot");
        std::fs::write(path, png).expect("write the screenshot");
    }

    pub async fn quit(mut self) {
        let _ = Req {
            method: "DELETE".into(),
            ..Req::get(&self.at(""))
        }
        .send(self.addr)
        .await;
        self.session.clear();
    }
}

impl Drop for Browser {
    /// Ends the session (Chromium exits) and chromedriver, even when the
    /// test failed half way: a killed chromedriver would leave Chromium
    /// running.
    fn drop(&mut self) {
        if !self.session.is_empty() {
            blocking(self.addr, "DELETE", &format!("/session/{}", self.session));
        }
        blocking(self.addr, "GET", "/shutdown");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.driver.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One request to chromedriver from a blocking context (`Drop`), its
/// answer ignored.
fn blocking(addr: SocketAddr, method: &str, path: &str) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut buf = [0u8; 1024];
    // the first bytes of the answer: the request was handled
    let _ = s.read(&mut buf);
}
