//! TURN (RFC 8656) over UDP: allocations, permissions, channels and the
//! data path, as a state machine with time passed in (see
//! `src/relay/LIFECYCLE.md`).
//!
//! The core owns no socket. The shell hands it each datagram with the
//! 5-tuple it came on and the current time, and does what the returned
//! [`Action`] says; relayed ports are opened and closed through the
//! [`RelaySockets`] the shell passes in. One core serves one shard of
//! clients (the shell can run one per core): `&mut self`, no locks.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use stun_types::attribute::{AttributeType, ErrorCode, RawAttribute};
use stun_types::message::{
    Message, MessageClass, MessageWrite, MessageWriteExt, MessageWriteMutSlice, Method,
    TransactionId,
};

use super::authn::{Authenticated, Authenticator};
use super::stun;
use crate::relay::bitrate::{BitrateBucket, BitrateCap};
use crate::relay::peer::{Forbidden, PeerPolicy};

const ALLOCATE: Method = Method::new(0x0003);
const REFRESH: Method = Method::new(0x0004);
const SEND: Method = Method::new(0x0006);
const DATA: Method = Method::new(0x0007);
const CREATE_PERMISSION: Method = Method::new(0x0008);
const CHANNEL_BIND: Method = Method::new(0x0009);

const CHANNEL_NUMBER: u16 = 0x000C;
const LIFETIME: u16 = 0x000D;
const XOR_PEER_ADDRESS: u16 = 0x0012;
const DATA_ATTR: u16 = 0x0013;
const XOR_RELAYED_ADDRESS: u16 = 0x0016;
const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
const EVEN_PORT: u16 = 0x0018;
const REQUESTED_TRANSPORT: u16 = 0x0019;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;

/// Channel numbers accepted: RFC 8656 allows 0x4000–0x4FFF, RFC 5766
/// allowed 0x4000–0x7FFF and clients still use it (coturn's own
/// `turnutils_uclient` binds 0x5B9D and the like). The upper part cannot be
/// confused with DTLS or RTP when demultiplexing (RFC 7983: first byte 64–79
/// is TURN, 80–127 unassigned), so accepting it costs nothing.
const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFF;

/// Comprehension-required attributes (below 0x8000) a TURN request may
/// carry here. DONT-FRAGMENT (0x001A: the relay cannot promise DF) and
/// RESERVATION-TOKEN (0x0022: no reservations are made) are not among them,
/// so they get the 420 RFC 8656 asks for when a server does not support
/// them.
const KNOWN_REQUIRED: [u16; 18] = [
    0x0006, 0x0008, 0x0009, 0x000A, 0x000C, 0x000D, 0x0012, 0x0013, 0x0014, 0x0015, 0x0016, 0x0017,
    0x0018, 0x0019, 0x001C, 0x001D, 0x001E, 0x0020,
];

/// The comprehension-required attributes of `msg` this relay does not
/// know, up to the first integrity attribute (what follows it is ignored).
fn unknown_required(msg: &Message<'_>) -> Vec<u16> {
    use stun_types::attribute::Attribute;
    let mut unknown = Vec::new();
    for (_, a) in msg.iter_attributes() {
        let t = a.get_type().value();
        if t == 0x0008 || t == 0x001C {
            break;
        }
        if t < 0x8000 && !KNOWN_REQUIRED.contains(&t) && !unknown.contains(&t) {
            unknown.push(t);
        }
    }
    unknown
}

/// How long an expired channel's number and peer stay reserved (§12).
const CHANNEL_RESERVATION_MS: u64 = 300_000;

/// UDP, as REQUESTED-TRANSPORT names it.
const UDP: u8 = 17;
const MAGIC: u32 = 0x2112_A442;

/// Lifetimes and caps; the defaults are the RFC's.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// The address put in XOR-RELAYED-ADDRESS (relayed ports are on it).
    pub relay_ip: IpAddr,
    /// An IPv6 relay address beside an IPv4 `relay_ip`, for allocations
    /// that ask for REQUESTED-ADDRESS-FAMILY IPv6 (RFC 8656 §7.2).
    pub relay_ip_v6: Option<IpAddr>,
    /// Allocation lifetime when the client asks less or nothing, s (600).
    pub default_lifetime: u32,
    /// Longest allocation lifetime, s (3600).
    pub max_lifetime: u32,
    /// Permission lifetime, s (300).
    pub permission_lifetime: u32,
    /// Channel binding lifetime, s (600).
    pub channel_lifetime: u32,
    /// Allocations one user may hold (486 beyond).
    pub max_allocations_per_user: usize,
    /// Allocations in this core (508 beyond).
    pub max_allocations: usize,
    /// Permissions per allocation (508 beyond).
    pub max_permissions: usize,
    /// Channels per allocation (508 beyond).
    pub max_channels: usize,
    /// Which peers may be reached (403 otherwise).
    pub peers: PeerPolicy,
    /// Bitrate cap on what a client relays to its peers.
    pub bitrate: Option<BitrateCap>,
}

impl TurnConfig {
    /// The RFC's lifetimes, and caps for a relay on `relay_ip`.
    pub fn new(relay_ip: IpAddr) -> Self {
        TurnConfig {
            relay_ip,
            relay_ip_v6: None,
            default_lifetime: 600,
            max_lifetime: 3600,
            permission_lifetime: 300,
            channel_lifetime: 600,
            max_allocations_per_user: 4,
            max_allocations: 10_000,
            max_permissions: 64,
            max_channels: 64,
            peers: PeerPolicy::default(),
            bitrate: None,
        }
    }
}

/// The address family of a relayed address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (the default without REQUESTED-ADDRESS-FAMILY).
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `ip` as written (an IPv4-mapped address is IPv6).
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }
}

impl TurnConfig {
    /// The relay address of `family`, if the relay has one.
    pub fn relay_ip_of(&self, family: Family) -> Option<IpAddr> {
        [Some(self.relay_ip), self.relay_ip_v6]
            .into_iter()
            .flatten()
            .find(|ip| Family::of(*ip) == family)
    }
}

/// Relayed ports, opened and closed by the shell.
pub trait RelaySockets {
    /// Open a relayed socket of `family` on a free port of the configured
    /// range (an even one when `even`); its port.
    fn open(&mut self, family: Family, even: bool) -> Option<u16>;
    /// Close the relayed socket on `port`.
    fn close(&mut self, port: u16);
}

/// How a client reaches the relay (RFC 8656 §3.1: UDP, or a TCP
/// connection; the relayed side is UDP either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagrams on the UDP listener.
    Udp,
    /// A TCP connection to the listener: one allocation at most, deleted
    /// when the connection closes.
    Tcp,
}

/// The 5-tuple a client's message came on: the client address, the
/// listener address it was sent to, and the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// The client's address, as the socket saw it.
    pub client: SocketAddr,
    /// The listener address it was sent to.
    pub server: SocketAddr,
    /// UDP or TCP.
    pub transport: Transport,
}

/// What the shell does with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send `out[..n]` back to the client.
    Reply(usize),
    /// Send `datagram[range]` from the relayed port to the peer.
    ToPeer {
        /// The allocation's relayed port.
        relay_port: u16,
        /// Where to.
        peer: SocketAddr,
        /// The payload, as a range of the input datagram.
        start: usize,
        /// End of the payload.
        end: usize,
    },
    /// Send `out[..n]` to this client (data from a peer).
    ToClient {
        /// The client's 5-tuple.
        five: FiveTuple,
        /// Bytes in `out`.
        n: usize,
    },
    /// Nothing to send.
    Drop(DropReason),
}

/// Why a datagram went nowhere (counted by the shell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not one well-formed message, or nothing to answer.
    Malformed,
    /// No allocation on this 5-tuple or relayed port.
    NoAllocation,
    /// No (unexpired) permission for the peer.
    NoPermission,
    /// No (unexpired) channel with that number.
    NoChannel,
    /// Over the allocation's bitrate cap.
    Bitrate,
    /// An unauthenticated request from a source prefix over its challenge
    /// rate: no answer (no amplification, no state).
    Throttled,
}

impl DropReason {
    /// Every reason, in a fixed order (counters are indexed by it).
    pub const ALL: [DropReason; 6] = [
        DropReason::Malformed,
        DropReason::NoAllocation,
        DropReason::NoPermission,
        DropReason::NoChannel,
        DropReason::Bitrate,
        DropReason::Throttled,
    ];

