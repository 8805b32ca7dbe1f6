//! The relay's socket shell: the UDP and TCP listeners, the relayed
//! sockets, and the shared state they drive the protocol core with.
//!
//! How a datagram travels (see `docs/relay-design.md`):
//! - **client → peer**: the listener reads it, [`front`] parses and
//!   authenticates it without any lock, and data (ChannelData, Send) is
//!   looked up under the *read* lock of the client's shard (the 5-tuple's
//!   hash picks one of [`SHARDS`]) and sent on the allocation's relayed
//!   socket with a non-blocking `send_to`;
//! - **peer → client**: each relayed socket has a task of its own that
//!   wakes on readiness, reads into a per-thread scratch buffer (so an idle
//!   allocation holds no buffer), frames the payload under the read lock of
//!   its shard and sends it on the listener socket (UDP) or hands it to the
//!   client's TCP writer;
//! - **control** (Allocate, Refresh, CreatePermission, ChannelBind) takes
//!   the shard's write lock after authentication, so a flood of
//!   unauthenticated requests never touches shared state.
//!
//! No per-packet allocation on the UDP path; over TCP each message to the
//! client is one `Bytes` (the writer task owns the stream).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use dashmap::DashMap;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use super::auth::RestSecrets;
use super::proto::authn::Authenticator;
use super::proto::turn::{
    Action, ChallengeLimiter, DropReason, Family, FiveTuple, Front, Quota, RelaySockets, Transport,
    TurnConfig, TurnCore, front, refuse_revoked,
};
use crate::clock::Clock;

/// Shards of the allocation table: client → peer traffic of different
/// clients takes different locks, and control requests block one shard.
pub const SHARDS: usize = 16;

/// Datagrams read per wake before yielding to other tasks.
const BATCH: usize = 64;

/// Largest message handled (a UDP datagram; STUN's length field allows
/// 20 + 65535 bytes).
const MAX_MESSAGE: usize = 20 + 65_535;

/// Room for a peer's largest datagram framed as a Data indication.
const OUT_BYTES: usize = MAX_MESSAGE + 64;

/// A TCP client must hold an allocation this long after connecting, at the
/// latest (a deadline, not an idle time: trickling bytes does not extend
/// it); a connection only for STUN Binding is closed then too.
const TCP_SETUP: Duration = Duration::from_secs(30);

/// Messages queued for one TCP client: beyond it, data for a client that
/// does not read is dropped (as a full UDP buffer would), so a connection
/// holds at most this many messages (each at most [`OUT_BYTES`]).
const TCP_QUEUE: usize = 64;

/// A TCP client that takes no bytes for this long is disconnected (its
/// allocation goes with it).
const TCP_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The validated `[relay]` section.
#[derive(Clone)]
pub struct RelayConfig {
    /// Where the UDP (and TCP) listener binds.
    pub listen: SocketAddr,
    /// Serve TURN over TCP on the same address too.
    pub tcp: bool,
    /// The long-term credential realm.
    pub realm: String,
    /// Where relayed sockets bind (the address put in XOR-RELAYED-ADDRESS
    /// is `turn.relay_ip`; they differ behind a 1:1 NAT).
    pub relay_bind: IpAddr,
    /// Where IPv6 relayed sockets bind (`turn.relay_ip_v6`'s counterpart).
    pub relay_bind_v6: Option<IpAddr>,
    /// Relayed ports, inclusive.
    pub ports: (u16, u16),
    /// Shared secrets of REST credentials (current, previous).
    pub secrets: Option<RestSecrets>,
    /// Static long-term users (name → password).
    pub users: HashMap<String, String>,
    /// Lifetimes, caps and the peer policy.
    pub turn: TurnConfig,
    /// A nonce is stale (438) after this long.
    pub nonce_lifetime_seconds: u64,
    /// Unauthenticated answers per source prefix per second.
    pub challenges_per_second: u32,
    /// Their burst.
    pub challenge_burst: u32,
    /// Open TCP client connections at most.
    pub max_tcp_connections: usize,
    /// Open TCP client connections from one address at most.
    pub max_tcp_connections_per_address: usize,
    /// How long a revoked user stays refused: credentials issued before the
    /// revocation live at most this long.
    pub revocation_seconds: u64,
    /// Lifetimes, expiry and nonces run on it (tests: a manual clock).
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Static users' passwords and the secrets are never printed.
        let mut users: Vec<&str> = self.users.keys().map(String::as_str).collect();
        users.sort_unstable();
        f.debug_struct("RelayConfig")
            .field("listen", &self.listen)
            .field("tcp", &self.tcp)
            .field("realm", &self.realm)
            .field("relay_address", &self.turn.relay_ip)
            .field("relay_bind", &self.relay_bind)
            .field("ports", &self.ports)
            .field("secrets", &self.secrets)
            .field("users", &users)
            .finish_non_exhaustive()
    }
}

