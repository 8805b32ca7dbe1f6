//! A small TURN client (RFC 8656) over UDP or TCP for exact assertions:
//! every answer's error code and attributes, the 401 dance, ChannelData and
//! Send/Data indications. Requests are built with `stun-types`; the XOR
//! address encoding here is written independently of the server's.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use aether_gateway::relay::proto::integrity::{self, Integrity, Key, PasswordAlgorithm};
use stun_types::attribute::{
    AttributeType, ErrorCode, Nonce, PasswordAlgorithm as PwAlgAttr, PasswordAlgorithmValue,
    PasswordAlgorithms, RawAttribute, Realm, Username,
};
use stun_types::message::{
    Message, MessageClass, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec, Method,
    TransactionId,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub const BINDING: Method = Method::new(0x0001);
pub const ALLOCATE: Method = Method::new(0x0003);
pub const REFRESH: Method = Method::new(0x0004);
pub const SEND: Method = Method::new(0x0006);
pub const DATA: Method = Method::new(0x0007);
pub const CREATE_PERMISSION: Method = Method::new(0x0008);
pub const CHANNEL_BIND: Method = Method::new(0x0009);

pub const CHANNEL_NUMBER: u16 = 0x000C;
pub const LIFETIME: u16 = 0x000D;
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
pub const DATA_ATTR: u16 = 0x0013;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;

const MAGIC: u32 = 0x2112_A442;

/// XOR-…-ADDRESS value for `addr` in transaction `tid` (RFC 8489 §14.2).
pub fn xor_addr(addr: SocketAddr, tid: TransactionId) -> Vec<u8> {
    let tid = u128::from(tid).to_be_bytes();
    let mut key = MAGIC.to_be_bytes().to_vec();
    key.extend_from_slice(&tid[4..]);
    let port = addr.port() ^ 0x2112;
    let mut v = vec![0, 0];
    v.extend_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            v[1] = 1;
            v.extend(ip.octets().iter().zip(&key).map(|(a, k)| a ^ k));
        }
        IpAddr::V6(ip) => {
            v[1] = 2;
            v.extend(ip.octets().iter().zip(&key).map(|(a, k)| a ^ k));
        }
    }
    v
}

/// The address an XOR-…-ADDRESS value in transaction `tid` carries.
pub fn parse_xor_addr(v: &[u8], tid: TransactionId) -> SocketAddr {
    let again = |ip: IpAddr| xor_addr(SocketAddr::new(ip, 0), tid);
    let port = u16::from_be_bytes([v[2], v[3]]) ^ 0x2112;
    // XOR is its own inverse: encoding the encoded bytes decodes them.
    let ip = match v[1] {
        1 => {
            let raw: [u8; 4] = v[4..8].try_into().unwrap();
            let d = again(IpAddr::from(raw));
            IpAddr::from(<[u8; 4]>::try_from(&d[4..8]).unwrap())
        }
        _ => {
            let raw: [u8; 16] = v[4..20].try_into().unwrap();
            let d = again(IpAddr::from(raw));
            IpAddr::from(<[u8; 16]>::try_from(&d[4..20]).unwrap())
        }
    };
    SocketAddr::new(ip, port)
}

/// An answer: its class, error code (0 on success) and attributes.
#[derive(Debug, Clone)]
pub struct Answer {
    pub success: bool,
    pub code: u16,
    pub tid: TransactionId,
    pub attrs: Vec<(u16, Vec<u8>)>,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn parse(bytes: &[u8]) -> Answer {
        let m = Message::from_bytes(bytes).expect("the answer is a STUN message");
        let code = m.attribute::<ErrorCode>().map(|e| e.code()).unwrap_or(0);
        let attrs = m
            .iter_attributes()
            .map(|(o, a)| {
                use stun_types::attribute::Attribute;
                let len = usize::from(a.length());
                (a.get_type().value(), bytes[o + 4..o + 4 + len].to_vec())
            })
            .collect();
        Answer {
            success: m.has_class(MessageClass::Success),
            code,
            tid: m.transaction_id(),
            attrs,
            bytes: bytes.to_vec(),
        }
    }

    pub fn attr(&self, t: u16) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(a, _)| *a == t)
            .map(|(_, v)| v.as_slice())
    }

    pub fn has(&self, t: u16) -> bool {
        self.attr(t).is_some()
    }

    pub fn addr(&self, t: u16) -> Option<SocketAddr> {
        self.attr(t).map(|v| parse_xor_addr(v, self.tid))
    }

    pub fn lifetime(&self) -> Option<u32> {
        self.attr(LIFETIME)
            .map(|v| u32::from_be_bytes(v.try_into().unwrap()))
    }

    pub fn nonce(&self) -> Option<String> {
        Message::from_bytes(&self.bytes)
            .ok()?
            .attribute::<Nonce>()
            .ok()
            .map(|n| n.nonce().to_owned())
    }
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream, Vec<u8>),
}

