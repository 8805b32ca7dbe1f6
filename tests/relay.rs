//! The STUN/TURN relay through the running gateway, driven by a TURN
//! client of the tests' own (`support::turn_client`) over real UDP and TCP
//! sockets on 127.0.0.1: Binding, the long-term credential dance,
//! allocations, permissions, channels and both data paths, the peer policy,
//! gateway-issued credentials (expiry, forgery, rotation), quotas,
//! lifetimes and the bitrate cap on a manual clock, the challenge rate
//! limit, revocation and the admin counters.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aether_gateway::RunningGateway;
use aether_gateway::clock::ManualClock;
use aether_gateway::relay::auth::rest_password;
use aether_gateway::relay::proto::integrity::{Integrity, PasswordAlgorithm};
use serde_json::json;
use stun_types::message::{
    MessageClass, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec, TransactionId,
};
use support::jwt::{claims, hs256_with_secret};
use support::turn_client::*;
use support::*;

const SECRET: &str = "relay-tests-shared-secret-0123456789";
const JWT_SECRET: &[u8] = b"relay-tests-hs256-secret-0123456789ab";
const WAIT: Duration = Duration::from_secs(3);

struct Rig {
    gw: RunningGateway,
    clock: Arc<ManualClock>,
    /// The clock's Unix time at start (real time: tokens are signed for it).
    now: u64,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn udp(&self) -> SocketAddr {
        self.gw.relay().expect("[relay] configured").udp_addr()
    }

    fn tcp(&self) -> SocketAddr {
        self.gw.relay().unwrap().tcp_addr().expect("TCP on")
    }

    async fn status(&self) -> serde_json::Value {
        let r = admin(&self.gw, "/admin/relay").await;
        assert_eq!(r.status, 200);
        r.json()
    }

    async fn alice(&self) -> TurnClient {
        TurnClient::udp(self.udp(), Creds::new("alice", "alicepass")).await
    }
}

