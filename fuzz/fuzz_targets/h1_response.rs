//! The HTTP/1.1 upstream client's response framing from hostile bytes:
//! never a panic; interim heads skipped as the client does; a body never
//! extends past what its framing says (exactly `Content-Length` bytes, or
//! the chunked encoding's end) and bytes after it stay unread; a connection
//! is reusable only when the body's end was definite; a length or chunked
//! body is the same whatever the pieces the bytes arrive in.
#![no_main]

use aether_gateway::upstream::h1::{
    Decoder, FieldIdx, Framing, MAX_HEADERS, MAX_INTERIM, Step, parse_head,
};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

/// Decode `wire` fed in pieces of `piece` bytes: (body, done, bytes fed, bytes left unread, error).
fn decode(framing: Framing, wire: &[u8], piece: usize) -> (Vec<u8>, bool, usize, usize, bool) {
    let mut d = Decoder::new(framing);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut body = Vec::new();
    let mut after_done = false;
    loop {
        if d.is_done() {
            after_done = true;
        }
        match d.decode(&mut buf) {
            Ok(Step::Data(b)) => {
                assert!(!after_done, "data after the end");
                assert!(!b.is_empty(), "an empty data frame");
                body.extend_from_slice(&b);
            }
            Ok(Step::Trailers(t)) => {
                assert!(!t.is_empty());
                assert!(d.is_done());
                return (body, true, fed, buf.len(), false);
            }
            Ok(Step::Done) => return (body, true, fed, buf.len(), false),
            Ok(Step::NeedMore) => {
                if fed == wire.len() {
                    let ok = d.eof().is_ok();
                    return (body, ok, fed, buf.len(), !ok);
                }
                let n = piece.min(wire.len() - fed);
                buf.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
            }
            Err(_) => return (body, false, fed, buf.len(), true),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, wire)) = data.split_first() else {
        return;
    };
    let head_request = flags & 1 == 1;
    let piece = usize::from(flags >> 1).max(1);
    let mut idx = [FieldIdx::default(); MAX_HEADERS];
    let mut at = 0;
    let mut interim = 0;
    let head = loop {
        match parse_head(&wire[at..], head_request, &mut idx) {
            Ok(Some(h)) if (100..200).contains(&h.status) => {
                assert_ne!(h.status, 101);
                assert_eq!(h.framing, Framing::Empty);
                interim += 1;
                if interim > MAX_INTERIM {
                    return;
                }
                at += h.len;
            }
            Ok(Some(h)) => break h,
            Ok(None) | Err(_) => return,
        }
    };
    assert!(head.len <= wire.len() - at);
    assert!(head.fields <= MAX_HEADERS);
    if head.reusable {
        assert_ne!(head.framing, Framing::Close, "reuse after a close-delimited body");
    }
    if head_request || head.status == 204 || head.status == 304 {
        assert_eq!(head.framing, Framing::Empty);
    }
    let rest = &wire[at + head.len..];
    let (body, done, fed, left, failed) = decode(head.framing, rest, piece);
    match head.framing {
        Framing::Empty => assert!(body.is_empty() && done && fed == 0),
        Framing::Length(n) => {
            assert!(body.len() as u64 <= n, "body past its Content-Length");
            if done {
                assert_eq!(body.len() as u64, n);
                assert_eq!(&body[..], &rest[..body.len()]);
                assert_eq!(fed - left, body.len(), "bytes after the body were consumed");
            } else {
                assert!(failed);
            }
        }
        Framing::Chunked => {
            assert!(body.len() <= fed - left);
            if done {
                // The same bytes in one piece decode to the same body and end.
                let (again, done2, fed2, left2, _) = decode(Framing::Chunked, rest, rest.len().max(1));
                assert!(done2);
                assert_eq!(again, body);
                assert_eq!(fed2 - left2, fed - left);
            }
        }
        Framing::Close => {
            assert!(done && !failed);
            assert_eq!(&body[..], rest);
        }
    }
});
