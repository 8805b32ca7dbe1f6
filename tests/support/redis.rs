//! A real `redis-server` on a 127.0.0.1 ephemeral port, owned by one test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `redis-server` binary; a test that needs it fails when it is missing
/// (the README's test command installs it).
fn binary() -> String {
    for p in [
        "redis-server",
        "/usr/bin/redis-server",
        "/usr/local/bin/redis-server",
    ] {
        if Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return p.to_owned();
        }
    }
    panic!(
        "redis-server not found: this test needs a real Redis (./scripts/test.sh installs it: apt-get install redis-server)"
    );
}

/// A running `redis-server` that is killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// Start `redis-server` on `addr`; `None` when it does not come up (the
/// port was taken between the probe and its bind).
fn spawn(dir: &std::path::Path, addr: SocketAddr) -> Option<Child> {
    let mut child = Command::new(binary())
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &addr.port().to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if ping(addr) {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl RedisServer {
    /// Start on a free port and wait until it answers PING.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..10 {
            let addr = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap()
            };
            if let Some(child) = spawn(dir.path(), addr) {
                return RedisServer {
                    child: Some(child),
                    addr,
                    dir,
                };
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// True when the server answers PING now.
    pub fn ping(&self) -> bool {
        ping(self.addr)
    }

    /// Send one command (inline form) and return the raw reply.
    pub fn command(&self, cmd: &str) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kill the server (SIGKILL: an outage, not a shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.ping() {
            assert!(Instant::now() < deadline, "redis still answers after kill");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Start it again on the same port (its data is gone, as after a crash
    /// without persistence).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill first");
        self.child = Some(
            spawn(self.dir.path(), self.addr)
                .unwrap_or_else(|| panic!("redis-server restarts on {}", self.addr)),
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
