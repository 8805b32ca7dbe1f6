//! Test harness: real upstreams, the real gateway (in-process or the built
//! binary), real HTTP clients and raw TCP, all on 127.0.0.1 ephemeral ports.
#![allow(dead_code)]

pub mod dns;
pub mod jwks_server;
pub mod jwt;
pub mod mmdb;
pub mod redis;
pub mod tcp_proxy;
pub mod tls;
pub mod turn_client;
pub mod turn_tools;
pub mod upstream;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aether_gateway::{BackendRuntime, RunningGateway};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[allow(unused_imports)]
pub use upstream::{Proto, Upstream};

/// `[[services]]` text for a service over these addresses.
pub fn service_toml(name: &str, addrs: &[SocketAddr], extra: &str) -> String {
    let mut t = format!("[[services]]\nname = \"{name}\"\n{extra}\n");
    for a in addrs {
        t.push_str(&format!("[[services.endpoints]]\naddress = \"{a}\"\n"));
    }
    t
}

/// Start the gateway in this process from config text (`listen` is forced to port 0).
pub async fn gateway(config: &str) -> RunningGateway {
    gateway_with_clock(
        config,
        std::sync::Arc::new(aether_gateway::clock::SystemClock),
    )
    .await
}

/// [`gateway`] with its time-based policies (rate limits, token times) on `clock`.
pub async fn gateway_with_clock(
    config: &str,
    clock: std::sync::Arc<dyn aether_gateway::clock::Clock>,
) -> RunningGateway {
    let text = if config.contains("[server]") {
        config.to_owned()
    } else {
        format!("[server]\nlisten = \"127.0.0.1:0\"\n{config}")
    };
    let cfg = aether_gateway::config::parse_with_clock(&text, Path::new("test.toml"), clock)
        .unwrap_or_else(|e| panic!("{e}"));
    BackendRuntime::from_config(cfg)
        .start()
        .await
        .expect("gateway starts")
}

/// A complete response, body collected.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header the upstream saw (from the test upstream's JSON echo).
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_owned)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// GET `path` on the gateway's admin listener.
pub async fn admin(gw: &RunningGateway, path: &str) -> Resp {
    let addr = gw.admin_addr().expect("the config has an [admin] section");
    http1(addr, admin_req("GET", path, &[])).await
}

/// A request to the admin API as curl sends it to a loopback port (Host an
/// IP address: an admin API without a token refuses other names).
pub fn admin_req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut h = vec![("host", "127.0.0.1")];
    h.extend_from_slice(headers);
    req(method, path, &h, "")
}

/// `/admin/upstreams`' entry for the endpoint `addr` of `service`.
pub fn endpoint_of<'a>(
    upstreams: &'a serde_json::Value,
    service: &str,
    addr: SocketAddr,
) -> &'a serde_json::Value {
    let svc = upstreams["services"]
        .as_array()
        .expect("services array")
        .iter()
        .find(|s| s["service"] == service)
        .unwrap_or_else(|| panic!("no service {service} in {upstreams}"));
    svc["endpoints"]
        .as_array()
        .expect("endpoints array")
        .iter()
        .find(|e| e["address"] == addr.to_string())
        .unwrap_or_else(|| panic!("no endpoint {addr} in {svc}"))
}

