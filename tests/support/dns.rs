//! A small authoritative DNS server on 127.0.0.1 (UDP and TCP on one port)
//! whose records, failure mode and SRV glue the test changes while it runs,
//! and which counts the queries it receives.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// From the records (NXDOMAIN for an unknown name, NODATA for a missing type).
    Answer,
    /// SERVFAIL to everything.
    ServFail,
    /// REFUSED to everything.
    Refused,
    /// Count the query, send nothing (the client times out).
    Silent,
}

/// An A record.
pub fn a(name: &str, ip: &str, ttl: u32) -> Record {
    Record::from_rdata(fqdn(name), ttl, RData::A(A(ip.parse().unwrap())))
}

/// An AAAA record.
pub fn aaaa(name: &str, ip: &str, ttl: u32) -> Record {
    Record::from_rdata(fqdn(name), ttl, RData::AAAA(AAAA(ip.parse().unwrap())))
}

/// An SRV record.
pub fn srv(name: &str, priority: u16, weight: u16, port: u16, target: &str, ttl: u32) -> Record {
    Record::from_rdata(
        fqdn(name),
        ttl,
        RData::SRV(SRV::new(priority, weight, port, fqdn(target))),
    )
}

fn fqdn(name: &str) -> Name {
    let mut n = Name::from_ascii(name).unwrap();
    n.set_fqdn(true);
    n
}

/// One query as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Lower-case, without the trailing dot.
    pub name: String,
    pub record_type: RecordType,
}

struct State {
    records: Vec<Record>,
    mode: Mode,
    /// Put the SRV targets' A/AAAA records in the additional section.
    srv_glue: bool,
    log: Vec<Seen>,
}

/// The running server; stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    count: watch::Receiver<usize>,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Start with these records, answering normally, with SRV glue.
    pub async fn start(records: Vec<Record>) -> DnsServer {
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            records,
            mode: Mode::Answer,
            srv_glue: true,
            log: Vec::new(),
        }));
        let (count_tx, count) = watch::channel(0usize);
        let count_tx = Arc::new(count_tx);
        let udp_task = tokio::spawn(serve_udp(udp, state.clone(), count_tx.clone()));
        let tcp_task = tokio::spawn(serve_tcp(tcp, state.clone(), count_tx));
        DnsServer {
            addr,
            state,
            count,
            tasks: vec![udp_task, tcp_task],
        }
    }

    /// Where to send queries (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replace every record.
    pub fn set_records(&self, records: Vec<Record>) {
        self.state.lock().unwrap().records = records;
    }

    /// Change how the server answers.
    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// Whether SRV answers carry their targets' addresses as additional records.
    pub fn set_srv_glue(&self, glue: bool) {
        self.state.lock().unwrap().srv_glue = glue;
    }

    /// Queries received so far (answered or not).
    pub fn queries(&self) -> usize {
        *self.count.borrow()
    }

    /// Every query received so far, in order.
    pub fn log(&self) -> Vec<Seen> {
        self.state.lock().unwrap().log.clone()
    }

    /// Wait until at least `n` queries have been received, or panic after `deadline`.
    pub async fn wait_queries(&self, n: usize, deadline: Duration) {
        let mut rx = self.count.clone();
        tokio::time::timeout(deadline, rx.wait_for(|&c| c >= n))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the DNS server saw {} queries within {deadline:?}, expected {n}",
                    self.queries()
                )
            })
            .expect("DNS server running");
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A UDP socket and a TCP listener on the same 127.0.0.1 port, so a client
/// that falls back to TCP reaches this server and nothing else.
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
            return (udp, tcp);
        }
    }
    panic!("no 127.0.0.1 port free for both UDP and TCP");
}

async fn serve_udp(socket: UdpSocket, state: Arc<Mutex<State>>, count: Arc<watch::Sender<usize>>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(reply) = handle(&buf[..n], &state, &count) {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    state: Arc<Mutex<State>>,
    count: Arc<watch::Sender<usize>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_tcp_conn(stream, state.clone(), count.clone()));
    }
}

async fn serve_tcp_conn(
    mut stream: TcpStream,
    state: Arc<Mutex<State>>,
    count: Arc<watch::Sender<usize>>,
) {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut msg).await.is_err() {
            return;
        }
        if let Some(reply) = handle(&msg, &state, &count) {
            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            if stream.write_all(&framed).await.is_err() {
                return;
            }
        }
    }
}

fn key(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// The reply to one query, or `None` to stay silent.
fn handle(bytes: &[u8], state: &Mutex<State>, count: &watch::Sender<usize>) -> Option<Vec<u8>> {
    let request = Message::from_vec(bytes).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut state = state.lock().unwrap();
    let query = request.queries.first()?.clone();
    state.log.push(Seen {
        name: key(query.name()),
        record_type: query.query_type(),
    });
    count.send_modify(|c| *c += 1);

    let mut reply = Message::response(request.metadata.id, OpCode::Query);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.add_query(query.clone());
    match state.mode {
        Mode::Silent => return None,
        Mode::ServFail => reply.metadata.response_code = ResponseCode::ServFail,
        Mode::Refused => reply.metadata.response_code = ResponseCode::Refused,
        Mode::Answer => {
            let qname = key(query.name());
            let answers: Vec<Record> = state
                .records
                .iter()
                .filter(|r| key(&r.name) == qname && r.record_type() == query.query_type())
                .cloned()
                .collect();
            if !state.records.iter().any(|r| key(&r.name) == qname) {
                reply.metadata.response_code = ResponseCode::NXDomain;
            }
            if state.srv_glue {
                let targets: Vec<String> = answers
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::SRV(s) => Some(key(&s.target)),
                        _ => None,
                    })
                    .collect();
                let glue = state.records.iter().filter(|r| {
                    matches!(r.data, RData::A(_) | RData::AAAA(_))
                        && targets.contains(&key(&r.name))
                });
                reply.add_additionals(glue.cloned());
            }
            reply.add_answers(answers);
        }
    }
    reply.to_vec().ok()
}
