//! Which peers an allocation may relay to.
//!
//! A TURN server is a proxy: left open, it lets anyone on the internet send
//! UDP to the server's own loopback, to the private network behind it, or
//! to cloud metadata endpoints. coturn shipped this hole more than once
//! (CVE-2020-26262: `0.0.0.0` and `[::]` reached loopback; earlier, IPv4
//! targets written in IPv6 forms slipped past IPv4 deny lists), so every
//! special range is denied by default, in every IPv6 form that carries an
//! IPv4 address, unless the operator allows it explicitly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Why a peer is refused (the 403's reason, for logs and counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    /// `0.0.0.0`/8, `::`: "this host" reaches the relay's own loopback on most stacks.
    #[error("unspecified address")]
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    #[error("loopback address")]
    Loopback,
    /// RFC 1918, `fc00::/7` (unique local), `fec0::/10` (site local).
    #[error("private address")]
    Private,
    /// `169.254.0.0/16` (cloud metadata lives here), `fe80::/10`.
    #[error("link-local address")]
    LinkLocal,
    /// `100.64.0.0/10` (carrier-grade NAT).
    #[error("shared (CGNAT) address")]
    SharedNat,
    /// `224.0.0.0/4`, `ff00::/8`, `255.255.255.255`.
    #[error("multicast or broadcast address")]
    Multicast,
    /// `240.0.0.0/4`, `192.0.0.0/24`, `198.18.0.0/15` and other
    /// special-purpose IPv4 blocks no peer lives in.
    #[error("reserved address")]
    Reserved,
    /// One of the gateway's own listener addresses.
    #[error("the gateway's own address")]
    Own,
}

/// The peer policy of a relay.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    allowed: Vec<IpNet>,
    own: Vec<IpAddr>,
    own_sockets: Vec<SocketAddr>,
    /// The relay host's own addresses and the relayed port range: on those
    /// addresses only relayed ports are peers.
    host: Vec<IpAddr>,
    relay_ports: (u16, u16),
}

impl PeerPolicy {
    /// Deny the special ranges, except inside `allowed`; always deny `own`
    /// (the gateway's listener addresses) unless allowed too.
    pub fn new(allowed: Vec<IpNet>, own: Vec<IpAddr>) -> Self {
        PeerPolicy {
            allowed,
            own,
            own_sockets: Vec::new(),
            host: Vec::new(),
            relay_ports: (0, u16::MAX),
        }
    }

    /// On the relay host's own addresses (`host`: the relay and listener
    /// addresses), only ports of `relay_ports` may be peers — other
    /// clients' relayed addresses — never the host's other UDP services
    /// (DNS, NTP, SNMP, …), unless the address is in `allowed` explicitly.
    pub fn with_host(mut self, host: Vec<IpAddr>, relay_ports: (u16, u16)) -> Self {
        self.host = host;
        self.relay_ports = relay_ports;
        self
    }

    /// Whether `peer` is one of the gateway's own sockets, or a port of the
    /// relay host's own addresses outside the relayed range. Cheap: the
    /// data path asks it for every Send indication.
    pub fn is_own(&self, peer: SocketAddr) -> bool {
        let v4 = embedded_v4(peer.ip());
        let same =
            |ip: IpAddr| ip == peer.ip() || embedded_v4(ip).zip(v4).is_some_and(|(a, b)| a == b);
        let loopback = peer.ip().is_loopback() || v4.is_some_and(|v| v.is_loopback());
        let socket = self.own_sockets.iter().any(|o| {
            o.port() == peer.port()
                // A wildcard listener answers on every loopback address too.
                && (same(o.ip()) || (o.ip().is_unspecified() && (loopback || self.host.iter().any(|h| same(*h)))))
        });
        let (lo, hi) = self.relay_ports;
        // An address the operator allowed explicitly (a test peer on the
        // loopback) keeps all its ports but the gateway's own.
        let allowed = self
            .allowed
            .iter()
            .any(|n| n.contains(&peer.ip()) || v4.is_some_and(|v| n.contains(&IpAddr::V4(v))));
        socket
            || (!allowed && self.host.iter().any(|h| same(*h)) && !(lo..=hi).contains(&peer.port()))
    }