/// What arrived from the server that is not an answer: relayed data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// ChannelData on this channel.
    Channel(u16, Vec<u8>),
    /// A Data indication from this peer.
    Data(SocketAddr, Vec<u8>),
    /// A STUN answer.
    Answer(Vec<u8>),
}

/// Long-term credentials.
#[derive(Debug, Clone)]
pub struct Creds {
    pub user: String,
    pub password: String,
    pub realm: String,
    pub algorithm: PasswordAlgorithm,
    pub integrity: Integrity,
    /// Echo PASSWORD-ALGORITHMS and name PASSWORD-ALGORITHM even for MD5.
    pub echo_algorithms: bool,
    /// A PASSWORD-ALGORITHM without PASSWORD-ALGORITHMS (a downgrade attempt).
    pub lone_algorithm: bool,
}

impl Creds {
    pub fn new(user: &str, password: &str) -> Creds {
        Creds {
            user: user.into(),
            password: password.into(),
            realm: "aether".into(),
            algorithm: PasswordAlgorithm::Md5,
            integrity: Integrity::Sha1,
            echo_algorithms: false,
            lone_algorithm: false,
        }
    }
}

/// One client 5-tuple.
pub struct TurnClient {
    conn: Conn,
    pub server: SocketAddr,
    pub creds: Creds,
    pub nonce: Option<String>,
}

impl TurnClient {
    pub async fn udp(server: SocketAddr, creds: Creds) -> TurnClient {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        TurnClient {
            conn: Conn::Udp(s),
            server,
            creds,
            nonce: None,
        }
    }

    /// A UDP client on another loopback address (127.0.0.2, …).
    pub async fn udp_from(local: IpAddr, server: SocketAddr, creds: Creds) -> TurnClient {
        let s = UdpSocket::bind(SocketAddr::new(local, 0)).await.unwrap();
        TurnClient {
            conn: Conn::Udp(s),
            server,
            creds,
            nonce: None,
        }
    }

    pub async fn udp6(server: SocketAddr, creds: Creds) -> TurnClient {
        let s = UdpSocket::bind("[::1]:0").await.unwrap();
        TurnClient {
            conn: Conn::Udp(s),
            server,
            creds,
            nonce: None,
        }
    }

    pub fn from_tcp(s: TcpStream, server: SocketAddr, creds: Creds) -> TurnClient {
        s.set_nodelay(true).unwrap();
        TurnClient {
            conn: Conn::Tcp(s, Vec::new()),
            server,
            creds,
            nonce: None,
        }
    }

    pub async fn tcp(server: SocketAddr, creds: Creds) -> TurnClient {
        let s = TcpStream::connect(server).await.unwrap();
        s.set_nodelay(true).unwrap();
        TurnClient {
            conn: Conn::Tcp(s, Vec::new()),
            server,
            creds,
            nonce: None,
        }
    }

