//! Response framing of the gateway's own HTTP/1.1 upstream client (RFC 9112
//! §6.3), against raw-TCP upstreams that send exactly the bytes under test.
//!
//! Each case checks what the client gets (status and body), that the next
//! request on the same client connection gets its own answer and nothing of
//! the previous response, and whether the upstream connection was reused
//! (one accepted connection) or not (two).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use support::{gateway, req};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The answer to every request after the scripted ones.
const SECOND: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond";

/// One scripted answer: bytes, and whether the upstream closes after them.
#[derive(Clone)]
struct Answer {
    bytes: Vec<u8>,
    close: bool,
}

fn keep(bytes: &[u8]) -> Answer {
    Answer {
        bytes: bytes.to_vec(),
        close: false,
    }
}

fn then_close(bytes: &[u8]) -> Answer {
    Answer {
        bytes: bytes.to_vec(),
        close: true,
    }
}

struct Raw {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

/// Reads one request head (and a `Content-Length` body unless `early`).
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>, early: bool) -> bool {
    let mut tmp = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            let want = if early { end + 4 } else { end + 4 + len };
            while buf.len() < want {
                let n = s.read(&mut tmp).await.unwrap_or(0);
                if n == 0 {
                    return false;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            buf.drain(..want.min(buf.len()));
            if early {
                // The unread body is discarded with the connection.
                buf.clear();
            }
            return true;
        }
        let n = s.read(&mut tmp).await.unwrap_or(0);
        if n == 0 {
            return false;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// An upstream answering requests, across all its connections, with
/// `script` in order and then with [`SECOND`]. With `early`, the first
/// answer is sent as soon as the first request head is in.
async fn raw_upstream(script: Vec<Answer>, early: bool) -> Raw {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(script);
    let (acc, reqs) = (Arc::clone(&accepted), Arc::clone(&requests));
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            acc.fetch_add(1, Ordering::SeqCst);
            let (script, reqs) = (Arc::clone(&script), Arc::clone(&reqs));
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let i = reqs.load(Ordering::SeqCst);
                    if !read_request(&mut s, &mut buf, early && i == 0).await {
                        return;
                    }
                    let i = reqs.fetch_add(1, Ordering::SeqCst);
                    let answer = script.get(i).cloned().unwrap_or_else(|| keep(SECOND));
                    if s.write_all(&answer.bytes).await.is_err() {
                        return;
                    }
                    if answer.close || (early && i == 0) {
                        let _ = s.shutdown().await;
                        // Early answers keep the socket open (unread body).
                        if early && i == 0 && !answer.close {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        return;
                    }
                }
            });
        }
    });
    Raw {
        addr,
        accepted,
        requests,
    }
}

async fn gw_for(up: &Raw) -> aether_gateway::RunningGateway {
    gateway(&format!(
        r#"
[[services]]
name = "world-service"
[services.outlier_detection]
enabled = false
[[services.endpoints]]
address = "{}"

[[routes]]
methods = ["GET", "POST"]
path = "/t/{{*rest}}"
service = "world-service"
retries = 0
timeout_ms = 3000
"#,
        up.addr
    ))
    .await
}