    /// A stable lower-case name, for counters.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NoAllocation => "no_allocation",
            DropReason::NoPermission => "no_permission",
            DropReason::NoChannel => "no_channel",
            DropReason::Bitrate => "bitrate",
            DropReason::Throttled => "throttled",
        }
    }

    /// Its index in [`DropReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Allocation counts shared by every core (shard) of one relay: the
/// per-user quota (486) and the total capacity (508) hold across shards.
/// Taken only on the control path (Allocate, delete), never per packet.
#[derive(Debug)]
pub struct Quota {
    max_per_user: usize,
    max_total: usize,
    state: Mutex<QuotaState>,
}

#[derive(Debug, Default)]
struct QuotaState {
    per_user: HashMap<String, usize>,
    total: usize,
}

impl Quota {
    /// At most `max_per_user` allocations per user and `max_total` in all.
    pub fn new(max_per_user: usize, max_total: usize) -> Self {
        Quota {
            max_per_user,
            max_total,
            state: Mutex::default(),
        }
    }

    fn take(&self, user: &str) -> Result<(), u16> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.per_user.get(user).copied().unwrap_or(0) >= self.max_per_user {
            return Err(ErrorCode::ALLOCATION_QUOTA_REACHED);
        }
        if s.total >= self.max_total {
            return Err(ErrorCode::INSUFFICIENT_CAPACITY);
        }
        s.total += 1;
        *s.per_user.entry(user.to_owned()).or_insert(0) += 1;
        Ok(())
    }

    fn give_back(&self, user: &str) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                s.per_user.remove(user);
            }
        }
    }

    /// Allocations held now, in all shards.
    pub fn total(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// Users holding at least one allocation now.
    pub fn users(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .per_user
            .len()
    }
}

/// Limits how often sources are answered without having authenticated
/// (401/438 challenges), at two levels: each source address (IPv4, or an
/// IPv6 /64) at the configured rate, and each prefix (/24, /56) at
/// [`PREFIX_FACTOR`] times it, so one noisy address cannot starve its
/// neighbours while a flood from a whole prefix stays bounded. The cells
/// are a fixed table indexed by a keyed hash, so spoofed floods create no
/// state; keys that share a cell share its rate.
pub struct ChallengeLimiter {
    cells: Box<[std::sync::atomic::AtomicU64]>,
    /// Nanoseconds between challenges of one address (the rate).
    interval_ns: u64,
    /// Burst, in nanoseconds of credit.
    burst_ns: u64,
    hasher: std::hash::RandomState,
}

/// A prefix's budget, in addresses' worth.
pub const PREFIX_FACTOR: u64 = 8;

impl std::fmt::Debug for ChallengeLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChallengeLimiter")
            .field("cells", &self.cells.len())
            .field("interval_ns", &self.interval_ns)
            .finish_non_exhaustive()
    }
}

impl ChallengeLimiter {
    /// `per_second` challenges per source address with bursts of `burst`
    /// (and [`PREFIX_FACTOR`] times both per prefix), in a table of `cells`
    /// entries.
    pub fn new(per_second: u32, burst: u32, cells: usize) -> Self {
        let interval_ns = 1_000_000_000 / u64::from(per_second.max(1));
        ChallengeLimiter {
            cells: (0..cells.max(1))
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
            interval_ns,
            burst_ns: interval_ns * u64::from(burst.max(1)),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// The address key (IPv4 /32, IPv6 /64) and the prefix key (/24, /56),
    /// tagged apart.
    fn keys(ip: IpAddr) -> (u128, u128) {
        match crate::relay::peer::embedded_v4(ip)
            .map(IpAddr::V4)
            .unwrap_or(ip)
        {
            IpAddr::V4(v4) => {
                let a = u128::from(u32::from(v4));
                (a << 8, ((a & 0xFFFF_FF00) << 8) | 1)
            }
            IpAddr::V6(v6) => {
                let a = u128::from(v6);
                (
                    (a & !((1u128 << 64) - 1)) | 2,
                    (a & !((1u128 << 72) - 1)) | 3,
                )
            }
        }
    }

    fn take(&self, key: u128, interval_ns: u64, burst_ns: u64, now_ms: u64) -> bool {
        use std::hash::BuildHasher;
        use std::sync::atomic::Ordering;
        let cell = &self.cells[(self.hasher.hash_one(key) as usize) % self.cells.len()];
        // GCRA on the cell's theoretical arrival time (TAT); +1 so that a
        // fresh cell (0) is always in the past.
        let now = now_ms.saturating_mul(1_000_000) + 1;
        let tolerance = burst_ns - interval_ns;
        let mut tat = cell.load(Ordering::Relaxed);
        loop {
            let base = tat.max(now);
            if base - now > tolerance {
                return false;
            }
            match cell.compare_exchange_weak(
                tat,
                base + interval_ns,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(t) => tat = t,
            }
        }
    }

    /// May `ip` get another challenge at `now_ms` (monotonic)? The
    /// address's own budget first: a refused address costs its prefix
    /// nothing.
    pub fn admit(&self, ip: IpAddr, now_ms: u64) -> bool {
        let (address, prefix) = Self::keys(ip);
        self.take(address, self.interval_ns, self.burst_ns, now_ms)
            // PREFIX_FACTOR times the rate and the burst: the same credit
            // in time, spent PREFIX_FACTOR times faster.
            && self.take(
                prefix,
                (self.interval_ns / PREFIX_FACTOR).max(1),
                self.burst_ns,
                now_ms,
            )
    }
}

/// Refuse an authenticated request because its user was revoked: the
/// answer a wrong credential gets (401 with a fresh nonce), so the client
/// learns nothing more.
pub fn refuse_revoked(
    auth: &Authenticator,
    five: FiveTuple,
    datagram: &[u8],
    now_unix: u64,
    out: &mut [u8],
) -> Action {
    stun::parse(datagram)
        .and_then(|msg| {
            auth.refuse(
                &msg,
                five.client,
                now_unix,
                super::authn::Refusal::WrongCredentials,
                out,
            )
        })
        .map_or(Action::Drop(DropReason::Malformed), Action::Reply)
}

/// What the lock-free front of the relay made of a client's message.
#[derive(Debug)]
pub enum Front {
    /// Done: do this (a Binding answer, a drop).
    Done(Action),
    /// An unauthenticated request's answer (401, 438 or 400), `n` bytes in
    /// `out`, to send.
    Refused(usize),
    /// ChannelData or a Send indication: for [`TurnCore::client_data`].
    Data,
    /// An authenticated request: for [`TurnCore::control`].
    Control(Authenticated),
}

/// The part of a client message's handling that needs no allocation state:
/// parsing, STUN Binding, and authentication with its refusals, rate-limited
/// per source prefix by `limiter`. The shell runs it before taking any
/// lock, so floods of unauthenticated requests never touch shared state.
pub fn front(
    auth: &Authenticator,
    limiter: Option<&ChallengeLimiter>,
    five: FiveTuple,
    datagram: &[u8],
    now_ms: u64,
    now_unix: u64,
    out: &mut [u8],
) -> Front {
    if datagram.first().is_some_and(|b| b & 0xC0 == 0x40) {
        return Front::Data;
    }
    let Some(msg) = stun::parse(datagram) else {
        return Front::Done(Action::Drop(DropReason::Malformed));
    };
    match stun::answer_parsed(&msg, five.client, out) {
        stun::Answer::Reply(n) => return Front::Done(Action::Reply(n)),
        stun::Answer::Drop => return Front::Done(Action::Drop(DropReason::Malformed)),
        stun::Answer::NotBinding => {}
    }
    if msg.has_class(MessageClass::Indication) {
        return if msg.has_method(SEND) {
            Front::Data
        } else {
            Front::Done(Action::Drop(DropReason::Malformed))
        };
    }
    if !msg.has_class(MessageClass::Request) {
        return Front::Done(Action::Drop(DropReason::Malformed));
    }
    match auth.authenticate(datagram, &msg, five.client, now_unix) {
        Ok(a) => Front::Control(a),
        Err(refusal) => {
            if limiter.is_some_and(|l| !l.admit(five.client.ip(), now_ms)) {
                return Front::Done(Action::Drop(DropReason::Throttled));
            }
            tracing::debug!(client = %five.client, ?refusal, "TURN request not authenticated");
            match auth.refuse(&msg, five.client, now_unix, refusal, out) {
                Some(n) => Front::Refused(n),
                None => Front::Done(Action::Drop(DropReason::Malformed)),
            }
        }
    }
}

struct Channel {
    peer: SocketAddr,
    expires_ms: u64,
}

struct Allocation {
    user: String,
    relay_ip: IpAddr,
    relay_port: u16,
    expires_ms: u64,
    /// The Allocate that made it, answered again if retransmitted.
    transaction: TransactionId,
    permissions: HashMap<IpAddr, u64>,
    channels: HashMap<u16, Channel>,
    channel_of: HashMap<SocketAddr, u16>,
    bucket: BitrateBucket,
}

/// The TURN core of one shard.
pub struct TurnCore {
    config: TurnConfig,
    auth: Arc<Authenticator>,
    allocations: HashMap<FiveTuple, Allocation>,
    by_port: HashMap<u16, FiveTuple>,
    quota: Arc<Quota>,
}

/// One allocation, as the admin API shows it (no user: allocations are
/// counted, never listed by user, outside the revocation call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationInfo {
    /// The client's 5-tuple.
    pub five: FiveTuple,
    /// The relayed port.
    pub relay_port: u16,
    /// Milliseconds (monotonic) when it expires.
    pub expires_ms: u64,
    /// Permissions installed (expired ones included until swept).
    pub permissions: usize,
    /// Channels bound.
    pub channels: usize,
}

impl std::fmt::Debug for TurnCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnCore")
            .field("allocations", &self.allocations.len())
            .finish_non_exhaustive()
    }
}

