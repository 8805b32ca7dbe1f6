//! Upgraded (WebSocket) connections: bytes copied both ways until either
//! side closes or nothing moves for the idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Bytes a tunnel carried each way, counted as they are read (so a tunnel
/// cut by the idle timeout or the drain deadline still has its figures).
#[derive(Debug, Default)]
pub struct Carried {
    /// From the client to the upstream.
    pub up: AtomicU64,
    /// From the upstream to the client.
    pub down: AtomicU64,
}

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// One side closed (the other was then closed too).
    Closed,
    /// Nothing moved either way for the idle timeout.
    Idle,
}

/// Copy between `client` and `upstream` until one closes, or both have been
/// silent for `idle`; `carried` counts the bytes.
///
/// # Errors
/// An I/O error from either side.
pub async fn run<C, U>(
    client: C,
    upstream: U,
    idle: Duration,
    carried: &Carried,
) -> io::Result<Ended>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Watched {
        io: client,
        start,
        last: Arc::clone(&last),
        read: &carried.up,
    };
    let mut upstream = Watched {
        io: upstream,
        start,
        last: Arc::clone(&last),
        read: &carried.down,
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    loop {
        let deadline = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
        tokio::select! {
            r = &mut copy => return r.map(|_| Ended::Closed),
            _ = tokio::time::sleep_until(deadline) => {
                let quiet_since = start + Duration::from_millis(last.load(Ordering::Relaxed));
                if quiet_since.elapsed() >= idle {
                    tracing::debug!(?idle, "tunnel idle: closing");
                    return Ok(Ended::Idle);
                }
            }
        }
    }
}

/// An I/O object that records when bytes last moved through it, and
/// counts the bytes read from it.
struct Watched<'a, T> {
    io: T,
    start: Instant,
    last: Arc<AtomicU64>,
    read: &'a AtomicU64,
}

impl<T> Watched<'_, T> {
    fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.touch();
            this.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