    /// The UDP socket, as a blocking std socket (for loops that must not
    /// allocate).
    pub fn into_std_udp(self) -> std::net::UdpSocket {
        match self.conn {
            Conn::Udp(s) => {
                let s = s.into_std().unwrap();
                s.set_nonblocking(false).unwrap();
                s
            }
            Conn::Tcp(..) => panic!("a TCP client"),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        match &self.conn {
            Conn::Udp(s) => s.local_addr().unwrap(),
            Conn::Tcp(s, _) => s.local_addr().unwrap(),
        }
    }

    /// Send raw bytes (ChannelData over TCP is padded to four).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        match &mut self.conn {
            Conn::Udp(s) => {
                s.send_to(bytes, self.server).await.unwrap();
            }
            Conn::Tcp(s, _) => {
                let mut b = bytes.to_vec();
                if b.first().is_some_and(|x| x & 0xC0 == 0x40) {
                    b.resize((b.len() + 3) & !3, 0);
                }
                s.write_all(&b).await.unwrap();
            }
        }
    }

    /// The next message from the server within `wait`.
    pub async fn recv(&mut self, wait: Duration) -> Option<Incoming> {
        let raw = match &mut self.conn {
            Conn::Udp(s) => {
                let mut buf = vec![0u8; 70_000];
                let (n, _) = tokio::time::timeout(wait, s.recv_from(&mut buf))
                    .await
                    .ok()?
                    .ok()?;
                buf.truncate(n);
                buf
            }
            Conn::Tcp(s, pending) => loop {
                if pending.len() >= 4 {
                    let len = usize::from(u16::from_be_bytes([pending[2], pending[3]]));
                    let (msg, taken) = if pending[0] & 0xC0 == 0x40 {
                        (4 + len, (4 + len + 3) & !3)
                    } else {
                        (20 + len, 20 + len)
                    };
                    if pending.len() >= taken {
                        let m = pending[..msg].to_vec();
                        pending.drain(..taken);
                        break m;
                    }
                }
                let mut buf = [0u8; 4096];
                let n = tokio::time::timeout(wait, s.read(&mut buf))
                    .await
                    .ok()?
                    .ok()?;
                if n == 0 {
                    return None;
                }
                pending.extend_from_slice(&buf[..n]);
            },
        };
        Some(classify(&raw))
    }

    /// Whether the server closed the (TCP) connection within `wait`.
    pub async fn closed(&mut self, wait: Duration) -> bool {
        match &mut self.conn {
            Conn::Tcp(s, _) => {
                let mut b = [0u8; 64];
                matches!(
                    tokio::time::timeout(wait, s.read(&mut b)).await,
                    Ok(Ok(0)) | Ok(Err(_))
                )
            }
            Conn::Udp(_) => false,
        }
    }

    /// Send `bytes` and wait for the answer with transaction `tid`
    /// (relayed data arriving meanwhile is skipped).
    pub async fn exchange(&mut self, bytes: &[u8], tid: TransactionId) -> Option<Answer> {
        self.send_raw(bytes).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await? {
                Incoming::Answer(a) => {
                    let a = Answer::parse(&a);
                    if a.tid == tid {
                        return Some(a);
                    }
                }
                _ => continue,
            }
        }
    }

    /// A request, signed when a nonce is known.
    pub fn build(&self, method: Method, attrs: &[(u16, Vec<u8>)], tid: TransactionId) -> Vec<u8> {
        let mut b = Message::builder(
            MessageType::from_class_method(MessageClass::Request, method),
            tid,
            MessageWriteVec::new(),
        );
        for (t, v) in attrs {
            b.add_attribute(&RawAttribute::new(AttributeType::new(*t), v))
                .unwrap();
        }
        let Some(nonce) = &self.nonce else {
            return b.finish();
        };
        b.add_attribute(&Username::new(&self.creds.user).unwrap())
            .unwrap();
        b.add_attribute(&Realm::new(&self.creds.realm).unwrap())
            .unwrap();
        b.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
        if self.creds.algorithm == PasswordAlgorithm::Sha256 || self.creds.echo_algorithms {
            // RFC 8489 §9.2.4: the list the challenge offered, echoed, and
            // the one chosen.
            b.add_attribute(&PasswordAlgorithms::new(&[
                PasswordAlgorithmValue::MD5,
                PasswordAlgorithmValue::SHA256,
            ]))
            .unwrap();
            let chosen = match self.creds.algorithm {
                PasswordAlgorithm::Sha256 => PasswordAlgorithmValue::SHA256,
                PasswordAlgorithm::Md5 => PasswordAlgorithmValue::MD5,
            };
            b.add_attribute(&PwAlgAttr::new(chosen)).unwrap();
        }
        if self.creds.lone_algorithm {
            b.add_attribute(&PwAlgAttr::new(PasswordAlgorithmValue::SHA256))
                .unwrap();
        }
        let unsigned = b.finish();
        let mut out = vec![0u8; unsigned.len() + 64];
        out[..unsigned.len()].copy_from_slice(&unsigned);
        let key = Key::long_term(
            self.creds.algorithm,
            &self.creds.user,
            &self.creds.realm,
            &self.creds.password,
        );
        let n = integrity::append(&mut out, unsigned.len(), &key, self.creds.integrity).unwrap();
        let n = integrity::append_fingerprint(&mut out, n).unwrap();
        out.truncate(n);
        out
    }

    /// A request with the long-term dance: unsigned first when no nonce is
    /// known, then signed with the nonce of the 401 (or a 438's new one).
    pub async fn request(&mut self, method: Method, attrs: &[(u16, Vec<u8>)]) -> Answer {
        for _ in 0..3 {
            let tid = TransactionId::generate();
            let bytes = self.build(method, attrs, tid);
            let a = self
                .exchange(&bytes, tid)
                .await
                .expect("the server answers within 3 s");
            if matches!(a.code, 401 | 438) {
                let fresh = a.nonce();
                let retry = self.nonce.is_none() || a.code == 438;
                self.nonce = fresh;
                if retry {
                    continue;
                }
            }
            return a;
        }
        panic!("no answer but challenges");
    }

    pub async fn allocate(&mut self) -> Answer {
        self.request(ALLOCATE, &[(REQUESTED_TRANSPORT, vec![17, 0, 0, 0])])
            .await
    }

    pub async fn refresh(&mut self, lifetime: u32) -> Answer {
        self.request(REFRESH, &[(LIFETIME, lifetime.to_be_bytes().to_vec())])
            .await
    }

    /// CreatePermission for `peers` (one transaction).
    pub async fn permit(&mut self, peers: &[SocketAddr]) -> Answer {
        let tid = TransactionId::generate();
        // The XOR encoding depends on the transaction id, so build with it.
        let attrs: Vec<(u16, Vec<u8>)> = peers
            .iter()
            .map(|p| (XOR_PEER_ADDRESS, xor_addr(*p, tid)))
            .collect();
        self.request_with_tid(CREATE_PERMISSION, &attrs, tid).await
    }

    pub async fn bind_channel(&mut self, number: u16, peer: SocketAddr) -> Answer {
        let tid = TransactionId::generate();
        let attrs = vec![
            (
                CHANNEL_NUMBER,
                vec![(number >> 8) as u8, number as u8, 0, 0],
            ),
            (XOR_PEER_ADDRESS, xor_addr(peer, tid)),
        ];
        self.request_with_tid(CHANNEL_BIND, &attrs, tid).await
    }

    async fn request_with_tid(
        &mut self,
        method: Method,
        attrs: &[(u16, Vec<u8>)],
        tid: TransactionId,
    ) -> Answer {
        if self.nonce.is_none() {
            // Learn a nonce with a bare request first.
            let t = TransactionId::generate();
            let a = self
                .exchange(&self.build(method, &[], t), t)
                .await
                .expect("challenge");
            self.nonce = a.nonce();
        }
        let a = self
            .exchange(&self.build(method, attrs, tid), tid)
            .await
            .expect("the server answers within 3 s");
        if a.code == 438 {
            self.nonce = a.nonce();
            return self
                .exchange(&self.build(method, attrs, tid), tid)
                .await
                .expect("answer after 438");
        }
        a
    }

    /// ChannelData on `number`.
    pub async fn send_channel(&mut self, number: u16, data: &[u8]) {
        let mut b = number.to_be_bytes().to_vec();
        b.extend_from_slice(&(data.len() as u16).to_be_bytes());
        b.extend_from_slice(data);
        self.send_raw(&b).await;
    }

    /// A Send indication to `peer`.
    pub async fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let mut b = Message::builder(
            MessageType::from_class_method(MessageClass::Indication, SEND),
            TransactionId::generate(),
            MessageWriteVec::new(),
        );
        let tid = b.transaction_id();
        b.add_attribute(&RawAttribute::new(
            AttributeType::new(XOR_PEER_ADDRESS),
            &xor_addr(peer, tid),
        ))
        .unwrap();
        b.add_attribute(&RawAttribute::new(AttributeType::new(DATA_ATTR), data))
            .unwrap();
        let bytes = b.finish();
        self.send_raw(&bytes).await;
    }

    /// The next relayed datagram (ChannelData or Data indication).
    pub async fn recv_data(&mut self, wait: Duration) -> Option<Incoming> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await? {
                Incoming::Answer(_) => continue,
                d => return Some(d),
            }
        }
    }
}

