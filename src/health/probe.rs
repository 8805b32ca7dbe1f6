//! One probe: a TCP connect, or an HTTP request on a fresh connection.
//!
//! A fresh connection per probe (as nginx and HAProxy do by default) tests
//! what a new pooled connection would meet: the listen queue and the
//! accept loop, not just one lucky kept-alive socket.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::net::TcpStream;

use super::{HealthChecker, HttpProbe, Probe};
use crate::tls::upstream::UpstreamStream;
use crate::upstream::{Endpoint, Service, UpstreamProtocol};

/// Most body bytes read for `body_contains`.
const MAX_PROBE_BODY: usize = 64 * 1024;

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeResult {
    /// It passed.
    pub passed: bool,
    /// The HTTP status, for HTTP probes that got one.
    pub status: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
    /// Round-trip time (connect to end of response).
    #[serde(rename = "latency_ms", serialize_with = "as_ms")]
    pub latency: Duration,
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl ProbeResult {
    fn fail(error: impl Into<String>, status: Option<u16>, latency: Duration) -> Self {
        ProbeResult {
            passed: false,
            status,
            error: Some(error.into()),
            latency,
        }
    }
}

pub(super) async fn run(
    checker: &HealthChecker,
    service: &Service,
    endpoint: &Endpoint,
) -> ProbeResult {
    let started = Instant::now();
    match tokio::time::timeout(checker.timeout, exchange(checker, service, endpoint)).await {
        Ok(Ok(status)) => ProbeResult {
            passed: true,
            status,
            error: None,
            latency: started.elapsed(),
        },
        Ok(Err((error, status))) => ProbeResult::fail(error, status, started.elapsed()),
        Err(_) => ProbeResult::fail(
            format!("timed out after {} ms", checker.timeout.as_millis()),
            None,
            started.elapsed(),
        ),
    }
}

type Failure = (String, Option<u16>);

async fn exchange(
    checker: &HealthChecker,
    service: &Service,
    endpoint: &Endpoint,
) -> Result<Option<u16>, Failure> {
    let stream = TcpStream::connect(endpoint.address)
        .await
        .map_err(|e| (format!("connect: {e}"), None))?;
    let _ = stream.set_nodelay(true);
    // A TLS service is probed as requests reach it: a certificate the
    // gateway would refuse fails the probe (a TCP probe included).
    let stream = match &endpoint.pool.config().tls {
        None => UpstreamStream::Plain(stream),
        Some(tls) => tls
            .connect(stream, endpoint.address)
            .await
            .map_err(|e| (format!("TLS handshake: {e}"), None))?,
    };
    let http = match &checker.probe {
        Probe::Tcp => return Ok(None),
        Probe::Http(http) => http,
    };
    let tls = matches!(stream, UpstreamStream::Tls(_));
    let io = TokioIo::new(stream);
    let request = build_request(http, service.protocol, endpoint, tls)?;
    let response = match service.protocol {
        UpstreamProtocol::Http1 => {
            let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| (format!("handshake: {e}"), None))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            tx.send_request(request).await
        }
        UpstreamProtocol::H2c => {
            let (mut tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| (format!("handshake: {e}"), None))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            tx.send_request(request).await
        }
    }
    .map_err(|e| (format!("request: {e}"), None))?;
    let status = response.status().as_u16();
    if !http.expected_status.contains(&status) {
        return Err((
            format!(
                "status {status} not in {}-{}",
                http.expected_status.start(),
                http.expected_status.end()
            ),
            Some(status),
        ));
    }
    if let Some(needle) = &http.body_contains {
        let body = read_capped(response.into_body())
            .await
            .map_err(|e| (format!("body: {e}"), Some(status)))?;
        if !contains(&body, needle.as_bytes()) {
            return Err((format!("body does not contain {needle:?}"), Some(status)));
        }
    }
    Ok(Some(status))
}

fn build_request(
    http: &HttpProbe,
    protocol: UpstreamProtocol,
    endpoint: &Endpoint,
    tls: bool,
) -> Result<http::Request<Empty<Bytes>>, Failure> {
    let host = http
        .host
        .clone()
        .unwrap_or_else(|| endpoint.host_value.clone());
    let builder = http::Request::builder()
        .method(http.method.clone())
        .header(http::header::USER_AGENT, "aether-gateway-health/1");
    let builder = match protocol {
        UpstreamProtocol::Http1 => builder
            .uri(http.path.as_str())
            .header(http::header::HOST, host),
        UpstreamProtocol::H2c => {
            let authority = http::uri::Authority::try_from(host.as_bytes())
                .unwrap_or_else(|_| endpoint.authority.clone());
            builder.version(http::Version::HTTP_2).uri(
                http::Uri::builder()
                    .scheme(if tls { "https" } else { "http" })
                    .authority(authority)
                    .path_and_query(http.path.clone())
                    .build()
                    .map_err(|e| (format!("probe URI: {e}"), None))?,
            )
        }
    };
    builder
        .body(Empty::new())
        .map_err(|e| (format!("probe request: {e}"), None))
}

async fn read_capped(mut body: hyper::body::Incoming) -> Result<Vec<u8>, hyper::Error> {
    let mut out = Vec::new();
    while out.len() < MAX_PROBE_BODY {
        match body.frame().await {
            Some(frame) => {
                if let Some(d) = frame?.data_ref() {
                    let room = MAX_PROBE_BODY - out.len();
                    out.extend_from_slice(&d[..d.len().min(room)]);
                }
            }
            None => break,
        }
    }
    Ok(out)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::contains;

    #[test]
    fn substring_search() {
        assert!(contains(b"{\"status\":\"ok\"}", b"\"ok\""));
        assert!(!contains(b"{\"status\":\"degraded\"}", b"\"ok\""));
        assert!(contains(b"", b""));
        assert!(!contains(b"", b"x"));
    }
}
