//! Cheap, strict parsing of a compact JWS before any signature work: the
//! shape is checked byte by byte, so a malformed or oversize token costs a
//! scan, never a panic or an allocation proportional to an attacker's input.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::AuthError;

/// The protected header fields the gateway reads.
#[derive(Debug, Deserialize)]
pub(crate) struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    /// Extensions the verifier must understand (RFC 7515 §4.1.11): we
    /// understand none, so any token that lists one is refused.
    #[serde(default, deserialize_with = "present")]
    pub crit: Option<serde_json::Value>,
    // `jku`, `x5u`, `jwk` and `x5c` are never read: keys come from config only.
}

/// `Some` whenever the member is there, `null` included (`"crit": null` is
/// not a JWS without `crit`: RFC 7515 §4.1.11 allows only a non-empty array).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// A token split into its parts, header decoded.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    pub header: Header,
    /// `base64url(header) "." base64url(payload)`: what the signature covers.
    pub signing_input: &'a str,
    pub payload_b64: &'a str,
    pub signature_b64: &'a str,
}

/// Split and check a compact JWS (RFC 7515 §7.1).
pub(crate) fn parse(token: &str, max_bytes: usize) -> Result<Parsed<'_>, AuthError> {
    if token.len() > max_bytes {
        return Err(AuthError::Malformed("token too long"));
    }
    let bytes = token.as_bytes();
    let mut dots = [0usize; 2];
    let mut n = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'.' => {
                if n == 2 {
                    return Err(AuthError::Malformed("token must have three parts"));
                }
                dots[n] = i;
                n += 1;
            }
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {}
            _ => return Err(AuthError::Malformed("token is not base64url")),
        }
    }
    if n != 2 {
        return Err(AuthError::Malformed("token must have three parts"));
    }
    let (h, p, s) = (
        &token[..dots[0]],
        &token[dots[0] + 1..dots[1]],
        &token[dots[1] + 1..],
    );
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(AuthError::Malformed("token has an empty part"));
    }
    let header_json = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| AuthError::Malformed("token header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header_json)
        .map_err(|_| AuthError::Malformed("token header is not a JSON object with alg"))?;
    Ok(Parsed {
        header,
        signing_input: &token[..dots[1]],
        payload_b64: p,
        signature_b64: s,
    })
}

/// Decode the payload into a claims object.
pub(crate) fn claims(
    payload_b64: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, AuthError> {
    let json = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| AuthError::Malformed("token payload is not base64url"))?;
    serde_json::from_slice(&json)
        .map_err(|_| AuthError::Malformed("token payload is not a JSON object"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn shapes() {
        let h = b64(r#"{"alg":"RS256","kid":"k1"}"#);
        let ok = format!("{h}.{}.c2ln", b64("{}"));
        let p = parse(&ok, 8192).unwrap();
        assert_eq!(p.header.alg, "RS256");
        assert_eq!(p.header.kid.as_deref(), Some("k1"));
        assert_eq!(p.signing_input, &ok[..ok.rfind('.').unwrap()]);
        for (bad, why) in [
            (format!("{ok}.x"), "token must have three parts"),
            (format!("{h}.x"), "token must have three parts"),
            (format!(" {ok}"), "token is not base64url"),
            (ok.replace('.', ".\n"), "token is not base64url"),
            (format!("{h}..c2ln"), "token has an empty part"),
            (format!("{h}.e30=.c2ln"), "token is not base64url"),
            (
                "e30.e30.c2ln".to_string(),
                "token header is not a JSON object with alg",
            ),
            ("A.e30.c2ln".to_string(), "token header is not base64url"),
        ] {
            match parse(&bad, 8192) {
                Err(AuthError::Malformed(m)) => assert_eq!(m, why, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(matches!(
            parse(&"a".repeat(100_000), 8192),
            Err(AuthError::Malformed("token too long"))
        ));
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,400}") {
            let _ = parse(&s, 8192);
            let _ = claims(&s);
        }

        #[test]
        fn dotted_base64_never_panics(a in "[A-Za-z0-9_-]{0,60}", b in "[A-Za-z0-9_-]{0,60}", c in "[A-Za-z0-9_-]{0,60}") {
            let t = format!("{a}.{b}.{c}");
            if let Ok(p) = parse(&t, 8192) {
                prop_assert_eq!(p.signing_input.len() + 1 + p.signature_b64.len(), t.len());
            }
        }
    }
}
