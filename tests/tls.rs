//! TLS end to end: the gateway's listener with certificates from a CA made
//! in the test (SNI, ALPN, versions, rotation on disk, handshake timeout),
//! TLS and mTLS to real rustls upstreams, and config errors.

mod support;

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use support::tls::{self as t, TestCa};
use support::{Upstream, get, read_until_close, service_toml};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const ROUTES: &str = r#"
[[routes]]
method = "GET"
path = "/api/v1/worlds/{world_id}"
service = "world-service"

[[routes]]
method = "GET"
path = "/ws/{room}"
service = "world-service"
"#;

/// Start the gateway from `text` as if it were `dir/gw.toml` (relative
/// paths resolve against `dir`).
async fn gateway_in(dir: &Path, text: &str) -> aether_gateway::RunningGateway {
    let cfg =
        aether_gateway::config::parse(text, &dir.join("gw.toml")).unwrap_or_else(|e| panic!("{e}"));
    aether_gateway::BackendRuntime::from_config(cfg)
        .start()
        .await
        .expect("gateway starts")
}

fn tls_entry(stem: &str, names: &[&str]) -> String {
    let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    format!(
        "[[server.tls]]\ncert = \"certs/{stem}.pem\"\nkey = \"certs/{stem}.key\"\nserver_names = [{}]\n",
        names.join(", ")
    )
}

/// A temporary directory with a `certs/` subdirectory.
fn workdir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    (dir, certs)
}

