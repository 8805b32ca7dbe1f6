//! Malformed and hostile clients: bad framing, smuggling attempts, oversize
//! heads, slowloris, idle connections and the connection cap. Raw TCP, so the
//! bytes are exactly what an attacker would send.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn setup(server_extra: &str) -> (Upstream, aether_gateway::RunningGateway) {
    let up = Upstream::start("world").await;
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server_extra}\n{}\n[[routes]]\nmethods = [\"GET\", \"POST\"]\npath = \"/api/v1/worlds\"\nservice = \"world-service\"\n",
        service_toml("world-service", &[up.addr], "")
    );
    let gw = gateway(&cfg).await;
    (up, gw)
}

fn status_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_and_nothing_is_forwarded() {
    let (up, gw) = setup("").await;
    let big_header = format!(
        "GET /api/v1/worlds HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let many_headers = format!(
        "GET /api/v1/worlds HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..200)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("bad version", b"GET /api/v1/worlds HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("space in target", b"GET /api/v1/ worlds HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("obs-fold", b"GET /api/v1/worlds HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("NUL in header", b"GET /api/v1/worlds HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("space before colon", b"GET /api/v1/worlds HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("bad content-length", b"POST /api/v1/worlds HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (
            "two different content-lengths",
            b"POST /api/v1/worlds HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "transfer-encoding not ending in chunked",
            b"POST /api/v1/worlds HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "transfer-encoding on HTTP/1.0",
            b"POST /api/v1/worlds HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        ("oversize header", big_header.into_bytes(), "HTTP/1.1 431"),
        ("too many headers", many_headers.into_bytes(), "HTTP/1.1 431"),
    ];
    for (name, bytes, want) in cases {
        let (text, closed) = raw(gw.local_addr(), &bytes, Duration::from_secs(5)).await;
        assert!(
            text.starts_with(want),
            "{name}: got {:?}",
            status_line(&text)
        );
        assert!(
            closed,
            "{name}: the connection must be closed after a framing error"
        );
    }
    assert_eq!(up.hits(), 0, "a malformed request reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_without_host_is_a_json_400() {
    let (up, gw) = setup("").await;
    let (text, _) = raw(
        gw.local_addr(),
        b"GET /api/v1/worlds HTTP/1.1\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        text.contains("{\"error\":\"bad request: HTTP/1.1 request without Host\",\"request_id\":"),
        "{text}"
    );
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_cannot_smuggle() {
    let (up, gw) = setup("").await;
    // CL.TE: a front end trusting Content-Length would see a second request
    // (`GET /api/v1/worlds?smuggled=1`) hidden in this body.
    let attack = b"POST /api/v1/worlds HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
5\r\nhello\r\n0\r\n\r\nGET /api/v1/worlds?smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n";
    let (text, closed) = raw(gw.local_addr(), attack, Duration::from_secs(5)).await;
    // RFC 9112 §6.3: Transfer-Encoding wins, Content-Length is dropped, and
    // the connection is closed after the response, so the tail is never parsed.
    assert!(closed, "the connection must close after a CL+TE request");
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        1,
        "exactly one response: {text}"
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].uri, "/api/v1/worlds");
    assert!(
        !seen[0].headers.contains_key("content-length"),
        "conflicting length forwarded"
    );
    assert!(text.contains("\"body_bytes\":5"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_at_the_header_timeout() {
    let (up, gw) = setup("header_read_timeout_ms = 300").await;
    let mut s = TcpStream::connect(gw.local_addr()).await.unwrap();
    s.write_all(b"GET /api/v1/worlds HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Never finish the head: the gateway must hang up on its own.
    let (_, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "a trickling client was not disconnected");
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed() {
    let (up, gw) = setup("header_read_timeout_ms = 300").await;
    let mut s = TcpStream::connect(gw.local_addr()).await.unwrap();
    s.write_all(b"GET /api/v1/worlds HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // One complete exchange, then silence: the gateway closes the idle connection.
    let (text, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(closed, "an idle keep-alive connection stayed open");
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_their_turn() {
    let (_up, gw) = setup("max_connections = 2").await;
    let a = gw.local_addr();
    let request = b"GET /api/v1/worlds HTTP/1.1\r\nHost: x\r\n\r\n";

    // Two kept-alive connections hold both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(a).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut s, &mut buf),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }

    // A third connection is queued (the kernel completes the handshake), not served.
    let mut third = TcpStream::connect(a).await.unwrap();
    third
        .write_all(b"GET /api/v1/worlds HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (text, _) = read_until_close(&mut third, Duration::from_millis(500)).await;
    assert_eq!(text, "", "a connection over the cap was served");

    // Freeing a slot lets it through.
    drop(held.pop());
    let (text, closed) = read_until_close(&mut third, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_never_leak_internal_details_and_requests_keep_flowing() {
    let (up, gw) = setup("").await;
    // Many bad inputs on one connection after another; the gateway stays up.
    for i in 0..50 {
        let junk = format!("{i}\r\n\r\n\x01\x02\x03 / HTTP/1.1\r\n\r\n");
        let _ = raw(gw.local_addr(), junk.as_bytes(), Duration::from_secs(5)).await;
    }
    let r = http1(gw.local_addr(), get("/api/v1/worlds")).await;
    assert_eq!(r.status, http::StatusCode::OK);
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_cannot_lock_out_the_cap() {
    let (up, gw) = setup("max_connections = 2\nheader_read_timeout_ms = 300").await;
    let a = gw.local_addr();
    // Two connections that never say anything (or only half the HTTP/2 preface).
    let mut silent = TcpStream::connect(a).await.unwrap();
    let mut half_preface = TcpStream::connect(a).await.unwrap();
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    // Both are cut at the header-read timeout...
    let (_, closed) = read_until_close(&mut silent, Duration::from_secs(5)).await;
    assert!(closed, "a connection that sent nothing stayed open");
    let (_, closed) = read_until_close(&mut half_preface, Duration::from_secs(5)).await;
    assert!(closed, "a stalled HTTP/2 preface stayed open");
    // ...so the slots are free again.
    let r = http1(a, get("/api/v1/worlds")).await;
    assert_eq!(r.status, http::StatusCode::OK);
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connection_is_closed() {
    let (_up, gw) = setup("header_read_timeout_ms = 5000\nidle_timeout_ms = 300").await;
    let a = gw.local_addr();
    // A real HTTP/2 client makes one request, then keeps the connection idle.
    let (mut tx, conn) = h2_client(a).await;
    let req = get_absolute("http://x/api/v1/worlds");
    assert_eq!(
        tx.send_request(req).await.unwrap().status(),
        http::StatusCode::OK
    );
    // The gateway sends GOAWAY and closes: the client's connection task ends.
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_websocket_upgrades_are_tunnelled() {
    let (up, gw) = setup("").await;
    // An h2c upgrade would tunnel raw bytes past routing: it is dropped and
    // the request is served as plain HTTP/1.1.
    let (text, _) = raw(
        gw.local_addr(),
        b"GET /api/v1/worlds HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /admin/secret HTTP/1.1\r\nHost: internal\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // The pipelined second request is parsed and routed like any other: 404.
    assert!(text.contains("HTTP/1.1 404"), "{text}");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].headers.contains_key("upgrade"));
    assert!(!seen[0].headers.contains_key("http2-settings"));
    assert!(!seen[0].headers.contains_key("connection"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_body_is_408_not_an_upstream_timeout() {
    let (up, gw) = setup("client_body_timeout_ms = 300").await;
    let mut s = TcpStream::connect(gw.local_addr()).await.unwrap();
    s.write_all(b"POST /api/v1/worlds HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        .await
        .unwrap();
    // ...and then nothing more.
    let (text, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains("\"error\":\"request body timed out\""),
        "{text}"
    );
    assert_eq!(up.hits(), 1, "the head was already streaming upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_starts_after_the_client_body() {
    let up = Upstream::start("world").await;
    let cfg = format!(
        "{}\n[[routes]]\nmethod = \"POST\"\npath = \"/api/v1/worlds\"\nservice = \"world-service\"\ntimeout_ms = 400\n",
        service_toml("world-service", &[up.addr], "")
    );
    let gw = gateway(&cfg).await;
    let mut s = TcpStream::connect(gw.local_addr()).await.unwrap();
    s.write_all(b"POST /api/v1/worlds HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\n").await.unwrap();
    // The client is slow on purpose (4 × 200 ms > the 400 ms route timeout);
    // the upstream answers at once when the body is complete.
    for b in [b"a", b"b", b"c", b"d"] {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(b).await.unwrap();
    }
    let (text, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"body\":\"abcd\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_host_and_transfer_codings_are_refused() {
    let (up, gw) = setup("").await;
    let cases: [(&[u8], &str); 12] = [
        (b"GET /api/v1/worlds HTTP/1.1\r\nHost: :80\r\n\r\n", "HTTP/1.1 400"),
        (b"GET /api/v1/worlds HTTP/1.1\r\nHost: a:\r\n\r\n", "HTTP/1.1 400"),
        (b"GET /api/v1/worlds HTTP/1.1\r\nHost: example.com:+80\r\n\r\n", "HTTP/1.1 400"),
        (b"GET /api/v1/worlds HTTP/1.1\r\nHost: a.com,b.com\r\n\r\n", "HTTP/1.1 400"),
        (b"GET /api/v1/worlds HTTP/1.1\r\nHost: [fe80::1%25eth0]:80\r\n\r\n", "HTTP/1.1 400"),
        (b"GET http://abs.example/api/v1/worlds HTTP/1.1\r\n\r\n", "HTTP/1.1 400"),
        (b"GET /api/v1/worlds HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", "HTTP/1.1 400"),
        (b"GET /api/v1/worlds HTTP/1.1\r\nHost: user:pw@evil.example\r\n\r\n", "HTTP/1.1 400"),
        (b"GET /api/v1/worlds HTTP/1.1\r\nHost: x:99999\r\n\r\n", "HTTP/1.1 400"),
        (b"GET /api/v1/worlds HTTP/1.1\r\nHost: \r\n\r\n", "HTTP/1.1 400"),
        (b"GET /nope HTTP/1.1\r\n\r\n", "HTTP/1.1 400"),
        (
            b"POST /api/v1/worlds HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 501",
        ),
    ];
    for (bytes, want) in cases {
        let (text, _) = raw(gw.local_addr(), bytes, Duration::from_millis(500)).await;
        assert!(
            text.starts_with(want),
            "{:?}: {text}",
            String::from_utf8_lossy(bytes)
        );
        assert!(text.contains("\"request_id\""), "{text}");
    }
    assert_eq!(up.hits(), 0);
    // Well-formed authorities still pass.
    for host in [
        "[::1]:8080",
        "play.aether.test.",
        "10.0.0.1:443",
        "world_1.internal",
    ] {
        let (text, _) = raw(
            gw.local_addr(),
            format!("GET /api/v1/worlds HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert!(text.starts_with("HTTP/1.1 200"), "{host}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_connections_are_not_idle() {
    let (_up, gw) = setup("header_read_timeout_ms = 200\nidle_timeout_ms = 200").await;
    // The upstream takes three idle periods to answer; the request is in
    // flight all along, so neither HTTP/1.1 nor HTTP/2 connections are cut.
    let r = http1(gw.local_addr(), get("/api/v1/worlds?slow_ms=600")).await;
    assert_eq!(r.status, http::StatusCode::OK);
    let req = get_absolute("http://x/api/v1/worlds?slow_ms=600");
    let r = h2c(gw.local_addr(), req).await;
    assert_eq!(r.status, http::StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_http2_streams_do_not_keep_a_connection_busy() {
    let (up, gw) = setup("idle_timeout_ms = 300").await;
    let (mut tx, conn) = h2_client(gw.local_addr()).await;
    let req = get_absolute("http://x/api/v1/worlds?slow_ms=5000");
    let pending = tx.send_request(req);
    let cancelled = tokio::spawn(pending);
    up.wait_for_hits(1).await;
    // Dropping the response future resets the stream (RST_STREAM CANCEL).
    cancelled.abort();
    // The reset request no longer counts as in flight: the idle connection
    // closes long before the upstream's 5 s answer would have come.
    let ended = tokio::time::timeout(Duration::from_secs(3), conn).await;
    assert!(ended.is_ok(), "a reset stream kept the connection open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_idle_limit_applies_after_the_first_request() {
    let (_up, gw) = setup("header_read_timeout_ms = 200\nidle_timeout_ms = 1500").await;
    let (mut tx, conn) = h2_client(gw.local_addr()).await;
    let get = || get_absolute("http://x/api/v1/worlds");
    assert_eq!(tx.send_request(get()).await.unwrap().status(), 200);
    // Idle for longer than the header timeout but shorter than the idle timeout.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(tx.send_request(get()).await.unwrap().status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection was never closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_stops_reading_the_body_is_504() {
    // An upstream that reads the head and then never reads again.
    let stuck = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stuck_addr = stuck.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = stuck.accept().await {
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            held.push(s);
        }
    });
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_request_body_bytes = 100000000\n{}\n[[routes]]\nmethod = \"PUT\"\npath = \"/api/v1/uploads\"\nservice = \"world-service\"\ntimeout_ms = 300\n",
        service_toml("world-service", &[stuck_addr], "")
    );
    let gw = gateway(&cfg).await;
    let mut s = TcpStream::connect(gw.local_addr()).await.unwrap();
    let len = 64 * 1024 * 1024;
    s.write_all(
        format!("PUT /api/v1/uploads HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    // Push body until the socket buffers are full, then read the answer.
    let chunk = vec![b'x'; 64 * 1024];
    let writer = async {
        for _ in 0..(len / chunk.len()) {
            if s.write_all(&chunk).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), writer).await;
    let (text, _) = read_until_close(&mut s, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 504"), "{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected() {
    let (_up, gw) = setup("send_timeout_ms = 300").await;
    const SIZE: u64 = 1 << 30;
    let mut s = TcpStream::connect(gw.local_addr()).await.unwrap();
    s.write_all(
        format!("GET /api/v1/worlds?download={SIZE} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    // Read nothing for a while (socket buffers fill, the gateway stalls)...
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // ...then drain: only what was already buffered arrives before the close.
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match tokio::io::AsyncReadExt::read(&mut s, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n as u64,
            }
        }
    })
    .await
    .is_ok();
    assert!(closed, "the connection stayed open");
    assert!(
        got < SIZE / 4,
        "the whole response arrived ({got} bytes): the stalled client was not cut"
    );
}

/// CPU time this test process has used (utime + stime), in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_body_costs_no_cpu_while_it_waits() {
    let up = Upstream::start("world").await;
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nclient_body_timeout_ms = 2000\n{}\n[[routes]]\nmethod = \"POST\"\npath = \"/api/v1/worlds\"\nservice = \"world-service\"\ntimeout_ms = 50\n",
        service_toml("world-service", &[up.addr], "")
    );
    let gw = gateway(&cfg).await;
    let mut s = TcpStream::connect(gw.local_addr()).await.unwrap();
    s.write_all(b"POST /api/v1/worlds HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        .await
        .unwrap();
    up.wait_for_hits(1).await;
    // The client stalls for 2 s; the gateway must wait, not spin.
    let before = cpu_ticks();
    let (text, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    let used = cpu_ticks() - before;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    // A busy loop would burn ~2 s (200 ticks); waiting costs next to nothing.
    assert!(
        used < 50,
        "{used} ticks of CPU while waiting on a stalled client"
    );
}