/// An XOR-…-ADDRESS value (RFC 8489 §14.2).
fn xor_address(addr: SocketAddr, tid: TransactionId) -> ([u8; 20], usize) {
    let mut v = [0u8; 20];
    v[2..4].copy_from_slice(&(addr.port() ^ (MAGIC >> 16) as u16).to_be_bytes());
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC.to_be_bytes());
    mask[4..].copy_from_slice(&u128::from(tid).to_be_bytes()[4..]);
    match addr.ip() {
        IpAddr::V4(ip) => {
            v[1] = 1;
            for (i, b) in ip.octets().iter().enumerate() {
                v[4 + i] = b ^ mask[i];
            }
            (v, 8)
        }
        IpAddr::V6(ip) => {
            v[1] = 2;
            for (i, b) in ip.octets().iter().enumerate() {
                v[4 + i] = b ^ mask[i];
            }
            (v, 20)
        }
    }
}

fn parse_xor_address(value: &[u8], tid: TransactionId) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ (MAGIC >> 16) as u16;
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC.to_be_bytes());
    mask[4..].copy_from_slice(&u128::from(tid).to_be_bytes()[4..]);
    match (value.get(1)?, value.len()) {
        (1, 8) => {
            let mut o = [0u8; 4];
            for i in 0..4 {
                o[i] = value[4 + i] ^ mask[i];
            }
            Some(SocketAddr::from((o, port)))
        }
        (2, 20) => {
            let mut o = [0u8; 16];
            for i in 0..16 {
                o[i] = value[4 + i] ^ mask[i];
            }
            Some(SocketAddr::from((o, port)))
        }
        _ => None,
    }
}

/// The values of every attribute of type `t`, as slices of the datagram.
fn values<'a>(msg: &Message<'_>, datagram: &'a [u8], t: u16) -> impl Iterator<Item = &'a [u8]> {
    use stun_types::attribute::Attribute;
    let found: Vec<(usize, usize)> = msg
        .iter_attributes()
        .filter(|(_, a)| a.get_type().value() == t)
        .map(|(o, a)| (o, usize::from(a.length())))
        .collect();
    found
        .into_iter()
        .filter_map(move |(o, len)| datagram.get(o + 4..o + 4 + len))
}

/// The first attribute of type `t` (no allocation: the data path uses it).
fn first<'a>(msg: &Message<'_>, datagram: &'a [u8], t: u16) -> Option<&'a [u8]> {
    use stun_types::attribute::Attribute;
    let (o, a) = msg
        .iter_attributes()
        .find(|(_, a)| a.get_type().value() == t)?;
    datagram.get(o + 4..o + 4 + usize::from(a.length()))
}

fn secs_ms(s: u32) -> u64 {
    u64::from(s) * 1000
}

impl TurnCore {
    /// A core with `config`, checking credentials with `auth`, with a
    /// quota of its own (`config.max_allocations_per_user`,
    /// `config.max_allocations`).
    pub fn new(config: TurnConfig, auth: Authenticator) -> Self {
        let quota = Arc::new(Quota::new(
            config.max_allocations_per_user,
            config.max_allocations,
        ));
        Self::shared(config, Arc::new(auth), quota)
    }

    /// One shard of a relay: the credentials and the quota are shared with
    /// the other shards (the quota's limits replace the config's two).
    pub fn shared(config: TurnConfig, auth: Arc<Authenticator>, quota: Arc<Quota>) -> Self {
        TurnCore {
            config,
            auth,
            allocations: HashMap::new(),
            by_port: HashMap::new(),
            quota,
        }
    }

    /// Allocations alive in this core.
    pub fn allocations(&self) -> usize {
        self.allocations.len()
    }

    /// Its allocations, for the admin API.
    pub fn allocation_info(&self) -> Vec<AllocationInfo> {
        self.allocations
            .iter()
            .map(|(five, a)| AllocationInfo {
                five: *five,
                relay_port: a.relay_port,
                expires_ms: a.expires_ms,
                permissions: a.permissions.len(),
                channels: a.channels.len(),
            })
            .collect()
    }

    /// Whether the 5-tuple holds an allocation.
    pub fn has_allocation(&self, five: &FiveTuple) -> bool {
        self.allocations.contains_key(five)
    }

    /// The 5-tuples of `user`'s allocations.
    pub fn allocations_of(&self, user: &str) -> Vec<FiveTuple> {
        self.allocations
            .iter()
            .filter(|(_, a)| a.user == user)
            .map(|(f, _)| *f)
            .collect()
    }

    /// The allocation on this relayed port, if any.
    pub fn owner_of(&self, relay_port: u16) -> Option<FiveTuple> {
        self.by_port.get(&relay_port).copied()
    }

    /// A datagram from a client. `now_ms` is monotonic, `now_unix` wall
    /// time (credential expiry, nonces); replies are written into `out`
    /// (at least 1500 bytes).
    pub fn on_client(
        &mut self,
        five: FiveTuple,
        datagram: &[u8],
        now_ms: u64,
        now_unix: u64,
        sockets: &mut dyn RelaySockets,
        out: &mut [u8],
    ) -> Action {
        match front(&self.auth, None, five, datagram, now_ms, now_unix, out) {
            Front::Done(a) => a,
            Front::Refused(n) => Action::Reply(n),
            Front::Data => self.client_data(five, datagram, now_ms),
            Front::Control(auth) => self.control(five, datagram, &auth, now_ms, sockets, out),
        }
    }

    /// ChannelData or a Send indication from a client (what [`front`]
    /// called [`Front::Data`]): where to relay its payload. Reads only, so
    /// the shell runs it under a shared lock; allocates nothing.
    pub fn client_data(&self, five: FiveTuple, datagram: &[u8], now_ms: u64) -> Action {
        if datagram.first().is_some_and(|b| b & 0xC0 == 0x40) {
            return self.channel_data(five, datagram, now_ms);
        }
        match stun::parse(datagram) {
            Some(msg) if msg.has_class(MessageClass::Indication) && msg.has_method(SEND) => {
                self.send_indication(five, &msg, datagram, now_ms)
            }
            _ => Action::Drop(DropReason::Malformed),
        }
    }

