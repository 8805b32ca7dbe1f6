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
    // One pass over the names; removal (rare) only for what was found.
    if headers
        .keys()
        .any(|n| is_spoofable(n, peer_trusted, identity))
    {
        remove_spoofable(headers, peer_trusted, identity);
    }
}

fn is_spoofable(name: &HeaderName, peer_trusted: bool, identity: [&HeaderName; 2]) -> bool {
    name.as_str().contains('_')
        || OVERRIDES.contains(name)
        || identity.contains(&name)
        || (!peer_trusted && CLIENT_CLAIMS.contains(name))
}

/// The removal half of [`strip_spoofable`], for a caller that already
/// knows (from [`Seen`]) that such a header is present.
pub(crate) fn remove_spoofable(
    headers: &mut HeaderMap,
    peer_trusted: bool,
    identity: [&HeaderName; 2],
) {
    let found: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_spoofable(n, peer_trusted, identity))
        .cloned()
        .collect();
    for name in found {
        headers.remove(name);
    }
}

/// Which of the request fields the pipeline removes are present, found in
/// one pass over the names: removing an absent field still costs a hash
/// and a probe of the map, and most requests carry none of them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Seen(u32);

impl Seen {
    /// Bits 0–7: the fixed hop-by-hop fields, in [`fixed_hop_by_hop`]'s order.
    const HOP_BY_HOP: u32 = 0xff;
    /// A field [`strip_spoofable`] removes.
    pub(crate) const SPOOFABLE: u32 = 1 << 8;
    /// `Authorization`.
    pub(crate) const AUTHORIZATION: u32 = 1 << 9;
    /// `Expect`.
    pub(crate) const EXPECT: u32 = 1 << 10;
    /// `Trailer`.
    pub(crate) const TRAILER: u32 = 1 << 11;
    /// `tracestate`.
    pub(crate) const TRACESTATE: u32 = 1 << 12;
    /// `traceparent`.
    pub(crate) const TRACEPARENT: u32 = 1 << 13;
    /// `X-Forwarded-For`.
    pub(crate) const FORWARDED_FOR: u32 = 1 << 14;
    /// `X-Forwarded-Proto`.
    pub(crate) const FORWARDED_PROTO: u32 = 1 << 15;
    /// `X-Forwarded-Host`.
    pub(crate) const FORWARDED_HOST: u32 = 1 << 16;
    /// `X-Real-IP`.
    pub(crate) const REAL_IP: u32 = 1 << 17;
    /// `X-Request-Id`.
    pub(crate) const REQUEST_ID: u32 = 1 << 18;

    /// Look at every name of `headers` once (`peer_trusted` and `identity`
    /// as for [`strip_spoofable`]).
    pub(crate) fn scan(
        headers: &HeaderMap,
        peer_trusted: bool,
        identity: [&HeaderName; 2],
    ) -> Self {
        // A match on the name (by length, then bytes) rather than a
        // comparison with each listed name in turn; the first eight bits in
        // `fixed_hop_by_hop`'s order.
        let mut bits = 0u32;
        for name in headers.keys() {
            bits |= match name.as_str() {
                "connection" => 1,
                "keep-alive" => 1 << 1,
                "proxy-connection" => 1 << 2,
                "proxy-authenticate" => 1 << 3,
                "proxy-authorization" => 1 << 4,
                "te" => 1 << 5,
                "transfer-encoding" => 1 << 6,
                "upgrade" => 1 << 7,
                "authorization" => Self::AUTHORIZATION,
                "expect" => Self::EXPECT,
                "trailer" => Self::TRAILER,
                "tracestate" => Self::TRACESTATE,
                "traceparent" => Self::TRACEPARENT,
                "x-forwarded-for" => Self::FORWARDED_FOR,
                "x-forwarded-proto" => Self::FORWARDED_PROTO,
                "x-forwarded-host" => Self::FORWARDED_HOST,
                "x-real-ip" => Self::REAL_IP,
                "x-request-id" => Self::REQUEST_ID,
                _ if is_spoofable(name, peer_trusted, identity) => Self::SPOOFABLE,
                _ => 0,
            };
        }
        Seen(bits)
    }

    /// Whether a field of `flag` (one of the constants) was seen.
    pub(crate) fn has(self, flag: u32) -> bool {
        self.0 & flag != 0
    }
}

