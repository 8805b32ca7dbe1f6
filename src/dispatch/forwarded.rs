//! Who the client is: resolved once per request from the socket peer and,
//! only when the peer is a trusted proxy, from `X-Forwarded-For`.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// The set of proxies whose `X-Forwarded-*` headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trust these networks.
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets }
    }

    /// True when `ip` is inside one of the trusted networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client's address for this request.
    ///
    /// The socket peer, unless the peer is trusted: then the right-most
    /// `X-Forwarded-For` entry that is not itself a trusted proxy (a client
    /// can prepend anything, but cannot forge what our proxies appended).
    /// An unparseable entry stops the walk at the last address we could trust.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if self.nets.is_empty() || !self.contains(peer) {
            return peer;
        }
        // A proxy that calls its X-Forwarded-For hop-by-hop takes it back:
        // the field is dropped before forwarding, so it names no client here.
        if super::headers::connection_names(headers, "x-forwarded-for") {
            return peer;
        }
        let mut client = peer;
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            // Entry by entry over the bytes: a non-ASCII byte the client put
            // in its own (left) part must not hide what our proxies appended.
            for entry in value.as_bytes().rsplit(|b| *b == b',') {
                let Some(ip) = std::str::from_utf8(entry).ok().and_then(parse_entry) else {
                    return client;
                };
                client = ip;
                if !self.contains(ip) {
                    return ip;
                }
            }
        }
        client
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:5678`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = e.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let t = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(
            t.client_ip(ip("203.0.113.9"), &headers(&["1.1.1.1"])),
            ip("203.0.113.9")
        );
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.1"), &headers(&["1.1.1.1"])),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn right_most_untrusted_entry_wins() {
        let t = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let h = headers(&["6.6.6.6, 198.51.100.7", "10.1.1.1"]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("198.51.100.7"));
        // All trusted: the left-most hop is the best we know.
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &headers(&["10.2.2.2, 10.3.3.3"])),
            ip("10.2.2.2")
        );
        // No header: the peer.
        assert_eq!(t.client_ip(ip("10.0.0.1"), &headers(&[])), ip("10.0.0.1"));
        // Named in Connection (any case): not for us, the peer.
        let mut h = headers(&["198.51.100.7"]);
        h.insert("connection", "keep-alive, X-Forwarded-For".parse().unwrap());
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
        // A non-UTF-8 byte on the client's side of the list hides nothing.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\x80, 198.51.100.2").unwrap(),
        );
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("198.51.100.2"));
        // Garbage stops the walk at the last trusted address.
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &headers(&["1.1.1.1, junk"])),
            ip("10.0.0.1")
        );
        assert_eq!(
            t.client_ip(
                ip("10.0.0.1"),
                &headers(&["[2001:db8::1]:443, 10.9.9.9:80"])
            ),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn mapped_addresses_are_canonical() {
        let t = TrustedProxies::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(
            t.client_ip(ip("::ffff:127.0.0.1"), &headers(&["192.0.2.1"])),
            ip("192.0.2.1")
        );
        assert_eq!(
            t.client_ip(ip("::ffff:192.0.2.5"), &headers(&[])),
            ip("192.0.2.5")
        );
    }
}
