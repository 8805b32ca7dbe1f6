//! A TCP proxy on 127.0.0.1 that can hold back the server's replies: a slow
//! server on demand (the requests still reach it at once).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The proxy; dropping it does not stop it (the test process ends it).
pub struct TcpProxy {
    pub addr: SocketAddr,
    held: Arc<(AtomicBool, Notify)>,
}

impl TcpProxy {
    /// Forward 127.0.0.1:<ephemeral> to `server`.
    pub async fn start(server: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = Arc::new((AtomicBool::new(false), Notify::new()));
        let h = Arc::clone(&held);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(server).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = upstream.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut uw).await;
                });
                let h = Arc::clone(&h);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match ur.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        while h.0.load(Ordering::SeqCst) {
                            let released = h.1.notified();
                            if !h.0.load(Ordering::SeqCst) {
                                break;
                            }
                            released.await;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        TcpProxy { addr, held }
    }

    /// Hold the server's replies until [`TcpProxy::release`].
    pub fn hold(&self) {
        self.held.0.store(true, Ordering::SeqCst);
    }

    /// Let held and further replies through.
    pub fn release(&self) {
        self.held.0.store(false, Ordering::SeqCst);
        self.held.1.notify_waiters();
    }
}
