//! A small HTTP/1.1 client over a TCP socket (one request per connection),
//! enough to test the monitor as a browser or a script would reach it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// A request being built.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn get(path: &str) -> Req {
        Req {
            method: "GET".into(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn post(path: &str) -> Req {
        Req {
            method: "POST".into(),
            ..Req::get(path)
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Req {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn bearer(self, token: &str) -> Req {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    /// A urlencoded form body.
    pub fn form(mut self, pairs: &[(&str, &str)]) -> Req {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k, v);
        }
        self.body = s.finish().into_bytes();
        self.header("Content-Type", "application/x-www-form-urlencoded")
    }

    /// A JSON body.
    pub fn json(mut self, v: &serde_json::Value) -> Req {
        self.body = v.to_string().into_bytes();
        self.header("Content-Type", "application/json")
    }

    pub fn raw_body(mut self, body: Vec<u8>) -> Req {
        self.body = body;
        self
    }

    /// Sends it to `addr` and reads the whole response.
    pub async fn send(&self, addr: SocketAddr) -> Resp {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("connect to the monitor");
        stream.write_all(&self.head(addr)).await.expect("write");
        stream.write_all(&self.body).await.expect("write body");
        let raw = tokio::time::timeout(Duration::from_secs(30), read_response(&mut stream))
            .await
            .expect("the response within 30 s");
        parse(&raw)
    }

    /// Sends it and returns the open stream after the response head, with
    /// what was read past the head (for server-sent events).
    pub async fn open(&self, addr: SocketAddr) -> (Resp, Open) {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("connect to the monitor");
        stream.write_all(&self.head(addr)).await.expect("write");
        let mut raw = Vec::new();
        let mut buf = [0u8; 1024];
        while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "connection closed before the response head");
            raw.extend_from_slice(&buf[..n]);
        }
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
        let seen = String::from_utf8_lossy(&raw[split..]).into_owned();
        (parse(&raw[..split]), Open { stream, seen })
    }

    fn head(&self, addr: SocketAddr) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.method,
            self.path,
            self.body.len()
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

/// A response still being read.
pub struct Open {
    stream: TcpStream,
    seen: String,
}

/// Reads until `needle` appears on an open stream (past what an earlier
/// call returned), or panics after `within`; what was read up to it.
pub async fn read_until(open: &mut Open, needle: &str, within: Duration) -> String {
    let Open { stream, seen } = open;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    while !seen.contains(needle) {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("'{needle}' not seen within {within:?}; got: {seen}"))
            .expect("read");
        assert!(n > 0, "stream closed before '{needle}'; got: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let at = seen.find(needle).unwrap_or(0) + needle.len();
    let upto = seen[..at].to_string();
    // the rest of the event (its data line) may follow in the same read
    *seen = seen[at..].to_string();
    upto + seen.as_str()
}

/// Reads one response: up to its `Content-Length`, the end of its chunks,
/// or the end of the connection (a server may keep it open).
async fn read_response(stream: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let body = raw.len() - split - 4;
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(n) = length {
                if body >= n {
                    return raw;
                }
            } else if head.contains("transfer-encoding: chunked") && raw.ends_with(b"0\r\n\r\n") {
                return raw;
            }
        }
        let n = stream.read(&mut buf).await.expect("read");
        if n == 0 {
            return raw;
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

fn parse(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        let end = (start + size).min(b.len());
        out.extend_from_slice(&b[start..end]);
        b = &b[(end + 2).min(b.len())..];
    }
}