/// Counters of one shard (summed for the admin API). Kept per shard so the
/// forwarding paths of different clients do not share cache lines.
#[derive(Debug, Default)]
struct Stats {
    to_peer_packets: AtomicU64,
    to_peer_bytes: AtomicU64,
    to_client_packets: AtomicU64,
    to_client_bytes: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
    send_errors: AtomicU64,
    requests: AtomicU64,
    challenges: AtomicU64,
    allocations_opened: AtomicU64,
    allocations_closed: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    fn drop(&self, r: DropReason) {
        bump(&self.drops[r.index()], 1);
    }
}

struct RelayPort {
    /// Sends go through a plain non-blocking clone of the socket: tokio's
    /// `try_send_to` refuses (WouldBlock) until its reactor has seen the
    /// new socket writable, which lost an allocation's first packets.
    send: std::net::UdpSocket,
    task: AbortHandle,
}

struct ShardState {
    core: TurnCore,
    ports: HashMap<u16, RelayPort>,
    /// Writers of this shard's TCP clients, and what closes each connection.
    tcp: HashMap<FiveTuple, (mpsc::Sender<Bytes>, CancellationToken)>,
}

#[repr(align(128))]
struct Shard {
    state: RwLock<ShardState>,
    stats: Stats,
}

fn read(l: &RwLock<ShardState>) -> RwLockReadGuard<'_, ShardState> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(l: &RwLock<ShardState>) -> RwLockWriteGuard<'_, ShardState> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

struct Inner {
    shards: Box<[Shard]>,
    /// Swapped by a config reload (new secrets or users); the shards' cores
    /// hold the first one only for their own all-in-one entry point, which
    /// the shell does not use.
    auth: arc_swap::ArcSwap<Authenticator>,
    /// Kept over a credentials swap, so nonces already handed out stay valid.
    nonce_key: [u8; 32],
    limiter: ChallengeLimiter,
    quota: Arc<Quota>,
    udp: Arc<UdpSocket>,
    /// The listener, for sending (see [`RelayPort::send`]).
    udp_send: std::net::UdpSocket,
    udp_local: SocketAddr,
    tcp_local: Option<SocketAddr>,
    config: RelayConfig,
    revoked: DashMap<String, u64>,
    clock: Arc<dyn Clock>,
    hasher: std::hash::RandomState,
    tcp_open: AtomicU64,
    /// Open TCP connections per client address.
    tcp_per_address: DashMap<IpAddr, usize>,
    stop: CancellationToken,
}

impl Inner {
    fn now(&self) -> (u64, u64) {
        let ms = u64::try_from(self.clock.monotonic().as_millis()).unwrap_or(u64::MAX);
        (ms, self.clock.unix_seconds())
    }

    fn shard_of(&self, five: &FiveTuple) -> usize {
        (self.hasher.hash_one(five) as usize) % self.shards.len()
    }

    fn is_revoked(&self, user: &str, now_unix: u64) -> bool {
        self.revoked
            .get(user)
            .is_some_and(|until| *until > now_unix)
    }
}

/// Opens and closes relayed sockets for the core, under its shard's write
/// lock.
struct Opener<'a> {
    inner: &'a Arc<Inner>,
    shard: usize,
    ports: &'a mut HashMap<u16, RelayPort>,
}

