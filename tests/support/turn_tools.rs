//! Real STUN/TURN clients for the relay's tests: coturn's `turnutils_*`
//! tools and aioice (a Python TURN client, `tests/support/aioice_turn.py`),
//! run as child processes against a server on 127.0.0.1.
//!
//! Everything here stays on the loopback: every tool gets `-L 127.0.0.1`
//! (local address), peers are `turnutils_peer -L 127.0.0.1` on ephemeral
//! ports, and `turnutils_uclient`'s `-G` (extra ChannelBinds and
//! CreatePermissions to made-up public addresses such as 164.156.178.190) is
//! never passed. Every run has a deadline: a hung tool is killed and the
//! call fails, it never hangs the test.
//!
//! The calls block (they wait for a child process); from a `#[tokio::test]`
//! call them through `tokio::task::spawn_blocking` when the server under test
//! runs on the same runtime, or use a multi-threaded runtime.
//!
//! Quirks of the tools a server must cope with (found against coturn 4.6.1
//! and aioice 0.13.0, see the report in the relay work):
//! - `turnutils_uclient` picks its ChannelBind numbers at random in
//!   0x4000–0x7FFF (RFC 5766's range; RFC 8656 allows 0x4000–0x4FFF), sends
//!   EVEN-PORT (R=0) in about half of its Allocates even with `-c`, always
//!   sends REQUESTED-ADDRESS-FAMILY (IPv4) and FINGERPRINT, and makes a
//!   throw-away "probe" allocation per client that it never deletes.
//! - `turnutils_peer -p P` binds P and P+1 (an RTCP port) and echoes on both.
//! - `turnutils_stunclient` waits forever when no answer comes.
#![allow(dead_code)]

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Finding the programs
// ---------------------------------------------------------------------------

/// How to get a missing program, for the panic message.
fn install_hint(name: &str) -> &'static str {
    match name {
        "python" => {
            "./scripts/test.sh creates the venv (or by hand: /usr/bin/python3 -m venv target/test-venv && \
             target/test-venv/bin/pip install aioice==0.13.0), and exports AETHER_TEST_PYTHON"
        }
        _ => "./scripts/test.sh installs it (or by hand: apt-get install coturn)",
    }
}

/// Fail loudly for a missing tool: a relay test never passes without its
/// real client. Under CI (`CI=true`) that is a broken CI setup; locally the
/// message says how to install it. (Like `redis.rs`: it panics either way.)
fn missing(name: &str, detail: &str) -> ! {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if ci {
        panic!(
            "{name} not found ({detail}): CI=true and the relay tests need it; the CI setup must run \
             ./scripts/test.sh, which installs it ({})",
            install_hint(name)
        );
    }
    panic!(
        "{name} not found ({detail}): this test drives a real STUN/TURN client. {}",
        install_hint(name)
    );
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The full path of a program from PATH, /usr/bin or /usr/local/bin.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// A coturn tool (`turnutils_uclient`, `turnutils_peer`,
/// `turnutils_stunclient`); panics when it is not installed.
pub fn coturn_tool(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| missing(name, "not in PATH, /usr/bin or /usr/local/bin"))
}

/// The Python interpreter of the aioice venv: `$AETHER_TEST_PYTHON`, else
/// `target/test-venv/bin/python`. Panics unless it runs and imports aioice.
pub fn python() -> PathBuf {
    let p = std::env::var_os("AETHER_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python")
        });
    let ok = Command::new(&p)
        .args(["-c", "import aioice.turn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        missing(
            "python",
            &format!("{} does not run or cannot import aioice", p.display()),
        );
    }
    p
}

/// `tests/support/aioice_turn.py`.
pub fn aioice_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/aioice_turn.py")
}

// ---------------------------------------------------------------------------
// Running a tool with a deadline
// ---------------------------------------------------------------------------

/// What a finished (or killed) tool run left.
#[derive(Debug, Clone)]
pub struct ToolRun {
    /// The command line, for messages.
    pub command: String,
    /// `None` when the run was killed at its deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl ToolRun {
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// A message with everything the tool said.
    pub fn describe(&self) -> String {
        let status = match self.status {
            Some(s) => format!("exited with {s}"),
            None => format!("killed at its deadline after {:?}", self.elapsed),
        };
        format!(
            "`{}` {status}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.stdout, self.stderr
        )
    }
}

fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run `cmd` to completion, killing it when `deadline` passes. Output is
/// drained by threads so a chatty tool never blocks on a full pipe.
pub fn run_with_deadline(mut cmd: Command, deadline: Duration) -> ToolRun {
    let command = command_line(&cmd);
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn `{command}`: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the tool") {
            break Some(s);
        }
        if start.elapsed() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        // A poll interval for the exit, not synchronisation: the exit is re-read.
        std::thread::sleep(Duration::from_millis(5));
    };
    ToolRun {
        command,
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

// ---------------------------------------------------------------------------
// turnutils_peer: the UDP echo peer
// ---------------------------------------------------------------------------

/// A `turnutils_peer` echoing UDP on 127.0.0.1, killed on drop.
///
/// Started as `turnutils_peer -L 127.0.0.1 -p <port>`: `-L` keeps it on the
/// loopback (without it it listens on every address), `-p` is its UDP port.
/// It also binds `<port>+1` (the RTCP port `turnutils_uclient` uses without
/// `-c`), so both ports are checked free first. It prints nothing when
/// ready; readiness is an echoed probe datagram.
pub struct EchoPeer {
    child: Child,
    /// The echo address (`127.0.0.1:<port>`); `<port>+1` echoes too.
    pub addr: SocketAddr,
}

/// A UDP port on 127.0.0.1 free together with the next one.
fn free_udp_port_pair() -> u16 {
    for _ in 0..100 {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free pair of UDP ports on 127.0.0.1");
}

/// True when `addr` echoes a probe within `wait`.
pub fn udp_echoes(addr: SocketAddr, wait: Duration) -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let probe = b"aether-echo-probe";
    if s.send_to(probe, addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.recv_from(&mut buf), Ok((n, from)) if from == addr && &buf[..n] == probe)
}

impl EchoPeer {
    /// Start on a free port pair and wait (10 s deadline) until it echoes.
    pub fn start() -> EchoPeer {
        let bin = coturn_tool("turnutils_peer");
        for _ in 0..10 {
            let port = free_udp_port_pair();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let mut child = Command::new(&bin)
                .args(["-L", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn turnutils_peer");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut up = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // lost the port race: try another
                }
                // Each probe waits up to 50 ms for its echo, so this loop
                // is paced by the readiness check itself.
                if udp_echoes(addr, Duration::from_millis(50)) {
                    up = true;
                    break;
                }
            }
            if up {
                return EchoPeer { child, addr };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("turnutils_peer did not start echoing on a free port");
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// turnutils_stunclient: one Binding request
// ---------------------------------------------------------------------------

/// What `turnutils_stunclient` saw.
#[derive(Debug, Clone)]
pub struct StunBinding {
    /// XOR-MAPPED-ADDRESS of the Binding success response.
    pub mapped: SocketAddr,
    /// The server sent OTHER-ADDRESS (RFC 5780), and the tool then made two
    /// more requests (RESPONSE-PORT, CHANGE-REQUEST, PADDING).
    pub rfc5780: bool,
    pub run: ToolRun,
}

/// Run `turnutils_stunclient -L 127.0.0.1 -p <port> <ip>` (deadline 10 s).
///
/// Flags: `-L` binds the client socket to 127.0.0.1 (a random port), `-p` is
/// the server's port; `-f` (force the RFC 5780 requests) is not used. The
/// tool sends one Binding request over UDP without attributes (no
/// FINGERPRINT, no credentials), never retransmits, and blocks until an
/// answer comes, hence the deadline. It exits 0 even on an error response,
/// so the output is what decides: `UDP reflexive addr: <ip>:<port>` on
/// success, `The response is an error <code> (<reason>)` otherwise.
pub fn stun_binding(server: SocketAddr) -> Result<StunBinding, String> {
    let mut cmd = Command::new(coturn_tool("turnutils_stunclient"));
    cmd.args(["-L", "127.0.0.1", "-p", &server.port().to_string()])
        .arg(server.ip().to_string());
    let run = run_with_deadline(cmd, Duration::from_secs(10));
    if !run.success() {
        return Err(run.describe());
    }
    let mapped = run
        .stdout
        .lines()
        .filter_map(|l| l.split_once("UDP reflexive addr:").map(|(_, a)| a.trim()))
        .next()
        .and_then(|a| a.parse::<SocketAddr>().ok());
    match mapped {
        Some(mapped) => Ok(StunBinding {
            mapped,
            rfc5780: run.stdout.contains("RFC 5780 response"),
            run,
        }),
        None => Err(format!(
            "no reflexive address in the output: {}",
            run.describe()
        )),
    }
}

// ---------------------------------------------------------------------------
// turnutils_uclient: a relayed flow to the echo peer and back
// ---------------------------------------------------------------------------

/// Credentials for `turnutils_uclient`.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A static long-term user: `-u <name> -w <password>`.
    LongTerm { user: String, password: String },
    /// TURN REST credentials: `-u <user> -W <secret>`; the tool makes the
    /// username `<now + 86400>:<user>` (one day ahead, fixed in the tool) and
    /// the password base64(HMAC-SHA1(secret, username)).
    Rest { user: String, secret: String },
}

/// One `turnutils_uclient` run.
#[derive(Debug, Clone)]
pub struct Uclient {
    pub server: SocketAddr,
    /// The echo peer (`-e <ip> -r <port>`).
    pub peer: SocketAddr,
    pub credentials: Credentials,
    /// `-t`: TCP to the server (the relayed side stays UDP).
    pub tcp: bool,
    /// `-s`: Send/Data indications instead of ChannelData.
    pub send_indications: bool,
    /// `-m`: concurrent clients (allocations), each sending `messages`.
    pub clients: u32,
    /// `-n`: messages per client.
    pub messages: u32,
    /// `-l`: message length in bytes (at least 16: the tool's
    /// sequence number + send time).
    pub length: u32,
    /// `-z`: milliseconds between a client's messages.
    pub interval_ms: u32,
    /// Killed after this; `None`: 25 s + the sending time.
    pub deadline: Option<Duration>,
}

impl Uclient {
    /// A UDP, ChannelData run of alice/alicepass: 1 client, 20 × 100 B every 5 ms.
    pub fn new(server: SocketAddr, peer: SocketAddr) -> Uclient {
        Uclient {
            server,
            peer,
            credentials: Credentials::LongTerm {
                user: "alice".into(),
                password: "alicepass".into(),
            },
            tcp: false,
            send_indications: false,
            clients: 1,
            messages: 20,
            length: 100,
            interval_ms: 5,
            deadline: None,
        }
    }

    /// The argument list.
    ///
    /// Always `-L 127.0.0.1` (client sockets on the loopback) and `-c` (no
    /// second "RTCP" allocation per client, which would talk to the peer's
    /// port+1 and ask for EVEN-PORT with R=1 + RESERVATION-TOKEN). Never `-G`
    /// (extra requests toward made-up public addresses) nor `-y`/`-T`/`-S`.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["-L", "127.0.0.1", "-c"].map(String::from).to_vec();
        if self.tcp {
            a.push("-t".into());
        }
        if self.send_indications {
            a.push("-s".into());
        }
        a.extend([
            "-e".into(),
            self.peer.ip().to_string(),
            "-r".into(),
            self.peer.port().to_string(),
            "-m".into(),
            self.clients.to_string(),
            "-n".into(),
            self.messages.to_string(),
            "-l".into(),
            self.length.to_string(),
            "-z".into(),
            self.interval_ms.to_string(),
        ]);
        match &self.credentials {
            Credentials::LongTerm { user, password } => {
                a.extend(["-u".into(), user.clone(), "-w".into(), password.clone()])
            }
            Credentials::Rest { user, secret } => {
                a.extend(["-u".into(), user.clone(), "-W".into(), secret.clone()])
            }
        }
        a.extend([
            "-p".into(),
            self.server.port().to_string(),
            self.server.ip().to_string(),
        ]);
        a
    }

    /// Run it and parse its summary; `Err` (with all its output) when it
    /// failed, timed out or printed no summary. Loss is not an error here:
    /// check `report.lost`.
    pub fn run(&self) -> Result<UclientReport, String> {
        assert!(
            self.server.ip().is_loopback() && self.peer.ip().is_loopback(),
            "the relay tests stay on the loopback"
        );
        let sending = Duration::from_millis(u64::from(self.messages) * u64::from(self.interval_ms));
        // Connect, the tool's random 1–6 s start delay per client, sending,
        // and its 10 s wait for stragglers when something was lost.
        let deadline = self.deadline.unwrap_or(Duration::from_secs(25) + sending);
        let mut cmd = Command::new(coturn_tool("turnutils_uclient"));
        cmd.args(self.args());
        let run = run_with_deadline(cmd, deadline);
        if !run.success() {
            return Err(run.describe());
        }
        UclientReport::parse(&run.stdout)
            .map(|r| UclientReport {
                run: Some(run.clone()),
                ..r
            })
            .ok_or_else(|| format!("no summary in the output: {}", run.describe()))
    }
}

/// `turnutils_uclient`'s closing summary. Its times are whole milliseconds
/// (taken from the wall clock), so on the loopback the round trip is
/// usually 0–1 ms: use aioice's `rtt_us` for real latency figures.
#[derive(Debug, Clone, Default)]
pub struct UclientReport {
    /// `tot_send_msgs`: messages sent by all clients.
    pub sent: u64,
    /// `tot_recv_msgs`: echoes received back.
    pub received: u64,
    pub sent_bytes: u64,
    pub received_bytes: u64,
    /// `Total lost packets` = sent − received.
    pub lost: u64,
    pub loss_percent: f64,
    /// Sends the socket refused (`total send dropped`).
    pub send_dropped: u64,
    /// `Average round trip delay … ms; min = … ms, max = … ms`.
    pub rtt_avg_ms: f64,
    pub rtt_min_ms: u64,
    pub rtt_max_ms: u64,
    /// `Average jitter`: |arrival gap − `-z`| in ms.
    pub jitter_avg_ms: f64,
    pub jitter_max_ms: u64,
    /// `Total transmit time is N` (whole seconds, from the end of connecting).
    pub transmit_time_s: u64,
    /// Lines mentioning an error (`channel bind: error 403 (Forbidden IP)`,
    /// `Wrong integrity in a message received from server`, …).
    pub error_lines: Vec<String>,
    pub run: Option<ToolRun>,
}

/// The first number in `s` (digits, optionally with a fraction or `nan`).
fn num(s: &str) -> Option<f64> {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
        .unwrap_or(s.len());
    let t = &s[..end];
    t.parse::<f64>()
        .ok()
        .or_else(|| t.to_ascii_lowercase().contains("nan").then_some(f64::NAN))
}

/// The last line containing `key`.
fn last_line<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().rev().find(|l| l.contains(key))
}

/// The number after `key` on the last line containing `key`.
fn after(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .rev()
        .find_map(|l| l.split_once(key).and_then(|(_, rest)| num(rest)))
}

impl UclientReport {
    /// Parse the summary lines (each line is prefixed by `<secs>: : `, and
    /// some are printed twice; the last one counts).
    pub fn parse(out: &str) -> Option<UclientReport> {
        // The closing totals line has no `msz=` (the progress lines do).
        let totals = last_line(out, "start_mclient: tot_send_msgs=")?;
        let lost = last_line(out, "Total lost packets ")?;
        let rtt = last_line(out, "Average round trip delay ")?;
        let jitter = last_line(out, "Average jitter ").unwrap_or("");
        let int = |v: Option<f64>| v.map(|x| x as u64);
        Some(UclientReport {
            sent: int(after(totals, "tot_send_msgs="))?,
            received: int(after(totals, "tot_recv_msgs="))?,
            sent_bytes: int(after(out, "start_mclient: tot_send_bytes ~ ")).unwrap_or(0),
            received_bytes: int(after(out, ", tot_recv_bytes ~ ")).unwrap_or(0),
            lost: int(after(lost, "Total lost packets "))?,
            loss_percent: after(lost, "(").unwrap_or(f64::NAN),
            send_dropped: int(after(lost, "total send dropped ")).unwrap_or(0),
            rtt_avg_ms: after(rtt, "Average round trip delay ")?,
            rtt_min_ms: int(after(rtt, "min = ")).unwrap_or(0),
            rtt_max_ms: int(after(rtt, "max = ")).unwrap_or(0),
            jitter_avg_ms: after(jitter, "Average jitter ").unwrap_or(f64::NAN),
            jitter_max_ms: int(after(jitter, "max = ")).unwrap_or(0),
            transmit_time_s: int(after(out, "Total transmit time is ")).unwrap_or(0),
            error_lines: out
                .lines()
                .filter(|l| l.to_ascii_lowercase().contains("error"))
                .map(str::to_owned)
                .collect(),
            run: None,
        })
    }

    /// Panic with the whole output unless every message came back.
    pub fn assert_no_loss(&self) {
        assert!(
            self.sent > 0 && self.lost == 0 && self.received == self.sent,
            "turnutils_uclient lost messages: {self:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// aioice: tests/support/aioice_turn.py
// ---------------------------------------------------------------------------

/// Credentials for the aioice script.
#[derive(Debug, Clone)]
pub enum AioiceCredentials {
    /// `--username <user> --password <password>`.
    LongTerm { user: String, password: String },
    /// `--rest-secret <secret> --rest-user <user> --rest-ttl <ttl>`: the
    /// script makes `<now + ttl>:<user>` and base64(HMAC-SHA1(secret, it)).
    Rest {
        user: String,
        secret: String,
        ttl_seconds: u64,
    },
}

/// One aioice allocation + echo run.
#[derive(Debug, Clone)]
pub struct Aioice {
    pub server: SocketAddr,
    pub peer: SocketAddr,
    pub credentials: AioiceCredentials,
    /// TCP to the server instead of UDP (the relayed side stays UDP).
    pub tcp: bool,
    pub count: u32,
    pub size: u32,
    pub interval_ms: f64,
    /// The script's own wait for each step, seconds.
    pub step_timeout_s: f64,
}

/// The script's JSON line.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AioiceReport {
    pub ok: bool,
    pub transport: String,
    #[serde(default)]
    pub relayed_address: Option<String>,
    #[serde(default)]
    pub mapped_address: Option<String>,
    #[serde(default)]
    pub sent: u64,
    #[serde(default)]
    pub received: u64,
    #[serde(default)]
    pub lost: u64,
    #[serde(default)]
    pub duplicates: u64,
    /// The allocation was deleted (Refresh LIFETIME 0 answered).
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub errors: Vec<String>,
    #[serde(default)]
    pub rtt_us: Option<RttUs>,
    #[serde(default)]
    pub username: Option<String>,
    /// The process's exit code (0 only when `ok`).
    #[serde(skip)]
    pub exit_code: Option<i32>,
}

/// Per-datagram round trips through the relay, microseconds.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct RttUs {
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl AioiceReport {
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.relayed_address.as_deref()?.parse().ok()
    }

    pub fn mapped(&self) -> Option<SocketAddr> {
        self.mapped_address.as_deref()?.parse().ok()
    }
}

impl Aioice {
    /// UDP, alice/alicepass, 10 × 100 B every 10 ms.
    pub fn new(server: SocketAddr, peer: SocketAddr) -> Aioice {
        Aioice {
            server,
            peer,
            credentials: AioiceCredentials::LongTerm {
                user: "alice".into(),
                password: "alicepass".into(),
            },
            tcp: false,
            count: 10,
            size: 100,
            interval_ms: 10.0,
            step_timeout_s: 5.0,
        }
    }

    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            aioice_script().display().to_string(),
            "--server".into(),
            self.server.to_string(),
            "--transport".into(),
            if self.tcp { "tcp" } else { "udp" }.into(),
            "--peer".into(),
            self.peer.to_string(),
            "--count".into(),
            self.count.to_string(),
            "--size".into(),
            self.size.to_string(),
            "--interval-ms".into(),
            self.interval_ms.to_string(),
            "--timeout".into(),
            self.step_timeout_s.to_string(),
        ];
        match &self.credentials {
            AioiceCredentials::LongTerm { user, password } => a.extend([
                "--username".into(),
                user.clone(),
                "--password".into(),
                password.clone(),
            ]),
            AioiceCredentials::Rest {
                user,
                secret,
                ttl_seconds,
            } => a.extend([
                "--rest-secret".into(),
                secret.clone(),
                "--rest-user".into(),
                user.clone(),
                "--rest-ttl".into(),
                ttl_seconds.to_string(),
            ]),
        }
        a
    }

    /// Run the script (deadline: its steps plus the sending time plus 20 s)
    /// and parse its JSON line. `Err` only when there is no JSON line (it
    /// crashed or was killed); a refused allocation or lost datagrams come
    /// back as `Ok` with `ok == false` and the reasons in `errors`.
    pub fn run(&self) -> Result<AioiceReport, String> {
        assert!(
            self.server.ip().is_loopback() && self.peer.ip().is_loopback(),
            "the relay tests stay on the loopback"
        );
        let sending = Duration::from_secs_f64(f64::from(self.count) * self.interval_ms / 1000.0);
        let deadline =
            Duration::from_secs_f64(self.step_timeout_s * 3.0) + sending + Duration::from_secs(20);
        let mut cmd = Command::new(python());
        cmd.args(self.args());
        let run = run_with_deadline(cmd, deadline);
        let line = run
            .stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'));
        let Some(line) = line else {
            return Err(format!("no JSON line: {}", run.describe()));
        };
        let mut report: AioiceReport = serde_json::from_str(line)
            .map_err(|e| format!("bad JSON line ({e}): {}", run.describe()))?;
        report.exit_code = run.status.and_then(|s| s.code());
        Ok(report)
    }
}

/// Write `bytes` to a fresh UDP socket toward `addr` and return the first
/// answer within `wait` (for hand-made STUN requests next to the tools).
pub fn udp_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.send_to(bytes, addr).ok()?;
    let mut buf = vec![0u8; 65536];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}