    /// An authenticated request (what [`front`] called
    /// [`Front::Control`]): Allocate, Refresh, CreatePermission or
    /// ChannelBind, answered into `out`.
    pub fn control(
        &mut self,
        five: FiveTuple,
        datagram: &[u8],
        auth: &Authenticated,
        now_ms: u64,
        sockets: &mut dyn RelaySockets,
        out: &mut [u8],
    ) -> Action {
        let Some(msg) = stun::parse(datagram) else {
            return Action::Drop(DropReason::Malformed);
        };
        let unknown = unknown_required(&msg);
        if !unknown.is_empty() {
            return unknown_attributes(&msg, auth, &unknown, out)
                .map_or(Action::Drop(DropReason::Malformed), Action::Reply);
        }
        let result = if msg.has_method(ALLOCATE) {
            self.allocate(five, &msg, datagram, auth, now_ms, sockets)
        } else if msg.has_method(REFRESH) {
            self.refresh(five, &msg, datagram, auth, now_ms, sockets)
        } else if msg.has_method(CREATE_PERMISSION) {
            self.create_permission(five, &msg, datagram, auth, now_ms)
        } else if msg.has_method(CHANNEL_BIND) {
            self.channel_bind(five, &msg, datagram, auth, now_ms)
        } else {
            Err(ErrorCode::BAD_REQUEST)
        };
        let n = match result {
            Ok(attrs) => self.success(&msg, auth, &attrs, out),
            Err(code) => {
                tracing::debug!(
                    client = %five.client,
                    user = %auth.user,
                    method = method_name(msg.method()),
                    code,
                    reason = ErrorCode::default_reason_for_code(code),
                    "TURN request refused"
                );
                error(&msg, auth, code, out)
            }
        };
        n.map_or(Action::Drop(DropReason::Malformed), Action::Reply)
    }

    fn owned(&self, five: FiveTuple, auth: &Authenticated) -> Result<&Allocation, u16> {
        let a = self
            .allocations
            .get(&five)
            .ok_or(ErrorCode::ALLOCATION_MISMATCH)?;
        if a.user != auth.user {
            return Err(ErrorCode::WRONG_CREDENTIALS);
        }
        Ok(a)
    }

    fn allocate(
        &mut self,
        five: FiveTuple,
        msg: &Message<'_>,
        datagram: &[u8],
        auth: &Authenticated,
        now_ms: u64,
        sockets: &mut dyn RelaySockets,
    ) -> Result<Vec<(u16, Vec<u8>)>, u16> {
        if let Some(a) = self.allocations.get(&five) {
            if a.user != auth.user {
                return Err(ErrorCode::WRONG_CREDENTIALS);
            }
            // A retransmitted Allocate gets its success again.
            if a.transaction == msg.transaction_id() {
                let left = (a.expires_ms.saturating_sub(now_ms) / 1000) as u32;
                let relayed = SocketAddr::new(a.relay_ip, a.relay_port);
                return Ok(Self::allocate_attrs(five, relayed, left, msg));
            }
            return Err(ErrorCode::ALLOCATION_MISMATCH);
        }
        match first(msg, datagram, REQUESTED_TRANSPORT) {
            None => return Err(ErrorCode::BAD_REQUEST),
            Some(v) if v.first() != Some(&UDP) => {
                return Err(ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL);
            }
            Some(_) => {}
        }
        let family = match first(msg, datagram, REQUESTED_ADDRESS_FAMILY).map(|v| v.first()) {
            None => Family::V4,
            Some(Some(0x01)) => Family::V4,
            Some(Some(0x02)) => Family::V6,
            Some(_) => return Err(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED),
        };
        let relay_ip = self
            .config
            .relay_ip_of(family)
            .ok_or(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED)?;
        // EVEN-PORT (RTP on an even port): R = 0 is an even port; R = 1 also
        // asks to reserve the next one, which this relay does not do (508,
        // as §7.2 says for a request the server cannot satisfy).
        let even = match first(msg, datagram, EVEN_PORT).map(|v| v.first().copied()) {
            None => false,
            Some(Some(b)) if b & 0x80 == 0 => true,
            Some(Some(_)) => return Err(ErrorCode::INSUFFICIENT_CAPACITY),
            Some(None) => return Err(ErrorCode::BAD_REQUEST),
        };
        self.quota.take(&auth.user)?;
        let Some(port) = sockets.open(family, even) else {
            self.quota.give_back(&auth.user);
            return Err(ErrorCode::INSUFFICIENT_CAPACITY);
        };
        let lifetime = self.lifetime(msg, datagram);
        self.allocations.insert(
            five,
            Allocation {
                user: auth.user.clone(),
                relay_ip,
                relay_port: port,
                expires_ms: now_ms + secs_ms(lifetime),
                transaction: msg.transaction_id(),
                permissions: HashMap::new(),
                channels: HashMap::new(),
                channel_of: HashMap::new(),
                bucket: BitrateBucket::default(),
            },
        );
        self.by_port.insert(port, five);
        Ok(Self::allocate_attrs(
            five,
            SocketAddr::new(relay_ip, port),
            lifetime,
            msg,
        ))
    }

    fn allocate_attrs(
        five: FiveTuple,
        relayed: SocketAddr,
        lifetime: u32,
        msg: &Message<'_>,
    ) -> Vec<(u16, Vec<u8>)> {
        let tid = msg.transaction_id();
        let (relayed, len) = xor_address(relayed, tid);
        let (mapped, mlen) = xor_address(stun::mapped(five.client), tid);
        vec![
            (XOR_RELAYED_ADDRESS, relayed[..len].to_vec()),
            (LIFETIME, lifetime.to_be_bytes().to_vec()),
            (XOR_MAPPED_ADDRESS, mapped[..mlen].to_vec()),
        ]
    }

    /// The lifetime asked for, within [default, max] (RFC 8656 §7.2).
    fn lifetime(&self, msg: &Message<'_>, datagram: &[u8]) -> u32 {
        let asked = first(msg, datagram, LIFETIME)
            .and_then(|v| v.try_into().ok())
            .map(u32::from_be_bytes);
        asked
            .unwrap_or(self.config.default_lifetime)
            .clamp(self.config.default_lifetime, self.config.max_lifetime)
    }

    fn refresh(
        &mut self,
        five: FiveTuple,
        msg: &Message<'_>,
        datagram: &[u8],
        auth: &Authenticated,
        now_ms: u64,
        sockets: &mut dyn RelaySockets,
    ) -> Result<Vec<(u16, Vec<u8>)>, u16> {
        self.owned(five, auth)?;
        let asked = first(msg, datagram, LIFETIME)
            .and_then(|v| v.try_into().ok())
            .map(u32::from_be_bytes);
        if asked == Some(0) {
            self.delete(five, sockets);
            return Ok(vec![(LIFETIME, 0u32.to_be_bytes().to_vec())]);
        }
        let lifetime = asked
            .unwrap_or(self.config.default_lifetime)
            .min(self.config.max_lifetime);
        if let Some(a) = self.allocations.get_mut(&five) {
            a.expires_ms = now_ms + secs_ms(lifetime);
        }
        Ok(vec![(LIFETIME, lifetime.to_be_bytes().to_vec())])
    }

    /// The peer policy first (403), then the allocation's family (443): a
    /// forbidden address is refused as such in whichever family it is written.
    fn check_peer(&self, peer: SocketAddr, relay_ip: IpAddr) -> Result<(), u16> {
        self.config.peers.check_socket(peer).map_err(|why: Forbidden| {
            tracing::debug!(%peer, reason = %why, "peer refused by the peer policy (see [relay] allowed_peers)");
            ErrorCode::FORBIDDEN
        })?;
        if Family::of(peer.ip()) != Family::of(relay_ip) {
            return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
        }
        Ok(())
    }

    fn create_permission(
        &mut self,
        five: FiveTuple,
        msg: &Message<'_>,
        datagram: &[u8],
        auth: &Authenticated,
        now_ms: u64,
    ) -> Result<Vec<(u16, Vec<u8>)>, u16> {
        let relay_ip = self.owned(five, auth)?.relay_ip;
        let tid = msg.transaction_id();
        let peers: Vec<SocketAddr> = values(msg, datagram, XOR_PEER_ADDRESS)
            .map(|v| parse_xor_address(v, tid).ok_or(ErrorCode::BAD_REQUEST))
            .collect::<Result<_, _>>()?;
        if peers.is_empty() {
            return Err(ErrorCode::BAD_REQUEST);
        }
        // All or nothing: one forbidden peer refuses the request.
        peers
            .iter()
            .try_for_each(|p| self.check_peer(*p, relay_ip))?;
        let lifetime = secs_ms(self.config.permission_lifetime);
        let max = self.config.max_permissions;
        let a = self.allocations.get_mut(&five).expect("owned above");
        a.permissions.retain(|_, exp| *exp > now_ms);
        let new = peers
            .iter()
            .filter(|p| !a.permissions.contains_key(&p.ip()))
            .count();
        if a.permissions.len() + new > max {
            return Err(ErrorCode::INSUFFICIENT_CAPACITY);
        }
        for p in peers {
            a.permissions.insert(p.ip(), now_ms + lifetime);
        }
        Ok(Vec::new())
    }