impl Opener<'_> {
    fn bind(&mut self, ip: IpAddr, port: u16) -> Option<u16> {
        if self.ports.contains_key(&port) {
            return None;
        }
        let std = std::net::UdpSocket::bind((ip, port)).ok()?;
        std.set_nonblocking(true).ok()?;
        let send = std.try_clone().ok()?;
        let socket = Arc::new(UdpSocket::from_std(std).ok()?);
        let task = tokio::spawn(peer_loop(
            Arc::clone(self.inner),
            self.shard,
            port,
            Arc::clone(&socket),
        ));
        self.ports.insert(
            port,
            RelayPort {
                send,
                task: task.abort_handle(),
            },
        );
        bump(&self.inner.shards[self.shard].stats.allocations_opened, 1);
        Some(port)
    }
}

impl RelaySockets for Opener<'_> {
    fn open(&mut self, family: Family, even: bool) -> Option<u16> {
        let c = &self.inner.config;
        let ip = [Some(c.relay_bind), c.relay_bind_v6]
            .into_iter()
            .flatten()
            .find(|ip| Family::of(*ip) == family)?;
        let (lo, hi) = c.ports;
        let span = u32::from(hi - lo) + 1;
        // Random ports first (a client cannot predict its relayed address);
        // then a scan from a random start, so a nearly full range still
        // finds the free ports it has.
        let wanted = |p: u16| !even || p.is_multiple_of(2);
        for _ in 0..32 {
            let port = lo + fastrand::u32(..span) as u16;
            let port = if wanted(port) { port } else { port ^ 1 };
            if (lo..=hi).contains(&port)
                && let Some(p) = self.bind(ip, port)
            {
                return Some(p);
            }
        }
        let start = fastrand::u32(..span);
        (0..span)
            .map(|i| lo + ((start + i) % span) as u16)
            .filter(|p| wanted(*p))
            .find_map(|port| self.bind(ip, port))
    }

    fn close(&mut self, port: u16) {
        if let Some(p) = self.ports.remove(&port) {
            p.task.abort();
            bump(&self.inner.shards[self.shard].stats.allocations_closed, 1);
        }
    }
}

/// A running relay.
pub struct Relay {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("udp", &self.inner.udp_local)
            .field("tcp", &self.inner.tcp_local)
            .finish_non_exhaustive()
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<(UdpSocket, std::net::UdpSocket)> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Voice arrives in bursts from many clients: room for them while the
    // loop is busy (the kernel caps it at net.core.rmem_max).
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    let std: std::net::UdpSocket = s.into();
    let send = std.try_clone()?;
    Ok((UdpSocket::from_std(std)?, send))
}

/// The UDP listener, and TCP on the same address. With port 0 the TCP
/// listener takes the port the kernel gave UDP; when that port is taken for
/// TCP, both are bound again elsewhere.
async fn bind_listeners(
    config: &RelayConfig,
) -> io::Result<((UdpSocket, std::net::UdpSocket), Option<TcpListener>)> {
    let named = |e: io::Error, what: &str, a: SocketAddr| {
        io::Error::new(e.kind(), format!("relay {what} {a}: {e}"))
    };
    let mut attempts = 0;
    loop {
        let udp = bind_udp(config.listen).map_err(|e| named(e, "UDP", config.listen))?;
        if !config.tcp {
            return Ok((udp, None));
        }
        let addr = udp.0.local_addr()?;
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok((udp, Some(l))),
            Err(e) if config.listen.port() == 0 && attempts < 16 => {
                attempts += 1;
                let _ = e;
            }
            Err(e) => return Err(named(e, "TCP", addr)),
        }
    }
}

