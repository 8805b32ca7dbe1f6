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

/// One request to the admin listener at `listen`: the answer's status and
/// body.
///
/// # Errors
/// [`ClientError`] when the API cannot be reached or does not answer in
/// [`RELOAD_TIMEOUT`].
pub async fn request(
    listen: SocketAddr,
    method: http::Method,
    path: &str,
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
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
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
        let body = Limited::new(resp.into_body(), 4 << 20)
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

/// What `aether-gateway reload` found out.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The gateway swapped the file in: its JSON answer.
    Applied(String),
    /// The gateway refused the file and runs the old config: why.
    Refused(String),
    /// Nothing was reloaded, and why.
    NotAsked(String),
}

/// Ask the gateway whose admin API listens on `listen` to reload `file`:
/// first that `file` is the file it runs (a reload re-reads the file it
/// was started with, whatever the caller checked), then `POST
/// /admin/reload`.
///
/// # Errors
/// [`ClientError`] when the API cannot be reached.
pub async fn reload(
    listen: SocketAddr,
    token: Option<&AdminToken>,
    file: &std::path::Path,
) -> Result<ReloadOutcome, ClientError> {
    let credentials = |status: http::StatusCode| {
        let hint = if token.is_none() {
            " This file sets no token_env or token_file, but the running gateway's admin API has a token (and a reload never takes it away): give the file the token, or restart the gateway."
        } else {
            " The token of this file is neither the running gateway's nor what its token_file holds now."
        };
        ReloadOutcome::NotAsked(format!(
            "the admin API refused the credentials ({status}).{hint}"
        ))
    };
    let (status, body) = request(listen, http::Method::GET, "/admin/config", token).await?;
    if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
        return Ok(credentials(status));
    }
    if !status.is_success() {
        return Ok(ReloadOutcome::NotAsked(format!(
            "GET /admin/config answered {status} (is {} the admin API?): {body}",
            local_address(listen)
        )));
    }
    let running: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let Some(theirs) = running["file_absolute"].as_str() else {
        return Ok(ReloadOutcome::NotAsked(
            "the running gateway has no config file to reload (the built-in demo)".to_owned(),
        ));
    };
    let same = match (std::fs::canonicalize(file), std::fs::canonicalize(theirs)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same {
        return Ok(ReloadOutcome::NotAsked(format!(
            "{} is not the file the running gateway reads ({theirs}): a reload re-reads that file. Edit it (this file was checked, not sent), or restart the gateway with --config {}",
            file.display(),
            file.display()
        )));
    }
    let (status, body) = request(listen, http::Method::POST, "/admin/reload", token).await?;
    Ok(match status {
        s if s.is_success() => ReloadOutcome::Applied(body),
        http::StatusCode::BAD_REQUEST => {
            let why: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            ReloadOutcome::Refused(
                why["error"]
                    .as_str()
                    .map_or_else(|| body.clone(), str::to_owned),
            )
        }
        s @ (http::StatusCode::UNAUTHORIZED | http::StatusCode::FORBIDDEN) => credentials(s),
        s => ReloadOutcome::NotAsked(format!("POST /admin/reload answered {s}: {body}")),
    })
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
