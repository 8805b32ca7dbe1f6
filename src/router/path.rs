//! Safe request-path normalisation, done once before route matching.
//!
//! The path that is matched is the path that is forwarded, so the upstream
//! can never interpret a request differently from the router:
//! - percent-encoded *unreserved* characters (`A-Z a-z 0-9 - . _ ~`) are
//!   decoded, every other escape is kept (hex upper-cased), so `%2F` stays a
//!   literal inside one segment and never becomes a separator;
//! - `.` segments are removed and `..` segments resolved (RFC 3986 §5.2.4);
//!   a `..` that would climb above the root is rejected;
//! - empty segments (`//`) are merged, as nginx's `merge_slashes` does;
//! - inputs that upstream stacks read in different ways are refused: a raw
//!   `\`, a `.`/`..` segment carrying `;` parameters (Tomcat's `..;/`), and —
//!   unless [`PathOptions::allow_encoded_slashes`] — `%2F`/`%5C`, which some
//!   upstreams decode into separators after routing.

use std::borrow::Cow;

/// Why a request path was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (and is not `*` for OPTIONS).
    #[error("path must start with '/'")]
    NotAbsolute,
    /// A `%` is not followed by two hex digits.
    #[error("invalid percent-encoding")]
    BadPercentEncoding,
    /// A `..` segment would climb above the root.
    #[error("path escapes the root")]
    AboveRoot,
    /// A raw backslash, which some upstreams treat as a separator.
    #[error("backslash in path")]
    Backslash,
    /// `%2F` or `%5C` while encoded slashes are not allowed.
    #[error("encoded slash in path")]
    EncodedSlash,
    /// A `.` or `..` segment with `;` parameters (`..;/`), resolved differently upstream.
    #[error("dot segment with parameters")]
    DotSegmentWithParameters,
}

/// Path normalisation rules that are the operator's choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathOptions {
    /// Accept `%2F` and `%5C` (kept encoded, as data inside one segment).
    /// Off by default: upstreams that decode them after routing would see
    /// a different path than the one that was routed.
    pub allow_encoded_slashes: bool,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// True when the path needs the slow path: an escape, `//`, a backslash, or