impl Relay {
    /// Bind the listeners and start serving until `stop`. `own` are the
    /// gateway's other listener sockets, never reachable as peers.
    ///
    /// # Errors
    /// When a listener cannot be bound.
    pub async fn start(
        config: RelayConfig,
        own: Vec<SocketAddr>,
        stop: CancellationToken,
    ) -> io::Result<Arc<Relay>> {
        let clock = Arc::clone(&config.clock);
        let ((udp, udp_send), tcp) = bind_listeners(&config).await?;
        let udp_local = udp.local_addr()?;
        let tcp_local = tcp.as_ref().map(TcpListener::local_addr).transpose()?;

        let mut own_sockets = own;
        own_sockets.push(udp_local);
        own_sockets.extend(tcp_local);
        // A wildcard listener is reachable on the relay's own address and on
        // loopback.
        let expanded: Vec<SocketAddr> = own_sockets
            .iter()
            .filter(|s| s.ip().is_unspecified())
            .flat_map(|s| {
                [
                    SocketAddr::new(config.turn.relay_ip, s.port()),
                    SocketAddr::new(config.relay_bind, s.port()),
                    SocketAddr::new(
                        config.turn.relay_ip_v6.unwrap_or(config.relay_bind),
                        s.port(),
                    ),
                    SocketAddr::from(([127, 0, 0, 1], s.port())),
                    SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), s.port()),
                ]
            })
            .collect();
        own_sockets.extend(expanded);

        let mut nonce_key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut nonce_key)
            .map_err(|_| io::Error::other("no system randomness for the nonce key"))?;
        let auth = Arc::new(Authenticator::new(
            config.realm.clone(),
            config.secrets.clone(),
            config.users.clone(),
            &nonce_key,
            config.nonce_lifetime_seconds,
        ));
        let quota = Arc::new(Quota::new(
            config.turn.max_allocations_per_user,
            config.turn.max_allocations,
        ));
        let mut host: Vec<IpAddr> = [
            Some(config.turn.relay_ip),
            config.turn.relay_ip_v6,
            Some(config.relay_bind),
            config.relay_bind_v6,
        ]
        .into_iter()
        .flatten()
        .chain(own_sockets.iter().map(SocketAddr::ip))
        .filter(|ip| !ip.is_unspecified())
        .collect();
        host.sort_unstable();
        host.dedup();
        let mut turn = config.turn.clone();
        turn.peers = turn
            .peers
            .clone()
            .with_own_sockets(own_sockets)
            .with_host(host, config.ports);
        let shards = (0..SHARDS)
            .map(|_| Shard {
                state: RwLock::new(ShardState {
                    core: TurnCore::shared(turn.clone(), Arc::clone(&auth), Arc::clone(&quota)),
                    ports: HashMap::new(),
                    tcp: HashMap::new(),
                }),
                stats: Stats::default(),
            })
            .collect();
        let inner = Arc::new(Inner {
            shards,
            auth: arc_swap::ArcSwap::new(auth),
            nonce_key,
            limiter: ChallengeLimiter::new(
                config.challenges_per_second,
                config.challenge_burst,
                4096,
            ),
            quota,
            udp: Arc::new(udp),
            udp_send,
            udp_local,
            tcp_local,
            config,
            revoked: DashMap::new(),
            clock,
            hasher: std::hash::RandomState::new(),
            tcp_open: AtomicU64::new(0),
            tcp_per_address: DashMap::new(),
            stop,
        });
        tokio::spawn(udp_loop(Arc::clone(&inner)));
        if let Some(l) = tcp {
            tokio::spawn(tcp_accept(Arc::clone(&inner), l));
        }
        tokio::spawn(housekeeping(Arc::clone(&inner)));
        Ok(Arc::new(Relay { inner }))
    }

    /// Take the realm, REST secrets, static users and nonce lifetime of
    /// `config` (a reloaded one): requests authenticated from now on use
    /// them; allocations made before keep running until they end or are
    /// refreshed (a refresh is authenticated again, with the new ones).
    pub fn update_credentials(&self, config: &RelayConfig) {
        self.inner.auth.store(Arc::new(Authenticator::new(
            config.realm.clone(),
            config.secrets.clone(),
            config.users.clone(),
            &self.inner.nonce_key,
            config.nonce_lifetime_seconds,
        )));
    }

    /// The UDP listener's address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.inner.udp_local
    }

    /// The TCP listener's address, when TCP is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.inner.tcp_local
    }

    /// Delete every allocation of `user` now and refuse the user's requests
    /// for the revocation period. How many allocations were deleted.
    pub fn revoke(&self, user: &str) -> usize {
        let inner = &self.inner;
        let (_, now_unix) = inner.now();
        inner.revoked.insert(
            user.to_owned(),
            now_unix.saturating_add(inner.config.revocation_seconds),
        );
        let mut n = 0;
        for (i, shard) in inner.shards.iter().enumerate() {
            let mut g = write(&shard.state);
            let ShardState { core, ports, tcp } = &mut *g;
            // A TCP client's connection is its allocation's: it is closed too.
            for five in core.allocations_of(user) {
                if let Some((_, close)) = tcp.get(&five) {
                    close.cancel();
                }
            }
            n += core.revoke(
                user,
                &mut Opener {
                    inner,
                    shard: i,
                    ports,
                },
            );
        }
        n
    }

    /// Lift a revocation. Whether the user was revoked.
    pub fn unrevoke(&self, user: &str) -> bool {
        self.inner.revoked.remove(user).is_some()
    }

    /// Until when (Unix seconds) `user` is refused, if revoked.
    pub fn revoked_until(&self, user: &str) -> Option<u64> {
        let (_, now_unix) = self.inner.now();
        self.inner
            .revoked
            .get(user)
            .map(|u| *u)
            .filter(|u| *u > now_unix)
    }

    /// Delete what has expired now (the housekeeping task does this every
    /// second; tests with a manual clock call it to not wait for it).
    pub fn expire_now(&self) -> usize {
        expire(&self.inner)
    }

    /// What the admin API shows: counts and counters, never per user.
    pub fn status(&self) -> RelayStatus {
        let inner = &self.inner;
        let sum = |f: fn(&Stats) -> &AtomicU64| {
            inner
                .shards
                .iter()
                .map(|s| f(&s.stats).load(Ordering::Relaxed))
                .sum::<u64>()
        };
        let mut drops = std::collections::BTreeMap::new();
        for r in DropReason::ALL {
            let n: u64 = inner
                .shards
                .iter()
                .map(|s| s.stats.drops[r.index()].load(Ordering::Relaxed))
                .sum();
            drops.insert(r.name(), n);
        }
        let (mut permissions, mut channels) = (0, 0);
        for s in inner.shards.iter() {
            for a in read(&s.state).core.allocation_info() {
                permissions += a.permissions;
                channels += a.channels;
            }
        }
        RelayStatus {
            udp: inner.udp_local.to_string(),
            tcp: inner.tcp_local.map(|a| a.to_string()),
            realm: inner.config.realm.clone(),
            relay_address: inner.config.turn.relay_ip.to_string(),
            allocations: inner.quota.total(),
            users: inner.quota.users(),
            max_allocations: inner.config.turn.max_allocations,
            permissions,
            channels,
            tcp_connections: inner.tcp_open.load(Ordering::Relaxed),
            allocations_opened: sum(|s| &s.allocations_opened),
            allocations_closed: sum(|s| &s.allocations_closed),
            requests: sum(|s| &s.requests),
            challenges: sum(|s| &s.challenges),
            to_peer: Flow {
                packets: sum(|s| &s.to_peer_packets),
                bytes: sum(|s| &s.to_peer_bytes),
            },
            to_client: Flow {
                packets: sum(|s| &s.to_client_packets),
                bytes: sum(|s| &s.to_client_bytes),
            },
            drops,
            send_errors: sum(|s| &s.send_errors),
            revoked_users: inner.revoked.len(),
        }
    }
}

