//! The long-term credential mechanism (RFC 8489 §9.2) for TURN requests:
//! challenge, check, and sign — without remembering anything about clients
//! that have not authenticated.
//!
//! A request without integrity gets `401` with REALM, a stateless NONCE
//! (`relay::auth::NonceKey`) and PASSWORD-ALGORITHMS. One with integrity
//! is checked in this order: USERNAME, REALM and NONCE present (else
//! `400`); the NONCE ours and for this client (else `401` and a new one) and
//! fresh (else `438`); the REALM ours; the password algorithm one we offer
//! (else `400`); then the credential: a static user, or a REST username
//! `expiry:user` with a password made under the current or the previous
//! secret. A wrong or expired credential gets `401`. Error answers carry
//! no SOFTWARE and no reason phrase.

use std::collections::HashMap;
use std::net::SocketAddr;

use stun_types::attribute::{
    Attribute, ErrorCode, Nonce, PasswordAlgorithmValue, PasswordAlgorithms, Realm,
};
use stun_types::message::{Message, MessageWrite, MessageWriteExt, MessageWriteMutSlice};

use super::integrity::{self, Integrity, Key, PasswordAlgorithm};
use crate::relay::auth::{NonceCheck, NonceKey, RestSecrets, parse_rest_username};

const USERNAME: u16 = 0x0006;
const REALM: u16 = 0x0014;
const NONCE: u16 = 0x0015;
const PASSWORD_ALGORITHM: u16 = 0x001D;
const PASSWORD_ALGORITHMS: u16 = 0x8002;
/// PASSWORD-ALGORITHMS as our challenges write it: MD5 and SHA-256, no
/// parameters.
const OFFERED_ALGORITHMS: &[u8] = &[0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00];
const FINGERPRINT: u16 = 0x8028;

/// Who may authenticate, and how.
pub struct Authenticator {
    realm: String,
    secrets: Option<RestSecrets>,
    users: HashMap<String, String>,
    nonces: NonceKey,
    nonce_lifetime_seconds: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("realm", &self.realm)
            .field("rest", &self.secrets.is_some())
            .field("static_users", &self.users.len())
            .finish_non_exhaustive()
    }
}

/// A request that passed: whose it is, and how to sign its answer.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The user the allocation belongs to: a static user's name, or the
    /// `sub` of a REST username.
    pub user: String,
    /// The key the request was signed with.
    pub key: Key,
    /// The integrity attribute it used (its answer uses the same).
    pub integrity: Integrity,
}

/// Why a request is refused, and so which answer it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 401 with REALM and a fresh NONCE: no integrity, or a nonce that is
    /// not ours (for this client).
    Challenge,
    /// 401 with REALM and a fresh NONCE: the credential is wrong or expired.
    WrongCredentials,
    /// 438 with REALM and a fresh NONCE.
    StaleNonce,
    /// 400: integrity without USERNAME, REALM or NONCE, or a password
    /// algorithm we did not offer.
    BadRequest,
}

impl Refusal {
    fn code(self) -> u16 {
        match self {
            Refusal::Challenge | Refusal::WrongCredentials => ErrorCode::UNAUTHORIZED,
            Refusal::StaleNonce => ErrorCode::STALE_NONCE,
            Refusal::BadRequest => ErrorCode::BAD_REQUEST,
        }
    }
}

fn text<'a>(msg: &'a Message<'_>, datagram: &'a [u8], t: u16) -> Option<&'a str> {
    let (offset, attr) = msg
        .iter_attributes()
        .find(|(_, a)| a.get_type().value() == t)?;
    let len = usize::from(attr.length());
    std::str::from_utf8(datagram.get(offset + 4..offset + 4 + len)?).ok()
}

