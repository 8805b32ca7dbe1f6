//! Header hygiene between downstream and upstream (RFC 9110 §7.6).

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Real-IP`: the client address the gateway resolved (always overwritten).
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection, never forwarded (plus any named in `Connection`).
fn fixed_hop_by_hop() -> [&'static HeaderName; 9] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ]
}

/// True when the request asks for a protocol upgrade (`Connection: upgrade` + `Upgrade`).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Remove hop-by-hop headers, including those the `Connection` header names.
///
/// With `keep_upgrade`, `Upgrade` survives and `Connection: upgrade` is
/// restored, which is what a tunnelled WebSocket handshake needs.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // On the hot path: one pass over the names notes which fixed hop-by-hop
    // headers are present; most messages carry none, or only `Connection`.
    let fixed = fixed_hop_by_hop();
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = fixed.iter().position(|f| *f == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Names listed in `Connection` beyond the fixed set are rare; only they
    // cost an allocation.
    let listed: Vec<HeaderName> = connection_tokens(headers)
        .filter(|t| {
            !t.eq_ignore_ascii_case("close")
                && !fixed.iter().any(|f| t.eq_ignore_ascii_case(f.as_str()))
        })
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(&name);
    }
    for (i, name) in fixed.into_iter().enumerate() {
        if present & (1 << i) == 0 || (keep_upgrade && name == header::UPGRADE) {
            continue;
        }
        if name == header::TE {
            // "TE: trailers" is end-to-end meaningful (gRPC needs it).
            let trailers_only = headers
                .get(header::TE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
            if trailers_only {
                continue;
            }
        }
        headers.remove(name);
    }
    if keep_upgrade && headers.contains_key(header::UPGRADE) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// True for an acceptable client-supplied request id: 1–128 visible ASCII, no separators.
fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=')
        })
}

/// The request id to use: the client's when well-formed, else a new one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(v) if valid_request_id(v) => v.clone(),
        _ => new_request_id(),
    }
}

/// A new process-unique request id: a random per-process prefix and a counter,
/// mixed so consecutive ids don't look sequential. 32 hex digits.
pub fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id() as u64);
        h.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mixed = splitmix64(n ^ prefix.rotate_left(17));
    let mut buf = [0u8; 32];
    write_hex(&mut buf[..16], prefix);
    write_hex(&mut buf[16..], mixed);
    HeaderValue::from_bytes(&buf).expect("hex digits are a valid header value")
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn write_hex(out: &mut [u8], v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_fixed_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, X-Secret-Hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert("te", "gzip".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("x-end-to-end", "yes".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-end-to-end"], "yes");
    }

    #[test]
    fn keeps_te_trailers_and_upgrade_when_asked() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        assert!(is_upgrade_request(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn request_ids() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", "abc-123".parse().unwrap());
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id", "has space".parse().unwrap());
        assert_ne!(request_id(&h), "has space");
        h.insert("x-request-id", "x".repeat(129).parse().unwrap());
        assert_eq!(request_id(&h).len(), 32);
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }
}