/// a dot segment (possibly with `;` parameters).
fn needs_work(path: &[u8]) -> bool {
    let mut prev = 0u8;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' | b'\\' => return true,
            b'/' if prev == b'/' => return true,
            b'.' if prev == b'/' => {
                // "/." followed by end, "/", ";" or ".": a dot segment.
                match path.get(i + 1) {
                    None | Some(b'/' | b';') => return true,
                    Some(b'.') if matches!(path.get(i + 2), None | Some(b'/' | b';')) => {
                        return true;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        prev = b;
    }
    false
}

/// Normalise a request path (without the query) for matching and forwarding.
///
/// Returns the input unchanged (borrowed) in the common case.
///
/// # Errors
/// [`PathError`] when the path is not absolute, has a malformed escape, or
/// climbs above the root.
///
/// ```
/// use aether_gateway::router::normalize_path;
/// assert_eq!(normalize_path("/api/v1/worlds/1").unwrap(), "/api/v1/worlds/1");
/// assert_eq!(normalize_path("/api//v1/./worlds/x/../1").unwrap(), "/api/v1/worlds/1");
/// assert_eq!(normalize_path("/api/%7Eu%3av").unwrap(), "/api/~u%3Av");
/// assert!(normalize_path("/api/a%2fb").is_err()); // unless encoded slashes are allowed
/// assert!(normalize_path("/../etc").is_err());
/// ```
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    normalize_path_with(path, PathOptions::default())
}

/// [`normalize_path`] with explicit options.
///
/// # Errors
/// As [`normalize_path`].
pub fn normalize_path_with(path: &str, options: PathOptions) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if !needs_work(bytes) {
        return Ok(Cow::Borrowed(path));
    }

    // Pass 1: decode unreserved escapes, canonicalise the others.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_val);
            let lo = bytes.get(i + 2).copied().and_then(hex_val);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BadPercentEncoding);
            };
            let v = hi << 4 | lo;
            if matches!(v, b'/' | b'\\') && !options.allow_encoded_slashes {
                return Err(PathError::EncodedSlash);
            }
            if is_unreserved(v) {
                decoded.push(v);
            } else {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                decoded.extend_from_slice(&[b'%', HEX[(v >> 4) as usize], HEX[(v & 15) as usize]]);
            }
            i += 3;
        } else if b == b'\\' {
            return Err(PathError::Backslash);
        } else {
            decoded.push(b);
            i += 1;
        }
    }

    // Pass 2: segments. Only ASCII was produced above from ASCII input, and
    // non-ASCII input bytes are copied whole, so splitting on b'/' keeps UTF-8 intact.
    let trailing_slash =
        decoded.ends_with(b"/") || decoded.ends_with(b"/.") || decoded.ends_with(b"/..");
    let mut segments: Vec<&[u8]> = Vec::new();
    for seg in decoded.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            // `..;x` and its escaped form `..%3Bx`: Tomcat/Spring drop the
            // parameters after decoding and resolve the dot segment.
            s if [b".;".as_slice(), b"..;", b".%3B", b"..%3B"]
                .iter()
                .any(|p| s.starts_with(p)) =>
            {
                return Err(PathError::DotSegmentWithParameters);
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for seg in &segments {
        out.push('/');
        // The input was a &str and we only replaced ASCII escapes with ASCII,
        // so every segment is valid UTF-8.
        out.push_str(std::str::from_utf8(seg).map_err(|_| PathError::BadPercentEncoding)?);
    }
    if out.is_empty() || (trailing_slash && !segments.is_empty()) {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/a/b", Ok("/a/b")),
            ("/a/b/", Ok("/a/b/")),
            ("//a///b", Ok("/a/b")),
            ("/a/./b", Ok("/a/b")),
            ("/a/b/.", Ok("/a/b/")),
            ("/a/b/..", Ok("/a/")),
            ("/a/../../b", Err(PathError::AboveRoot)),
            ("/..", Err(PathError::AboveRoot)),
            ("/%2e%2e/x", Err(PathError::AboveRoot)),
            ("/a/%2E%2e/b", Ok("/b")),
            ("/a%2fb", Err(PathError::EncodedSlash)),
            ("/a%5Cb", Err(PathError::EncodedSlash)),
            ("/a\\b", Err(PathError::Backslash)),
            ("/a/..;/b", Err(PathError::DotSegmentWithParameters)),
            ("/a/.;x/b", Err(PathError::DotSegmentWithParameters)),
            ("/a/%2e%2e;/b", Err(PathError::DotSegmentWithParameters)),
            ("/a/..%3b/b", Err(PathError::DotSegmentWithParameters)),
            ("/a/%2E%3Bx/b", Err(PathError::DotSegmentWithParameters)),
            ("/a/b%3Bc", Ok("/a/b%3Bc")),
            ("/a/b;v=1/c", Ok("/a/b;v=1/c")),
            ("/a/..b;x", Ok("/a/..b;x")),
            ("/%41%7e%5f", Ok("/A~_")),
            ("/%00", Ok("/%00")),
            ("/%zz", Err(PathError::BadPercentEncoding)),
            ("/%4", Err(PathError::BadPercentEncoding)),
            ("/a%", Err(PathError::BadPercentEncoding)),
            ("a/b", Err(PathError::NotAbsolute)),
            ("", Err(PathError::NotAbsolute)),
            ("/.hidden/x", Ok("/.hidden/x")),
            ("/a..b/c", Ok("/a..b/c")),
            ("/ä/%C3%A4", Ok("/ä/%C3%A4")),
        ];
        for (input, want) in cases {
            let got = normalize_path(input).map(|c| c.into_owned());
            assert_eq!(
                got.as_deref().map_err(Clone::clone),
                *want,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn encoded_slashes_when_allowed() {
        let allow = PathOptions {
            allow_encoded_slashes: true,
        };
        assert_eq!(normalize_path_with("/a%2fb", allow).unwrap(), "/a%2Fb");
        assert_eq!(normalize_path_with("/a%5cb/%2e", allow).unwrap(), "/a%5Cb/");
        assert_eq!(
            normalize_path_with("/a\\b", allow),
            Err(PathError::Backslash)
        );
    }

    #[test]
    fn common_paths_are_borrowed() {
        assert!(matches!(
            normalize_path("/api/v1/worlds/42").unwrap(),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            normalize_path("/a.b/c..d/").unwrap(),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn idempotent_on_samples() {
        let allow = PathOptions {
            allow_encoded_slashes: true,
        };
        for p in ["/a//b/../c/./d%2f%7e", "/x/%2e/y/", "/%2F%2f//"] {
            let once = normalize_path_with(p, allow).unwrap().into_owned();
            let twice = normalize_path_with(&once, allow).unwrap().into_owned();
            assert_eq!(once, twice, "{p}");
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Paths built from the characters that matter: separators, dots, escapes.
        fn path_like() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    Just("/".to_owned()),
                    Just(".".to_owned()),
                    Just("..".to_owned()),
                    Just("%2e".to_owned()),
                    Just("%2F".to_owned()),
                    Just("%2f".to_owned()),
                    Just("%41".to_owned()),
                    Just("%".to_owned()),
                    Just("%zz".to_owned()),
                    "[a-z~_-]{1,3}",
                    "%[0-9a-fA-F]{2}",
                ],
                0..24,
            )
            .prop_map(|parts| format!("/{}", parts.concat()))
        }

        proptest! {
            #[test]
            fn never_panics_on_any_string(s in ".{0,64}") {
                let _ = normalize_path(&s);
            }

            #[test]
            fn output_is_normal_and_idempotent(p in path_like(), allow in any::<bool>()) {
                let options = PathOptions { allow_encoded_slashes: allow };
                if let Ok(out) = normalize_path_with(&p, options) {
                    let out = out.into_owned();
                    prop_assert!(out.starts_with('/'));
                    prop_assert!(!out.contains("//"), "{out}");
                    for seg in out.split('/') {
                        prop_assert!(seg != "." && seg != "..", "dot segment in {out}");
                    }
                    // Every escape left is canonical and of a reserved byte.
                    let b = out.as_bytes();
                    for (i, &c) in b.iter().enumerate() {
                        if c == b'%' {
                            let hex = &out[i + 1..i + 3];
                            prop_assert!(hex.bytes().all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(&h)), "{out}");
                            let v = u8::from_str_radix(hex, 16).unwrap();
                            prop_assert!(!is_unreserved(v), "unreserved byte left encoded in {out}");
                        }
                    }
                    if !allow {
                        prop_assert!(!out.contains("%2F") && !out.contains("%5C"), "{out}");
                    }
                    prop_assert_eq!(normalize_path_with(&out, options).unwrap().into_owned(), out.clone());
                    prop_assert!(out.len() <= p.len() + 1);
                }
            }

            #[test]
            fn encoded_slash_never_becomes_a_separator(a in "[a-z]{1,8}", b in "[a-z]{1,8}") {
                let allow = PathOptions { allow_encoded_slashes: true };
                let out = normalize_path_with(&format!("/{a}%2F{b}"), allow).unwrap().into_owned();
                prop_assert_eq!(out.matches('/').count(), 1);
            }
        }
    }
}