/// Packets and bytes one way.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Flow {
    /// Datagrams (or TCP messages) relayed.
    pub packets: u64,
    /// Their payload bytes.
    pub bytes: u64,
}

/// The relay as `GET /admin/relay` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RelayStatus {
    /// The UDP listener.
    pub udp: String,
    /// The TCP listener.
    pub tcp: Option<String>,
    /// The realm.
    pub realm: String,
    /// The address in XOR-RELAYED-ADDRESS.
    pub relay_address: String,
    /// Allocations alive.
    pub allocations: usize,
    /// Users holding allocations.
    pub users: usize,
    /// Allocation capacity (508 beyond).
    pub max_allocations: usize,
    /// Permissions installed, in all allocations.
    pub permissions: usize,
    /// Channels bound, in all allocations.
    pub channels: usize,
    /// TCP client connections open.
    pub tcp_connections: u64,
    /// Allocations made since start.
    pub allocations_opened: u64,
    /// Allocations deleted since start (expired, refreshed to 0, revoked,
    /// connection closed).
    pub allocations_closed: u64,
    /// Authenticated requests handled.
    pub requests: u64,
    /// Unauthenticated requests answered (401 challenges, wrong or expired
    /// credentials, 438 stale nonces, 400s).
    pub challenges: u64,
    /// Client → peer.
    pub to_peer: Flow,
    /// Peer → client.
    pub to_client: Flow,
    /// Datagrams dropped, by reason.
    pub drops: std::collections::BTreeMap<&'static str, u64>,
    /// Sends the kernel refused (a full socket buffer, an unreachable peer).
    pub send_errors: u64,
    /// Users refused by a revocation now.
    pub revoked_users: usize,
}