/// A gateway whose listener has one certificate, for `play.example`, from
/// a new test CA; `server` goes into `[server]`, `rest` after it.
async fn play_gateway(
    server: &str,
    rest: &str,
) -> (tempfile::TempDir, TestCa, aether_gateway::RunningGateway) {
    let (dir, certs) = workdir();
    let ca = TestCa::new("Aether Test CA");
    ca.leaf(&["play.example"]).write(&certs, "play");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}{}{rest}",
        tls_entry("play", &["play.example"])
    );
    let gw = gateway_in(dir.path(), &text).await;
    (dir, ca, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_over_tls_and_forwards_https() {
    let up = Upstream::start("world-1").await;
    let (_dir, ca, gw) = play_gateway(
        "",
        &format!("{}{ROUTES}", service_toml("world-service", &[up.addr], "")),
    )
    .await;

    let s = t::connect(
        gw.local_addr(),
        "play.example",
        t::client(&ca, &[b"http/1.1"]),
    )
    .await
    .expect("TLS handshake with the gateway");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let r = t::http1_over(s, get("/api/v1/worlds/7")).await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    assert_eq!(j["instance"], "world-1");
    assert_eq!(j["uri"], "/api/v1/worlds/7");
    assert_eq!(
        r.upstream_header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(up.hits(), 1);
    assert_eq!(up.last().headers["x-forwarded-proto"], "https");

    // The listener speaks only TLS: a cleartext request gets no HTTP answer.
    let (answer, closed) = support::raw(
        gw.local_addr(),
        b"GET /api/v1/worlds/7 HTTP/1.1\r\nHost: play.example\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(closed, "a cleartext client is disconnected");
    assert!(!answer.contains("HTTP/1.1"), "{answer:?}");
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_the_first_is_the_default() {
    let (dir, certs) = workdir();
    let ca = TestCa::new("Aether Test CA");
    let a = ca.leaf(&["play.example", "127.0.0.1"]);
    let b = ca.leaf(&["api.example", "*.api.example"]);
    a.write(&certs, "a");
    b.write(&certs, "b");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}{}",
        tls_entry("a", &["play.example"]),
        tls_entry("b", &["api.example", "*.api.example"])
    );
    let gw = gateway_in(dir.path(), &text).await;
    let addr = gw.local_addr();

    // Verified names: each SNI gets its certificate.
    for (sni, want) in [
        ("play.example", &a.der),
        ("api.example", &b.der),
        ("eu.api.example", &b.der),
    ] {
        let s = t::connect(addr, sni, t::client(&ca, &[b"http/1.1"]))
            .await
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(&t::peer_leaf(&s), want, "{sni}");
    }
    // No SNI (an IP address is never sent as SNI): the first entry.
    let s = t::connect(addr, "127.0.0.1", t::client(&ca, &[b"http/1.1"]))
        .await
        .expect("no-SNI client gets the default certificate");
    assert_eq!(t::peer_leaf(&s), a.der);
    // Unknown names (and two labels under a wildcard): the default too.
    for sni in ["unknown.example", "a.eu.api.example", "PLAY.EXAMPLE"] {
        let s = t::connect(addr, sni, t::client_any_cert())
            .await
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(t::peer_leaf(&s), a.der, "{sni}");
    }
    // Case-insensitive: an upper-case SNI of the second entry.
    let s = t::connect(addr, "API.Example", t::client_any_cert())
        .await
        .unwrap();
    assert_eq!(t::peer_leaf(&s), b.der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_h2_serves_http2() {
    let up = Upstream::start("world-1").await;
    let (_dir, ca, gw) = play_gateway(
        "",
        &format!("{}{ROUTES}", service_toml("world-service", &[up.addr], "")),
    )
    .await;

    let s = t::connect(
        gw.local_addr(),
        "play.example",
        t::client(&ca, &[b"h2", b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let r = t::h2_over(
        s,
        support::get_absolute("https://play.example/api/v1/worlds/3"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.json()["uri"], "/api/v1/worlds/3");
    assert_eq!(
        r.upstream_header("x-forwarded-proto").as_deref(),
        Some("https")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_and_tls13_negotiate_older_is_refused() {
    let (_dir, ca, gw) = play_gateway("", "").await;
    for (v, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let s = t::connect(
            gw.local_addr(),
            "play.example",
            t::client_versions(&ca, &[b"http/1.1"], &[v]),
        )
        .await
        .unwrap_or_else(|e| panic!("{want:?}: {e}"));
        assert_eq!(s.get_ref().1.protocol_version(), Some(want));
    }

    // rustls cannot offer TLS 1.1: a hand-made TLS 1.1 ClientHello (no
    // supported_versions extension) must get a protocol_version alert.
    let mut hello = vec![0x03, 0x02]; // client_version TLS 1.1
    hello.extend_from_slice(&[0x5a; 32]); // random
    hello.push(0); // no session id
    // Suites the gateway has (ECDHE-ECDSA/RSA AES-128-GCM): only the version is wrong.
    hello.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]);
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    // signature_algorithms (ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256),
    // which rustls needs before it looks at the version.
    hello.extend_from_slice(&[
        0x00, 0x0a, 0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04,
    ]);
    let mut hs = vec![0x01, 0, (hello.len() >> 8) as u8, hello.len() as u8];
    hs.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01, (hs.len() >> 8) as u8, hs.len() as u8];
    record.extend_from_slice(&hs);
    let mut s = TcpStream::connect(gw.local_addr()).await.unwrap();
    s.write_all(&record).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    assert!(closed, "the gateway closes a TLS 1.1 client");
    // One alert record: level fatal (2), protocol_version (70).
    assert_eq!(out.first(), Some(&0x15), "alert record, got {out:02x?}");
    assert_eq!(
        &out[5..7],
        &[2, 70],
        "fatal protocol_version, got {out:02x?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_is_picked_up_and_a_bad_one_keeps_the_old() {
    let (dir, certs) = workdir();
    let ca = TestCa::new("Aether Test CA");
    let first = ca.leaf(&["play.example"]);
    first.write(&certs, "play");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_reload_interval_seconds = 1\n{}",
        tls_entry("play", &["play.example"])
    );
    let gw = gateway_in(dir.path(), &text).await;
    let addr = gw.local_addr();
    let seen = || async {
        let s = t::connect(addr, "play.example", t::client(&ca, &[b"http/1.1"]))
            .await
            .expect("handshake");
        t::peer_leaf(&s)
    };
    assert_eq!(seen().await, first.der);

    // A held connection is untouched by the rotation.
    let held = t::connect(addr, "play.example", t::client(&ca, &[b"http/1.1"]))
        .await
        .unwrap();

    let second = ca.leaf(&["play.example", "www.play.example"]);
    second.write(&certs, "play");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if seen().await == second.der {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        // A poll interval, not synchronisation: the condition is re-read.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(t::peer_leaf(&held), first.der);

    // Half-written or mismatched replacements are refused; the second
    // certificate stays in use. `refresh` is what the background task runs.
    let store = gw.cert_store().expect("a TLS listener has a store");
    t::write_atomic(
        &certs.join("play.pem"),
        b"-----BEGIN CERTIFICATE-----\nMIIB",
    );
    assert_eq!(store.refresh(), 0);
    assert_eq!(seen().await, second.der);
    let third = ca.leaf(&["play.example"]);
    t::write_atomic(&certs.join("play.pem"), third.cert_pem.as_bytes()); // key still the second's
    assert_eq!(store.refresh(), 0);
    assert_eq!(seen().await, second.der);
    // Once the key follows, the third certificate goes live.
    t::write_atomic(&certs.join("play.key"), third.key_pem.as_bytes());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen().await != third.der {
        assert!(
            tokio::time::Instant::now() < deadline,
            "third not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_cut_at_the_header_read_timeout() {
    let (_dir, ca, gw) = play_gateway("header_read_timeout_ms = 300\n", "").await;
    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(gw.local_addr()).await.unwrap();
    // Other clients are served meanwhile: the handshake is not in the accept loop.
    let s = t::connect(
        gw.local_addr(),
        "play.example",
        t::client(&ca, &[b"http/1.1"]),
    )
    .await
    .expect("a second client's handshake completes");
    drop(s);
    let (got, closed) = read_until_close(&mut silent, Duration::from_secs(5)).await;
    assert!(closed, "the silent client was not disconnected");
    assert_eq!(got, "");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

/// A TLS upstream for `world.internal` signed by `ca`; `client_ca`: mTLS.
async fn tls_upstream(ca: &TestCa, alpn: &[&[u8]], client_ca: Option<&TestCa>) -> Upstream {
    let leaf = ca.leaf(&["world.internal"]);
    Upstream::start_tls("world-tls", leaf.server_config(alpn, client_ca)).await
}

fn plain_gateway_config(up: &Upstream, service_extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}{ROUTES}",
        service_toml("world-service", &[up.addr], service_extra)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verifies_the_ca_and_the_name() {
    let (dir, certs) = workdir();
    let ca = TestCa::new("Upstream CA");
    ca.write(&certs, "internal-ca");
    let other = TestCa::new("Some Other CA");
    other.write(&certs, "other-ca");
    let up = tls_upstream(&ca, &[b"http/1.1"], None).await;

    let good = "[services.tls]\nserver_name = \"world.internal\"\nca = \"certs/internal-ca.pem\"\n";
    let gw = gateway_in(dir.path(), &plain_gateway_config(&up, good)).await;
    let r = support::http1(gw.local_addr(), get("/api/v1/worlds/1")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["instance"], "world-tls");
    assert_eq!(r.json()["version"], "HTTP/1.1");
    assert_eq!(
        r.upstream_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
    // Kept alive and reused: a second request, one more hit, no new handshake failure.
    let r = support::http1(gw.local_addr(), get("/api/v1/worlds/2")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(up.hits(), 2);
    assert_eq!(up.tls_failures(), 0);
    gw.shutdown();
    gw.wait().await;

    // A CA that did not sign the upstream's certificate: 502, nothing sent.
    let wrong = "[services.tls]\nserver_name = \"world.internal\"\nca = \"certs/other-ca.pem\"\n";
    let gw = gateway_in(dir.path(), &plain_gateway_config(&up, wrong)).await;
    let r = support::http1(gw.local_addr(), get("/api/v1/worlds/1")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(up.hits(), 2);
    gw.shutdown();
    gw.wait().await;

    // The right CA, the wrong name: 502.
    let misnamed =
        "[services.tls]\nserver_name = \"elsewhere.internal\"\nca = \"certs/internal-ca.pem\"\n";
    let gw = gateway_in(dir.path(), &plain_gateway_config(&up, misnamed)).await;
    let r = support::http1(gw.local_addr(), get("/api/v1/worlds/1")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_mtls_presents_the_client_certificate() {
    let (dir, certs) = workdir();
    let ca = TestCa::new("Upstream CA");
    ca.write(&certs, "internal-ca");
    let clients = TestCa::new("Gateway client CA");
    clients
        .client_leaf("gateway.internal")
        .write(&certs, "gw-client");
    let up = tls_upstream(&ca, &[b"http/1.1"], Some(&clients)).await;

    let base = "[services.tls]\nserver_name = \"world.internal\"\nca = \"certs/internal-ca.pem\"\n";
    let mtls = format!("{base}cert = \"certs/gw-client.pem\"\nkey = \"certs/gw-client.key\"\n");
    let gw = gateway_in(dir.path(), &plain_gateway_config(&up, &mtls)).await;
    let r = support::http1(gw.local_addr(), get("/api/v1/worlds/1")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(up.hits(), 1);
    gw.shutdown();
    gw.wait().await;

    // Without the client certificate the upstream refuses the handshake.
    let gw = gateway_in(dir.path(), &plain_gateway_config(&up, base)).await;
    let r = support::http1(gw.local_addr(), get("/api/v1/worlds/1")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(up.hits(), 1);
    up.wait_for_tls_failures(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_h2_over_tls_websocket_and_health_probes() {
    let (dir, certs) = workdir();
    let ca = TestCa::new("Upstream CA");
    ca.write(&certs, "internal-ca");
    let tls = "[services.tls]\nserver_name = \"world.internal\"\nca = \"certs/internal-ca.pem\"\n";

    // HTTP/2 over TLS (ALPN h2).
    let up = tls_upstream(&ca, &[b"h2"], None).await;
    let gw = gateway_in(
        dir.path(),
        &plain_gateway_config(&up, &format!("protocol = \"h2\"\n{tls}")),
    )
    .await;
    let r = support::http1(gw.local_addr(), get("/api/v1/worlds/4")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["version"], "HTTP/2.0");
    assert_eq!(r.json()["uri"], "https://play.aether.test/api/v1/worlds/4");
    gw.shutdown();
    gw.wait().await;

    // HTTP/1.1 over TLS: a WebSocket tunnel, and active health probes.
    let up = tls_upstream(&ca, &[b"http/1.1"], None).await;
    let extra = format!(
        "{tls}[services.health_check]\npath = \"/health\"\ninterval_ms = 20\ntimeout_ms = 500\nunhealthy_threshold = 3\nhealthy_threshold = 2\n"
    );
    let text = format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        plain_gateway_config(&up, &extra)
    );
    let gw = gateway_in(dir.path(), &text).await;
    support::wait_upstreams(
        &gw,
        "the TLS endpoint healthy",
        |_| {},
        |v| support::endpoint_of(v, "world-service", up.addr)["health"] == "healthy",
    )
    .await;
    up.wait_for_probes(2).await;
    assert_eq!(up.tls_failures(), 0);

    let url = format!("ws://{}/ws/lobby", gw.local_addr());
    let (mut ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket handshake through a TLS upstream");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("over tls")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("over tls"));
    ws.close(None).await.unwrap();
    assert_eq!(up.last().headers["upgrade"], "websocket");
}

fn config_error(dir: &Path, text: &str) -> aether_gateway::config::ConfigError {
    aether_gateway::config::parse(text, &dir.join("gw.toml"))
        .expect_err("config should be rejected")
}

#[test]
fn config_errors_name_file_line_and_field() {
    let (dir, certs) = workdir();
    let ca = TestCa::new("Aether Test CA");
    let a = ca.leaf(&["play.example"]);
    let b = ca.leaf(&["api.example"]);
    a.write(&certs, "a");
    b.write(&certs, "b");
    let file = dir.path().join("gw.toml");
    let head = "[server]\nlisten = \"127.0.0.1:0\"\n";

    // Missing certificate file: line 4 is `cert = ...`.
    let e = config_error(
        dir.path(),
        &format!("{head}{}", tls_entry("missing", &["play.example"])),
    );
    assert_eq!((e.line, e.field.as_str()), (4, "server.tls[0].cert"), "{e}");
    assert!(e.message.contains("cannot read certificate file"), "{e}");
    assert!(e.message.contains("certs/missing.pem"), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("{}:4:8: server.tls[0].cert: ", file.display())),
        "{e}"
    );

    // Bad PEM in the certificate; no key block in the key file.
    std::fs::write(certs.join("junk.pem"), "not a certificate\n").unwrap();
    std::fs::write(certs.join("junk.key"), "not a key\n").unwrap();
    let text = format!(
        "{head}[[server.tls]]\ncert = \"certs/junk.pem\"\nkey = \"certs/a.key\"\nserver_names = [\"play.example\"]\n"
    );
    let e = config_error(dir.path(), &text);
    assert_eq!((e.line, e.field.as_str()), (4, "server.tls[0].cert"), "{e}");
    assert!(e.message.contains("no \"BEGIN CERTIFICATE\" block"), "{e}");
    let text = format!(
        "{head}[[server.tls]]\ncert = \"certs/a.pem\"\nkey = \"certs/junk.key\"\nserver_names = [\"play.example\"]\n"
    );
    let e = config_error(dir.path(), &text);
    assert_eq!((e.line, e.field.as_str()), (5, "server.tls[0].key"), "{e}");
    assert!(e.message.contains("BEGIN PRIVATE KEY"), "{e}");

    // A key that is not the certificate's.
    let text = format!(
        "{head}[[server.tls]]\ncert = \"certs/a.pem\"\nkey = \"certs/b.key\"\nserver_names = [\"play.example\"]\n"
    );
    let e = config_error(dir.path(), &text);
    assert_eq!((e.line, e.field.as_str()), (5, "server.tls[0].key"), "{e}");
    assert!(e.message.contains("does not match the certificate"), "{e}");

    // The same name in two entries; no names at all; a bad name.
    let text = format!(
        "{head}{}{}",
        tls_entry("a", &["play.example"]),
        tls_entry("b", &["api.example", "PLAY.example"])
    );
    let e = config_error(dir.path(), &text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (10, "server.tls[1].server_names[1]"),
        "{e}"
    );
    assert!(e.message.contains("already served by server.tls[0]"), "{e}");
    let e = config_error(dir.path(), &format!("{head}{}", tls_entry("a", &[])));
    assert_eq!(
        (e.line, e.field.as_str()),
        (6, "server.tls[0].server_names"),
        "{e}"
    );
    assert!(e.message.contains("at least one host"), "{e}");
    let e = config_error(
        dir.path(),
        &format!("{head}{}", tls_entry("a", &["a.*.example"])),
    );
    assert_eq!(
        (e.line, e.field.as_str()),
        (6, "server.tls[0].server_names[0]"),
        "{e}"
    );

    // The reload interval.
    let e = config_error(
        dir.path(),
        &format!(
            "{head}tls_reload_interval_seconds = 0\n{}",
            tls_entry("a", &["play.example"])
        ),
    );
    assert_eq!(
        (e.line, e.field.as_str()),
        (3, "server.tls_reload_interval_seconds"),
        "{e}"
    );

    // Upstream TLS: a missing CA, a certificate without its key, h2 without TLS.
    let svc = "[[services]]\nname = \"world-service\"\n[[services.endpoints]]\naddress = \"127.0.0.1:9001\"\n";
    let e = config_error(
        dir.path(),
        &format!("{head}{svc}[services.tls]\nca = \"certs/nope.pem\"\n"),
    );
    assert_eq!((e.line, e.field.as_str()), (8, "services[0].tls.ca"), "{e}");
    assert!(e.message.contains("cannot read certificate file"), "{e}");
    let e = config_error(
        dir.path(),
        &format!("{head}{svc}[services.tls]\ncert = \"certs/a.pem\"\n"),
    );
    assert_eq!(
        (e.line, e.field.as_str()),
        (8, "services[0].tls.cert"),
        "{e}"
    );
    let e = config_error(
        dir.path(),
        &format!("{head}{svc}[services.tls]\ncert = \"certs/a.pem\"\nkey = \"certs/b.key\"\n"),
    );
    assert_eq!(
        (e.line, e.field.as_str()),
        (9, "services[0].tls.key"),
        "{e}"
    );
    assert!(e.message.contains("does not match"), "{e}");
    let e = config_error(
        dir.path(),
        &format!("{head}[[services]]\nname = \"world-service\"\nprotocol = \"h2\"\n"),
    );
    assert_eq!(e.field, "services[0].protocol", "{e}");
    let e = config_error(
        dir.path(),
        &format!("{head}{svc}[services.tls]\nserver_name = \"not a name\"\n"),
    );
    assert_eq!(
        (e.line, e.field.as_str()),
        (8, "services[0].tls.server_name"),
        "{e}"
    );

    // And the contract's example parses, paths relative to the config file.
    let text = "[server]\nlisten = \"0.0.0.0:8443\"\n[[server.tls]]\ncert = \"certs/a.pem\"\nkey = \"certs/a.key\"\nserver_names = [\"play.example\"]\n";
    let cfg = aether_gateway::config::parse(text, &file).unwrap_or_else(|e| panic!("{e}"));
    let store = cfg.server.tls.expect("TLS configured");
    assert_eq!(store.chain_for(Some("play.example")).unwrap()[0], a.der);
    assert_eq!(store.sources()[0].cert, certs.join("a.pem"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_config_replaces_the_certificates() {
    let (dir, certs) = workdir();
    let ca = TestCa::new("Aether Test CA");
    let old = ca.leaf(&["play.example"]);
    old.write(&certs, "old");
    let new = ca.leaf(&["play.example", "api.example"]);
    new.write(&certs, "new");
    let head = "[server]\nlisten = \"127.0.0.1:0\"\nreload_on_change = false\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        format!("{head}{}", tls_entry("old", &["play.example"])),
    )
    .unwrap();
    let cfg = aether_gateway::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let gw = aether_gateway::BackendRuntime::from_config(cfg)
        .with_config_file(&path)
        .start()
        .await
        .expect("gateway starts");
    let held = t::connect(
        gw.local_addr(),
        "play.example",
        t::client(&ca, &[b"http/1.1"]),
    )
    .await
    .unwrap();

    // The config names other files and names: a reload swaps them in.
    std::fs::write(
        &path,
        format!(
            "{head}{}",
            tls_entry("new", &["api.example", "play.example"])
        ),
    )
    .unwrap();
    let r = support::http1(
        gw.admin_addr().unwrap(),
        support::admin_req("POST", "/admin/reload", &[]),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["restart_required"], serde_json::json!([]));
    let store = gw.cert_store().unwrap();
    assert_eq!(store.sources()[0].cert, certs.join("new.pem"));
    for sni in ["play.example", "api.example"] {
        let s = t::connect(gw.local_addr(), sni, t::client(&ca, &[b"http/1.1"]))
            .await
            .unwrap();
        assert_eq!(t::peer_leaf(&s), new.der, "{sni}");
    }
    // The connection made before keeps its certificate and still works.
    assert_eq!(t::peer_leaf(&held), old.der);
}

/// The value of the sample `name{labels}` in a metrics text (`None`: absent).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics_text(gw: &aether_gateway::RunningGateway) -> String {
    let r = support::admin(gw, "/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    String::from_utf8(r.body.to_vec()).unwrap()
}

/// Wait until `series` reads `want` on `/metrics`.
async fn wait_sample(gw: &aether_gateway::RunningGateway, series: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics_text(gw).await;
        if sample(&text, series) == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never became {want}:\n{text}"
        );
        // A poll interval, not synchronisation: the figure is read again.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What an operator watches on a TLS listener: handshakes that failed (by
/// reason), a connection still in its handshake counted as open (it holds
/// a `max_connections` slot), and when the certificate expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_and_certificates_are_in_the_metrics() {
    let (dir, _ca, gw) = play_gateway(
        "header_read_timeout_ms = 400\n",
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
    )
    .await;
    let text = metrics_text(&gw).await;
    let pem = std::fs::read(dir.path().join("certs/play.pem")).unwrap();
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap();
    let leaf = aether_gateway::tls::Leaf::parse(&der).unwrap();
    assert_eq!(
        sample(
            &text,
            "aether_tls_certificate_expiry_timestamp_seconds{server_name=\"play.example\"}"
        ),
        Some(leaf.not_after as f64),
        "{text}"
    );
    assert_eq!(
        sample(&text, "aether_tls_certificate_reload_failures_total"),
        Some(0.0)
    );
    assert_eq!(sample(&text, "aether_client_connections"), Some(0.0));
    // Both failure series exist from the start, at 0.
    for reason in ["error", "timeout"] {
        let series = format!("aether_tls_handshake_failures_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&text, &series), Some(0.0), "{text}");
    }

    // A client that connects and says nothing is open (in its handshake).
    let silent = TcpStream::connect(gw.local_addr()).await.unwrap();
    wait_sample(&gw, "aether_client_connections", 1.0).await;
    // Cleartext on the TLS port: a failed handshake.
    let (_, closed) = support::raw(
        gw.local_addr(),
        b"GET / HTTP/1.1\r\nHost: play.example\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(closed);
    wait_sample(
        &gw,
        "aether_tls_handshake_failures_total{reason=\"error\"}",
        1.0,
    )
    .await;
    // The silent one is cut at the header-read timeout.
    wait_sample(
        &gw,
        "aether_tls_handshake_failures_total{reason=\"timeout\"}",
        1.0,
    )
    .await;
    wait_sample(&gw, "aether_client_connections", 0.0).await;
    drop(silent);
}

/// Certificates that clients would refuse are warned about at load (so
/// `check` shows it), with the entry and the file; an encrypted key is an
/// error that says so.
#[test]
fn expired_or_misnamed_certificates_are_warned_about() {
    let (dir, certs) = workdir();
    let ca = TestCa::new("Aether Test CA");
    ca.leaf_valid(&["play.example"], (2020, 1, 1), (2021, 1, 1))
        .write(&certs, "old");
    ca.leaf(&["api.example"]).write(&certs, "api");
    let head = "[server]\nlisten = \"127.0.0.1:0\"\n";
    let text = format!(
        "{head}{}{}",
        tls_entry("old", &["play.example"]),
        tls_entry("api", &["api.example", "www.example"])
    );
    let cfg = aether_gateway::config::parse(&text, &dir.path().join("gw.toml")).unwrap();
    let w: Vec<&String> = cfg
        .warnings
        .iter()
        .filter(|w| w.starts_with("server.tls"))
        .collect();
    assert_eq!(w.len(), 2, "{:?}", cfg.warnings);
    assert!(
        w[0].starts_with("server.tls[0] (certs/old.pem): the certificate expired"),
        "{}",
        w[0]
    );
    assert!(
        w[1].starts_with("server.tls[1] (certs/api.pem): server_names has \"www.example\" but the certificate does not name it"),
        "{}",
        w[1]
    );

    std::fs::write(
        certs.join("enc.key"),
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = config_error(
        dir.path(),
        &format!(
            "{head}[[server.tls]]\ncert = \"certs/api.pem\"\nkey = \"certs/enc.key\"\nserver_names = [\"api.example\"]\n"
        ),
    );
    assert_eq!((e.line, e.field.as_str()), (5, "server.tls[0].key"), "{e}");
    assert!(e.message.contains("the private key is encrypted"), "{e}");
    // OpenSSL's traditional form says so in a header of the block.
    std::fs::write(
        certs.join("enc.key"),
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END RSA PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = config_error(
        dir.path(),
        &format!(
            "{head}[[server.tls]]\ncert = \"certs/api.pem\"\nkey = \"certs/enc.key\"\nserver_names = [\"api.example\"]\n"
        ),
    );
    assert!(e.message.contains("the private key is encrypted"), "{e}");
}