type Client = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn client(gw: SocketAddr) -> Client {
    let stream = TcpStream::connect(gw).await.unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

type Got = (StatusCode, http::HeaderMap, Result<Bytes, String>);

/// One exchange: status, headers and the body (or the body's error).
async fn send(c: &mut Client, r: http::Request<Full<Bytes>>) -> Got {
    try_send(c, r).await.expect("response")
}

/// [`send`], or the error when the connection broke before a response head.
async fn try_send(c: &mut Client, r: http::Request<Full<Bytes>>) -> Result<Got, String> {
    let resp = tokio::time::timeout(Duration::from_secs(10), c.send_request(r))
        .await
        .expect("response in time")
        .map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("body in time")
        .map(|b| b.to_bytes())
        .map_err(|e| e.to_string());
    Ok((parts.status, parts.headers, body))
}

/// The first request gets `answer`; returns what the client got. Then the
/// next request on the same client connection must get exactly "second".
async fn case(
    answer: Answer,
    method: &str,
    reused: bool,
) -> (StatusCode, http::HeaderMap, Result<Bytes, String>) {
    let up = raw_upstream(vec![answer], false).await;
    let gw = gw_for(&up).await;
    let mut c = client(gw.local_addr()).await;
    let first = send(&mut c, req(method, "/t/1", &[], "")).await;
    let (status, _, body) = send(&mut c, req("GET", "/t/2", &[], "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.unwrap(), Bytes::from_static(b"second"));
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        if reused { 1 } else { 2 },
        "upstream connection reused: expected {reused}"
    );
    first
}

fn is_502_json(r: &(StatusCode, http::HeaderMap, Result<Bytes, String>)) -> bool {
    r.0 == StatusCode::BAD_GATEWAY
        && r.2
            .as_ref()
            .is_ok_and(|b| b.starts_with(b"{\"error\":\"upstream protocol error\""))
}

#[tokio::test]
async fn chunked_with_extensions_and_trailers_is_decoded_and_the_connection_reused() {
    let r = case(
        keep(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=\"a b\"\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 1\r\n\r\n"),
        "GET",
        true,
    )
    .await;
    assert_eq!(r.0, StatusCode::OK);
    assert_eq!(r.2.unwrap(), Bytes::from_static(b"hello world"));
}

#[tokio::test]
async fn chunked_wins_over_content_length_and_the_connection_is_not_reused() {
    let r = case(
        keep(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        "GET",
        false,
    )
    .await;
    assert_eq!(r.0, StatusCode::OK);
    assert_ne!(
        r.1.get("content-length").map(|v| v.as_bytes()),
        Some(&b"3"[..])
    );
    assert_eq!(r.2.unwrap(), Bytes::from_static(b"hello"));
}

#[tokio::test]
async fn differing_content_lengths_are_502_and_the_connection_closed() {
    let r = case(
        keep(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!"),
        "GET",
        false,
    )
    .await;
    assert!(is_502_json(&r), "{r:?}");
    let r = case(
        keep(b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello!"),
        "GET",
        false,
    )
    .await;
    assert!(is_502_json(&r), "{r:?}");
}

#[tokio::test]
async fn equal_content_lengths_are_one_length() {
    let r = case(
        keep(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello"),
        "GET",
        true,
    )
    .await;
    assert_eq!(r.0, StatusCode::OK);
    assert_eq!(r.1.get_all("content-length").iter().count(), 1);
    assert_eq!(r.2.unwrap(), Bytes::from_static(b"hello"));
}

#[tokio::test]
async fn invalid_content_lengths_are_502() {
    for cl in [
        "+5",
        "5 5",
        "0x5",
        "-1",
        "",
        "99999999999999999999999",
        "5;",
    ] {
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {cl}\r\n\r\nhello");
        let r = case(keep(head.as_bytes()), "GET", false).await;
        assert!(is_502_json(&r), "content-length {cl:?}: {r:?}");
    }
}

#[tokio::test]
async fn transfer_codings_other_than_chunked_are_502() {
    for te in [
        "gzip",
        "gzip, chunked",
        "chunked, chunked",
        "chunked, gzip",
        "identity",
    ] {
        let head =
            format!("HTTP/1.1 200 OK\r\ntransfer-encoding: {te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        let r = case(keep(head.as_bytes()), "GET", false).await;
        assert!(is_502_json(&r), "transfer-encoding {te:?}: {r:?}");
    }
    // HTTP/1.0 with Transfer-Encoding is faulty framing (RFC 9112 §6.1).
    let r = case(
        keep(b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        "GET",
        false,
    )
    .await;
    assert!(is_502_json(&r), "{r:?}");
}

#[tokio::test]
async fn a_close_delimited_body_is_read_to_eof_and_not_reused() {
    let r = case(
        then_close(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end"),
        "GET",
        false,
    )
    .await;
    assert_eq!(r.0, StatusCode::OK);
    assert_eq!(r.2.unwrap(), Bytes::from_static(b"until the end"));
}

#[tokio::test]
async fn a_204_with_a_body_forwards_no_body_and_smuggles_nothing() {
    let r = case(
        keep(b"HTTP/1.1 204 No Content\r\ncontent-length: 38\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled"),
        "GET",
        false,
    )
    .await;
    assert_eq!(r.0, StatusCode::NO_CONTENT);
    assert_eq!(r.2.unwrap(), Bytes::new());
    // The smuggled bytes arriving on their own later must not be taken for
    // the next answer either.
    let up = raw_upstream(vec![keep(b"HTTP/1.1 304 Not Modified\r\n\r\n")], false).await;
    let gw = gw_for(&up).await;
    let mut c = client(gw.local_addr()).await;
    let (status, _, body) = send(&mut c, req("GET", "/t/1", &[], "")).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(body.unwrap(), Bytes::new());
    let (status, _, body) = send(&mut c, req("GET", "/t/2", &[], "")).await;
    assert_eq!(
        (status, body.unwrap()),
        (StatusCode::OK, Bytes::from_static(b"second"))
    );
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        1,
        "a clean 304 keeps its connection"
    );
}

#[tokio::test]
async fn interim_responses_are_skipped_and_bounded() {
    let r = case(
        keep(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
        "GET",
        true,
    )
    .await;
    assert_eq!(r.0, StatusCode::OK);
    assert!(
        r.1.get("link").is_none(),
        "interim fields are not forwarded"
    );
    assert_eq!(r.2.unwrap(), Bytes::from_static(b"ok"));

    let flood = "HTTP/1.1 100 Continue\r\n\r\n".repeat(20)
        + "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let r = case(keep(flood.as_bytes()), "GET", false).await;
    assert!(is_502_json(&r), "{r:?}");

    // 101 to a request that asked for no upgrade.
    let r = case(
        keep(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"),
        "GET",
        false,
    )
    .await;
    assert!(is_502_json(&r), "{r:?}");
}

#[tokio::test]
async fn a_head_response_has_no_body_whatever_its_length() {
    let r = case(
        keep(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
        "HEAD",
        true,
    )
    .await;
    assert_eq!(r.0, StatusCode::OK);
    assert_eq!(r.1.get("content-length").unwrap(), "5");
    assert_eq!(r.2.unwrap(), Bytes::new());
}

#[tokio::test]
async fn garbage_and_oversized_heads_are_502() {
    for bytes in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx: a\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nname : value\r\ncontent-length: 0\r\n\r\n",
    ] {
        let r = case(keep(bytes), "GET", false).await;
        assert!(
            is_502_json(&r),
            "{:?}: {r:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..10 {
        huge.extend_from_slice(format!("x-h-{i}: {}\r\n", "v".repeat(8000)).as_bytes());
    }
    huge.extend_from_slice(b"content-length: 0\r\n\r\n");
    let r = case(keep(&huge), "GET", false).await;
    assert!(is_502_json(&r), "{:?}", r.0);
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..101 {
        many.extend_from_slice(format!("x-h-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"content-length: 0\r\n\r\n");
    let r = case(keep(&many), "GET", false).await;
    assert!(is_502_json(&r), "{:?}", r.0);
}

#[tokio::test]
async fn connection_close_from_the_upstream_is_honoured() {
    let r = case(
        keep(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"),
        "GET",
        false,
    )
    .await;
    assert_eq!(r.0, StatusCode::OK);
    assert_eq!(r.2.unwrap(), Bytes::from_static(b"ok"));
    // HTTP/1.0 answers are not kept either.
    let r = case(
        keep(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"),
        "GET",
        false,
    )
    .await;
    assert_eq!(r.2.unwrap(), Bytes::from_static(b"ok"));
}

/// The body fails mid-way: the client's connection is aborted (it sees a
/// body error, never a short body passed off as complete), and a new
/// connection gets its own answer.
async fn mid_body_failure(answer: Answer) {
    let up = raw_upstream(vec![answer], false).await;
    let gw = gw_for(&up).await;
    let mut c = client(gw.local_addr()).await;
    // hyper may abort before or after it wrote the head.
    if let Ok((status, _, body)) = try_send(&mut c, req("GET", "/t/1", &[], "")).await {
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_err(), "{body:?}");
    }
    let mut c = client(gw.local_addr()).await;
    let (status, _, body) = send(&mut c, req("GET", "/t/2", &[], "")).await;
    assert_eq!(
        (status, body.unwrap()),
        (StatusCode::OK, Bytes::from_static(b"second"))
    );
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_upstream_closing_mid_body_aborts_the_client_connection() {
    mid_body_failure(then_close(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial",
    ))
    .await;
    mid_body_failure(then_close(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ))
    .await;
}

#[tokio::test]
async fn malformed_chunks_abort_the_client_connection() {
    for body in [
        &b"zz\r\nhello\r\n0\r\n\r\n"[..],
        b"5\r\nhelloXX0\r\n\r\n",
        b"\r\n",
        b"5;a\nb\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"10000000000000000\r\n",
    ] {
        let mut bytes = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        bytes.extend_from_slice(body);
        mid_body_failure(keep(&bytes)).await;
    }
}

#[tokio::test]
async fn an_answer_before_the_request_body_ended_is_forwarded_and_not_reused() {
    let up = raw_upstream(
        vec![keep(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nnope",
        )],
        true,
    )
    .await;
    let gw = gw_for(&up).await;
    // The client sends half of its body, then waits for the answer.
    let mut s = TcpStream::connect(gw.local_addr()).await.unwrap();
    s.write_all(b"POST /t/1 HTTP/1.1\r\nhost: a.test\r\ncontent-length: 10\r\n\r\nhello")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"nope") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("answer in time")
            .unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    drop(s);
    let mut c = client(gw.local_addr()).await;
    let (status, _, body) = send(&mut c, req("GET", "/t/2", &[], "")).await;
    assert_eq!(
        (status, body.unwrap()),
        (StatusCode::OK, Bytes::from_static(b"second"))
    );
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn request_bodies_are_framed_by_length_or_chunked() {
    // Echo what arrives: the upstream sees a Content-Length body as sent,
    // and a body of unknown length chunked.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    let mut got = Vec::new();
                    // Good enough for the two bodies below: both end in "done".
                    while !(got.ends_with(b"done") || got.ends_with(b"done\r\n0\r\n\r\n")) {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    tx.send(got).unwrap();
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                }
            });
        }
    });
    let up = Raw {
        addr,
        accepted: Arc::default(),
        requests: Arc::default(),
    };
    let gw = gw_for(&up).await;
    let mut c = client(gw.local_addr()).await;
    let (status, _, _) = send(&mut c, req("POST", "/t/1", &[], "some body, done")).await;
    assert_eq!(status, StatusCode::OK);
    let seen = String::from_utf8(rx.recv().await.unwrap()).unwrap();
    assert!(seen.starts_with("POST /t/1 HTTP/1.1\r\n"), "{seen}");
    assert!(seen.contains("\r\ncontent-length: 15\r\n"), "{seen}");
    assert!(seen.ends_with("\r\n\r\nsome body, done"), "{seen}");
    // Raw chunked from the client (no length known): chunked upstream.
    let mut s = TcpStream::connect(gw.local_addr()).await.unwrap();
    s.write_all(b"POST /t/2 HTTP/1.1\r\nhost: a.test\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n4\r\ndone\r\n0\r\n\r\n")
        .await
        .unwrap();
    let seen = String::from_utf8(rx.recv().await.unwrap()).unwrap();
    assert!(
        seen.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{seen}"
    );
    assert!(!seen.contains("content-length"), "{seen}");
    assert!(
        seen.ends_with("\r\n\r\n5\r\nhello\r\n4\r\ndone\r\n0\r\n\r\n"),
        "{seen}"
    );
    let _ = up.requests;
}

#[tokio::test]
async fn a_reused_connection_that_dies_unanswered_is_retried_fresh_for_idempotent_requests() {
    // The first connection answers once, then takes the next request and
    // closes without a byte of answer (its keep-alive ran out as the
    // request arrived); later connections answer every request.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let acc = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let first = acc.fetch_add(1, Ordering::SeqCst) == 0;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut answered = 0;
                while read_request(&mut s, &mut buf, false).await {
                    if first && answered == 1 {
                        return;
                    }
                    answered += 1;
                    if s.write_all(SECOND).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let up = Raw {
        addr,
        accepted: Arc::clone(&accepted),
        requests: Arc::default(),
    };
    let gw = gw_for(&up).await;
    let mut c = client(gw.local_addr()).await;
    for path in ["/t/1", "/t/2", "/t/3"] {
        let (status, _, body) = send(&mut c, req("GET", path, &[], "")).await;
        assert_eq!(
            (status, body.unwrap()),
            (StatusCode::OK, Bytes::from_static(b"second"))
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // A POST is not repeated once it may have reached the upstream.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acc = Arc::new(AtomicUsize::new(0));
    let acc2 = Arc::clone(&acc);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            acc2.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if read_request(&mut s, &mut buf, false).await {
                    let _ = s.write_all(SECOND).await;
                }
                let _ = read_request(&mut s, &mut buf, false).await;
            });
        }
    });
    let up = Raw {
        addr,
        accepted: Arc::clone(&acc),
        requests: Arc::default(),
    };
    let gw = gw_for(&up).await;
    let mut c = client(gw.local_addr()).await;
    let (status, _, _) = send(&mut c, req("POST", "/t/1", &[], "")).await;
    assert_eq!(status, StatusCode::OK);
    let r = send(&mut c, req("POST", "/t/2", &[], "")).await;
    assert!(is_502_json(&r), "{r:?}");
    assert_eq!(acc.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn hop_by_hop_response_fields_are_dropped_by_name_and_by_connection() {
    // Only fixed names (Connection says keep-alive): dropped as the head is read.
    let r = case(
        keep(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\nTrailer: x-sum\r\nx-end-to-end: kept\r\ncontent-length: 2\r\n\r\nok"),
        "GET",
        true,
    )
    .await;
    assert_eq!(r.0, StatusCode::OK);
    for h in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "upgrade",
    ] {
        assert_eq!(r.1.get(h), None, "{h} reached the client");
    }
    assert_eq!(r.1.get("x-end-to-end").unwrap(), "kept");
    // Trailer is end to end on responses.
    assert_eq!(r.1.get("trailer").unwrap(), "x-sum");
    assert_eq!(r.2.unwrap(), Bytes::from_static(b"ok"));

    // Connection naming another field, and TE: the full hygiene pass.
    let r = case(
        keep(b"HTTP/1.1 200 OK\r\nConnection: x-hop, keep-alive\r\nx-hop: secret\r\nTE: trailers\r\nKeep-Alive: timeout=5\r\nx-end-to-end: kept\r\ncontent-length: 2\r\n\r\nok"),
        "GET",
        true,
    )
    .await;
    assert_eq!(r.0, StatusCode::OK);
    for h in ["connection", "x-hop", "keep-alive"] {
        assert_eq!(r.1.get(h), None, "{h} reached the client");
    }
    assert_eq!(r.1.get("te").unwrap(), "trailers");
    assert_eq!(r.1.get("x-end-to-end").unwrap(), "kept");
}
