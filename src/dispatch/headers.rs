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

/// Headers that describe one connection, never forwarded (plus any named in
/// `Connection`). `Trailer` is end-to-end (RFC 9110 §6.6.2) and is kept on
/// responses, whose trailers pass through; request trailers are dropped
/// (`body.rs`), and the pipeline removes the request's `Trailer` with them.
fn fixed_hop_by_hop() -> [&'static HeaderName; 8] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TE,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ]
}

/// True for a hop-by-hop header that is one by name alone (not counting
/// those a `Connection` header lists).
pub fn is_fixed_hop_by_hop(name: &HeaderName) -> bool {
    fixed_hop_by_hop().contains(&name)
}

/// Headers through which a client could claim another address, scheme,
/// host, path or method than the one the gateway saw and routed. Always
/// removed: the method and path overrides (a route allowing POST must not
/// become a DELETE upstream) and, unless the peer is a trusted proxy, the
/// address/proto/prefix family that `X-Forwarded-*` handling does not rewrite.
static OVERRIDES: [HeaderName; 9] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-original-method"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-original-uri"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-forwarded-uri"),
    HeaderName::from_static("x-envoy-original-path"),
];
static CLIENT_CLAIMS: [HeaderName; 14] = [
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-forwarded-ssl"),
    HeaderName::from_static("x-host"),
    HeaderName::from_static("x-original-host"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("fastly-client-ip"),
    HeaderName::from_static("x-original-forwarded-for"),
];

/// Remove client claims the gateway does not vouch for (see [`OVERRIDES`]),
/// and every header whose name has an underscore: CGI-style stacks read
/// `X_Real_IP` as `X-Real-IP`, so such a name would slip past the rules
/// above (nginx drops them by default too).
///
/// `identity` names the headers that carry the validated identity upstream
/// (`x-aether-user`, `x-aether-roles` by default): only the gateway sets
/// them, so a client's own are always removed, on public routes too.
pub fn strip_spoofable(headers: &mut HeaderMap, peer_trusted: bool, identity: [&HeaderName; 2]) {
    let spoofable = |name: &HeaderName| {
        name.as_str().contains('_')
            || OVERRIDES.contains(name)
            || identity.contains(&name)
            || (!peer_trusted && CLIENT_CLAIMS.contains(name))
    };
    // One pass over the names; removal (rare) only for what was found.
    if !headers.keys().any(spoofable) {
        return;
    }
    let found: Vec<HeaderName> = headers.keys().filter(|n| spoofable(n)).cloned().collect();
    for name in found {
        headers.remove(name);
    }
}

/// Headers the gateway sets or manages itself, which configuration may not
/// reuse for another purpose (e.g. as the identity header).
pub fn is_reserved(name: &HeaderName) -> bool {
    fixed_hop_by_hop().contains(&name)
        || [
            &header::HOST,
            &header::AUTHORIZATION,
            &header::CONTENT_LENGTH,
            &header::COOKIE,
            &header::VIA,
            &X_REQUEST_ID,
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &X_REAL_IP,
        ]
        .contains(&name)
}

/// HTTP/2 may split `Cookie` into several fields; HTTP/1.1 upstreams need
/// one, joined with `"; "` (RFC 9113 §8.2.3).
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut all = headers.get_all(header::COOKIE).iter();
    if all.next().is_none() || all.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// True for a WebSocket handshake (RFC 6455 §4.1): `GET` with
/// `Upgrade: websocket` and `Connection: upgrade`.
///
/// Only WebSocket is tunnelled. Any other `Upgrade` (h2c, custom protocols)
/// is dropped as a hop-by-hop header and the request goes through as plain
/// HTTP: a tunnel to another protocol would bypass routing and header hygiene.
pub fn is_websocket_upgrade(method: &http::Method, headers: &HeaderMap) -> bool {
    let mut upgrades = headers.get_all(header::UPGRADE).iter();
    let websocket = match (upgrades.next(), upgrades.next()) {
        (Some(v), None) => v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"),
        _ => false,
    };
    *method == http::Method::GET
        && websocket
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
    // `Connection` (bit 0) usually says only keep-alive/close: nothing to look up.
    if present & 1 != 0 {
        let mut listed: Vec<HeaderName> = Vec::new();
        for t in connection_tokens(headers) {
            let common = t.eq_ignore_ascii_case("keep-alive") || t.eq_ignore_ascii_case("close");
            if common || fixed.iter().any(|f| t.eq_ignore_ascii_case(f.as_str())) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(t.as_bytes()) {
                listed.push(name);
            }
        }
        for name in listed {
            headers.remove(&name);
        }
    }
    for (i, name) in fixed.into_iter().enumerate() {
        if present & (1 << i) == 0 || (keep_upgrade && name == header::UPGRADE) {
            continue;
        }
        if name == header::TE {
            // "TE: trailers" is end-to-end meaningful (gRPC needs it), and the
            // only TE HTTP/2 allows: keep it only when every value is exactly that.
            let trailers_only = headers
                .get_all(header::TE)
                .iter()
                .all(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"trailers"));
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
        assert!(is_websocket_upgrade(&http::Method::GET, &h));
        assert!(!is_websocket_upgrade(&http::Method::POST, &h));
        let mut h2c = h.clone();
        h2c.insert("upgrade", "h2c".parse().unwrap());
        assert!(!is_websocket_upgrade(&http::Method::GET, &h2c));
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