impl Authenticator {
    /// Credentials in `realm`: REST-API ones made with `secrets`, and the
    /// static `users` (name → password). Nonces are made with `nonce_key`
    /// and are stale after `nonce_lifetime_seconds`.
    pub fn new(
        realm: String,
        secrets: Option<RestSecrets>,
        users: HashMap<String, String>,
        nonce_key: &[u8],
        nonce_lifetime_seconds: u64,
    ) -> Self {
        Authenticator {
            realm,
            secrets,
            users,
            nonces: NonceKey::new(nonce_key),
            nonce_lifetime_seconds,
        }
    }

    /// Check a request (`msg`, parsed from exactly `datagram`) from `from`
    /// at `now_unix`.
    ///
    /// # Errors
    /// The [`Refusal`] that says which answer the request gets.
    pub fn authenticate(
        &self,
        datagram: &[u8],
        msg: &Message<'_>,
        from: SocketAddr,
        now_unix: u64,
    ) -> Result<Authenticated, Refusal> {
        let has_integrity = msg.iter_attributes().any(|(_, a)| {
            matches!(
                a.get_type().value(),
                integrity::MESSAGE_INTEGRITY | integrity::MESSAGE_INTEGRITY_SHA256
            )
        });
        if !has_integrity {
            return Err(Refusal::Challenge);
        }
        let (Some(username), Some(realm), Some(nonce)) = (
            text(msg, datagram, USERNAME),
            text(msg, datagram, REALM),
            text(msg, datagram, NONCE),
        ) else {
            return Err(Refusal::BadRequest);
        };
        match self
            .nonces
            .check(nonce, from, now_unix, self.nonce_lifetime_seconds)
        {
            NonceCheck::Valid => {}
            NonceCheck::Stale => return Err(Refusal::StaleNonce),
            NonceCheck::Invalid => return Err(Refusal::Challenge),
        }
        if realm != self.realm {
            return Err(Refusal::Challenge);
        }
        // RFC 8489 §9.2.4: with neither attribute, MD5; otherwise both,
        // PASSWORD-ALGORITHMS exactly the list our challenge offered (so a
        // man in the middle cannot strip SHA-256 from it), and
        // PASSWORD-ALGORITHM one of them.
        let offered = msg
            .iter_attributes()
            .find(|(_, a)| a.get_type().value() == PASSWORD_ALGORITHMS)
            .and_then(|(o, a)| datagram.get(o + 4..o + 4 + usize::from(a.length())));
        let chosen = msg
            .iter_attributes()
            .find(|(_, a)| a.get_type().value() == PASSWORD_ALGORITHM);
        match (offered, &chosen) {
            (None, None) => {}
            (Some(list), Some(_)) if list == OFFERED_ALGORITHMS => {}
            _ => return Err(Refusal::BadRequest),
        }
        let algorithm = match chosen {
            None => PasswordAlgorithm::Md5,
            Some((offset, _)) => {
                match datagram
                    .get(offset + 4..offset + 6)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
                {
                    Some(0x0001) => PasswordAlgorithm::Md5,
                    Some(0x0002) => PasswordAlgorithm::Sha256,
                    _ => return Err(Refusal::BadRequest),
                }
            }
        };
        let try_password = |user: &str, password: &str| {
            let key = Key::long_term(algorithm, username, &self.realm, password);
            integrity::verify(datagram, msg, &key)
                .ok()
                .map(|which| Authenticated {
                    user: user.to_owned(),
                    key,
                    integrity: which,
                })
        };
        if let Some(password) = self.users.get(username) {
            return try_password(username, password).ok_or(Refusal::WrongCredentials);
        }
        let secrets = self.secrets.as_ref().ok_or(Refusal::WrongCredentials)?;
        let rest =
            parse_rest_username(username, now_unix).map_err(|_| Refusal::WrongCredentials)?;
        // A token's `sub` that names a static user is not that user: the two
        // kinds of identity never share allocations, quotas or revocations.
        if rest.user.is_empty() || self.users.contains_key(rest.user) {
            return Err(Refusal::WrongCredentials);
        }
        secrets
            .passwords(username)
            .find_map(|p| try_password(rest.user, &p))
            .ok_or(Refusal::WrongCredentials)
    }

