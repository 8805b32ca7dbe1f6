//! MESSAGE-INTEGRITY (HMAC-SHA1) and MESSAGE-INTEGRITY-SHA256, checked and
//! written here rather than by the codec.
//!
//! RFC 8489 §9.2.2 derives the long-term key from the PASSWORD-ALGORITHM
//! (MD5 by default, SHA-256 when negotiated), independently of which HMAC
//! signs the message. stun-types ties the key to the HMAC (an MD5 key can
//! only sign with SHA-1), which would refuse valid MESSAGE-INTEGRITY-SHA256
//! requests from clients that keep the default password algorithm (see
//! `docs/relay-design.md`), so the HMACs are computed here with aws-lc-rs,
//! compared in constant time.

use aws_lc_rs::{constant_time, hmac};
use md5::Digest;
use stun_types::attribute::Attribute;
use stun_types::message::Message;

/// MESSAGE-INTEGRITY.
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
/// MESSAGE-INTEGRITY-SHA256.
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
/// FINGERPRINT.
pub const FINGERPRINT: u16 = 0x8028;

/// How the long-term key is made from the password (PASSWORD-ALGORITHM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordAlgorithm {
    /// MD5(username ":" realm ":" password), the default (0x0001).
    Md5,
    /// SHA-256 of the same (0x0002).
    Sha256,
}

/// Which integrity attribute a message carries (and its answer gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// MESSAGE-INTEGRITY: HMAC-SHA1, 20 bytes.
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256: HMAC-SHA256, 16 to 32 bytes.
    Sha256,
}

/// Why a message's integrity does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// Neither integrity attribute is present.
    #[error("no MESSAGE-INTEGRITY")]
    Missing,
    /// The attribute is malformed (wrong length).
    #[error("malformed integrity attribute")]
    Malformed,
    /// The HMAC does not match.
    #[error("integrity check failed")]
    Mismatch,
}

/// A long-term credential's key (RFC 8489 §9.2.2), or a short-term
/// password (§9.1.1).
#[derive(Clone)]
pub struct Key {
    bytes: [u8; 32],
    len: usize,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material is never printed.
        f.write_str("Key(..)")
    }
}

impl Key {
    /// The long-term key of `username` in `realm` with `password`.
    pub fn long_term(alg: PasswordAlgorithm, username: &str, realm: &str, password: &str) -> Self {
        let parts = [
            username.as_bytes(),
            b":",
            realm.as_bytes(),
            b":",
            password.as_bytes(),
        ];
        let mut bytes = [0u8; 32];
        let len = match alg {
            PasswordAlgorithm::Md5 => {
                let mut d = md5::Md5::new();
                parts.iter().for_each(|p| d.update(p));
                bytes[..16].copy_from_slice(&d.finalize());
                16
            }
            PasswordAlgorithm::Sha256 => {
                let mut d = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
                parts.iter().for_each(|p| d.update(p));
                bytes.copy_from_slice(d.finish().as_ref());
                32
            }
        };
        Key { bytes, len }
    }