/// The fields the gateway adds to an upstream request, kept beside its
/// header map rather than inserted into it: our HTTP/1.1 client writes them
/// straight into the request head after the map's fields, which saves a
/// hash, a probe and a bucket move per field (seven to nine a request, about
/// 2,000 instructions: bench/callgrind.sh). Where hyper sends the request
/// (HTTP/2 upstreams, WebSocket handshakes) they go into the map with
/// [`AddedFields::apply`]. The pipeline removes any client field of these
/// names that the gateway replaces, so a name is never sent twice unless it
/// is appended to (`Via`).
#[derive(Debug, Clone, Default)]
pub struct AddedFields {
    pub(crate) forwarded_for: Option<HeaderValue>,
    pub(crate) forwarded_proto: Option<&'static str>,
    pub(crate) forwarded_host: Option<HeaderValue>,
    pub(crate) via: Option<&'static str>,
    pub(crate) real_ip: Option<HeaderValue>,
    pub(crate) request_id: Option<HeaderValue>,
    pub(crate) traceparent: Option<HeaderValue>,
    pub(crate) user: Option<(HeaderName, HeaderValue)>,
    pub(crate) roles: Option<(HeaderName, HeaderValue)>,
}

/// One added field's value: shared bytes, or a constant.
#[derive(Clone, Copy)]
enum Added<'a> {
    Value(&'a HeaderValue),
    Static(&'static str),
}

impl Added<'_> {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Added::Value(v) => v.as_bytes(),
            Added::Static(s) => s.as_bytes(),
        }
    }

    fn to_value(self) -> HeaderValue {
        match self {
            Added::Value(v) => v.clone(),
            Added::Static(s) => HeaderValue::from_static(s),
        }
    }
}

impl AddedFields {
    /// Every field, in the order they are written.
    fn each(&self, mut f: impl FnMut(&HeaderName, Added<'_>)) {
        if let Some(v) = &self.forwarded_for {
            f(&X_FORWARDED_FOR, Added::Value(v));
        }
        if let Some(s) = self.forwarded_proto {
            f(&X_FORWARDED_PROTO, Added::Static(s));
        }
        if let Some(v) = &self.forwarded_host {
            f(&X_FORWARDED_HOST, Added::Value(v));
        }
        if let Some(s) = self.via {
            f(&header::VIA, Added::Static(s));
        }
        if let Some(v) = &self.real_ip {
            f(&X_REAL_IP, Added::Value(v));
        }
        if let Some(v) = &self.request_id {
            f(&X_REQUEST_ID, Added::Value(v));
        }
        if let Some(v) = &self.traceparent {
            f(&crate::metrics::traceparent::TRACEPARENT, Added::Value(v));
        }
        for (n, v) in [&self.user, &self.roles].into_iter().flatten() {
            f(n, Added::Value(v));
        }
    }

    /// Append the fields to an HTTP/1.1 head being written.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        self.each(|name, value| {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        });
    }

    /// None: a request sent as it is.
    pub const NONE: AddedFields = AddedFields {
        forwarded_for: None,
        forwarded_proto: None,
        forwarded_host: None,
        via: None,
        real_ip: None,
        request_id: None,
        traceparent: None,
        user: None,
        roles: None,
    };

    /// Put the fields into `headers` (set, except `Via`, which is appended).
    pub fn apply(&self, headers: &mut HeaderMap) {
        self.each(|name, value| {
            if *name == header::VIA {
                headers.append(name.clone(), value.to_value());
            } else {
                headers.insert(name.clone(), value.to_value());
            }
        });
    }

    /// The value of an added field.
    pub fn get(&self, name: &HeaderName) -> Option<HeaderValue> {
        let mut found = None;
        self.each(|n, v| {
            if n == name {
                found = Some(v.to_value());
            }
        });
        found
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
            &header::EXPECT,
            &header::TRAILER,
            &crate::metrics::traceparent::TRACEPARENT,
            &crate::metrics::traceparent::TRACESTATE,
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

/// Whether `Connection` lists `name` (any letter case).
pub(crate) fn connection_names(headers: &HeaderMap, name: &str) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(name))
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
    strip_seen_hop_by_hop(headers, keep_upgrade, Seen(u32::from(present)));
}