    /// Also deny these socket addresses (the gateway's HTTP, admin and
    /// relay listeners) whatever `allowed` says: a relay that lets a client
    /// talk to the gateway's own ports from inside (coturn's CVE-2020-26262
    /// class) is never what an operator meant by allowing a range. Only the
    /// ports are denied, so clients may still relay to each other's relayed
    /// addresses on the same host.
    pub fn with_own_sockets(mut self, sockets: Vec<SocketAddr>) -> Self {
        self.own_sockets = sockets;
        self
    }

    /// May an allocation send to `peer` (address and port)?
    ///
    /// # Errors
    /// [`Forbidden::Own`] for one of the gateway's own listener sockets,
    /// else what [`PeerPolicy::check`] says of its address.
    pub fn check_socket(&self, peer: SocketAddr) -> Result<(), Forbidden> {
        if self.is_own(peer) {
            return Err(Forbidden::Own);
        }
        self.check(peer.ip())
    }

    /// May an allocation send to `peer`?
    ///
    /// # Errors
    /// [`Forbidden`] with the range the peer (or the IPv4 address an IPv6
    /// form carries) falls in.
    pub fn check(&self, peer: IpAddr) -> Result<(), Forbidden> {
        // Allowed ranges are matched against the address as written and
        // against the IPv4 address it carries, so `allowed = 127.0.0.1/32`
        // also admits `::ffff:127.0.0.1` (the same socket).
        let v4 = embedded_v4(peer);
        let allowed = |ip: IpAddr| self.allowed.iter().any(|n| n.contains(&ip));
        if allowed(peer) || v4.is_some_and(|v| allowed(IpAddr::V4(v))) {
            return Ok(());
        }
        if self
            .own
            .iter()
            .any(|o| *o == peer || embedded_v4(*o).zip(v4).is_some_and(|(a, b)| a == b))
        {
            return Err(Forbidden::Own);
        }
        match (peer, v4) {
            (_, Some(v4)) => check_v4(v4),
            (IpAddr::V6(v6), None) => check_v6(v6),
            (IpAddr::V4(_), None) => unreachable!("an IPv4 address is its own embedded address"),
        }
    }
}

/// The IPv4 address an address stands for: itself, or the one carried by
/// an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`) address. (The NAT64
/// local-use prefix `64:ff9b:1::/48` may place the IPv4 address elsewhere,
/// RFC 6052 §2.2, so the policy refuses it whole instead of decoding it.)
pub fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let v6 = match ip {
        IpAddr::V4(v4) => return Some(v4),
        IpAddr::V6(v6) => v6,
    };
    let s = v6.segments();
    let o = v6.octets();
    let last32 = || Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if v6.is_unspecified() || v6.is_loopback() {
        // IPv6's own `::` and `::1` (not the compatible forms of 0.0.0.0/0.0.0.1).
        return None;
    }
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return Some(last32());
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(last32());
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

fn check_v4(ip: Ipv4Addr) -> Result<(), Forbidden> {
    let [a, b, c, _] = ip.octets();
    // The deprecated 6to4 relay anycast. (The documentation blocks are not
    // routed anywhere, so relaying to them reaches nothing; they stay
    // allowed, as the tests' stand-ins for public peers.)
    if (a, b, c) == (192, 88, 99) {
        return Err(Forbidden::Reserved);
    }
    Err(match (a, b, c) {
        (0, _, _) => Forbidden::Unspecified,
        (127, _, _) => Forbidden::Loopback,
        (10, _, _) | (192, 168, _) => Forbidden::Private,
        (172, 16..=31, _) => Forbidden::Private,
        (169, 254, _) => Forbidden::LinkLocal,
        (100, 64..=127, _) => Forbidden::SharedNat,
        (224..=239, _, _) => Forbidden::Multicast,
        _ if ip.is_broadcast() => Forbidden::Multicast,
        (240..=255, _, _) => Forbidden::Reserved,
        (192, 0, 0) | (198, 18..=19, _) => Forbidden::Reserved,
        _ => return Ok(()),
    })
}