    /// Write the error answer to `msg` for `refusal` into `out`; its length.
    pub fn refuse(
        &self,
        msg: &Message<'_>,
        from: SocketAddr,
        now_unix: u64,
        refusal: Refusal,
        out: &mut [u8],
    ) -> Option<usize> {
        let fingerprint = msg
            .iter_attributes()
            .any(|(_, a)| a.get_type().value() == FINGERPRINT);
        let code = ErrorCode::builder(refusal.code()).reason("").build().ok()?;
        let mut w = Message::builder_error(msg, MessageWriteMutSlice::new(out));
        w.add_attribute(&code).ok()?;
        if refusal != Refusal::BadRequest {
            w.add_attribute(&Realm::new(&self.realm).ok()?).ok()?;
            w.add_attribute(&Nonce::new(&self.nonces.issue(from, now_unix)).ok()?)
                .ok()?;
            w.add_attribute(&PasswordAlgorithms::new(&[
                PasswordAlgorithmValue::MD5,
                PasswordAlgorithmValue::SHA256,
            ]))
            .ok()?;
        }
        let n = w.finish();
        if fingerprint {
            integrity::append_fingerprint(out, n)
        } else {
            Some(n)
        }
    }

    /// Sign an answer (in `out[..len]`) to an authenticated request: the
    /// same integrity attribute and key, then FINGERPRINT.
    pub fn sign(out: &mut [u8], len: usize, auth: &Authenticated) -> Option<usize> {
        let n = integrity::append(out, len, &auth.key, auth.integrity)?;
        integrity::append_fingerprint(out, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::auth::rest_password;
    use crate::relay::proto::stun::parse;
    use stun_types::attribute::{
        AttributeStaticType, AttributeType, PasswordAlgorithm as PwAlg, RawAttribute, Username,
    };
    use stun_types::message::{MessageClass, MessageWriteVec, Method};

    const ALLOCATE: Method = Method::new(0x0003);
    const KEY: &[u8] = b"nonce-key-nonce-key-nonce-key-32";

    fn auth() -> Authenticator {
        Authenticator::new(
            "aether".into(),
            Some(RestSecrets::new(
                b"new-secret".to_vec(),
                Some(b"old-secret".to_vec()),
            )),
            HashMap::from([("alice".to_owned(), "alicepass".to_owned())]),
            KEY,
            600,
        )
    }

    fn from() -> SocketAddr {
        "203.0.113.7:40000".parse().unwrap()
    }

    /// An Allocate request signed as a client would: user, realm, nonce,
    /// password, the password algorithm (if any) and the HMAC.
    fn signed(
        user: &str,
        realm: &str,
        nonce: &str,
        password: &str,
        alg: Option<PasswordAlgorithm>,
        which: Integrity,
    ) -> Vec<u8> {
        let mut b = Message::builder_request(ALLOCATE, MessageWriteVec::new());
        b.add_attribute(&Username::new(user).unwrap()).unwrap();
        b.add_attribute(&Realm::new(realm).unwrap()).unwrap();
        b.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
        if let Some(a) = alg {
            let v = match a {
                PasswordAlgorithm::Md5 => PasswordAlgorithmValue::MD5,
                PasswordAlgorithm::Sha256 => PasswordAlgorithmValue::SHA256,
            };
            // The offered list echoed, as RFC 8489 §9.2.4 requires.
            b.add_attribute(&stun_types::attribute::PasswordAlgorithms::new(&[
                PasswordAlgorithmValue::MD5,
                PasswordAlgorithmValue::SHA256,
            ]))
            .unwrap();
            b.add_attribute(&PwAlg::new(v)).unwrap();
        }
        let unsigned = b.finish();
        let mut out = vec![0u8; unsigned.len() + 64];
        out[..unsigned.len()].copy_from_slice(&unsigned);
        let key = Key::long_term(alg.unwrap_or(PasswordAlgorithm::Md5), user, realm, password);
        let n = integrity::append(&mut out, unsigned.len(), &key, which).unwrap();
        let n = integrity::append_fingerprint(&mut out, n).unwrap();
        out.truncate(n);
        out
    }

    fn check(a: &Authenticator, d: &[u8], now: u64) -> Result<Authenticated, Refusal> {
        a.authenticate(d, &parse(d).unwrap(), from(), now)
    }

    #[test]
    fn unsigned_requests_are_challenged_with_a_stateless_nonce() {
        let a = auth();
        let bare = Message::builder_request(ALLOCATE, MessageWriteVec::new()).finish();
        let m = parse(&bare).unwrap();
        assert_eq!(
            a.authenticate(&bare, &m, from(), 1_000).unwrap_err(),
            Refusal::Challenge
        );
        let mut out = [0u8; 512];
        let n = a
            .refuse(&m, from(), 1_000, Refusal::Challenge, &mut out)
            .unwrap();
        let r = parse(&out[..n]).unwrap();
        assert!(r.has_class(MessageClass::Error));
        let code = r.attribute::<ErrorCode>().unwrap();
        assert_eq!((code.code(), code.reason()), (401, ""));
        assert_eq!(r.attribute::<Realm>().unwrap().realm(), "aether");
        let nonce = r.attribute::<Nonce>().unwrap();
        assert!(nonce.nonce().starts_with("obMatJos2"));
        let algs = r.attribute::<PasswordAlgorithms>().unwrap();
        assert_eq!(
            algs.algorithms(),
            &[PasswordAlgorithmValue::MD5, PasswordAlgorithmValue::SHA256]
        );
        assert!(!r.has_attribute(stun_types::attribute::Software::TYPE));
    }

    #[test]
    fn static_and_rest_users_sign_in_with_either_hmac_and_password_algorithm() {
        let a = auth();
        let nonce = NonceKey::new(KEY).issue(from(), 1_000);
        for (alg, which) in [
            (None, Integrity::Sha1),
            (None, Integrity::Sha256),
            (Some(PasswordAlgorithm::Md5), Integrity::Sha1),
            (Some(PasswordAlgorithm::Sha256), Integrity::Sha256),
        ] {
            let d = signed("alice", "aether", &nonce, "alicepass", alg, which);
            let ok = check(&a, &d, 1_000).unwrap_or_else(|e| panic!("{alg:?} {which:?}: {e:?}"));
            assert_eq!((ok.user.as_str(), ok.integrity), ("alice", which));
        }
        // REST: current and previous secret; the user is the sub.
        let user = "2000:player-7";
        for secret in [&b"new-secret"[..], b"old-secret"] {
            let d = signed(
                user,
                "aether",
                &nonce,
                &rest_password(secret, user),
                None,
                Integrity::Sha1,
            );
            assert_eq!(check(&a, &d, 1_000).unwrap().user, "player-7");
        }
        // An answer signed for it verifies under the same key.
        let d = signed(
            "alice",
            "aether",
            &nonce,
            "alicepass",
            None,
            Integrity::Sha256,
        );
        let ok = check(&a, &d, 1_000).unwrap();
        let m = parse(&d).unwrap();
        let mut out = [0u8; 512];
        let n = Message::builder_success(&m, MessageWriteMutSlice::new(&mut out)).finish();
        let n = Authenticator::sign(&mut out, n, &ok).unwrap();
        let r = parse(&out[..n]).unwrap();
        assert_eq!(
            integrity::verify(&out[..n], &r, &ok.key),
            Ok(Integrity::Sha256)
        );
    }

    #[test]
    fn wrong_expired_stale_foreign_and_incomplete_requests_are_refused() {
        let a = auth();
        let nonce = NonceKey::new(KEY).issue(from(), 1_000);
        let cases: Vec<(&str, Vec<u8>, u64, Refusal)> = vec![
            (
                "wrong password",
                signed("alice", "aether", &nonce, "nope", None, Integrity::Sha1),
                1_000,
                Refusal::WrongCredentials,
            ),
            (
                "unknown user",
                signed("bob", "aether", &nonce, "x", None, Integrity::Sha1),
                1_000,
                Refusal::WrongCredentials,
            ),
            (
                "REST, another secret",
                signed(
                    "2000:p",
                    "aether",
                    &nonce,
                    &rest_password(b"guess", "2000:p"),
                    None,
                    Integrity::Sha1,
                ),
                1_000,
                Refusal::WrongCredentials,
            ),
            (
                "REST, expired",
                signed(
                    "999:p",
                    "aether",
                    &nonce,
                    &rest_password(b"new-secret", "999:p"),
                    None,
                    Integrity::Sha1,
                ),
                1_000,
                Refusal::WrongCredentials,
            ),
            (
                "stale nonce",
                signed(
                    "alice",
                    "aether",
                    &nonce,
                    "alicepass",
                    None,
                    Integrity::Sha1,
                ),
                1_601,
                Refusal::StaleNonce,
            ),
            (
                "another client's nonce",
                signed(
                    "alice",
                    "aether",
                    &NonceKey::new(KEY).issue("203.0.113.8:1".parse().unwrap(), 1_000),
                    "alicepass",
                    None,
                    Integrity::Sha1,
                ),
                1_000,
                Refusal::Challenge,
            ),
            (
                "another realm",
                signed("alice", "other", &nonce, "alicepass", None, Integrity::Sha1),
                1_000,
                Refusal::Challenge,
            ),
        ];
        for (what, d, now, want) in cases {
            assert_eq!(check(&a, &d, now).unwrap_err(), want, "{what}");
        }
        // Integrity without a NONCE: 400, and the answer names no realm.
        let mut b = Message::builder_request(ALLOCATE, MessageWriteVec::new());
        b.add_attribute(&Username::new("alice").unwrap()).unwrap();
        let unsigned = b.finish();
        let mut d = vec![0u8; unsigned.len() + 64];
        d[..unsigned.len()].copy_from_slice(&unsigned);
        let key = Key::long_term(PasswordAlgorithm::Md5, "alice", "aether", "alicepass");
        let n = integrity::append(&mut d, unsigned.len(), &key, Integrity::Sha1).unwrap();
        d.truncate(n);
        assert_eq!(check(&a, &d, 1_000).unwrap_err(), Refusal::BadRequest);
        let mut out = [0u8; 256];
        let n = a
            .refuse(
                &parse(&d).unwrap(),
                from(),
                1_000,
                Refusal::BadRequest,
                &mut out,
            )
            .unwrap();
        let r = parse(&out[..n]).unwrap();
        assert_eq!(r.attribute::<ErrorCode>().unwrap().code(), 400);
        assert!(!r.has_attribute(Realm::TYPE));
        // A password algorithm we did not offer: 400.
        let mut b = Message::builder_request(ALLOCATE, MessageWriteVec::new());
        for (t, v) in [
            (USERNAME, &b"alice"[..]),
            (REALM, b"aether"),
            (NONCE, nonce.as_bytes()),
            (PASSWORD_ALGORITHM, &[0, 9, 0, 0]),
        ] {
            b.add_attribute(&RawAttribute::new(AttributeType::new(t), v))
                .unwrap();
        }
        let unsigned = b.finish();
        let mut d = vec![0u8; unsigned.len() + 64];
        d[..unsigned.len()].copy_from_slice(&unsigned);
        let n = integrity::append(&mut d, unsigned.len(), &key, Integrity::Sha1).unwrap();
        d.truncate(n);
        assert_eq!(check(&a, &d, 1_000).unwrap_err(), Refusal::BadRequest);
        // Secrets never print.
        assert!(!format!("{a:?}").contains("alicepass"));
    }
}