/// Handle one client message; the length of the reply written to `out`.
fn process(inner: &Arc<Inner>, five: FiveTuple, d: &[u8], out: &mut [u8]) -> Option<usize> {
    let (now_ms, now_unix) = inner.now();
    let idx = inner.shard_of(&five);
    let shard = &inner.shards[idx];
    let authenticator = inner.auth.load();
    match front(
        &authenticator,
        Some(&inner.limiter),
        five,
        d,
        now_ms,
        now_unix,
        out,
    ) {
        Front::Done(Action::Reply(n)) => Some(n),
        Front::Refused(n) => {
            bump(&shard.stats.challenges, 1);
            Some(n)
        }
        Front::Done(Action::Drop(r)) => {
            shard.stats.drop(r);
            None
        }
        Front::Done(_) => None,
        Front::Data => {
            let g = read(&shard.state);
            match g.core.client_data(five, d, now_ms) {
                Action::ToPeer {
                    relay_port,
                    peer,
                    start,
                    end,
                } => match g.ports.get(&relay_port) {
                    Some(p) => match p.send.send_to(&d[start..end], peer) {
                        Ok(_) => {
                            bump(&shard.stats.to_peer_packets, 1);
                            bump(&shard.stats.to_peer_bytes, (end - start) as u64);
                        }
                        Err(_) => bump(&shard.stats.send_errors, 1),
                    },
                    None => shard.stats.drop(DropReason::NoAllocation),
                },
                Action::Drop(r) => shard.stats.drop(r),
                _ => {}
            }
            None
        }
        Front::Control(auth) => {
            bump(&shard.stats.requests, 1);
            let mut g = write(&shard.state);
            // Checked under the shard's lock: a revocation marks the user
            // before it sweeps the shards, so no Allocate can slip between.
            if inner.is_revoked(&auth.user, now_unix) {
                drop(g);
                return match refuse_revoked(&authenticator, five, d, now_unix, out) {
                    Action::Reply(n) => Some(n),
                    _ => None,
                };
            }
            let ShardState { core, ports, .. } = &mut *g;
            let action = core.control(
                five,
                d,
                &auth,
                now_ms,
                &mut Opener {
                    inner,
                    shard: idx,
                    ports,
                },
                out,
            );
            match action {
                Action::Reply(n) => Some(n),
                Action::Drop(r) => {
                    shard.stats.drop(r);
                    None
                }
                _ => None,
            }
        }
    }
}

