//! STUN Binding (RFC 8489 §3): tell a client the address its packets come
//! from, as `XOR-MAPPED-ADDRESS`.
//!
//! Everything here answers unauthenticated traffic, so it is strict and
//! small: a datagram that is not exactly one well-formed STUN message is
//! dropped without a reply (§6.3), an answer carries no `SOFTWARE` and no
//! reason phrase (it is no larger than it must be: STUN must not be an
//! amplifier), and `FINGERPRINT` is added only when the request had one.

use std::net::SocketAddr;

use stun_types::attribute::{
    Attribute, AttributeStaticType, AttributeType, ErrorCode, Fingerprint, UnknownAttributes,
    XorMappedAddress,
};
use stun_types::message::{
    BINDING, Message, MessageClass, MessageWrite, MessageWriteExt, MessageWriteMutSlice,
};

/// Comprehension-required attributes (type < 0x8000) this server
/// understands, so their presence is no reason for a 420: RFC 8489's own,
/// RFC 8656's (TURN) and ICE's (RFC 8445: clients may send connectivity
/// checks here).
const UNDERSTOOD: &[u16] = &[
    0x0001, // MAPPED-ADDRESS
    0x0006, // USERNAME
    0x0008, // MESSAGE-INTEGRITY
    0x0009, // ERROR-CODE
    0x000A, // UNKNOWN-ATTRIBUTES
    0x000C, // CHANNEL-NUMBER
    0x000D, // LIFETIME
    0x0012, // XOR-PEER-ADDRESS
    0x0013, // DATA
    0x0014, // REALM
    0x0015, // NONCE
    0x0016, // XOR-RELAYED-ADDRESS
    0x0017, // REQUESTED-ADDRESS-FAMILY
    0x0018, // EVEN-PORT
    0x0019, // REQUESTED-TRANSPORT
    0x001A, // DONT-FRAGMENT
    0x001C, // MESSAGE-INTEGRITY-SHA256
    0x001D, // PASSWORD-ALGORITHM
    0x001E, // USERHASH
    0x0020, // XOR-MAPPED-ADDRESS
    0x0022, // RESERVATION-TOKEN
    0x0024, // PRIORITY (ICE)
    0x0025, // USE-CANDIDATE (ICE)
];

/// Most unknown attributes a 420 lists (a request cannot make the answer
/// grow past a small bound).
const MAX_UNKNOWN: usize = 8;

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Send the first `n` bytes of the output buffer back to the sender.
    Reply(usize),
    /// Send nothing: malformed, not STUN, or nothing to answer.
    Drop,
    /// A well-formed STUN message for another method (TURN's business).
    NotBinding,
}

/// The address to report as XOR-MAPPED-ADDRESS: an IPv4 client seen
/// through a dual-stack (IPv6) listener as `::ffff:a.b.c.d` is reported as
/// the IPv4 address it is (RFC 8489 §14.2), or ICE would gather a bogus
/// IPv6 candidate.
pub fn mapped(from: SocketAddr) -> SocketAddr {
    match from {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => from,
        },
        v4 => v4,
    }
}

/// Parse `datagram` as exactly one STUN message: the declared length must
/// cover the datagram to the byte (the codec alone accepts trailing bytes).
pub fn parse(datagram: &[u8]) -> Option<Message<'_>> {
    let declared = usize::from(u16::from_be_bytes([*datagram.get(2)?, *datagram.get(3)?]));
    if 20 + declared != datagram.len() {
        return None;
    }
    // Checks the magic cookie, the attribute framing and FINGERPRINT.
    Message::from_bytes(datagram).ok()
}

/// Answer a datagram from `from` (the address its packets come from, as
/// the socket saw it), writing any reply into `out` (at least 128 bytes).
pub fn answer(datagram: &[u8], from: SocketAddr, out: &mut [u8]) -> Answer {
    match parse(datagram) {
        Some(msg) => answer_parsed(&msg, from, out),
        None => Answer::Drop,
    }
}

/// [`answer`] for a message already parsed (with [`parse`]).
pub fn answer_parsed(msg: &Message<'_>, from: SocketAddr, out: &mut [u8]) -> Answer {
    if !msg.has_method(BINDING) {
        return Answer::NotBinding;
    }
    // A Binding indication is a keep-alive: no answer. Responses are not
    // ours to answer either.
    if !msg.has_class(MessageClass::Request) {
        return Answer::Drop;
    }
    let mut unknown = [AttributeType::new(0); MAX_UNKNOWN];
    let mut n_unknown = 0;
    let mut fingerprint = false;
    for (_, attr) in msg.iter_attributes() {
        let t = attr.get_type();
        if t == Fingerprint::TYPE {
            fingerprint = true;
        } else if t.comprehension_required()
            && !UNDERSTOOD.contains(&t.value())
            && n_unknown < MAX_UNKNOWN
            && !unknown[..n_unknown].contains(&t)
        {
            unknown[n_unknown] = t;
            n_unknown += 1;
        }
    }
    let written = if n_unknown > 0 {
        unknown_attributes(msg, &unknown[..n_unknown], fingerprint, out)
    } else {
        mapped_address(msg, from, fingerprint, out)
    };
    match written {
        Some(n) => Answer::Reply(n),
        None => Answer::Drop,
    }
}