    fn channel_bind(
        &mut self,
        five: FiveTuple,
        msg: &Message<'_>,
        datagram: &[u8],
        auth: &Authenticated,
        now_ms: u64,
    ) -> Result<Vec<(u16, Vec<u8>)>, u16> {
        let relay_ip = self.owned(five, auth)?.relay_ip;
        let number = first(msg, datagram, CHANNEL_NUMBER)
            .filter(|v| v.len() == 4)
            .map(|v| u16::from_be_bytes([v[0], v[1]]))
            .filter(|n| CHANNELS.contains(n))
            .ok_or(ErrorCode::BAD_REQUEST)?;
        let peer = first(msg, datagram, XOR_PEER_ADDRESS)
            .and_then(|v| parse_xor_address(v, msg.transaction_id()))
            .ok_or(ErrorCode::BAD_REQUEST)?;
        self.check_peer(peer, relay_ip)?;
        let (chan_life, perm_life) = (
            secs_ms(self.config.channel_lifetime),
            secs_ms(self.config.permission_lifetime),
        );
        let (max_channels, max_permissions) =
            (self.config.max_channels, self.config.max_permissions);
        let a = self.allocations.get_mut(&five).expect("owned above");
        // The number and the peer must go together (or both be new).
        match (a.channels.get(&number), a.channel_of.get(&peer)) {
            (Some(c), _) if c.peer != peer => return Err(ErrorCode::BAD_REQUEST),
            (_, Some(n)) if *n != number => return Err(ErrorCode::BAD_REQUEST),
            (None, None) if a.channels.len() >= max_channels => {
                return Err(ErrorCode::INSUFFICIENT_CAPACITY);
            }
            _ => {}
        }
        if !a.permissions.contains_key(&peer.ip()) && a.permissions.len() >= max_permissions {
            return Err(ErrorCode::INSUFFICIENT_CAPACITY);
        }
        a.channels.insert(
            number,
            Channel {
                peer,
                expires_ms: now_ms + chan_life,
            },
        );
        a.channel_of.insert(peer, number);
        a.permissions.insert(peer.ip(), now_ms + perm_life);
        Ok(Vec::new())
    }

    fn send_indication(
        &self,
        five: FiveTuple,
        msg: &Message<'_>,
        datagram: &[u8],
        now_ms: u64,
    ) -> Action {
        let Some(a) = self.allocations.get(&five) else {
            return Action::Drop(DropReason::NoAllocation);
        };
        let Some(peer) = first(msg, datagram, XOR_PEER_ADDRESS)
            .and_then(|v| parse_xor_address(v, msg.transaction_id()))
        else {
            return Action::Drop(DropReason::Malformed);
        };
        // Permissions are per address, so a permitted address's other
        // ports are only checked here: never the gateway's own sockets.
        if a.permissions
            .get(&peer.ip())
            .is_none_or(|exp| *exp <= now_ms)
            || self.config.peers.is_own(peer)
        {
            return Action::Drop(DropReason::NoPermission);
        }
        let Some(payload) = first(msg, datagram, DATA_ATTR) else {
            return Action::Drop(DropReason::Malformed);
        };
        let start = payload.as_ptr() as usize - datagram.as_ptr() as usize;
        self.forward(a, peer, start, start + payload.len(), now_ms)
    }

    fn channel_data(&self, five: FiveTuple, datagram: &[u8], now_ms: u64) -> Action {
        if datagram.len() < 4 {
            return Action::Drop(DropReason::Malformed);
        }
        let number = u16::from_be_bytes([datagram[0], datagram[1]]);
        let len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
        // Over UDP the datagram may carry padding, never less than the length.
        if !CHANNELS.contains(&number) || 4 + len > datagram.len() {
            return Action::Drop(DropReason::Malformed);
        }
        let Some(a) = self.allocations.get(&five) else {
            return Action::Drop(DropReason::NoAllocation);
        };
        let Some(c) = a.channels.get(&number).filter(|c| c.expires_ms > now_ms) else {
            return Action::Drop(DropReason::NoChannel);
        };
        if a.permissions
            .get(&c.peer.ip())
            .is_none_or(|exp| *exp <= now_ms)
        {
            return Action::Drop(DropReason::NoPermission);
        }
        self.forward(a, c.peer, 4, 4 + len, now_ms)
    }

    fn forward(
        &self,
        a: &Allocation,
        peer: SocketAddr,
        start: usize,
        end: usize,
        now_ms: u64,
    ) -> Action {
        if let Some(cap) = &self.config.bitrate
            && !a
                .bucket
                .admit(cap, end - start, now_ms.saturating_mul(1_000_000))
        {
            return Action::Drop(DropReason::Bitrate);
        }
        Action::ToPeer {
            relay_port: a.relay_port,
            peer,
            start,
            end,
        }
    }

    /// A datagram from `peer` to the relayed port `relay_port`: as
    /// ChannelData if a channel is bound to the peer, else as a Data
    /// indication, into `out`.
    pub fn on_peer(
        &self,
        relay_port: u16,
        peer: SocketAddr,
        payload: &[u8],
        now_ms: u64,
        out: &mut [u8],
    ) -> Action {
        let Some(five) = self.by_port.get(&relay_port).copied() else {
            return Action::Drop(DropReason::NoAllocation);
        };
        let Some(a) = self.allocations.get(&five) else {
            return Action::Drop(DropReason::NoAllocation);
        };
        if a.permissions
            .get(&peer.ip())
            .is_none_or(|exp| *exp <= now_ms)
        {
            return Action::Drop(DropReason::NoPermission);
        }
        let channel = a
            .channel_of
            .get(&peer)
            .filter(|n| a.channels.get(n).is_some_and(|c| c.expires_ms > now_ms));
        if let Some(&number) = channel {
            let n = 4 + payload.len();
            if n > out.len() || payload.len() > usize::from(u16::MAX) {
                return Action::Drop(DropReason::Malformed);
            }
            out[..2].copy_from_slice(&number.to_be_bytes());
            out[2..4].copy_from_slice(&(payload.len() as u16).to_be_bytes());
            out[4..n].copy_from_slice(payload);
            return Action::ToClient { five, n };
        }
        let mut w = Message::builder_indication(DATA, MessageWriteMutSlice::new(out));
        let tid = w.transaction_id();
        let (addr, len) = xor_address(peer, tid);
        let ok = w
            .add_attribute(&RawAttribute::new(
                AttributeType::new(XOR_PEER_ADDRESS),
                &addr[..len],
            ))
            .and_then(|()| {
                w.add_attribute(&RawAttribute::new(AttributeType::new(DATA_ATTR), payload))
            });
        if ok.is_err() {
            return Action::Drop(DropReason::Malformed);
        }
        Action::ToClient {
            five,
            n: w.finish(),
        }
    }

    fn delete(&mut self, five: FiveTuple, sockets: &mut dyn RelaySockets) {
        if let Some(a) = self.allocations.remove(&five) {
            self.by_port.remove(&a.relay_port);
            sockets.close(a.relay_port);
            self.quota.give_back(&a.user);
        }
    }

    /// The client's connection is gone (TCP): delete its allocation
    /// (RFC 8656 §3.1). Whether there was one.
    pub fn close(&mut self, five: FiveTuple, sockets: &mut dyn RelaySockets) -> bool {
        let had = self.allocations.contains_key(&five);
        self.delete(five, sockets);
        had
    }