async fn udp_loop(inner: Arc<Inner>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut out = vec![0u8; OUT_BYTES];
    let local = inner.udp_local;
    loop {
        tokio::select! {
            r = inner.udp.readable() => if r.is_err() { return },
            () = inner.stop.cancelled() => return,
        }
        let mut read = 0;
        while read < BATCH {
            match inner.udp.try_recv_from(&mut buf) {
                Ok((n, from)) => {
                    read += 1;
                    let five = FiveTuple {
                        client: from,
                        server: local,
                        transport: Transport::Udp,
                    };
                    if let Some(m) = process(&inner, five, &buf[..n], &mut out)
                        && inner.udp_send.send_to(&out[..m], from).is_err()
                    {
                        bump(&inner.shards[inner.shard_of(&five)].stats.send_errors, 1);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors of earlier sends surface here (ECONNREFUSED):
                // about another datagram, not this socket.
                Err(_) => read += 1,
            }
        }
        if read == BATCH {
            tokio::task::yield_now().await;
        }
    }
}

/// A datagram read and its framing for the client.
type Scratch = (Box<[u8]>, Box<[u8]>);

thread_local! {
    /// Scratch buffers of the peer → client path: one per thread, so an
    /// idle allocation's task holds none.
    static SCRATCH: RefCell<Scratch> =
        RefCell::new((vec![0u8; MAX_MESSAGE].into(), vec![0u8; OUT_BYTES].into()));
}

async fn peer_loop(inner: Arc<Inner>, idx: usize, port: u16, socket: Arc<UdpSocket>) {
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let more = SCRATCH.with_borrow_mut(|(buf, out)| {
            for _ in 0..BATCH {
                match socket.try_recv_from(buf) {
                    Ok((n, peer)) => to_client(&inner, idx, port, peer, &buf[..n], out),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                    Err(_) => {}
                }
            }
            true
        });
        if more {
            tokio::task::yield_now().await;
        }
    }
}

fn to_client(
    inner: &Inner,
    idx: usize,
    port: u16,
    peer: SocketAddr,
    payload: &[u8],
    out: &mut [u8],
) {
    let (now_ms, _) = inner.now();
    let shard = &inner.shards[idx];
    let g = read(&shard.state);
    match g.core.on_peer(port, peer, payload, now_ms, out) {
        Action::ToClient { five, n } => {
            let sent = match five.transport {
                Transport::Udp => inner.udp_send.send_to(&out[..n], five.client).is_ok(),
                Transport::Tcp => {
                    // ChannelData over TCP is padded to a multiple of four
                    // (RFC 8656 §12.5); STUN messages already are.
                    let padded = (n + 3) & !3;
                    out[n..padded].fill(0);
                    g.tcp.get(&five).is_some_and(|tx| {
                        tx.0.try_send(Bytes::copy_from_slice(&out[..padded]))
                            .is_ok()
                    })
                }
            };
            if sent {
                bump(&shard.stats.to_client_packets, 1);
                bump(&shard.stats.to_client_bytes, payload.len() as u64);
            } else {
                bump(&shard.stats.send_errors, 1);
            }
        }
        Action::Drop(r) => shard.stats.drop(r),
        _ => {}
    }
}

fn expire(inner: &Arc<Inner>) -> usize {
    let (now_ms, now_unix) = inner.now();
    let mut n = 0;
    for (i, shard) in inner.shards.iter().enumerate() {
        let mut g = write(&shard.state);
        let ShardState { core, ports, .. } = &mut *g;
        n += core.expire(
            now_ms,
            &mut Opener {
                inner,
                shard: i,
                ports,
            },
        );
    }
    inner.revoked.retain(|_, until| *until > now_unix);
    n
}

async fn housekeeping(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => { expire(&inner); }
            () = inner.stop.cancelled() => break,
        }
    }
    // Stopping: close every relayed socket.
    for (i, shard) in inner.shards.iter().enumerate() {
        let mut g = write(&shard.state);
        let ShardState { ports, tcp, .. } = &mut *g;
        tcp.clear();
        let all: Vec<u16> = ports.keys().copied().collect();
        let mut o = Opener {
            inner: &inner,
            shard: i,
            ports,
        };
        for p in all {
            o.close(p);
        }
    }
}

async fn tcp_accept(inner: Arc<Inner>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(inner.config.max_tcp_connections.max(1)));
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => p.expect("never closed"),
            () = inner.stop.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = inner.stop.cancelled() => return,
        };
        // One address may not take every slot (unauthenticated clients
        // included: they hold a slot until TCP_SETUP).
        let ip = peer.ip();
        {
            let mut n = inner.tcp_per_address.entry(ip).or_insert(0);
            if *n >= inner.config.max_tcp_connections_per_address {
                bump(
                    &inner.shards[0].stats.drops[DropReason::Throttled.index()],
                    1,
                );
                continue;
            }
            *n += 1;
        }
        let _ = stream.set_nodelay(true);
        let inner = Arc::clone(&inner);
        tokio::spawn(async move {
            inner.tcp_open.fetch_add(1, Ordering::Relaxed);
            tcp_connection(&inner, stream, peer).await;
            inner.tcp_open.fetch_sub(1, Ordering::Relaxed);
            inner.tcp_per_address.remove_if_mut(&ip, |_, n| {
                *n -= 1;
                *n == 0
            });
            drop(permit);
        });
    }
}

/// How TURN over TCP is split into messages (RFC 8656 §12.5): the length
/// of the first message in `buf` and the bytes it takes on the stream
/// (ChannelData is padded to four over TCP); `Ok(None)` while it is
/// incomplete; `Err` when the bytes cannot start a STUN message or
/// ChannelData (the connection is then closed).
///
/// # Errors
/// `Err(())` for a first byte of neither kind, or a STUN length that is not
/// a multiple of four.
#[allow(clippy::result_unit_err)]
pub fn tcp_frame(buf: &[u8]) -> Result<Option<(usize, usize)>, ()> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let (msg, taken) = match buf[0] >> 6 {
        0 if len % 4 == 0 => (20 + len, 20 + len),
        1 => (4 + len, (4 + len + 3) & !3),
        _ => return Err(()),
    };
    Ok((buf.len() >= taken).then_some((msg, taken)))
}