/// [`strip_hop_by_hop`] with the fixed fields' presence already known.
/// True when fields that `Connection` named (beyond the fixed ones) were
/// removed: what `seen` says of other names may then be out of date.
pub(crate) fn strip_seen_hop_by_hop(
    headers: &mut HeaderMap,
    keep_upgrade: bool,
    seen: Seen,
) -> bool {
    let fixed = fixed_hop_by_hop();
    let present = seen.0 & Seen::HOP_BY_HOP;
    if present == 0 {
        return false;
    }
    let mut removed_listed = false;
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
            removed_listed |= headers.remove(&name).is_some();
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
    removed_listed
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
    fn scan_notes_each_field_it_is_asked_about() {
        // The first eight bits follow `fixed_hop_by_hop`'s order, which
        // `strip_seen_hop_by_hop` indexes by.
        for (i, name) in fixed_hop_by_hop().into_iter().enumerate() {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), HeaderValue::from_static("x"));
            assert_eq!(
                Seen::scan(&h, false, [&X_REQUEST_ID, &X_REQUEST_ID]).0,
                1 << i,
                "{name}"
            );
        }
        let user = HeaderName::from_static("x-aether-user");
        let roles = HeaderName::from_static("x-aether-roles");
        let cases: [(&str, u32, u32); 14] = [
            ("authorization", Seen::AUTHORIZATION, Seen::AUTHORIZATION),
            ("expect", Seen::EXPECT, Seen::EXPECT),
            ("trailer", Seen::TRAILER, Seen::TRAILER),
            ("tracestate", Seen::TRACESTATE, Seen::TRACESTATE),
            ("traceparent", Seen::TRACEPARENT, Seen::TRACEPARENT),
            ("x-forwarded-for", Seen::FORWARDED_FOR, Seen::FORWARDED_FOR),
            (
                "x-forwarded-proto",
                Seen::FORWARDED_PROTO,
                Seen::FORWARDED_PROTO,
            ),
            (
                "x-forwarded-host",
                Seen::FORWARDED_HOST,
                Seen::FORWARDED_HOST,
            ),
            ("x-real-ip", Seen::REAL_IP, Seen::REAL_IP),
            ("x-request-id", Seen::REQUEST_ID, Seen::REQUEST_ID),
            // (untrusted peer, trusted peer)
            ("x-aether-user", Seen::SPOOFABLE, Seen::SPOOFABLE),
            ("x-http-method-override", Seen::SPOOFABLE, Seen::SPOOFABLE),
            ("x-forwarded-port", Seen::SPOOFABLE, 0),
            ("x_real_ip", Seen::SPOOFABLE, Seen::SPOOFABLE),
        ];
        for (name, untrusted, trusted) in cases {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            assert_eq!(
                Seen::scan(&h, false, [&user, &roles]).0,
                untrusted,
                "{name}"
            );
            assert_eq!(Seen::scan(&h, true, [&user, &roles]).0, trusted, "{name}");
        }
    }

    #[test]
    fn added_fields_written_applied_and_looked_up_alike() {
        let user = HeaderName::from_static("x-aether-user");
        let added = AddedFields {
            forwarded_for: Some(HeaderValue::from_static("192.0.2.1, 10.0.0.1")),
            forwarded_proto: Some("https"),
            via: Some("1.1 aether-gateway"),
            request_id: Some(HeaderValue::from_static("abc")),
            user: Some((user.clone(), HeaderValue::from_static("player-7"))),
            ..AddedFields::default()
        };
        let mut wire = Vec::new();
        added.write_to(&mut wire);
        assert_eq!(
            std::str::from_utf8(&wire).unwrap(),
            "x-forwarded-for: 192.0.2.1, 10.0.0.1\r\nx-forwarded-proto: https\r\n\
             via: 1.1 aether-gateway\r\nx-request-id: abc\r\nx-aether-user: player-7\r\n"
        );
        let mut h = HeaderMap::new();
        h.insert(header::VIA, HeaderValue::from_static("1.0 edge"));
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("client's"));
        added.apply(&mut h);
        let via: Vec<_> = h.get_all(header::VIA).iter().collect();
        assert_eq!(via, ["1.0 edge", "1.1 aether-gateway"]);
        assert_eq!(h[&X_REQUEST_ID], "abc");
        assert_eq!(h[&user], "player-7");
        assert_eq!(h.len(), 6);
        assert_eq!(added.get(&X_FORWARDED_PROTO).unwrap(), "https");
        assert_eq!(added.get(&X_REAL_IP), None);
        AddedFields::NONE.write_to(&mut wire);
        assert_eq!(wire.len(), 133);
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