    /// Drop what has expired at `now_ms`: allocations (their ports closed),
    /// permissions and channels. Returns the allocations deleted.
    pub fn expire(&mut self, now_ms: u64, sockets: &mut dyn RelaySockets) -> usize {
        let dead: Vec<FiveTuple> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires_ms <= now_ms)
            .map(|(f, _)| *f)
            .collect();
        for f in &dead {
            self.delete(*f, sockets);
        }
        for a in self.allocations.values_mut() {
            a.permissions.retain(|_, exp| *exp > now_ms);
            // An expired channel stops carrying data at once but keeps its
            // number and peer reserved for 5 more minutes (RFC 8656 §12), so
            // late packets are never delivered on a rebound number.
            let gone: Vec<u16> = a
                .channels
                .iter()
                .filter(|(_, c)| c.expires_ms + CHANNEL_RESERVATION_MS <= now_ms)
                .map(|(n, _)| *n)
                .collect();
            for n in gone {
                if let Some(c) = a.channels.remove(&n) {
                    a.channel_of.remove(&c.peer);
                }
            }
        }
        dead.len()
    }

    /// Delete every allocation of `user` (revocation).
    pub fn revoke(&mut self, user: &str, sockets: &mut dyn RelaySockets) -> usize {
        let theirs: Vec<FiveTuple> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.user == user)
            .map(|(f, _)| *f)
            .collect();
        for f in &theirs {
            self.delete(*f, sockets);
        }
        theirs.len()
    }

    fn success(
        &self,
        msg: &Message<'_>,
        auth: &Authenticated,
        attrs: &[(u16, Vec<u8>)],
        out: &mut [u8],
    ) -> Option<usize> {
        let mut w = Message::builder_success(msg, MessageWriteMutSlice::new(out));
        for (t, v) in attrs {
            w.add_attribute(&RawAttribute::new(AttributeType::new(*t), v))
                .ok()?;
        }
        let n = w.finish();
        Authenticator::sign(out, n, auth)
    }
}

/// A signed error answer without a reason phrase.
fn method_name(m: Method) -> &'static str {
    match m {
        ALLOCATE => "Allocate",
        REFRESH => "Refresh",
        CREATE_PERMISSION => "CreatePermission",
        CHANNEL_BIND => "ChannelBind",
        _ => "unknown method",
    }
}

/// A signed 420 naming the attributes not understood.
fn unknown_attributes(
    msg: &Message<'_>,
    auth: &Authenticated,
    unknown: &[u16],
    out: &mut [u8],
) -> Option<usize> {
    let e = ErrorCode::builder(ErrorCode::UNKNOWN_ATTRIBUTE)
        .reason(ErrorCode::default_reason_for_code(
            ErrorCode::UNKNOWN_ATTRIBUTE,
        ))
        .build()
        .ok()?;
    let types: Vec<AttributeType> = unknown.iter().map(|t| AttributeType::new(*t)).collect();
    let mut w = Message::builder_error(msg, MessageWriteMutSlice::new(out));
    w.add_attribute(&e).ok()?;
    w.add_attribute(&stun_types::attribute::UnknownAttributes::new(&types))
        .ok()?;
    let n = w.finish();
    Authenticator::sign(out, n, auth)
}