async fn tcp_connection(inner: &Arc<Inner>, stream: TcpStream, peer: SocketAddr) {
    let Some(local) = inner.tcp_local else { return };
    let five = FiveTuple {
        client: peer,
        server: local,
        transport: Transport::Tcp,
    };
    let idx = inner.shard_of(&five);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(TCP_QUEUE);
    // Cancelled when the writer gives up or the user is revoked: the
    // reader stops too.
    let gone = inner.stop.child_token();
    write(&inner.shards[idx].state)
        .tcp
        .insert(five, (tx.clone(), gone.clone()));
    let writer_gone = gone.clone();
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            match tokio::time::timeout(TCP_SEND_TIMEOUT, wr.write_all(&b)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        writer_gone.cancel();
    });
    let idle = Duration::from_secs(u64::from(inner.config.turn.max_lifetime));
    let setup = tokio::time::Instant::now() + TCP_SETUP;
    let mut allocated = false;
    let mut buf = BytesMut::with_capacity(4096);
    'conn: loop {
        loop {
            match tcp_frame(&buf) {
                Ok(Some((msg, taken))) => {
                    // Answers are written into the thread's scratch buffer
                    // (an idle connection holds none) and copied out.
                    let reply = SCRATCH.with_borrow_mut(|(_, out)| {
                        process(inner, five, &buf[..msg], out)
                            .map(|n| Bytes::copy_from_slice(&out[..n]))
                    });
                    if let Some(b) = reply
                        && tx.send(b).await.is_err()
                    {
                        break 'conn;
                    }
                    buf.advance(taken);
                }
                Ok(None) => break,
                Err(()) => {
                    inner.shards[idx].stats.drop(DropReason::Malformed);
                    break 'conn;
                }
            }
        }
        if buf.capacity() - buf.len() < 2048 {
            buf.reserve(MAX_MESSAGE.min(buf.len() + 4096));
        }
        if !allocated {
            allocated = read(&inner.shards[idx].state).core.has_allocation(&five);
        }
        let deadline = if allocated {
            tokio::time::Instant::now() + idle
        } else {
            setup
        };
        let r = tokio::select! {
            r = tokio::time::timeout_at(deadline, rd.read_buf(&mut buf)) => r,
            () = gone.cancelled() => break,
        };
        match r {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
    // The connection is the allocation's 5-tuple: it goes with it.
    {
        let mut g = write(&inner.shards[idx].state);
        let ShardState { core, ports, tcp } = &mut *g;
        tcp.remove(&five);
        core.close(
            five,
            &mut Opener {
                inner,
                shard: idx,
                ports,
            },
        );
    }
    drop(tx);
    // A writer stuck on a client that reads nothing ends with its timeout.
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::tcp_frame;

    #[test]
    fn tcp_framing_pads_channel_data_and_refuses_garbage() {
        // STUN: 20 + length.
        let mut stun = vec![0x00, 0x01, 0x00, 0x08];
        stun.resize(28, 0);
        assert_eq!(tcp_frame(&stun), Ok(Some((28, 28))));
        assert_eq!(tcp_frame(&stun[..27]), Ok(None));
        // A STUN length that is not a multiple of four cannot be STUN.
        assert_eq!(tcp_frame(&[0x00, 0x01, 0x00, 0x05]), Err(()));
        // ChannelData with 5 bytes of data takes 12 bytes on the stream.
        let cd = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        assert_eq!(tcp_frame(&cd), Ok(Some((9, 12))));
        assert_eq!(tcp_frame(&cd[..11]), Ok(None));
        // The first two bits 10 or 11: neither.
        assert_eq!(tcp_frame(&[0x80, 0, 0, 0]), Err(()));
        assert_eq!(tcp_frame(&[0xC0, 0, 0, 0]), Err(()));
        assert_eq!(tcp_frame(&[0x00, 0x01]), Ok(None));
    }
}
