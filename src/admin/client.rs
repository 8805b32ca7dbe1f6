//! The admin API's own client, for `aether-gateway reload`: it asks the
//! running gateway to reload its file and reports whether it did, so
//! `systemctl reload` fails when the gateway refused the file (a signal
//! cannot say that).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

use super::AdminToken;

/// How long a reload may take to answer (a changed JWKS URL is fetched
/// before the new config is swapped in).
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the admin API could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection to the admin listener.
    #[error(
        "cannot reach the admin API at {addr}: {source} (is the gateway running with this [admin] listen?)"
    )]
    Connect {
        /// Where it was looked for.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The exchange failed after connecting.
    #[error("admin API at {addr}: {why}")]
    Exchange {
        /// The admin listener.
        addr: SocketAddr,
        /// What went wrong.
        why: String,
    },
}

/// Where a client on this machine reaches a listener bound to `listen`: a
/// wildcard address (`0.0.0.0`, `[::]`) is reached on loopback.
pub fn local_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `POST /admin/reload` on the admin listener at `listen`: the answer's
/// status and JSON body.
///
/// # Errors
/// [`ClientError`] when the API cannot be reached or does not answer in
/// [`RELOAD_TIMEOUT`].
pub async fn reload(
    listen: SocketAddr,
    token: Option<&AdminToken>,
) -> Result<(http::StatusCode, String), ClientError> {
    let addr = local_address(listen);
    let fail = |why: String| ClientError::Exchange { addr, why };
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = http::Request::post("/admin/reload")
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(e.to_string()))?;
        if let Some(t) = token {
            req.headers_mut()
                .insert(http::header::AUTHORIZATION, t.bearer_value());
        }
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(RELOAD_TIMEOUT, exchange)
        .await
        .map_err(|_| fail(format!("no answer within {RELOAD_TIMEOUT:?}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_reached_on_loopback() {
        let l = |s: &str| local_address(s.parse().unwrap()).to_string();
        assert_eq!(l("0.0.0.0:9901"), "127.0.0.1:9901");
        assert_eq!(l("[::]:9901"), "[::1]:9901");
        assert_eq!(l("10.1.2.3:9901"), "10.1.2.3:9901");
    }
}
