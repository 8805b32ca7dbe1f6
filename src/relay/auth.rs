//! Who may use the relay: TURN REST-API credentials tied to the gateway's
//! auth, and the stateless NONCE that keeps unauthenticated traffic from
//! creating any per-source state.
//!
//! **Credentials** follow the widely used REST-API form (as coturn's
//! `use-auth-secret`): the username is `<expiry-unix>:<sub>`, the password
//! `base64(HMAC-SHA1(secret, username))`. The gateway hands them out to
//! authenticated users; the relay needs nothing but the shared secret to
//! check them, and accepts the current and the previous secret so the
//! secret can be rotated without cutting live sessions.
//!
//! **NONCE** (RFC 8489 §9.2): instead of remembering what it handed to
//! whom, the relay makes the nonce a cookie: the RFC's security-feature
//! prefix, the time it was made and an HMAC over the client's address and
//! that time. Checking it needs only the key, so a flood of spoofed
//! unauthenticated requests costs the relay no memory.

use std::net::SocketAddr;

use aws_lc_rs::{constant_time, hmac};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// Why a REST username is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not `<expiry-unix>:<user>`.
    #[error("malformed username")]
    Malformed,
    /// Its expiry has passed.
    #[error("expired credential")]
    Expired,
}

/// The REST-API password of `username` under `secret`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    STANDARD.encode(hmac::sign(&key, username.as_bytes()))
}

/// A REST username: who it names, until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestUser<'a> {
    /// Unix time it stops being valid.
    pub expires_at: u64,
    /// The gateway user (`sub`) it was issued to.
    pub user: &'a str,
}

/// Split and check a REST username at `now_unix`.
///
/// # Errors
/// [`CredentialError::Malformed`] unless it is `<digits>:<non-empty user>`,
/// [`CredentialError::Expired`] when its time has passed.
pub fn parse_rest_username(username: &str, now_unix: u64) -> Result<RestUser<'_>, CredentialError> {
    let (expiry, user) = username.split_once(':').ok_or(CredentialError::Malformed)?;
    if user.is_empty() || expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CredentialError::Malformed);
    }
    let expires_at: u64 = expiry.parse().map_err(|_| CredentialError::Malformed)?;
    if expires_at < now_unix {
        return Err(CredentialError::Expired);
    }
    Ok(RestUser { expires_at, user })
}

/// The shared secrets REST credentials are made with: the current one,
/// and the previous one during a rotation.
#[derive(Clone)]
pub struct RestSecrets {
    current: Vec<u8>,
    previous: Option<Vec<u8>>,
}

impl std::fmt::Debug for RestSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are never printed.
        f.debug_struct("RestSecrets")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl RestSecrets {
    /// Secrets for checking (and, with `current`, issuing) credentials.
    pub fn new(current: Vec<u8>, previous: Option<Vec<u8>>) -> Self {
        RestSecrets { current, previous }
    }

    /// Issue a credential for `user`, valid `ttl_seconds` from `now_unix`:
    /// `(username, password)`.
    pub fn issue(&self, user: &str, now_unix: u64, ttl_seconds: u64) -> (String, String) {
        let username = format!("{}:{user}", now_unix.saturating_add(ttl_seconds));
        let password = rest_password(&self.current, &username);
        (username, password)
    }

    /// The passwords `username` may have: under the current secret, then
    /// the previous one (the relay tries each key in constant time).
    pub fn passwords<'a>(&'a self, username: &'a str) -> impl Iterator<Item = String> + 'a {
        std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .map(move |s| rest_password(s, username))
    }
}

/// The RFC 8489 §9.2 nonce cookie: "obMatJos2" and the security-feature
/// bits (base64 of 24 bits). Ours sets "password algorithms" (bit 0), so
/// clients learn they may use MESSAGE-INTEGRITY-SHA256.
pub const NONCE_PREFIX: &str = "obMatJos2gAAA";

/// Bytes of HMAC kept in a nonce (128 bits: forging one takes 2^128 tries).
const NONCE_MAC_BYTES: usize = 16;

/// What a nonce check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Made by us, for this client, and fresh.
    Valid,
    /// Made by us for this client, but older than the lifetime: 438, with a fresh one.
    Stale,
    /// Not ours, or for another client: treat as no nonce (401).
    Invalid,
}