fn check_v6(ip: Ipv6Addr) -> Result<(), Forbidden> {
    let s = ip.segments();
    // Forms a translator may turn into an IPv4 address whose layout this
    // policy does not decode, and ranges no peer lives in: refused whole.
    let reserved = s[..3] == [0x64, 0xff9b, 1] // NAT64 local use (RFC 8215)
        || (s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0) // IPv4-translated (RFC 2765)
        || s[..4] == [0x0100, 0, 0, 0] // discard-only (RFC 6666)
        || (s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0) // benchmarking
        || (s[0] == 0x2001 && (0x0010..=0x001f).contains(&s[1])) // ORCHID
        || s[0] == 0x5f00; // segment routing SIDs (RFC 9602)
    if reserved {
        return Err(Forbidden::Reserved);
    }
    let s0 = s[0];
    Err(match s0 {
        _ if ip.is_unspecified() => Forbidden::Unspecified,
        _ if ip.is_loopback() => Forbidden::Loopback,
        0xfc00..=0xfdff => Forbidden::Private,
        0xfec0..=0xfeff => Forbidden::Private,
        0xfe80..=0xfebf => Forbidden::LinkLocal,
        0xff00..=0xffff => Forbidden::Multicast,
        // Teredo hides an obfuscated IPv4 client address; nothing a voice
        // peer needs, so it is refused whole.
        0x2001 if ip.segments()[1] == 0 => Forbidden::Reserved,
        _ => return Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny(ip: &str) -> Result<(), Forbidden> {
        PeerPolicy::default().check(ip.parse().unwrap())
    }

    #[test]
    fn own_listener_sockets_are_refused_even_inside_an_allowed_range() {
        let p = PeerPolicy::new(vec!["127.0.0.1/32".parse().unwrap()], vec![])
            .with_own_sockets(vec!["127.0.0.1:3478".parse().unwrap()]);
        let at = |s: &str| p.check_socket(s.parse().unwrap());
        assert_eq!(at("127.0.0.1:3478"), Err(Forbidden::Own));
        assert_eq!(at("[::ffff:127.0.0.1]:3478"), Err(Forbidden::Own));
        // Another port of the allowed range, e.g. another client's relayed port.
        assert_eq!(at("127.0.0.1:50001"), Ok(()));
        assert_eq!(at("127.0.0.2:3478"), Err(Forbidden::Loopback));
        // The relay host: only relayed ports are peers there.
        let p = PeerPolicy::default()
            .with_own_sockets(vec!["0.0.0.0:3478".parse().unwrap()])
            .with_host(vec!["203.0.113.5".parse().unwrap()], (50000, 59999));
        let at = |s: &str| p.check_socket(s.parse().unwrap());
        assert_eq!(at("203.0.113.5:50001"), Ok(()));
        assert_eq!(at("203.0.113.5:53"), Err(Forbidden::Own));
        assert_eq!(at("203.0.113.5:3478"), Err(Forbidden::Own));
        assert_eq!(at("[::ffff:203.0.113.5]:123"), Err(Forbidden::Own));
        assert_eq!(at("203.0.113.6:53"), Ok(()));
        // A wildcard listener answers on every loopback address.
        assert!(p.is_own("127.0.0.2:3478".parse().unwrap()));
        assert!(!p.is_own("127.0.0.2:3479".parse().unwrap()));
    }

    #[test]
    fn special_ranges_are_refused_in_every_form() {
        let cases = [
            ("0.0.0.0", Forbidden::Unspecified),
            ("::", Forbidden::Unspecified),
            ("0.1.2.3", Forbidden::Unspecified),
            ("127.0.0.1", Forbidden::Loopback),
            ("127.255.0.9", Forbidden::Loopback),
            ("::1", Forbidden::Loopback),
            ("::ffff:127.0.0.1", Forbidden::Loopback),
            ("::127.0.0.1", Forbidden::Loopback),
            ("64:ff9b::7f00:1", Forbidden::Loopback),
            ("2002:7f00:1::", Forbidden::Loopback),
            ("::ffff:0.0.0.0", Forbidden::Unspecified),
            ("10.1.2.3", Forbidden::Private),
            ("172.16.0.1", Forbidden::Private),
            ("172.31.255.255", Forbidden::Private),
            ("192.168.1.1", Forbidden::Private),
            ("::ffff:10.0.0.1", Forbidden::Private),
            ("64:ff9b:1::a00:1", Forbidden::Reserved),
            // The RFC 6052 /48 layout of 127.0.0.1, which the last 32 bits
            // would read as 8.8.8.8: the whole local-use prefix is refused.
            ("64:ff9b:1:7f00:0:100:808:808", Forbidden::Reserved),
            // IPv4-translated 169.254.169.254.
            ("::ffff:0:a9fe:a9fe", Forbidden::Reserved),
            ("100::1", Forbidden::Reserved),
            ("2001:2::1", Forbidden::Reserved),
            ("2001:10::1", Forbidden::Reserved),
            ("5f00::1", Forbidden::Reserved),
            ("192.88.99.1", Forbidden::Reserved),
            ("fd00::1", Forbidden::Private),
            ("fec0::1", Forbidden::Private),
            ("169.254.169.254", Forbidden::LinkLocal),
            ("::ffff:169.254.169.254", Forbidden::LinkLocal),
            ("fe80::1", Forbidden::LinkLocal),
            ("100.64.0.1", Forbidden::SharedNat),
            ("100.127.255.255", Forbidden::SharedNat),
            ("224.0.0.1", Forbidden::Multicast),
            ("239.255.255.250", Forbidden::Multicast),
            ("255.255.255.255", Forbidden::Multicast),
            ("ff02::1", Forbidden::Multicast),
            ("240.0.0.1", Forbidden::Reserved),
            ("192.0.0.8", Forbidden::Reserved),
            ("198.18.0.1", Forbidden::Reserved),
            ("2001:0:4136:e378::1", Forbidden::Reserved),
        ];
        for (ip, why) in cases {
            assert_eq!(deny(ip), Err(why), "{ip}");
        }
    }

    #[test]
    fn ordinary_peers_pass() {
        for ip in [
            "203.0.113.7",
            "198.51.100.1",
            "8.8.4.4",
            "172.32.0.1",
            "100.128.0.1",
            "2001:db8::1",
            "2a00:1450::1",
            "::ffff:203.0.113.7",
            "2002:cb00:7107::",
        ] {
            assert_eq!(deny(ip), Ok(()), "{ip}");
        }
    }

    #[test]
    fn allowed_ranges_and_own_addresses() {
        let p = PeerPolicy::new(
            vec!["127.0.0.1/32".parse().unwrap()],
            vec!["203.0.113.9".parse().unwrap()],
        );
        assert_eq!(p.check("127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(p.check("::ffff:127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(
            p.check("127.0.0.2".parse().unwrap()),
            Err(Forbidden::Loopback)
        );
        assert_eq!(p.check("203.0.113.9".parse().unwrap()), Err(Forbidden::Own));
        assert_eq!(
            p.check("::ffff:203.0.113.9".parse().unwrap()),
            Err(Forbidden::Own)
        );
        assert_eq!(p.check("203.0.113.10".parse().unwrap()), Ok(()));
    }

    proptest::proptest! {
        /// An IPv4 address and its mapped, compatible and NAT64 forms get
        /// the same verdict.
        #[test]
        fn ipv6_forms_of_an_ipv4_address_share_its_verdict(v4 in proptest::num::u32::ANY) {
            let v4 = Ipv4Addr::from(v4);
            let p = PeerPolicy::default();
            let verdict = p.check(IpAddr::V4(v4));
            let o = v4.octets();
            let forms = [
                IpAddr::V6(v4.to_ipv6_mapped()),
                IpAddr::V6(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([o[0], o[1]]), u16::from_be_bytes([o[2], o[3]]))),
                IpAddr::V6(Ipv6Addr::new(0x2002, u16::from_be_bytes([o[0], o[1]]), u16::from_be_bytes([o[2], o[3]]), 0, 0, 0, 0, 1)),
            ];
            for f in forms {
                proptest::prop_assert_eq!(p.check(f), verdict, "{}", f);
            }
        }
    }
}