fn classify(raw: &[u8]) -> Incoming {
    if raw.first().is_some_and(|b| b & 0xC0 == 0x40) {
        let n = u16::from_be_bytes([raw[0], raw[1]]);
        let len = usize::from(u16::from_be_bytes([raw[2], raw[3]]));
        return Incoming::Channel(n, raw[4..4 + len].to_vec());
    }
    let m = Message::from_bytes(raw).expect("a STUN message");
    if m.has_class(MessageClass::Indication) && m.has_method(DATA) {
        let a = Answer::parse(raw);
        return Incoming::Data(
            a.addr(XOR_PEER_ADDRESS).expect("XOR-PEER-ADDRESS"),
            a.attr(DATA_ATTR).expect("DATA").to_vec(),
        );
    }
    Incoming::Answer(raw.to_vec())
}

/// A UDP peer on 127.0.0.1 that records what it receives.
pub struct Peer {
    pub sock: UdpSocket,
}

impl Peer {
    pub async fn start() -> Peer {
        Peer {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    pub async fn recv(&self, wait: Duration) -> Option<(SocketAddr, Vec<u8>)> {
        let mut buf = vec![0u8; 70_000];
        let (n, from) = tokio::time::timeout(wait, self.sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        buf.truncate(n);
        Some((from, buf))
    }

    /// Datagrams already waiting (read without blocking).
    pub fn drain(&self) -> u64 {
        let mut buf = vec![0u8; 70_000];
        let mut n = 0;
        while self.sock.try_recv_from(&mut buf).is_ok() {
            n += 1;
        }
        n
    }

    pub async fn send(&self, to: SocketAddr, data: &[u8]) {
        self.sock.send_to(data, to).await.unwrap();
    }
}
