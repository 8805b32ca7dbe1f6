//! Independent clients against the relay: coturn's own test tools
//! (`turnutils_stunclient`, `turnutils_uclient` with `turnutils_peer` as the
//! echo peer) and Python's aioice, over UDP and TCP, with static users and
//! with the gateway's REST credentials. Everything on 127.0.0.1: the tools
//! always get `-L 127.0.0.1`, never `-G`, and the relay allows only the
//! loopback as a peer range.

mod support;

use std::time::Duration;

use serde_json::json;
use support::jwt::{claims, hs256_with_secret};
use support::turn_tools::{
    Aioice, AioiceCredentials, Credentials, EchoPeer, Uclient, stun_binding,
};
use support::*;

const SECRET: &str = "relay-clients-shared-secret-0123456789";
const JWT_SECRET: &[u8] = b"relay-clients-hs256-secret-0123456789";

/// The gateway with `[relay]` (alice, a REST secret), `[auth]` and `[admin]`.
async fn relay_gateway() -> (aether_gateway::RunningGateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("turn.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let jwt = dir.path().join("hs256.secret");
    std::fs::write(&jwt, JWT_SECRET).unwrap();
    let gw = gateway(&format!(
        r#"[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[auth]
issuer = "aether-auth"
audiences = ["aether-api"]
algorithms = ["HS256"]
[[auth.keys]]
algorithm = "HS256"
secret_file = {jwt:?}
[relay]
listen = "127.0.0.1:0"
realm = "aether"
relay_address = "127.0.0.1"
relay_ports = "50000-59999"
secret_file = {secret:?}
max_bitrate_kbps = 64
# turnutils_uclient keeps a probe allocation per client besides its own.
max_allocations_per_user = 64
allowed_peers = ["127.0.0.1/32"]
[[relay.users]]
name = "alice"
password = "alicepass"
"#,
        jwt = jwt.display().to_string(),
        secret = secret.display().to_string(),
    ))
    .await;
    (gw, dir)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_stunclient_gets_its_address() {
    let (gw, _dir) = relay_gateway().await;
    let udp = gw.relay().unwrap().udp_addr();
    let b = blocking(move || stun_binding(udp)).await.unwrap();
    assert_eq!(b.mapped.ip().to_string(), "127.0.0.1");
    assert!(
        !b.rfc5780,
        "no OTHER-ADDRESS: the relay does not do RFC 5780"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_relays_with_zero_loss_over_udp_and_tcp_channels_and_sends() {
    let (gw, _dir) = relay_gateway().await;
    let relay = gw.relay().unwrap();
    let (udp, tcp) = (relay.udp_addr(), relay.tcp_addr().unwrap());
    let peer = blocking(EchoPeer::start).await;
    // Voice-sized messages (170 B every 20 ms, under the 64 kbps cap), two
    // clients each, in the four modes at once.
    let runs: Vec<_> = [(false, false), (false, true), (true, false), (true, true)]
        .into_iter()
        .map(|(tcp_client, send)| {
            let mut u = Uclient::new(if tcp_client { tcp } else { udp }, peer.addr);
            u.tcp = tcp_client;
            u.send_indications = send;
            u.clients = 2;
            u.messages = 50;
            u.length = 170;
            u.interval_ms = 20;
            tokio::task::spawn_blocking(move || ((tcp_client, send), u.run()))
        })
        .collect();
    let mut relayed = 0;
    for r in runs {
        let (mode, report) = r.await.unwrap();
        let report = report.unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        report.assert_no_loss();
        assert_eq!(report.sent, 100, "{mode:?}");
        relayed += report.sent;
    }
    let s = admin(&gw, "/admin/relay").await.json();
    assert_eq!(s["to_peer"]["packets"], relayed, "{s}");
    assert_eq!(s["to_client"]["packets"], relayed, "{s}");
    assert_eq!(s["drops"]["bitrate"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_with_rest_credentials_made_from_the_shared_secret() {
    let (gw, _dir) = relay_gateway().await;
    let udp = gw.relay().unwrap().udp_addr();
    let peer = blocking(EchoPeer::start).await;
    let mut u = Uclient::new(udp, peer.addr);
    u.credentials = Credentials::Rest {
        user: "player-9".into(),
        secret: SECRET.into(),
    };
    u.messages = 30;
    let report = blocking(move || u.run()).await.unwrap();
    report.assert_no_loss();
    // A wrong secret: nothing relayed.
    let mut bad = Uclient::new(udp, peer.addr);
    bad.credentials = Credentials::Rest {
        user: "player-9".into(),
        secret: "not-the-secret-at-all".into(),
    };
    bad.messages = 5;
    bad.deadline = Some(Duration::from_secs(15));
    let refused = blocking(move || bad.run()).await;
    assert!(
        refused.as_ref().map_or(true, |r| r.received == 0),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioice_allocates_and_relays_over_udp_and_tcp() {
    let (gw, _dir) = relay_gateway().await;
    let relay = gw.relay().unwrap();
    let (udp, tcp) = (relay.udp_addr(), relay.tcp_addr().unwrap());
    let peer = blocking(EchoPeer::start).await;
    for (server, is_tcp) in [(udp, false), (tcp, true)] {
        let mut a = Aioice::new(server, peer.addr);
        a.tcp = is_tcp;
        a.count = 50;
        let r = blocking(move || a.run()).await.unwrap();
        assert!(
            r.ok,
            "aioice over {}: {r:?}",
            if is_tcp { "TCP" } else { "UDP" }
        );
        assert_eq!((r.sent, r.received, r.lost), (50, 50, 0));
        assert_eq!(r.relayed().unwrap().ip().to_string(), "127.0.0.1");
        assert_eq!(r.mapped().unwrap().ip().to_string(), "127.0.0.1");
        assert!(r.deleted, "its Refresh(0) was answered");
    }
    let s = admin(&gw, "/admin/relay").await.json();
    assert_eq!(s["allocations"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioice_with_credentials_from_the_gateways_route() {
    let (gw, _dir) = relay_gateway().await;
    let token = hs256_with_secret(
        JWT_SECRET,
        &json!({"alg": "HS256"}),
        &claims("player-3", json!("player")),
    );
    let resp = http1(
        gw.local_addr(),
        req(
            "POST",
            "/api/v1/voice/credentials",
            &[("authorization", &format!("Bearer {token}"))],
            "",
        ),
    )
    .await;
    assert_eq!(resp.status, 200);
    let c = resp.json();
    let udp = gw.relay().unwrap().udp_addr();
    assert_eq!(c["uris"][0], format!("turn:{udp}?transport=udp"));
    let peer = blocking(EchoPeer::start).await;
    let mut a = Aioice::new(udp, peer.addr);
    a.credentials = AioiceCredentials::LongTerm {
        user: c["username"].as_str().unwrap().into(),
        password: c["credential"].as_str().unwrap().into(),
    };
    let r = blocking(move || a.run()).await.unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!((r.sent, r.received), (10, 10));
    // A credential altered by one character is refused.
    let mut forged = Aioice::new(udp, peer.addr);
    let mut cred = c["credential"].as_str().unwrap().to_owned();
    let last = cred.pop().unwrap();
    cred.push(if last == 'A' { 'B' } else { 'A' });
    forged.credentials = AioiceCredentials::LongTerm {
        user: c["username"].as_str().unwrap().into(),
        password: cred,
    };
    forged.step_timeout_s = 3.0;
    let r = blocking(move || forged.run()).await.unwrap();
    assert!(!r.ok && r.received == 0, "{r:?}");
}