fn mapped_address(
    msg: &Message<'_>,
    from: SocketAddr,
    fingerprint: bool,
    out: &mut [u8],
) -> Option<usize> {
    let mut w = Message::builder_success(msg, MessageWriteMutSlice::new(out));
    w.add_attribute(&XorMappedAddress::new(mapped(from), msg.transaction_id()))
        .ok()?;
    if fingerprint {
        w.add_fingerprint().ok()?;
    }
    Some(w.finish())
}

/// 420 with UNKNOWN-ATTRIBUTES (RFC 8489 §6.3.1.1), no reason phrase.
fn unknown_attributes(
    msg: &Message<'_>,
    unknown: &[AttributeType],
    fingerprint: bool,
    out: &mut [u8],
) -> Option<usize> {
    let code = ErrorCode::builder(ErrorCode::UNKNOWN_ATTRIBUTE)
        .reason("")
        .build()
        .ok()?;
    let mut w = Message::builder_error(msg, MessageWriteMutSlice::new(out));
    w.add_attribute(&code).ok()?;
    w.add_attribute(&UnknownAttributes::new(unknown)).ok()?;
    if fingerprint {
        w.add_fingerprint().ok()?;
    }
    Some(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::proto::vectors::*;
    use stun_types::attribute::{MessageIntegrity, Software};
    use stun_types::message::{
        LongTermKeyCredentials, MessageIntegrityCredentials, MessageWriteVec, ShortTermCredentials,
        TransactionId,
    };

    #[test]
    fn rfc5769_vectors_decode_and_verify() {
        let short: MessageIntegrityCredentials =
            ShortTermCredentials::new("VOkJxbRl1RmTxUk/WvJxBt".into()).into();
        let wrong: MessageIntegrityCredentials = ShortTermCredentials::new("wrong".into()).into();
        for v in [REQUEST, RESPONSE_V4, RESPONSE_V6] {
            let data = hex(v);
            let m = parse(&data).expect("vector parses, FINGERPRINT checked");
            m.validate_integrity(&short)
                .expect("MESSAGE-INTEGRITY verifies");
            assert!(m.validate_integrity(&wrong).is_err());
            let mut bad = data.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert!(
                parse(&bad).is_none(),
                "a flipped FINGERPRINT bit is refused"
            );
        }
        let v4 = hex(RESPONSE_V4);
        let m = parse(&v4).unwrap();
        let a = m.attribute::<XorMappedAddress>().unwrap();
        assert_eq!(
            a.addr(m.transaction_id()),
            "192.0.2.1:32853".parse().unwrap()
        );
        let v6 = hex(RESPONSE_V6);
        let m = parse(&v6).unwrap();
        let a = m.attribute::<XorMappedAddress>().unwrap();
        assert_eq!(
            a.addr(m.transaction_id()),
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap()
        );
        // §2.4: the password after SASLprep is "TheMatrIX".
        let lt = hex(REQUEST_LONG_TERM);
        let m = parse(&lt).unwrap();
        let creds: MessageIntegrityCredentials = LongTermKeyCredentials::new(
            "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}".into(),
            "TheMatrIX".into(),
            "example.org".into(),
        )
        .into();
        m.validate_integrity(&creds)
            .expect("long-term MESSAGE-INTEGRITY verifies");
        let _ = MessageIntegrity::TYPE;
    }

    /// A Binding request with `attrs` raw attributes appended (and a
    /// FINGERPRINT when asked).
    fn request(extra: &[(u16, &[u8])], fingerprint: bool) -> Vec<u8> {
        let mut b = Message::builder_request(BINDING, MessageWriteVec::new());
        for (t, v) in extra {
            b.add_attribute(&stun_types::attribute::RawAttribute::new(
                AttributeType::new(*t),
                v,
            ))
            .unwrap();
        }
        if fingerprint {
            b.add_fingerprint().unwrap();
        }
        b.finish()
    }

    #[test]
    fn ipv4_clients_of_a_dual_stack_listener_are_reported_as_ipv4() {
        let req = request(&[], false);
        let mut out = [0u8; 256];
        let from: SocketAddr = "[::ffff:198.51.100.7]:4000".parse().unwrap();
        let Answer::Reply(n) = answer(&req, from, &mut out) else {
            panic!("no reply");
        };
        let resp = parse(&out[..n]).unwrap();
        let tid = parse(&req).unwrap().transaction_id();
        assert_eq!(
            resp.attribute::<XorMappedAddress>().unwrap().addr(tid),
            "198.51.100.7:4000".parse().unwrap()
        );
        assert_eq!(n, 20 + 12, "an IPv4 XOR-MAPPED-ADDRESS");
    }

    #[test]
    fn binding_answers_the_address_packets_come_from() {
        for from in ["203.0.113.7:40000", "[2001:db8::9]:5000"] {
            let from: SocketAddr = from.parse().unwrap();
            for fingerprint in [false, true] {
                let req = request(&[], fingerprint);
                let mut out = [0u8; 256];
                let Answer::Reply(n) = answer(&req, from, &mut out) else {
                    panic!("no reply");
                };
                let resp = parse(&out[..n]).unwrap();
                let tid: TransactionId = parse(&req).unwrap().transaction_id();
                assert_eq!(resp.transaction_id(), tid);
                assert!(resp.has_class(MessageClass::Success));
                assert!(resp.has_method(BINDING));
                assert_eq!(
                    resp.attribute::<XorMappedAddress>().unwrap().addr(tid),
                    from
                );
                assert_eq!(resp.has_attribute(Fingerprint::TYPE), fingerprint);
                assert!(!resp.has_attribute(Software::TYPE));
                // 20 + XOR-MAPPED-ADDRESS (12 or 24) + FINGERPRINT (8).
                let want =
                    20 + if from.is_ipv4() { 12 } else { 24 } + if fingerprint { 8 } else { 0 };
                assert_eq!(n, want);
            }
        }
        // The RFC's own request (an ICE check: PRIORITY is understood).
        let mut out = [0u8; 256];
        assert!(matches!(
            answer(&hex(REQUEST), "192.0.2.1:32853".parse().unwrap(), &mut out),
            Answer::Reply(_)
        ));
    }

    #[test]
    fn unknown_comprehension_required_attributes_get_420() {
        let req = request(
            &[
                (0x7777, &[1, 2, 3, 4]),
                (0x8777, &[0; 4]),
                (0x7777, &[9; 4]),
            ],
            true,
        );
        let mut out = [0u8; 256];
        let Answer::Reply(n) = answer(&req, "203.0.113.7:1".parse().unwrap(), &mut out) else {
            panic!("no reply");
        };
        let resp = parse(&out[..n]).unwrap();
        assert!(resp.has_class(MessageClass::Error));
        let code = resp.attribute::<ErrorCode>().unwrap();
        assert_eq!((code.code(), code.reason()), (420, ""));
        let unknown = resp.attribute::<UnknownAttributes>().unwrap();
        assert!(unknown.has_attribute(AttributeType::new(0x7777)));
        assert!(!unknown.has_attribute(AttributeType::new(0x8777)));
        assert!(!resp.has_attribute(XorMappedAddress::TYPE));
        assert!(!resp.has_attribute(Software::TYPE));
        // Comprehension-optional unknowns are ignored.
        let req = request(&[(0x8777, &[0; 4])], false);
        assert!(matches!(
            answer(&req, "203.0.113.7:1".parse().unwrap(), &mut out),
            Answer::Reply(32)
        ));
    }

    #[test]
    fn malformed_or_unanswerable_datagrams_get_nothing() {
        let from: SocketAddr = "203.0.113.7:1".parse().unwrap();
        let mut out = [0u8; 256];
        let good = request(&[], true);
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0, 0, 0, 0]);
        let mut bad_cookie = good.clone();
        bad_cookie[4] ^= 0xff;
        let mut bad_fingerprint = good.clone();
        *bad_fingerprint.last_mut().unwrap() ^= 1;
        let mut indication = good.clone();
        indication[1] = 0x11; // Binding indication
        let mut response = request(&[], false);
        response[0] = 0x01; // Binding success response
        for (what, d) in [
            ("empty", vec![]),
            ("short", good[..19].to_vec()),
            ("truncated", good[..good.len() - 4].to_vec()),
            ("trailing bytes", trailing),
            ("bad cookie", bad_cookie),
            ("bad fingerprint", bad_fingerprint),
            ("indication", indication),
            ("response", response),
            ("not STUN", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ] {
            assert_eq!(answer(&d, from, &mut out), Answer::Drop, "{what}");
        }
        let mut allocate = request(&[], false);
        allocate[1] = 0x03; // Allocate request
        assert_eq!(answer(&allocate, from, &mut out), Answer::NotBinding);
    }
}