/// A signed error answer, with the RFC's reason phrase: the client
/// authenticated, so the answer may say what went wrong (only unsigned
/// answers are kept bare, against amplification).
fn error(msg: &Message<'_>, auth: &Authenticated, code: u16, out: &mut [u8]) -> Option<usize> {
    let e = ErrorCode::builder(code)
        .reason(ErrorCode::default_reason_for_code(code))
        .build()
        .ok()?;
    let mut w = Message::builder_error(msg, MessageWriteMutSlice::new(out));
    w.add_attribute(&e).ok()?;
    let n = w.finish();
    Authenticator::sign(out, n, auth)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::relay::auth::NonceKey;
    use crate::relay::proto::integrity::{self, Integrity, Key, PasswordAlgorithm};
    use stun_types::attribute::{Nonce, Realm, Username};
    use stun_types::message::MessageWriteVec;

    const NONCE_KEY: &[u8] = b"turn-test-nonce-key-32-bytes-abc";
    const NOW_UNIX: u64 = 1_800_000_000;
    const PEER: &str = "203.0.113.50:7000";

    #[derive(Default)]
    struct Ports {
        next: u16,
        open: BTreeSet<u16>,
        exhausted: bool,
    }

    impl RelaySockets for Ports {
        fn open(&mut self, _family: Family, even: bool) -> Option<u16> {
            if self.exhausted {
                return None;
            }
            self.next += 1;
            if even && !self.next.is_multiple_of(2) {
                self.next += 1;
            }
            let p = 50_000 + self.next;
            self.open.insert(p);
            Some(p)
        }
        fn close(&mut self, port: u16) {
            assert!(self.open.remove(&port), "closed a port that was not open");
        }
    }

    struct Rig {
        core: TurnCore,
        ports: Ports,
        out: Vec<u8>,
    }

    fn five(port: u16) -> FiveTuple {
        FiveTuple {
            client: SocketAddr::from(([198, 51, 100, 7], port)),
            server: "192.0.2.1:3478".parse().unwrap(),
            transport: Transport::Udp,
        }
    }

    fn rig(config: impl FnOnce(&mut TurnConfig)) -> Rig {
        let mut cfg = TurnConfig::new("192.0.2.1".parse().unwrap());
        config(&mut cfg);
        let users = HashMap::from([
            ("alice".to_owned(), "alicepass".to_owned()),
            ("bob".to_owned(), "bobpass".to_owned()),
        ]);
        let auth = Authenticator::new("aether".into(), None, users, NONCE_KEY, 600);
        Rig {
            core: TurnCore::new(cfg, auth),
            ports: Ports::default(),
            out: vec![0; 1500],
        }
    }

    /// A request from `f` signed by `user`, with raw attributes.
    fn request(
        method: Method,
        f: FiveTuple,
        user: &str,
        attrs: &[(u16, Vec<u8>)],
        tid: Option<TransactionId>,
    ) -> Vec<u8> {
        let mut b = match tid {
            Some(t) => Message::builder(
                stun_types::message::MessageType::from_class_method(MessageClass::Request, method),
                t,
                MessageWriteVec::new(),
            ),
            None => Message::builder_request(method, MessageWriteVec::new()),
        };
        b.add_attribute(&Username::new(user).unwrap()).unwrap();
        b.add_attribute(&Realm::new("aether").unwrap()).unwrap();
        let nonce = NonceKey::new(NONCE_KEY).issue(f.client, NOW_UNIX);
        b.add_attribute(&Nonce::new(&nonce).unwrap()).unwrap();
        for (t, v) in attrs {
            b.add_attribute(&RawAttribute::new(AttributeType::new(*t), v))
                .unwrap();
        }
        let unsigned = b.finish();
        let mut out = vec![0u8; unsigned.len() + 64];
        out[..unsigned.len()].copy_from_slice(&unsigned);
        let password = if user == "alice" {
            "alicepass"
        } else {
            "bobpass"
        };
        let key = Key::long_term(PasswordAlgorithm::Md5, user, "aether", password);
        let n = integrity::append(&mut out, unsigned.len(), &key, Integrity::Sha1).unwrap();
        out.truncate(n);
        out
    }

    fn peer_attr(peer: &str, tid: TransactionId) -> (u16, Vec<u8>) {
        let (v, n) = xor_address(peer.parse().unwrap(), tid);
        (XOR_PEER_ADDRESS, v[..n].to_vec())
    }

    impl Rig {
        fn send(&mut self, f: FiveTuple, d: &[u8], now_ms: u64) -> Action {
            self.core
                .on_client(f, d, now_ms, NOW_UNIX, &mut self.ports, &mut self.out)
        }

        /// Send a request; the answer's class and error code (0: success)
        /// and the answer bytes.
        fn ask(&mut self, f: FiveTuple, d: &[u8], now_ms: u64) -> (u16, Vec<u8>) {
            let Action::Reply(n) = self.send(f, d, now_ms) else {
                panic!("no reply");
            };
            let r = self.out[..n].to_vec();
            let m = stun::parse(&r).expect("the answer parses");
            let code = m.attribute::<ErrorCode>().map(|e| e.code()).unwrap_or(0);
            (code, r)
        }

        fn allocate(&mut self, f: FiveTuple, user: &str) -> (u16, Vec<u8>) {
            let d = request(
                ALLOCATE,
                f,
                user,
                &[(REQUESTED_TRANSPORT, vec![UDP, 0, 0, 0])],
                None,
            );
            self.ask(f, &d, 0)
        }
    }

    fn attr(resp: &[u8], t: u16) -> Vec<u8> {
        let m = stun::parse(resp).unwrap();
        first(&m, resp, t).expect("attribute present").to_vec()
    }

    #[test]
    fn allocate_answers_relayed_and_mapped_addresses_signed() {
        let mut r = rig(|_| {});
        let f = five(40_000);
        // Unsigned: the challenge.
        let bare = Message::builder_request(ALLOCATE, MessageWriteVec::new()).finish();
        assert_eq!(r.ask(f, &bare, 0).0, 401);
        let (code, resp) = r.allocate(f, "alice");
        assert_eq!(code, 0);
        let m = stun::parse(&resp).unwrap();
        let tid = m.transaction_id();
        assert_eq!(
            parse_xor_address(&attr(&resp, XOR_RELAYED_ADDRESS), tid),
            Some("192.0.2.1:50001".parse().unwrap())
        );
        assert_eq!(
            parse_xor_address(&attr(&resp, XOR_MAPPED_ADDRESS), tid),
            Some(f.client)
        );
        assert_eq!(attr(&resp, LIFETIME), 600u32.to_be_bytes());
        let key = Key::long_term(PasswordAlgorithm::Md5, "alice", "aether", "alicepass");
        assert_eq!(integrity::verify(&resp, &m, &key), Ok(Integrity::Sha1));
        assert_eq!(r.core.allocations(), 1);
    }

    #[test]
    fn allocate_refusals() {
        let mut r = rig(|c| c.max_allocations_per_user = 2);
        let f = five(1);
        // Retransmission: the same success; another transaction: 437.
        let d = request(
            ALLOCATE,
            f,
            "alice",
            &[(REQUESTED_TRANSPORT, vec![UDP, 0, 0, 0])],
            None,
        );
        let (code, first_answer) = r.ask(f, &d, 0);
        assert_eq!(code, 0);
        let (code, again) = r.ask(f, &d, 1_000);
        assert_eq!(code, 0);
        assert_eq!(
            attr(&again, XOR_RELAYED_ADDRESS),
            attr(&first_answer, XOR_RELAYED_ADDRESS)
        );
        assert_eq!(r.allocate(f, "alice").0, 437);
        // Another user on the same 5-tuple: 441.
        assert_eq!(r.allocate(f, "bob").0, 441);
        // Transport: missing 400, TCP 442.
        let g = five(2);
        assert_eq!(
            r.ask(g, &request(ALLOCATE, g, "alice", &[], None), 0).0,
            400
        );
        let tcp = request(
            ALLOCATE,
            g,
            "alice",
            &[(REQUESTED_TRANSPORT, vec![6, 0, 0, 0])],
            None,
        );
        assert_eq!(r.ask(g, &tcp, 0).0, 442);
        // Quota: the user's second is fine, the third 486.
        assert_eq!(r.allocate(g, "alice").0, 0);
        assert_eq!(r.allocate(five(3), "alice").0, 486);
        // Out of ports: 508.
        r.ports.exhausted = true;
        assert_eq!(r.allocate(five(4), "bob").0, 508);
        assert_eq!(r.core.allocations(), 2);
    }

    #[test]
    fn lifetimes_follow_the_rfc_and_expire() {
        let mut r = rig(|_| {});
        let f = five(1);
        let asked = |s: u32| (LIFETIME, s.to_be_bytes().to_vec());
        let d = request(
            ALLOCATE,
            f,
            "alice",
            &[(REQUESTED_TRANSPORT, vec![UDP, 0, 0, 0]), asked(30)],
            None,
        );
        assert_eq!(attr(&r.ask(f, &d, 0).1, LIFETIME), 600u32.to_be_bytes());
        let d = request(REFRESH, f, "alice", &[asked(100_000)], None);
        assert_eq!(attr(&r.ask(f, &d, 0).1, LIFETIME), 3600u32.to_be_bytes());
        // Expires exactly at its lifetime.
        assert_eq!(r.core.expire(3_599_999, &mut r.ports), 0);
        assert_eq!(r.core.expire(3_600_000, &mut r.ports), 1);
        assert!(r.ports.open.is_empty());
        // Refresh on nothing: 437; another user's: 441; lifetime 0 deletes.
        let d = request(REFRESH, f, "alice", &[], None);
        assert_eq!(r.ask(f, &d, 0).0, 437);
        assert_eq!(r.allocate(f, "alice").0, 0);
        assert_eq!(r.ask(f, &request(REFRESH, f, "bob", &[], None), 0).0, 441);
        let (code, resp) = r.ask(f, &request(REFRESH, f, "alice", &[asked(0)], None), 0);
        assert_eq!(
            (code, attr(&resp, LIFETIME)),
            (0, 0u32.to_be_bytes().to_vec())
        );
        assert_eq!(r.core.allocations(), 0);
        assert!(r.ports.open.is_empty());
    }

    #[test]
    fn even_port_and_unknown_attributes() {
        let mut r = rig(|_| {});
        let transport = (REQUESTED_TRANSPORT, vec![UDP, 0, 0, 0]);
        let even = |f: FiveTuple, bits: u8| {
            request(
                ALLOCATE,
                f,
                "alice",
                &[transport.clone(), (EVEN_PORT, vec![bits])],
                None,
            )
        };
        let (code, resp) = r.ask(five(1), &even(five(1), 0x00), 0);
        assert_eq!(code, 0);
        let tid = stun::parse(&resp).unwrap().transaction_id();
        let relayed = parse_xor_address(&attr(&resp, XOR_RELAYED_ADDRESS), tid).unwrap();
        assert_eq!(relayed.port() % 2, 0, "{relayed}");
        // R = 1 asks for a reservation: not made here.
        assert_eq!(r.ask(five(2), &even(five(2), 0x80), 0).0, 508);
        // DONT-FRAGMENT and an unknown comprehension-required attribute: 420
        // (signed) with both listed; comprehension-optional ones are ignored.
        let d = request(
            ALLOCATE,
            five(3),
            "alice",
            &[
                transport.clone(),
                (0x001A, vec![]),
                (0x7ABC, vec![1, 2, 3, 4]),
                (0x8123, vec![0; 4]),
            ],
            None,
        );
        let (code, resp) = r.ask(five(3), &d, 0);
        assert_eq!(code, 420);
        let m = stun::parse(&resp).unwrap();
        let u = m
            .attribute::<stun_types::attribute::UnknownAttributes>()
            .unwrap();
        assert!(u.has_attribute(AttributeType::new(0x001A)));
        assert!(u.has_attribute(AttributeType::new(0x7ABC)));
        assert!(!u.has_attribute(AttributeType::new(0x8123)));
        let key = Key::long_term(PasswordAlgorithm::Md5, "alice", "aether", "alicepass");
        assert_eq!(integrity::verify(&resp, &m, &key), Ok(Integrity::Sha1));
        assert_eq!(r.core.allocations(), 1);
    }

    #[test]
    fn an_expired_channel_stays_reserved_for_five_minutes() {
        let mut r = rig(|_| {});
        let f = five(1);
        assert_eq!(r.allocate(f, "alice").0, 0);
        let bind = |r: &mut Rig, n: u16, p: &str, now: u64| {
            let tid = TransactionId::generate();
            let d = request(
                CHANNEL_BIND,
                f,
                "alice",
                &[
                    (CHANNEL_NUMBER, vec![(n >> 8) as u8, n as u8, 0, 0]),
                    peer_attr(p, tid),
                ],
                Some(tid),
            );
            r.ask(f, &d, now).0
        };
        let d = request(
            REFRESH,
            f,
            "alice",
            &[(LIFETIME, 3600u32.to_be_bytes().to_vec())],
            None,
        );
        assert_eq!(r.ask(f, &d, 0).0, 0);
        assert_eq!(bind(&mut r, 0x4001, PEER, 0), 0);
        let cd = [0x40, 0x01, 0x00, 0x02, 7, 7];
        assert!(matches!(r.send(f, &cd, 299_999), Action::ToPeer { .. }));
        r.core.expire(600_000, &mut r.ports);
        assert_eq!(r.send(f, &cd, 600_000), Action::Drop(DropReason::NoChannel));
        // Reserved: neither the number nor the peer may be bound elsewhere.
        assert_eq!(bind(&mut r, 0x4001, "203.0.113.51:1", 600_001), 400);
        assert_eq!(bind(&mut r, 0x4002, PEER, 600_001), 400);
        r.core.expire(899_999, &mut r.ports);
        assert_eq!(bind(&mut r, 0x4001, "203.0.113.51:1", 899_999), 400);
        // Five minutes after expiry both are free again.
        r.core.expire(900_000, &mut r.ports);
        assert_eq!(bind(&mut r, 0x4001, "203.0.113.51:1", 900_000), 0);
    }

    #[test]
    fn permissions_channels_and_the_data_path() {
        let mut r = rig(|_| {});
        let f = five(1);
        assert_eq!(r.allocate(f, "alice").0, 0);
        let port = *r.ports.open.iter().next().unwrap();
        let peer: SocketAddr = PEER.parse().unwrap();

        // Send before a permission: dropped.
        let send = |payload: &[u8]| {
            let mut b = Message::builder_indication(SEND, MessageWriteVec::new());
            let tid = b.transaction_id();
            let (k, v) = peer_attr(PEER, tid);
            b.add_attribute(&RawAttribute::new(AttributeType::new(k), &v))
                .unwrap();
            b.add_attribute(&RawAttribute::new(AttributeType::new(DATA_ATTR), payload))
                .unwrap();
            b.finish()
        };
        let s = send(b"hello");
        assert_eq!(r.send(f, &s, 0), Action::Drop(DropReason::NoPermission));
        // A forbidden peer: 403, nothing installed.
        let tid = TransactionId::generate();
        let d = request(
            CREATE_PERMISSION,
            f,
            "alice",
            &[peer_attr("10.0.0.1:1", tid)],
            Some(tid),
        );
        assert_eq!(r.ask(f, &d, 0).0, 403);
        let tid = TransactionId::generate();
        let d = request(
            CREATE_PERMISSION,
            f,
            "alice",
            &[peer_attr(PEER, tid), peer_attr("127.0.0.1:1", tid)],
            Some(tid),
        );
        assert_eq!(
            r.ask(f, &d, 0).0,
            403,
            "one forbidden peer refuses the whole request"
        );
        assert_eq!(r.send(f, &s, 0), Action::Drop(DropReason::NoPermission));
        // Permitted: the payload goes from the relayed port.
        let tid = TransactionId::generate();
        let d = request(
            CREATE_PERMISSION,
            f,
            "alice",
            &[peer_attr(PEER, tid)],
            Some(tid),
        );
        assert_eq!(r.ask(f, &d, 0).0, 0);
        let Action::ToPeer {
            relay_port,
            peer: to,
            start,
            end,
        } = r.send(f, &s, 1_000)
        else {
            panic!("not relayed");
        };
        assert_eq!(
            (relay_port, to, &s[start..end]),
            (port, peer, &b"hello"[..])
        );
        // The peer answers: a Data indication (no channel yet).
        let Action::ToClient { five: back, n } =
            r.core.on_peer(port, peer, b"hi", 1_000, &mut r.out)
        else {
            panic!("not delivered");
        };
        assert_eq!(back, f);
        let data = r.out[..n].to_vec();
        let dm = stun::parse(&data).unwrap();
        assert!(dm.has_method(DATA) && dm.has_class(MessageClass::Indication));
        assert_eq!(
            parse_xor_address(&attr(&data, XOR_PEER_ADDRESS), dm.transaction_id()),
            Some(peer)
        );
        assert_eq!(attr(&data, DATA_ATTR), b"hi");
        // A peer without a permission is not heard.
        let stranger: SocketAddr = "203.0.113.99:1".parse().unwrap();
        assert_eq!(
            r.core.on_peer(port, stranger, b"x", 1_000, &mut r.out),
            Action::Drop(DropReason::NoPermission)
        );

        // ChannelBind: 0x4001 ↔ the peer; ChannelData both ways.
        let tid = TransactionId::generate();
        let bind = |n: u16, p: &str, tid| {
            request(
                CHANNEL_BIND,
                f,
                "alice",
                &[
                    (CHANNEL_NUMBER, vec![(n >> 8) as u8, n as u8, 0, 0]),
                    peer_attr(p, tid),
                ],
                Some(tid),
            )
        };
        assert_eq!(r.ask(f, &bind(0x4001, PEER, tid), 0).0, 0);
        let tid = TransactionId::generate();
        assert_eq!(r.ask(f, &bind(0x8000, PEER, tid), 0).0, 400, "out of range");
        let tid = TransactionId::generate();
        assert_eq!(r.ask(f, &bind(0x3FFF, PEER, tid), 0).0, 400, "out of range");
        let tid = TransactionId::generate();
        assert_eq!(
            r.ask(f, &bind(0x4001, "203.0.113.51:1", tid), 0).0,
            400,
            "number taken by another peer"
        );
        let tid = TransactionId::generate();
        assert_eq!(
            r.ask(f, &bind(0x4002, PEER, tid), 0).0,
            400,
            "peer bound to another number"
        );
        let cd = [0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c', 0x00];
        let Action::ToPeer {
            start,
            end,
            peer: to,
            ..
        } = r.send(f, &cd, 2_000)
        else {
            panic!("channel data not relayed");
        };
        assert_eq!((to, &cd[start..end]), (peer, &b"abc"[..]));
        assert_eq!(
            r.send(f, &[0x40, 0x02, 0, 1, 9], 2_000),
            Action::Drop(DropReason::NoChannel)
        );
        assert_eq!(
            r.send(f, &[0x40, 0x01, 0, 9, 9], 2_000),
            Action::Drop(DropReason::Malformed)
        );
        let Action::ToClient { n, .. } = r.core.on_peer(port, peer, b"xyz", 2_000, &mut r.out)
        else {
            panic!("not delivered");
        };
        assert_eq!(&r.out[..n], &[0x40, 0x01, 0x00, 0x03, b'x', b'y', b'z']);

        // Expiry: the channel refresh also refreshed the permission (300 s
        // from t=0); after that, nothing passes; the channel lasts 600 s.
        assert_eq!(
            r.send(f, &s, 299_999),
            Action::ToPeer {
                relay_port: port,
                peer,
                start: s.len() - 8,
                end: s.len() - 3
            }
        );
        r.core.expire(300_000, &mut r.ports);
        assert_eq!(
            r.send(f, &s, 300_000),
            Action::Drop(DropReason::NoPermission)
        );
        assert_eq!(
            r.send(f, &cd, 300_000),
            Action::Drop(DropReason::NoPermission)
        );
        // (The allocation itself is refreshed so it outlives the channel.)
        let d = request(REFRESH, f, "alice", &[], None);
        assert_eq!(r.ask(f, &d, 300_000).0, 0);
        r.core.expire(600_000, &mut r.ports);
        assert_eq!(r.send(f, &cd, 600_000), Action::Drop(DropReason::NoChannel));
        assert_eq!(r.core.allocations(), 1);
    }

    #[test]
    fn the_bitrate_cap_and_revocation() {
        let mut r = rig(|c| c.bitrate = BitrateCap::new(64));
        let f = five(1);
        assert_eq!(r.allocate(f, "alice").0, 0);
        assert_eq!(r.allocate(five(2), "alice").0, 0);
        let tid = TransactionId::generate();
        let d = request(
            CHANNEL_BIND,
            f,
            "alice",
            &[
                (CHANNEL_NUMBER, vec![0x40, 0x00, 0, 0]),
                peer_attr(PEER, tid),
            ],
            Some(tid),
        );
        assert_eq!(r.ask(f, &d, 0).0, 0);
        // 20 ms frames of 160 bytes payload + 48 overhead: the cap. Twice
        // that (two frames per 20 ms): about half are dropped.
        let mut frame = vec![0x40, 0x00, 0x00, 208];
        frame.extend_from_slice(&[7u8; 208]);
        let (mut relayed, mut dropped) = (0, 0);
        for i in 0..3000u64 {
            for _ in 0..2 {
                match r.send(f, &frame, 1_000 + i * 20) {
                    Action::ToPeer { .. } => relayed += 1,
                    Action::Drop(DropReason::Bitrate) => dropped += 1,
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!(
            (3000..=3020).contains(&relayed),
            "{relayed} relayed, {dropped} dropped"
        );
        // Revoking the user tears down both of its allocations.
        assert_eq!(r.core.revoke("alice", &mut r.ports), 2);
        assert_eq!(r.core.allocations(), 0);
        assert!(r.ports.open.is_empty());
        assert_eq!(
            r.send(f, &frame, 70_000),
            Action::Drop(DropReason::NoAllocation)
        );
    }
}