/// Poll `/admin/upstreams` until `done` holds (deadline 10 s); every
/// snapshot seen on the way is passed to `check` first, so a test can
/// assert an invariant on each of them. Returns the final snapshot.
pub async fn wait_upstreams(
    gw: &RunningGateway,
    what: &str,
    mut check: impl FnMut(&serde_json::Value),
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = admin(gw, "/admin/upstreams").await.json();
        check(&v);
        if done(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last state: {v:#}"
        );
        // A poll interval, not synchronisation: the condition is re-read.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Send one HTTP/1.1 request on a fresh connection.
pub async fn http1(addr: SocketAddr, req: Request<Full<Bytes>>) -> Resp {
    let stream = TcpStream::connect(addr).await.expect("connect to gateway");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    collect(tx.send_request(req).await.expect("response")).await
}

/// An HTTP/2 (h2c, prior knowledge) client connection; the task ends when
/// the connection closes.
pub async fn h2_client(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let stream = TcpStream::connect(addr).await.expect("connect to gateway");
    let (tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    (tx, tokio::spawn(conn))
}

/// A bodiless GET for an absolute URI (HTTP/2 takes :authority from it).
pub fn get_absolute(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::new(Bytes::new())).unwrap()
}

/// Send one request over HTTP/2 with prior knowledge (h2c).
pub async fn h2c(addr: SocketAddr, req: Request<Full<Bytes>>) -> Resp {
    let (mut tx, _conn) = h2_client(addr).await;
    collect(tx.send_request(req).await.expect("response")).await
}

async fn collect(resp: http::Response<hyper::body::Incoming>) -> Resp {
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
        .await
        .expect("body within deadline")
        .expect("body")
        .to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
        version: parts.version,
    }
}

/// A GET with a Host header.
pub fn get(path: &str) -> Request<Full<Bytes>> {
    req("GET", path, &[], "")
}

/// A request with headers and a body.
pub fn req(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        b = b.header("host", "play.aether.test");
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

/// Write raw bytes and read until the server closes or `deadline` passes.
/// Returns what was read and whether the server closed the connection.
pub async fn raw(addr: SocketAddr, bytes: &[u8], deadline: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_until_close(&mut s, deadline).await
}

/// Read until EOF (returns true) or the deadline (returns false).
pub async fn read_until_close(s: &mut TcpStream, deadline: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = tokio::time::timeout(deadline, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// A port on 127.0.0.1 that nothing listens on.
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The built gateway binary running a config file.
pub struct GatewayProcess {
    pub child: Child,
    pub addr: SocketAddr,
    log: Option<std::path::PathBuf>,
    /// Every line it wrote to stdout so far.
    stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl GatewayProcess {
    /// Start `aether-gateway --config <file>` and wait for its "listening" line.
    pub fn start(config: &str) -> GatewayProcess {
        Self::spawn(config, "warn", false)
    }

    /// Like `start`, with `RUST_LOG=<filter>` and stderr kept in a file (`log()`).
    pub fn start_logged(config: &str, filter: &str) -> GatewayProcess {
        Self::spawn(config, filter, true)
    }

    fn spawn(config: &str, filter: &str, capture: bool) -> GatewayProcess {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        let log = capture.then(|| dir.path().join("stderr.log"));
        let stderr = match &log {
            Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_aether-gateway"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", filter)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn aether-gateway");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = std::sync::Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = listening_line(&line) {
                    let _ = tx.send(addr);
                }
                kept.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the gateway printed its listening line");
        GatewayProcess {
            child,
            addr,
            log,
            stdout: lines,
            _dir: dir,
        }
    }

    /// The config file it runs (rewrite it, then signal `HUP`, to reload).
    pub fn config_path(&self) -> std::path::PathBuf {
        self._dir.path().join("gateway.toml")
    }

    /// The lines the process wrote to stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// The admin API's address from its start-up line (waits for it).
    pub fn admin_addr(&self) -> SocketAddr {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            for line in self.stdout_lines() {
                let url = match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(v) if v["event"] == "admin" => v["url"].as_str().map(str::to_owned),
                    _ => line.strip_prefix("admin API on ").map(str::to_owned),
                };
                if let Some(a) = url.as_deref().and_then(|u| u.strip_prefix("http://")) {
                    return a.parse().unwrap();
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no admin line on stdout"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process wrote to stderr so far (`start_logged` only).
    pub fn log(&self) -> String {
        let p = self.log.as_ref().expect("started with start_logged");
        std::fs::read_to_string(p).unwrap()
    }

    /// Send a signal by name (`TERM`, `INT`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Wait for exit with a deadline; returns the exit code.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                start.elapsed() < deadline,
                "the gateway did not exit within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A field of /proc/<pid>/status in KiB (e.g. `VmHWM`, peak resident memory).
    pub fn status_kib(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address of the gateway's start-up line on stdout: text
/// (`aether-gateway listening on http://ADDR`) or, with JSON logs,
/// `{"event":"listening","url":"http://ADDR",…}`.
pub fn listening_line(line: &str) -> Option<SocketAddr> {
    let url = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) if v["event"] == "listening" => v["url"].as_str()?.to_owned(),
        _ => line
            .strip_prefix("aether-gateway listening on ")?
            .to_owned(),
    };
    let addr = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    Some(addr.parse().unwrap())
}