/// A gateway with `[relay]` (static users alice and bob, a REST secret,
/// loopback peers allowed), `[auth]` and `[admin]`; `relay_extra` is added
/// to `[relay]`.
async fn rig(relay_extra: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("turn.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let previous = dir.path().join("turn.previous");
    std::fs::write(&previous, "relay-tests-the-old-secret-987654").unwrap();
    let jwt = dir.path().join("hs256.secret");
    std::fs::write(&jwt, JWT_SECRET).unwrap();
    let allowed = if relay_extra.contains("allowed_peers") {
        ""
    } else {
        "allowed_peers = [\"127.0.0.1/32\"]\n"
    };
    let listen = if relay_extra.contains("listen =") {
        ""
    } else {
        "listen = \"127.0.0.1:0\"\n"
    };
    let config = format!(
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
{listen}realm = "aether"
relay_address = "127.0.0.1"
relay_ports = "50000-59999"
secret_file = {secret:?}
previous_secret_file = {previous:?}
credential_ttl_seconds = 600
{allowed}{relay_extra}
[[relay.users]]
name = "alice"
password = "alicepass"
[[relay.users]]
name = "bob"
password = "bobpass"
"#,
        jwt = jwt.display().to_string(),
        secret = secret.display().to_string(),
        previous = previous.display().to_string(),
    );
    let now = support::jwt::now();
    let clock = ManualClock::new(now);
    let gw = gateway_with_clock(&config, clock.clone()).await;
    Rig {
        gw,
        clock,
        now,
        _dir: dir,
    }
}

fn binding(tid: TransactionId, extra: Option<(u16, Vec<u8>)>) -> Vec<u8> {
    let mut b = stun_types::message::Message::builder(
        MessageType::from_class_method(MessageClass::Request, BINDING),
        tid,
        MessageWriteVec::new(),
    );
    if let Some((t, v)) = extra {
        b.add_attribute(&stun_types::attribute::RawAttribute::new(
            stun_types::attribute::AttributeType::new(t),
            &v,
        ))
        .unwrap();
    }
    b.finish()
}

/// How many 401s arrive before the answer to a Binding sent now.
async fn challenges_before_barrier(c: &mut TurnClient) -> usize {
    let tid = TransactionId::generate();
    c.send_raw(&binding(tid, None)).await;
    let mut n = 0;
    while let Some(m) = c.recv(WAIT).await {
        match m {
            Incoming::Answer(a) if Answer::parse(&a).tid == tid => return n,
            Incoming::Answer(a) => {
                assert_eq!(Answer::parse(&a).code, 401);
                n += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    panic!("no answer to the Binding");
}

/// Everything sent before is processed when a Binding sent after it is
/// answered: the relay handles one 5-tuple's datagrams in order.
async fn barrier(c: &mut TurnClient) {
    let tid = TransactionId::generate();
    let a = c.exchange(&binding(tid, None), tid).await.expect("binding");
    assert!(a.success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_binding_over_udp_and_tcp_and_what_is_refused() {
    let r = rig("").await;
    for mut c in [
        r.alice().await,
        TurnClient::tcp(r.tcp(), Creds::new("a", "b")).await,
    ] {
        let tid = TransactionId::generate();
        let a = c
            .exchange(&binding(tid, None), tid)
            .await
            .expect("answered");
        assert!(a.success);
        assert_eq!(a.addr(XOR_MAPPED_ADDRESS), Some(c.local_addr()));
        assert!(!a.has(0x8022), "no SOFTWARE");
        // An unknown comprehension-required attribute: 420, UNKNOWN-ATTRIBUTES.
        let tid = TransactionId::generate();
        let a = c
            .exchange(&binding(tid, Some((0x7777, vec![1, 2, 3, 4]))), tid)
            .await
            .expect("answered");
        assert_eq!(a.code, 420);
        assert_eq!(a.attr(0x000A), Some(&[0x77, 0x77][..]));
    }
    // Malformed datagrams get nothing, and the socket keeps serving.
    let mut c = r.alice().await;
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0u8; 19],
        &[0x00, 0x01, 0x00, 0x04, 0x21, 0x12],
    ] {
        c.send_raw(junk).await;
    }
    let mut trailing = binding(TransactionId::generate(), None);
    trailing.push(0);
    c.send_raw(&trailing).await;
    barrier(&mut c).await;
    assert!(c.recv(Duration::from_millis(100)).await.is_none());
    assert!(r.status().await["drops"]["malformed"].as_u64().unwrap() >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_challenge_then_relay_both_ways_over_udp_and_tcp() {
    let r = rig("").await;
    let peer = Peer::start().await;
    for tcp in [false, true] {
        let creds = Creds::new("alice", "alicepass");
        let mut c = if tcp {
            TurnClient::tcp(r.tcp(), creds).await
        } else {
            TurnClient::udp(r.udp(), creds).await
        };
        // The bare request: 401 with REALM, NONCE, PASSWORD-ALGORITHMS; no
        // SOFTWARE, no reason phrase, no integrity.
        let tid = TransactionId::generate();
        let bare = c.build(ALLOCATE, &[(REQUESTED_TRANSPORT, vec![17, 0, 0, 0])], tid);
        let a = c.exchange(&bare, tid).await.unwrap();
        assert_eq!(a.code, 401);
        assert_eq!(a.attr(0x0014), Some(&b"aether"[..]));
        assert!(a.nonce().unwrap().starts_with("obMatJos2"));
        assert!(a.has(0x8002), "PASSWORD-ALGORITHMS");
        assert!(
            !a.has(0x8022) && !a.has(0x0008),
            "no SOFTWARE, no MESSAGE-INTEGRITY"
        );
        let reason = &a.attr(0x0009).unwrap()[4..];
        assert!(reason.is_empty(), "no reason phrase: {reason:?}");

        let a = c.allocate().await;
        assert!(a.success, "allocate: {}", a.code);
        let relayed = a.addr(XOR_RELAYED_ADDRESS).unwrap();
        assert_eq!(relayed.ip().to_string(), "127.0.0.1");
        assert!((50000..=59999).contains(&relayed.port()), "{relayed}");
        assert_eq!(a.addr(XOR_MAPPED_ADDRESS), Some(c.local_addr()));
        assert_eq!(a.lifetime(), Some(600));
        assert!(a.has(0x0008) && a.has(0x8028), "signed and fingerprinted");

        // No permission yet: the Send is dropped.
        c.send_indication(peer.addr(), b"too early").await;
        barrier(&mut c).await;
        assert_eq!(peer.recv(Duration::from_millis(100)).await, None);

        assert!(c.permit(&[peer.addr()]).await.success);
        c.send_indication(peer.addr(), b"hello peer").await;
        assert_eq!(
            peer.recv(WAIT).await,
            Some((relayed, b"hello peer".to_vec()))
        );
        peer.send(relayed, b"hello client").await;
        assert_eq!(
            c.recv_data(WAIT).await,
            Some(Incoming::Data(peer.addr(), b"hello client".to_vec()))
        );
        // A channel: ChannelData both ways (5 bytes: TCP pads to 8).
        assert!(c.bind_channel(0x4001, peer.addr()).await.success);
        c.send_channel(0x4001, b"12345").await;
        assert_eq!(peer.recv(WAIT).await, Some((relayed, b"12345".to_vec())));
        peer.send(relayed, b"abcde").await;
        assert_eq!(
            c.recv_data(WAIT).await,
            Some(Incoming::Channel(0x4001, b"abcde".to_vec()))
        );
        // Permissions are per IP address (RFC 8656 §9): another port of
        // the peer's address gets through, as a Data indication (no channel).
        let neighbour = Peer::start().await;
        neighbour.send(relayed, b"next door").await;
        assert_eq!(
            c.recv_data(WAIT).await,
            Some(Incoming::Data(neighbour.addr(), b"next door".to_vec()))
        );
        // An address without permission (127.0.0.2: loopback, not allowed): dropped.
        let stranger = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
        stranger.send_to(b"spam", relayed).await.unwrap();
        c.send_channel(0x4001, b"after").await;
        assert_eq!(peer.recv(WAIT).await, Some((relayed, b"after".to_vec())));
        assert_eq!(c.recv_data(Duration::from_millis(200)).await, None);
        // Refresh with lifetime 0 deletes it; the relayed port stops.
        let a = c.refresh(0).await;
        assert!(a.success);
        assert_eq!(a.lifetime(), Some(0));
        assert_eq!(c.refresh(600).await.code, 437);
    }
    let s = r.status().await;
    assert_eq!(s["allocations"], 0);
    assert_eq!(s["allocations_opened"], 2);
    assert_eq!(s["allocations_closed"], 2);
    assert_eq!(
        s["to_peer"],
        json!({"packets": 6, "bytes": 2 * (10 + 5 + 5)})
    );
    assert_eq!(
        s["to_client"],
        json!({"packets": 6, "bytes": 2 * (12 + 5 + 9)})
    );
    // The early Send and the stranger's datagram, twice.
    assert_eq!(s["drops"]["no_permission"], 4, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256_integrity_and_password_algorithm_are_supported() {
    let r = rig("").await;
    for (alg, integrity) in [
        (PasswordAlgorithm::Md5, Integrity::Sha256),
        (PasswordAlgorithm::Sha256, Integrity::Sha256),
        (PasswordAlgorithm::Sha256, Integrity::Sha1),
    ] {
        let mut creds = Creds::new("alice", "alicepass");
        creds.algorithm = alg;
        creds.integrity = integrity;
        let mut c = TurnClient::udp(r.udp(), creds).await;
        let a = c.allocate().await;
        assert!(a.success, "{alg:?}/{integrity:?}: {}", a.code);
        let sha256 = a.has(0x001C);
        assert_eq!(
            sha256,
            integrity == Integrity::Sha256,
            "answered with the request's HMAC"
        );
        assert!(c.refresh(0).await.success);
    }
    // MD5 named explicitly, with the offered list echoed: fine.
    let mut creds = Creds::new("alice", "alicepass");
    creds.echo_algorithms = true;
    assert!(
        TurnClient::udp(r.udp(), creds)
            .await
            .allocate()
            .await
            .success
    );
    // PASSWORD-ALGORITHM without the echoed list (RFC 8489 §9.2.4): 400.
    let mut creds = Creds::new("alice", "alicepass");
    creds.lone_algorithm = true;
    assert_eq!(
        TurnClient::udp(r.udp(), creds).await.allocate().await.code,
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_in_special_ranges_and_the_gateways_own_ports_are_refused() {
    // Default policy: even loopback is refused.
    let strict = rig("allowed_peers = []").await;
    let mut c = strict.alice().await;
    assert!(c.allocate().await.success);
    let peer = Peer::start().await;
    for p in [
        peer.addr().to_string(),
        "0.0.0.0:9".into(),
        "[::]:9".into(),
        "10.1.2.3:9".into(),
        "192.168.1.1:9".into(),
        "172.16.0.1:9".into(),
        "169.254.169.254:80".into(),
        "100.64.0.1:9".into(),
        "224.0.0.1:9".into(),
        "[::1]:9".into(),
        "[::ffff:127.0.0.1]:9".into(),
        "[::127.0.0.1]:9".into(),
        "[64:ff9b::a9fe:a9fe]:80".into(),
        "[fe80::1]:9".into(),
        "[fc00::1]:9".into(),
    ] {
        let p: SocketAddr = p.parse().unwrap();
        assert_eq!(c.permit(&[p]).await.code, 403, "{p}");
        assert_eq!(c.bind_channel(0x4000, p).await.code, 403, "{p}");
    }
    // All or nothing: one forbidden peer among allowed ones refuses all.
    assert_eq!(
        c.permit(&[
            "203.0.113.9:1".parse().unwrap(),
            "10.0.0.1:1".parse().unwrap()
        ])
        .await
        .code,
        403
    );
    assert!(c.permit(&["203.0.113.9:1".parse().unwrap()]).await.success);

    // Loopback allowed: peers on it are fine, the gateway's own sockets never.
    let r = rig("").await;
    let mut c = r.alice().await;
    assert!(c.allocate().await.success);
    assert!(c.permit(&[peer.addr()]).await.success);
    for own in [
        r.gw.local_addr(),
        r.gw.admin_addr().unwrap(),
        r.udp(),
        format!("[::ffff:127.0.0.1]:{}", r.gw.local_addr().port())
            .parse()
            .unwrap(),
    ] {
        assert_eq!(c.bind_channel(0x4002, own).await.code, 403, "{own}");
    }
    // The loopback has a permission now (the test peer's), but a Send to
    // the relay's own listener — a bare Binding that would be answered —
    // is never relayed, on any own socket.
    let before = r.status().await["drops"]["no_permission"].as_u64().unwrap();
    for own in [r.udp(), r.gw.local_addr(), r.gw.admin_addr().unwrap()] {
        c.send_indication(own, &binding(TransactionId::generate(), None))
            .await;
    }
    barrier(&mut c).await;
    assert_eq!(c.recv_data(Duration::from_millis(200)).await, None);
    let s = r.status().await;
    assert_eq!(s["drops"]["no_permission"].as_u64().unwrap(), before + 3);
    assert_eq!(s["to_peer"]["packets"], 0);
}

fn token(sub: &str) -> String {
    hs256_with_secret(
        JWT_SECRET,
        &json!({"alg": "HS256"}),
        &claims(sub, json!("player")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_issued_credentials_work_until_they_expire_and_forgeries_never() {
    let r = rig("").await;
    let path = "/api/v1/voice/credentials";
    let post = |headers: &[(&str, &str)]| req("POST", path, headers, "");
    assert_eq!(http1(r.gw.local_addr(), post(&[])).await.status, 401);
    let get = http1(r.gw.local_addr(), req("GET", path, &[], "")).await;
    assert_eq!(get.status, 405);
    let t = format!("Bearer {}", token("player-7"));
    let resp = http1(r.gw.local_addr(), post(&[("authorization", &t)])).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let body = resp.json();
    let username = format!("{}:player-7", r.now + 600);
    let credential = rest_password(SECRET.as_bytes(), &username);
    let port = r.udp().port();
    let uris = json!([
        format!("turn:127.0.0.1:{port}?transport=udp"),
        format!("turn:127.0.0.1:{port}?transport=tcp")
    ]);
    assert_eq!(
        body,
        json!({
            "username": username,
            "credential": credential,
            "ttl": 600,
            "uris": uris,
            "region": null,
            "iceServers": [{"urls": uris, "username": username, "credential": credential}],
        })
    );
    // They allocate, over UDP and TCP.
    let creds = Creds::new(&username, &credential);
    let mut c = TurnClient::udp(r.udp(), creds.clone()).await;
    assert!(c.allocate().await.success);
    let mut t = TurnClient::tcp(r.tcp(), creds.clone()).await;
    assert!(t.allocate().await.success);
    // The same user name with a made-up credential, or someone else's name
    // with this credential: 401.
    for bad in [
        Creds::new(&username, "bm90IHRoZSBjcmVkZW50aWFs"),
        Creds::new(&format!("{}:player-8", r.now + 600), &credential),
        Creds::new(&format!("{}:player-7", r.now + 6000), &credential),
    ] {
        let mut f = TurnClient::udp(r.udp(), bad).await;
        assert_eq!(f.allocate().await.code, 401);
    }
    assert_eq!(r.status().await["allocations"], 2);
    // Made with the previous secret (during a rotation): accepted.
    let old = rest_password(b"relay-tests-the-old-secret-987654", &username);
    let mut o = TurnClient::udp(r.udp(), Creds::new(&username, &old)).await;
    assert!(o.allocate().await.success);
    // A token whose sub names a static user is not that user: refused.
    let t = format!("Bearer {}", token("alice"));
    let alice = http1(r.gw.local_addr(), post(&[("authorization", &t)]))
        .await
        .json();
    let mut impostor = TurnClient::udp(
        r.udp(),
        Creds::new(
            alice["username"].as_str().unwrap(),
            alice["credential"].as_str().unwrap(),
        ),
    )
    .await;
    assert_eq!(impostor.allocate().await.code, 401);
    // Expired: refused, at exactly the second after its expiry.
    r.clock.advance(600);
    let mut e = TurnClient::udp(r.udp(), creds.clone()).await;
    assert!(
        e.allocate().await.success,
        "valid through its expiry second"
    );
    r.clock.advance(1);
    let mut e = TurnClient::udp(r.udp(), creds).await;
    assert_eq!(e.allocate().await.code, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_486_capacity_508_and_441_for_another_user_on_a_five_tuple() {
    let r = rig("max_allocations_per_user = 2\nmax_allocations = 3").await;
    let mut a1 = r.alice().await;
    let mut a2 = r.alice().await;
    let mut a3 = r.alice().await;
    assert!(a1.allocate().await.success);
    assert!(a2.allocate().await.success);
    assert_eq!(a3.allocate().await.code, 486);
    let mut b1 = TurnClient::udp(r.udp(), Creds::new("bob", "bobpass")).await;
    assert!(b1.allocate().await.success);
    let mut b2 = TurnClient::udp(r.udp(), Creds::new("bob", "bobpass")).await;
    assert_eq!(b2.allocate().await.code, 508);
    // Freed by a delete: the quota counts allocations, not requests.
    assert!(a1.refresh(0).await.success);
    assert!(a3.allocate().await.success);
    // Bob's credentials on alice's 5-tuple: 441.
    a2.creds = Creds::new("bob", "bobpass");
    assert_eq!(a2.refresh(600).await.code, 441);
    assert_eq!(a2.permit(&[Peer::start().await.addr()]).await.code, 441);
    let s = r.status().await;
    assert_eq!(
        (s["allocations"].as_u64(), s["users"].as_u64()),
        (Some(3), Some(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetimes_are_exact_on_a_manual_clock() {
    let r = rig("").await;
    let relay = r.gw.relay().unwrap();
    let peer = Peer::start().await;
    let mut c = r.alice().await;
    let a = c.allocate().await;
    let relayed = a.addr(XOR_RELAYED_ADDRESS).unwrap();
    assert!(c.permit(&[peer.addr()]).await.success);
    // The permission lives 300 s: at 299.999 s data passes, at 300 s not.
    r.clock.advance_by(Duration::from_millis(299_999));
    c.send_indication(peer.addr(), b"in time").await;
    assert_eq!(peer.recv(WAIT).await, Some((relayed, b"in time".to_vec())));
    r.clock.advance_by(Duration::from_millis(1));
    c.send_indication(peer.addr(), b"too late").await;
    barrier(&mut c).await;
    assert_eq!(peer.recv(Duration::from_millis(100)).await, None);
    // The allocation lives 600 s.
    r.clock.advance_by(Duration::from_millis(299_999));
    assert_eq!(relay.expire_now(), 0);
    assert_eq!(r.status().await["allocations"], 1);
    r.clock.advance_by(Duration::from_millis(1));
    assert_eq!(relay.expire_now(), 1);
    assert_eq!(r.status().await["allocations"], 0);
    assert_eq!(c.refresh(600).await.code, 437);
    // Asked lifetimes are clamped to [600, 3600].
    let mut d = r.alice().await;
    d.nonce = None;
    let tid = TransactionId::generate();
    let ask = |s: u32| (LIFETIME, s.to_be_bytes().to_vec());
    d.request(
        ALLOCATE,
        &[(REQUESTED_TRANSPORT, vec![17, 0, 0, 0]), ask(99_999)],
    )
    .await
    .lifetime()
    .map(|l| assert_eq!(l, 3600))
    .expect("lifetime");
    let _ = tid;
    assert_eq!(d.refresh(5).await.lifetime(), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bitrate_cap_relays_the_cap_and_drops_the_rest() {
    let r = rig("max_bitrate_kbps = 64").await;
    let peer = Peer::start().await;
    let mut c = r.alice().await;
    assert!(c.allocate().await.success);
    assert!(c.bind_channel(0x4000, peer.addr()).await.success);
    // Twice the cap for 10 s of (manual) time: 160-byte voice frames with
    // their 48 bytes of RTP/SRTP overhead every 10 ms = 128 kbps of voice.
    let frame = [7u8; 160 + 48];
    let steps = 1000;
    let mut got = 0u64;
    for _ in 0..steps {
        c.send_channel(0x4000, &frame).await;
        barrier(&mut c).await;
        got += peer.drain();
        r.clock.advance_by(Duration::from_millis(10));
    }
    // A relayed datagram may land after the barrier's answer (two sockets).
    while peer.recv(Duration::from_millis(200)).await.is_some() {
        got += 1;
    }
    // The cap over 10 s (plus its 250 ms burst) in 160-byte frames.
    let kbps = got as f64 * 160.0 * 8.0 / 10.0 / 1000.0;
    assert!(
        (57.6..=70.4).contains(&kbps),
        "{got} frames: {kbps} kbps against a 64 kbps cap"
    );
    let s = r.status().await;
    assert_eq!(s["drops"]["bitrate"].as_u64().unwrap(), steps - got);
    assert_eq!(s["to_peer"]["packets"].as_u64().unwrap(), got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_cap_loses_nothing() {
    let r = rig("max_bitrate_kbps = 64").await;
    let peer = Peer::start().await;
    let mut c = r.alice().await;
    assert!(c.allocate().await.success);
    assert!(c.bind_channel(0x4000, peer.addr()).await.success);
    // 64 kbps of voice: a 160-byte frame (+48 overhead) every 20 ms.
    let frame = [1u8; 160 + 48];
    let mut got = 0;
    for _ in 0..500 {
        c.send_channel(0x4000, &frame).await;
        barrier(&mut c).await;
        got += peer.drain();
        r.clock.advance_by(Duration::from_millis(20));
    }
    while peer.recv(Duration::from_millis(200)).await.is_some() {
        got += 1;
    }
    assert_eq!(got, 500);
    assert_eq!(r.status().await["drops"]["bitrate"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_answers_are_rate_limited_per_source_prefix() {
    let r = rig("challenges_per_second = 5\nchallenge_burst = 5").await;
    let mut c = r.alice().await;
    let bare = |c: &TurnClient| {
        c.build(
            ALLOCATE,
            &[(REQUESTED_TRANSPORT, vec![17, 0, 0, 0])],
            TransactionId::generate(),
        )
    };
    for _ in 0..20 {
        let b = bare(&c);
        c.send_raw(&b).await;
    }
    // The answers arrive before the Binding's, which is never limited.
    assert_eq!(challenges_before_barrier(&mut c).await, 5);
    // Another address of the same /24 has a budget of its own, until the
    // prefix's (8 addresses' worth) is spent.
    for last in 2..=8 {
        let mut other = TurnClient::udp_from(
            format!("127.0.0.{last}").parse().unwrap(),
            r.udp(),
            Creds::new("alice", "alicepass"),
        )
        .await;
        for _ in 0..5 {
            let b = bare(&other);
            other.send_raw(&b).await;
        }
        assert_eq!(
            challenges_before_barrier(&mut other).await,
            5,
            "127.0.0.{last}"
        );
    }
    let mut ninth = TurnClient::udp_from(
        "127.0.0.9".parse().unwrap(),
        r.udp(),
        Creds::new("alice", "alicepass"),
    )
    .await;
    let b = bare(&ninth);
    ninth.send_raw(&b).await;
    assert_eq!(challenges_before_barrier(&mut ninth).await, 0);
    assert_eq!(r.status().await["drops"]["throttled"], 16);
    // A second later: five more.
    r.clock.advance(1);
    for _ in 0..8 {
        let b = bare(&c);
        c.send_raw(&b).await;
    }
    assert_eq!(challenges_before_barrier(&mut c).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_user_tears_down_their_allocations_and_refuses_them() {
    let r = rig("").await;
    let mut a1 = r.alice().await;
    let mut a2 = TurnClient::tcp(r.tcp(), Creds::new("alice", "alicepass")).await;
    let mut b = TurnClient::udp(r.udp(), Creds::new("bob", "bobpass")).await;
    assert!(a1.allocate().await.success);
    assert!(a2.allocate().await.success);
    assert!(b.allocate().await.success);
    let admin_addr = r.gw.admin_addr().unwrap();
    let revoke = http1(
        admin_addr,
        admin_req("POST", "/admin/relay/revoke?user=alice", &[]),
    )
    .await;
    assert_eq!(revoke.status, 200);
    assert_eq!(
        revoke.json(),
        json!({"user": "alice", "allocations_deleted": 2, "revoked_until": r.now + 600})
    );
    assert_eq!(r.status().await["allocations"], 1);
    // The TCP client's connection goes with its allocation.
    assert!(a2.closed(WAIT).await, "revoked TCP connection left open");
    // A revoked user's own 5-tuples are refused too (401, as a wrong
    // credential: the client learns nothing more).
    assert_eq!(a1.refresh(600).await.code, 401);
    let mut again = r.alice().await;
    assert_eq!(again.allocate().await.code, 401);
    assert!(b.refresh(600).await.success, "bob is untouched");
    // Lifted: alice may allocate again.
    let lift = http1(
        admin_addr,
        admin_req("DELETE", "/admin/relay/revoke?user=alice", &[]),
    )
    .await;
    assert_eq!(lift.json(), json!({"user": "alice", "was_revoked": true}));
    let mut back = r.alice().await;
    assert!(back.allocate().await.success);
    // While revoked, the gateway issues no credentials for the user.
    http1(
        admin_addr,
        admin_req("POST", "/admin/relay/revoke?user=player-5", &[]),
    )
    .await;
    let t = format!("Bearer {}", token("player-5"));
    let creds = http1(
        r.gw.local_addr(),
        req(
            "POST",
            "/api/v1/voice/credentials",
            &[("authorization", &t)],
            "",
        ),
    )
    .await;
    assert_eq!(creds.status, 403);
    let bad = http1(admin_addr, admin_req("POST", "/admin/relay/revoke", &[])).await;
    assert_eq!(bad.status, 400);
    // A name that would forge a log line, or an oversized one, is refused.
    for user in ["mallory%0A2026-01-01%20INFO%20forged", &"x".repeat(513)] {
        let bad = http1(
            admin_addr,
            admin_req("POST", &format!("/admin/relay/revoke?user={user}"), &[]),
        )
        .await;
        assert_eq!(bad.status, 400, "{user}");
    }
    assert_eq!(admin(&r.gw, "/admin/relay/revoke").await.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_allocation_goes_with_its_connection() {
    let r = rig("").await;
    let mut t = TurnClient::tcp(r.tcp(), Creds::new("alice", "alicepass")).await;
    assert!(t.allocate().await.success);
    assert_eq!(r.status().await["allocations"], 1);
    drop(t);
    let deadline = tokio::time::Instant::now() + WAIT;
    while r.status().await["allocations"] != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "allocation outlived its connection"
        );
        tokio::task::yield_now().await;
    }
    // Bytes that cannot start a STUN message or ChannelData close the connection.
    let mut g = TurnClient::tcp(r.tcp(), Creds::new("alice", "alicepass")).await;
    g.send_raw(b"\xff\xff\xff\xffgarbage").await;
    assert!(g.closed(WAIT).await);
    let deadline = tokio::time::Instant::now() + WAIT;
    while r.status().await["tcp_connections"] != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection still counted"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_config_errors_name_the_line_and_field() {
    let cases = [
        (
            "[relay]\nrelay_address = \"127.0.0.1\"\nsecret_env = \"X\"\nbogus = 1\n",
            4,
            "relay.bogus",
        ),
        (
            "[relay]\nrelay_address = \"127.0.0.1\"\nrelay_ports = \"9-3\"\n[[relay.users]]\nname = \"a\"\npassword = \"b\"\n",
            3,
            "relay.relay_ports",
        ),
        (
            "[relay]\nrelay_address = \"not-an-ip\"\n",
            2,
            "relay.relay_address",
        ),
        (
            "[relay]\nrelay_address = \"127.0.0.1\"\nsecret_env = \"AETHER_TEST_UNSET_VARIABLE\"\n",
            3,
            "relay.secret_env",
        ),
        (
            "[relay]\nrelay_address = \"127.0.0.1\"\nallowed_peers = [\"10.0.0.0/33\"]\n[[relay.users]]\nname = \"a\"\npassword = \"b\"\n",
            3,
            "relay.allowed_peers[0]",
        ),
        (
            "[relay]\nrelay_address = \"127.0.0.1\"\n[[relay.users]]\nname = \"a:b\"\npassword = \"b\"\n",
            4,
            "relay.users[0].name",
        ),
        (
            "[relay]\nrelay_address = \"127.0.0.1\"\n",
            1,
            "relay.secret_env",
        ),
        (
            "[relay]\nrelay_address = \"127.0.0.1\"\nmax_bitrate_kbps = -1\n",
            3,
            "relay.max_bitrate_kbps",
        ),
    ];
    for (text, line, field) in cases {
        let e =
            aether_gateway::config::parse(text, std::path::Path::new("gw.toml")).expect_err(text);
        assert_eq!((e.line, e.field.as_str()), (line, field), "{e}");
        assert!(e.to_string().starts_with("gw.toml:"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_relayed_addresses_by_requested_address_family() {
    let r =
        rig("relay_address_v6 = \"::1\"\nallowed_peers = [\"127.0.0.1/32\", \"::1/128\"]").await;
    let peer6 = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
    let peer6_addr = peer6.local_addr().unwrap();
    let mut c = r.alice().await;
    let family = |f: u8| (0x0017, vec![f, 0, 0, 0]);
    let a = c
        .request(
            ALLOCATE,
            &[(REQUESTED_TRANSPORT, vec![17, 0, 0, 0]), family(2)],
        )
        .await;
    assert!(a.success, "{}", a.code);
    let relayed = a.addr(XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(relayed.ip().to_string(), "::1");
    // An IPv4 peer on an IPv6 allocation: 443.
    let peer4 = Peer::start().await;
    assert_eq!(c.permit(&[peer4.addr()]).await.code, 443);
    assert!(c.permit(&[peer6_addr]).await.success);
    c.send_indication(peer6_addr, b"over v6").await;
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(WAIT, peer6.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"over v6"[..], relayed));
    peer6.send_to(b"back", relayed).await.unwrap();
    assert_eq!(
        c.recv_data(WAIT).await,
        Some(Incoming::Data(peer6_addr, b"back".to_vec()))
    );
    // IPv4 explicitly, and an unknown family (440).
    let mut d = r.alice().await;
    let a = d
        .request(
            ALLOCATE,
            &[(REQUESTED_TRANSPORT, vec![17, 0, 0, 0]), family(1)],
        )
        .await;
    assert_eq!(
        a.addr(XOR_RELAYED_ADDRESS).unwrap().ip().to_string(),
        "127.0.0.1"
    );
    let mut e = r.alice().await;
    let a = e
        .request(
            ALLOCATE,
            &[(REQUESTED_TRANSPORT, vec![17, 0, 0, 0]), family(9)],
        )
        .await;
    assert_eq!(a.code, 440);
    // Without an IPv6 relay address, IPv6 is not supported.
    let plain = rig("").await;
    let mut f = plain.alice().await;
    let a = f
        .request(
            ALLOCATE,
            &[(REQUESTED_TRANSPORT, vec![17, 0, 0, 0]), family(2)],
        )
        .await;
    assert_eq!(a.code, 440);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reach_an_ipv6_listener() {
    let r = rig("listen = \"[::1]:0\"").await;
    let mut c = {
        let s = r.udp();
        assert!(s.is_ipv6());
        TurnClient::udp6(s, Creds::new("alice", "alicepass")).await
    };
    let tid = TransactionId::generate();
    let a = c.exchange(&binding(tid, None), tid).await.unwrap();
    assert_eq!(a.addr(XOR_MAPPED_ADDRESS), Some(c.local_addr()));
    let a = c.allocate().await;
    assert!(a.success);
    assert_eq!(a.addr(XOR_MAPPED_ADDRESS), Some(c.local_addr()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_tcp_slot() {
    let r = rig("max_tcp_connections_per_address = 3").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TurnClient::tcp(r.tcp(), Creds::new("alice", "alicepass")).await;
        barrier(&mut c).await;
        held.push(c);
    }
    // The fourth from 127.0.0.1 is closed at once; another address is served.
    let mut fourth = TurnClient::tcp(r.tcp(), Creds::new("alice", "alicepass")).await;
    assert!(fourth.closed(WAIT).await);
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = s.connect(r.tcp()).await.unwrap();
    let mut other = TurnClient::from_tcp(stream, r.tcp(), Creds::new("alice", "alicepass"));
    assert!(other.allocate().await.success);
    drop(held);
}
