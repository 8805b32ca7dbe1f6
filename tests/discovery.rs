//! DNS service discovery against a real DNS server on 127.0.0.1
//! (`support::dns`): A/AAAA and SRV answers become endpoint lists, changed
//! records are followed after their TTL, failures of every kind keep the
//! last list, and queries are spaced by the TTL bounds.

mod support;

use std::sync::Arc;
use std::time::Duration;

use aether_gateway::upstream::discovery::{
    Discovered, DnsConfig, DnsDiscovery, DnsRecord, EndpointList, spawn,
};
use hickory_proto::rr::RecordType;
use support::dns::{DnsServer, Mode, a, aaaa, srv};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Generous: the machine is shared, and every wait here ends early on success.
const DEADLINE: Duration = Duration::from_secs(10);

fn ep(addr: &str, weight: u32) -> Discovered {
    Discovered {
        address: addr.parse().unwrap(),
        weight,
    }
}

fn config(server: &DnsServer, name: &str, record: DnsRecord, min_ttl: Duration) -> DnsConfig {
    DnsConfig {
        nameservers: vec![server.addr()],
        min_ttl,
        max_ttl: Duration::from_secs(2),
        timeout: Duration::from_millis(300),
        ..DnsConfig::new(name, 9001, record)
    }
}

/// A discovery task and its watch; stopped when dropped.
struct Running {
    rx: watch::Receiver<EndpointList>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Running {
    fn start(config: DnsConfig) -> Running {
        let source = Arc::new(DnsDiscovery::new(config).expect("valid config"));
        let stop = CancellationToken::new();
        let (rx, task) = spawn(source, stop.clone());
        Running {
            rx,
            stop,
            task: Some(task),
        }
    }

    /// The next published list, within [`DEADLINE`].
    async fn next(&mut self) -> Vec<Discovered> {
        tokio::time::timeout(DEADLINE, self.rx.changed())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no new endpoint list within {DEADLINE:?}; current {:?}",
                    self.current()
                )
            })
            .expect("discovery task alive");
        self.rx.borrow_and_update().to_vec()
    }

    fn current(&self) -> Vec<Discovered> {
        self.rx.borrow().to_vec()
    }

    /// Nothing was published since the last [`Running::next`].
    fn unchanged(&self) -> bool {
        !self.rx.has_changed().expect("discovery task alive")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

const WORLD: &str = "world.internal";
const SRV_NAME: &str = "_world._tcp.internal";

#[tokio::test]
async fn a_records_are_followed_after_their_ttl() {
    let dns = DnsServer::start(vec![a(WORLD, "127.0.0.2", 1), a(WORLD, "127.0.0.3", 1)]).await;
    let mut d = Running::start(config(
        &dns,
        WORLD,
        DnsRecord::Address,
        Duration::from_millis(200),
    ));
    assert_eq!(
        d.next().await,
        [ep("127.0.0.2:9001", 1), ep("127.0.0.3:9001", 1)]
    );

    // Two more rounds (A and AAAA each) over unchanged records publish nothing.
    let seen = dns.queries();
    dns.wait_queries(seen + 4, DEADLINE).await;
    assert!(d.unchanged(), "an unchanged answer was republished");

    dns.set_records(vec![a(WORLD, "127.0.0.3", 1), a(WORLD, "127.0.0.4", 1)]);
    assert_eq!(
        d.next().await,
        [ep("127.0.0.3:9001", 1), ep("127.0.0.4:9001", 1)]
    );
}

#[tokio::test]
async fn max_ttl_caps_a_long_ttl_so_changes_are_seen_without_waiting_it_out() {
    // An hour-long TTL: only our own clock, not a resolver cache, may decide.
    let dns = DnsServer::start(vec![a(WORLD, "127.0.0.2", 3600)]).await;
    let mut cfg = config(&dns, WORLD, DnsRecord::Ipv4Only, Duration::from_millis(200));
    cfg.max_ttl = Duration::from_millis(500);
    let mut d = Running::start(cfg);
    assert_eq!(d.next().await, [ep("127.0.0.2:9001", 1)]);
    dns.set_records(vec![a(WORLD, "127.0.0.5", 3600)]);
    assert_eq!(d.next().await, [ep("127.0.0.5:9001", 1)]);
}

fn srv_zone() -> Vec<hickory_proto::rr::Record> {
    vec![
        srv(SRV_NAME, 10, 5, 9001, "a.internal", 30),
        srv(SRV_NAME, 10, 0, 9002, "b.internal", 30),
        srv(SRV_NAME, 20, 100, 9003, "c.internal", 30),
        a("a.internal", "127.0.0.2", 30),
        a("b.internal", "127.0.0.3", 30),
        aaaa("b.internal", "::1", 30),
        a("c.internal", "127.0.0.4", 30),
    ]
}

fn queried(dns: &DnsServer, name: &str) -> bool {
    dns.log().iter().any(|q| q.name == name)
}

#[tokio::test]
async fn srv_uses_the_lowest_priority_targets_with_their_ports_and_weights() {
    let expected = [
        ep("127.0.0.2:9001", 5),
        ep("127.0.0.3:9002", 1), // SRV weight 0 counts as 1
        ep("[::1]:9002", 1),
    ];

    // Targets' addresses in the additional section: no further queries.
    let dns = DnsServer::start(srv_zone()).await;
    let mut d = Running::start(config(
        &dns,
        SRV_NAME,
        DnsRecord::Srv,
        Duration::from_secs(1),
    ));
    assert_eq!(d.next().await, expected);
    assert!(
        dns.log().iter().all(|q| q.record_type == RecordType::SRV),
        "glue was not used: {:?}",
        dns.log()
    );

    // Without glue the targets are looked up, and only the chosen group's.
    let dns = DnsServer::start(srv_zone()).await;
    dns.set_srv_glue(false);
    let mut d = Running::start(config(
        &dns,
        SRV_NAME,
        DnsRecord::Srv,
        Duration::from_secs(1),
    ));
    assert_eq!(d.next().await, expected);
    assert!(queried(&dns, "a.internal") && queried(&dns, "b.internal"));
    assert!(!queried(&dns, "c.internal"), "{:?}", dns.log());
}

#[tokio::test]
async fn srv_falls_back_to_the_next_priority_when_the_lowest_has_no_addresses() {
    let dns = DnsServer::start(vec![
        srv(SRV_NAME, 10, 5, 9001, "gone.internal", 30),
        srv(SRV_NAME, 20, 7, 9003, "c.internal", 30),
        a("c.internal", "127.0.0.4", 30),
    ])
    .await;
    dns.set_srv_glue(false);
    let mut d = Running::start(config(
        &dns,
        SRV_NAME,
        DnsRecord::Srv,
        Duration::from_secs(1),
    ));
    assert_eq!(d.next().await, [ep("127.0.0.4:9003", 7)]);
}

#[tokio::test]
async fn servfail_keeps_the_last_list_until_the_records_are_fixed() {
    let dns = DnsServer::start(vec![a(WORLD, "127.0.0.2", 1)]).await;
    let mut cfg = config(&dns, WORLD, DnsRecord::Ipv4Only, Duration::from_millis(200));
    cfg.max_ttl = Duration::from_secs(1);
    let mut d = Running::start(cfg);
    let first = d.next().await;
    assert_eq!(first, [ep("127.0.0.2:9001", 1)]);

    dns.set_mode(Mode::ServFail);
    // A failed round is at most two queries (one hickory retry), so four more
    // means at least one round has failed and the next one has begun.
    let seen = dns.queries();
    dns.wait_queries(seen + 4, DEADLINE).await;
    assert!(d.unchanged(), "SERVFAIL changed the list");
    assert_eq!(d.current(), first);

    dns.set_records(vec![a(WORLD, "127.0.0.3", 1)]);
    dns.set_mode(Mode::Answer);
    assert_eq!(d.next().await, [ep("127.0.0.3:9001", 1)]);
}

#[tokio::test]
async fn nxdomain_empty_answers_refusal_and_silence_keep_the_last_list() {
    let dns = DnsServer::start(vec![a(WORLD, "127.0.0.2", 1)]).await;
    let mut cfg = config(&dns, WORLD, DnsRecord::Ipv4Only, Duration::from_millis(100));
    cfg.max_ttl = Duration::from_millis(400);
    cfg.timeout = Duration::from_millis(200);
    let mut d = Running::start(cfg);
    let first = d.next().await;
    assert_eq!(first, [ep("127.0.0.2:9001", 1)]);

    type Breakage = fn(&DnsServer);
    let failures: [(&str, Breakage); 4] = [
        ("NXDOMAIN", |s| s.set_records(Vec::new())),
        ("empty answer", |s| {
            s.set_records(vec![aaaa(WORLD, "::1", 1)])
        }),
        ("REFUSED", |s| s.set_mode(Mode::Refused)),
        ("no answer", |s| s.set_mode(Mode::Silent)),
    ];
    for (what, break_it) in failures {
        break_it(&dns);
        let seen = dns.queries();
        dns.wait_queries(seen + 4, DEADLINE).await;
        assert!(d.unchanged(), "{what} changed the list");
        assert_eq!(d.current(), first, "{what}");
    }

    // Stopping ends the task promptly, even with a query outstanding.
    d.stop.cancel();
    let task = d.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the task ends within a second of stop")
        .unwrap();
}

#[tokio::test]
async fn aaaa_records_give_ipv6_endpoints() {
    let dns = DnsServer::start(vec![aaaa(WORLD, "::1", 30), a(WORLD, "127.0.0.2", 30)]).await;
    let mut d = Running::start(config(
        &dns,
        WORLD,
        DnsRecord::Ipv6Only,
        Duration::from_secs(1),
    ));
    assert_eq!(d.next().await, [ep("[::1]:9001", 1)]);

    let both = DnsDiscovery::new(config(
        &dns,
        WORLD,
        DnsRecord::Address,
        Duration::from_secs(1),
    ))
    .unwrap();
    let resolution = both.resolve().await.unwrap();
    assert_eq!(
        resolution.endpoints,
        [ep("127.0.0.2:9001", 1), ep("[::1]:9001", 1)]
    );
    assert_eq!(resolution.ttl, Duration::from_secs(30));
}

#[tokio::test]
async fn queries_are_spaced_by_the_ttl() {
    let dns = DnsServer::start(vec![a(WORLD, "127.0.0.2", 1)]).await;
    let mut d = Running::start(config(
        &dns,
        WORLD,
        DnsRecord::Ipv4Only,
        Duration::from_secs(1),
    ));
    assert_eq!(d.next().await, [ep("127.0.0.2:9001", 1)]);
    // A real-time window: this asserts an upper bound, it does not synchronise.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let n = dns.queries();
    assert!(
        (2..=4).contains(&n),
        "{n} queries in ~2.5 s at a 1 s TTL: {:?}",
        dns.log()
    );
}