/// Makes and checks stateless nonces.
pub struct NonceKey {
    key: hmac::Key,
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

impl NonceKey {
    /// A key from `secret` bytes (at start: random, kept in memory; a
    /// restart only makes clients retry once with 438).
    pub fn new(secret: &[u8]) -> Self {
        NonceKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    fn mac(&self, client: SocketAddr, made_at: u64) -> [u8; NONCE_MAC_BYTES] {
        let mut ctx = hmac::Context::with_key(&self.key);
        match client.ip() {
            std::net::IpAddr::V4(v4) => ctx.update(&v4.octets()),
            std::net::IpAddr::V6(v6) => ctx.update(&v6.octets()),
        }
        ctx.update(&client.port().to_be_bytes());
        ctx.update(&made_at.to_be_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; NONCE_MAC_BYTES];
        out.copy_from_slice(&tag.as_ref()[..NONCE_MAC_BYTES]);
        out
    }

    /// A nonce for `client`, made at `now_unix`.
    pub fn issue(&self, client: SocketAddr, now_unix: u64) -> String {
        let mut raw = [0u8; 8 + NONCE_MAC_BYTES];
        raw[..8].copy_from_slice(&now_unix.to_be_bytes());
        raw[8..].copy_from_slice(&self.mac(client, now_unix));
        let mut nonce = String::with_capacity(NONCE_PREFIX.len() + 32);
        nonce.push_str(NONCE_PREFIX);
        URL_SAFE_NO_PAD.encode_string(raw, &mut nonce);
        nonce
    }

    /// Check a nonce from `client` at `now_unix`; older than
    /// `lifetime_seconds` is stale.
    pub fn check(
        &self,
        nonce: &str,
        client: SocketAddr,
        now_unix: u64,
        lifetime_seconds: u64,
    ) -> NonceCheck {
        let Some(body) = nonce.strip_prefix(NONCE_PREFIX) else {
            return NonceCheck::Invalid;
        };
        let mut raw = [0u8; 8 + NONCE_MAC_BYTES + 3];
        match URL_SAFE_NO_PAD.decode_slice(body, &mut raw) {
            Ok(n) if n == 8 + NONCE_MAC_BYTES => {}
            _ => return NonceCheck::Invalid,
        }
        let made_at = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        let expected = self.mac(client, made_at);
        if constant_time::verify_slices_are_equal(&raw[8..8 + NONCE_MAC_BYTES], &expected).is_err()
        {
            return NonceCheck::Invalid;
        }
        // A nonce from the future (a clock step back) is as good as stale.
        if made_at > now_unix || now_unix - made_at > lifetime_seconds {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_passwords_match_the_common_form() {
        // python3: base64.b64encode(hmac.new(b'north-secret', b'1764892800:player-7', hashlib.sha1).digest())
        assert_eq!(
            rest_password(b"north-secret", "1764892800:player-7"),
            "r8k2m6H7anHTOprglxnVq3vzMak="
        );
        let s = RestSecrets::new(b"new".to_vec(), Some(b"old".to_vec()));
        let (user, pass) = s.issue("player-7", 1_000, 600);
        assert_eq!(user, "1600:player-7");
        assert_eq!(pass, rest_password(b"new", "1600:player-7"));
        let all: Vec<String> = s.passwords(&user).collect();
        assert_eq!(all, vec![pass, rest_password(b"old", "1600:player-7")]);
        assert_eq!(format!("{s:?}"), "RestSecrets { previous: true, .. }");
    }

    #[test]
    fn rest_usernames_are_checked() {
        assert_eq!(
            parse_rest_username("1600:player-7", 1_600),
            Ok(RestUser {
                expires_at: 1_600,
                user: "player-7"
            })
        );
        // A user name may itself hold colons: only the first splits.
        assert_eq!(parse_rest_username("1600:a:b", 10).unwrap().user, "a:b");
        assert_eq!(
            parse_rest_username("1600:player-7", 1_601),
            Err(CredentialError::Expired)
        );
        for bad in [
            "player-7",
            ":x",
            "1600:",
            "+1600:x",
            "16 00:x",
            "99999999999999999999999:x",
            "",
        ] {
            assert_eq!(
                parse_rest_username(bad, 0),
                Err(CredentialError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn nonces_are_bound_to_the_client_and_age_out() {
        let k = NonceKey::new(b"0123456789abcdef0123456789abcdef");
        let a: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let n = k.issue(a, 1_000);
        assert!(n.starts_with("obMatJos2"));
        // Nonce characters must be a STUN quoted-string: base64url is.
        assert!(
            n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert!(n.len() <= 128);
        assert_eq!(k.check(&n, a, 1_000, 600), NonceCheck::Valid);
        assert_eq!(k.check(&n, a, 1_600, 600), NonceCheck::Valid);
        assert_eq!(k.check(&n, a, 1_601, 600), NonceCheck::Stale);
        assert_eq!(k.check(&n, a, 999, 600), NonceCheck::Stale);
        // Another port, another address, another key: not ours.
        assert_eq!(
            k.check(&n, "203.0.113.7:40001".parse().unwrap(), 1_000, 600),
            NonceCheck::Invalid
        );
        assert_eq!(
            k.check(&n, "203.0.113.8:40000".parse().unwrap(), 1_000, 600),
            NonceCheck::Invalid
        );
        assert_eq!(
            NonceKey::new(b"other").check(&n, a, 1_000, 600),
            NonceCheck::Invalid
        );
        // Tampering with the time or the tag.
        let mut forged = n.clone().into_bytes();
        let i = NONCE_PREFIX.len() + 2;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            k.check(std::str::from_utf8(&forged).unwrap(), a, 1_000, 600),
            NonceCheck::Invalid
        );
        for junk in [
            "",
            "obMatJos2gAAA",
            "obMatJos2gAAA!!!!",
            "nonce",
            &n[..n.len() - 1],
        ] {
            assert_eq!(
                k.check(junk, a, 1_000, 600),
                NonceCheck::Invalid,
                "{junk:?}"
            );
        }
        let v6: SocketAddr = "[2001:db8::1]:5".parse().unwrap();
        assert_eq!(k.check(&k.issue(v6, 5), v6, 5, 600), NonceCheck::Valid);
    }
}