    /// A short-term password used as the key as it is (at most 32 bytes
    /// kept: tests and ICE only).
    pub fn short_term(password: &str) -> Self {
        let mut bytes = [0u8; 32];
        let len = password.len().min(32);
        bytes[..len].copy_from_slice(&password.as_bytes()[..len]);
        Key { bytes, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// HMAC over `prefix` with its length field set to `length`.
    fn mac(&self, which: Integrity, prefix: &[u8], length: u16) -> hmac::Tag {
        let alg = match which {
            Integrity::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Integrity::Sha256 => hmac::HMAC_SHA256,
        };
        let mut ctx = hmac::Context::with_key(&hmac::Key::new(alg, self.as_bytes()));
        ctx.update(&prefix[..2]);
        ctx.update(&length.to_be_bytes());
        ctx.update(&prefix[4..]);
        ctx.sign()
    }
}

/// Check `msg` (parsed from exactly `datagram`) under `key`: the
/// SHA-256 attribute when present (it is the stronger one, and comes after
/// MESSAGE-INTEGRITY if both are there), else MESSAGE-INTEGRITY.
///
/// # Errors
/// [`IntegrityError`] when neither is present, one is malformed, or the
/// HMAC does not match.
pub fn verify(datagram: &[u8], msg: &Message<'_>, key: &Key) -> Result<Integrity, IntegrityError> {
    let mut found = None;
    for (offset, attr) in msg.iter_attributes() {
        let t = attr.get_type().value();
        if t == MESSAGE_INTEGRITY && found.is_none() {
            found = Some((Integrity::Sha1, offset, attr.length()));
        } else if t == MESSAGE_INTEGRITY_SHA256 {
            found = Some((Integrity::Sha256, offset, attr.length()));
            break;
        }
    }
    let (which, offset, len) = found.ok_or(IntegrityError::Missing)?;
    let len = usize::from(len);
    let ok_len = match which {
        Integrity::Sha1 => len == 20,
        Integrity::Sha256 => (16..=32).contains(&len) && len % 4 == 0,
    };
    if !ok_len || offset < 20 || offset + 4 + len > datagram.len() {
        return Err(IntegrityError::Malformed);
    }
    let value = &datagram[offset + 4..offset + 4 + len];
    // The length field counts up to the end of this attribute (§14.5).
    let length =
        u16::try_from(offset - 20 + 4 + value.len()).map_err(|_| IntegrityError::Malformed)?;
    let tag = key.mac(which, &datagram[..offset], length);
    constant_time::verify_slices_are_equal(&tag.as_ref()[..value.len()], value)
        .map_err(|_| IntegrityError::Mismatch)?;
    Ok(which)
}

/// Append an integrity attribute to the message in `out[..len]` (its
/// length field is updated); the new length.
pub fn append(out: &mut [u8], len: usize, key: &Key, which: Integrity) -> Option<usize> {
    let (kind, size) = match which {
        Integrity::Sha1 => (MESSAGE_INTEGRITY, 20),
        Integrity::Sha256 => (MESSAGE_INTEGRITY_SHA256, 32),
    };
    let end = len.checked_add(4 + size)?;
    if len < 20 || end > out.len() {
        return None;
    }
    let length = u16::try_from(end - 20).ok()?;
    let tag = key.mac(which, &out[..len], length);
    out[2..4].copy_from_slice(&length.to_be_bytes());
    out[len..len + 2].copy_from_slice(&kind.to_be_bytes());
    out[len + 2..len + 4].copy_from_slice(&(size as u16).to_be_bytes());
    out[len + 4..end].copy_from_slice(&tag.as_ref()[..size]);
    Some(end)
}

/// Append FINGERPRINT to the message in `out[..len]`; the new length.
pub fn append_fingerprint(out: &mut [u8], len: usize) -> Option<usize> {
    let end = len.checked_add(8)?;
    if len < 20 || end > out.len() {
        return None;
    }
    let length = u16::try_from(end - 20).ok()?;
    out[2..4].copy_from_slice(&length.to_be_bytes());
    let crc = crc32fast::hash(&out[..len]) ^ 0x5354_554e;
    out[len..len + 2].copy_from_slice(&FINGERPRINT.to_be_bytes());
    out[len + 2..len + 4].copy_from_slice(&4u16.to_be_bytes());
    out[len + 4..end].copy_from_slice(&crc.to_be_bytes());
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::proto::stun::parse;
    use crate::relay::proto::vectors::*;
    use stun_types::message::{
        BINDING, IntegrityAlgorithm, LongTermKeyCredentials, MessageIntegrityCredentials,
        MessageWrite, MessageWriteExt, MessageWriteVec,
    };

    #[test]
    fn rfc5769_integrity_verifies_with_our_hmac() {
        let lt = hex(REQUEST_LONG_TERM);
        let m = parse(&lt).unwrap();
        let key = Key::long_term(PasswordAlgorithm::Md5, USER, "example.org", "TheMatrIX");
        assert_eq!(verify(&lt, &m, &key), Ok(Integrity::Sha1));
        let wrong = Key::long_term(PasswordAlgorithm::Md5, USER, "example.org", "TheMatrix");
        assert_eq!(verify(&lt, &m, &wrong), Err(IntegrityError::Mismatch));
        let st = hex(REQUEST);
        let m = parse(&st).unwrap();
        assert_eq!(
            verify(&st, &m, &Key::short_term("VOkJxbRl1RmTxUk/WvJxBt")),
            Ok(Integrity::Sha1)
        );
        let bare = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
        let m = parse(&bare).unwrap();
        assert_eq!(verify(&bare, &m, &key), Err(IntegrityError::Missing));
        assert_eq!(format!("{key:?}"), "Key(..)");
    }

    /// The RFC 5769 responses (§2.2, §2.3) and the long-term request
    /// (§2.4) written from their parts: attributes with the codec, the
    /// padding bytes as the RFC has them (§2: padding may be any value; the
    /// vectors use spaces and zeros), MESSAGE-INTEGRITY and FINGERPRINT
    /// with ours. Byte for byte the RFC's.
    #[test]
    fn rfc5769_vectors_are_written_byte_for_byte() {
        use std::net::SocketAddr;
        use stun_types::attribute::{Nonce, Realm, Software, Username, XorMappedAddress};
        use stun_types::message::{MessageClass, MessageType, TransactionId};
        let tid_of = |v: &[u8]| {
            let mut t = [0u8; 16];
            t[4..].copy_from_slice(&v[8..20]);
            TransactionId::from(u128::from_be_bytes(t))
        };
        let short = Key::short_term("VOkJxbRl1RmTxUk/WvJxBt");
        for (vector, addr) in [
            (RESPONSE_V4, "192.0.2.1:32853"),
            (RESPONSE_V6, "[2001:db8:1234:5678:11:2233:4455:6677]:32853"),
        ] {
            let want = hex(vector);
            let tid = tid_of(&want);
            let mut b = Message::builder(
                MessageType::from_class_method(MessageClass::Success, BINDING),
                tid,
                MessageWriteVec::new(),
            );
            b.add_attribute(&Software::new("test vector").unwrap())
                .unwrap();
            let addr: SocketAddr = addr.parse().unwrap();
            b.add_attribute(&XorMappedAddress::new(addr, tid)).unwrap();
            let mut ours = b.finish();
            // SOFTWARE's one padding byte: a space in the vectors.
            ours[20 + 4 + 11] = 0x20;
            let mut out = vec![0u8; ours.len() + 32];
            out[..ours.len()].copy_from_slice(&ours);
            let n = append(&mut out, ours.len(), &short, Integrity::Sha1).unwrap();
            let n = append_fingerprint(&mut out, n).unwrap();
            assert_eq!(out[..n], want[..], "{addr}");
        }
        let want = hex(REQUEST_LONG_TERM);
        let tid = tid_of(&want);
        let mut b = Message::builder(
            MessageType::from_class_method(MessageClass::Request, BINDING),
            tid,
            MessageWriteVec::new(),
        );
        b.add_attribute(&Username::new(USER).unwrap()).unwrap();
        b.add_attribute(&Nonce::new("f//499k954d6OL34oL9FSTvy64sA").unwrap())
            .unwrap();
        b.add_attribute(&Realm::new("example.org").unwrap())
            .unwrap();
        let ours = b.finish();
        let key = Key::long_term(PasswordAlgorithm::Md5, USER, "example.org", "TheMatrIX");
        let mut out = vec![0u8; ours.len() + 32];
        out[..ours.len()].copy_from_slice(&ours);
        let n = append(&mut out, ours.len(), &key, Integrity::Sha1).unwrap();
        assert_eq!(out[..n], want[..], "§2.4");
    }

    #[test]
    fn what_we_write_the_codec_reads_and_the_other_way_round() {
        // SHA-256 key + MESSAGE-INTEGRITY-SHA256: the codec's own pairing.
        let creds =
            LongTermKeyCredentials::new("alice".into(), "alicepass".into(), "aether".into());
        let mut b = Message::builder_request(BINDING, MessageWriteVec::new());
        b.add_message_integrity(
            &MessageIntegrityCredentials::from(creds.clone()),
            IntegrityAlgorithm::Sha256,
        )
        .unwrap();
        b.add_fingerprint().unwrap();
        let theirs = b.finish();
        let m = parse(&theirs).unwrap();
        let k256 = Key::long_term(PasswordAlgorithm::Sha256, "alice", "aether", "alicepass");
        assert_eq!(verify(&theirs, &m, &k256), Ok(Integrity::Sha256));

        // Ours, both HMACs and FINGERPRINT: the codec parses (FINGERPRINT
        // checked) and verifies the pairings it supports.
        let req = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
        for (alg, which) in [
            (PasswordAlgorithm::Md5, Integrity::Sha1),
            (PasswordAlgorithm::Sha256, Integrity::Sha256),
            (PasswordAlgorithm::Md5, Integrity::Sha256),
        ] {
            let key = Key::long_term(alg, "alice", "aether", "alicepass");
            let mut out = [0u8; 256];
            out[..req.len()].copy_from_slice(&req);
            let n = append(&mut out, req.len(), &key, which).unwrap();
            let n = append_fingerprint(&mut out, n).unwrap();
            let m = parse(&out[..n]).expect("FINGERPRINT and framing accepted by the codec");
            assert_eq!(verify(&out[..n], &m, &key), Ok(which));
            let stock = match (alg, which) {
                (PasswordAlgorithm::Md5, Integrity::Sha1) => Some(IntegrityAlgorithm::Sha1),
                (PasswordAlgorithm::Sha256, Integrity::Sha256) => Some(IntegrityAlgorithm::Sha256),
                // The pairing the codec cannot express (why this module exists).
                _ => None,
            };
            if let Some(a) = stock {
                let k = creds.make_key(a);
                assert!(
                    m.validate_integrity_with_key(&k).is_ok(),
                    "{alg:?} {which:?}"
                );
            }
            // One flipped bit anywhere before the tag breaks it (no
            // FINGERPRINT here, so the codec still parses the tampered copy).
            let mut signed = [0u8; 256];
            signed[..req.len()].copy_from_slice(&req);
            let n = append(&mut signed, req.len(), &key, which).unwrap();
            for bit in [8 * 8, 8 * 19 + 7] {
                let mut bad = signed;
                bad[bit / 8] ^= 1 << (bit % 8);
                let m = Message::from_bytes(&bad[..n]).unwrap();
                assert_eq!(verify(&bad[..n], &m, &key), Err(IntegrityError::Mismatch));
            }
        }
    }

    #[test]
    fn appends_refuse_a_short_buffer() {
        let req = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
        let key = Key::short_term("x");
        let mut out = [0u8; 30];
        out[..20].copy_from_slice(&req);
        assert_eq!(append(&mut out, 20, &key, Integrity::Sha1), None);
        assert_eq!(append_fingerprint(&mut out, 20), Some(28));
        assert_eq!(append_fingerprint(&mut out, 28), None);
        assert_eq!(append(&mut out, 5, &key, Integrity::Sha1), None);
    }
}
