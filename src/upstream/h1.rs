//! Our HTTP/1.1 client for plain requests to HTTP/1.1 upstreams, driven in
//! the request's own task.
//!
//! hyper's client runs each connection as a task of its own and hands the
//! request over a channel and the response back over a oneshot; with the
//! codec here the request's task writes the head, reads the response head
//! and then the response body reads the socket itself, so a proxied request
//! costs no task hand-off and no second dispatcher. WebSocket upgrades and
//! h2c upstreams still go through hyper (`pool.rs`).
//!
//! Framing is RFC 9112 §6.3, strictly: a connection is reused only when the
//! response's end was certain (a single valid `Content-Length`, or `chunked`
//! without a `Content-Length`, or no body by status or method) and nothing
//! followed it. Everything ambiguous is refused (502) or ends the connection.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use crate::tls::upstream::UpstreamStream;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncWrite, ReadBuf};

use super::pool::{Pool, UpstreamError};
use crate::body::RequestBody;
use crate::dispatch::headers::AddedFields;

/// Response heads larger than this are refused (hyper's client allowed
/// ~400 KiB of buffer; no upstream of ours sends more than a few KiB).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Header fields in a response head (or its trailers) at most: hyper's default.
pub const MAX_HEADERS: usize = 100;
/// Interim (1xx) responses skipped before the final one at most.
pub const MAX_INTERIM: usize = 8;
/// A chunk-size line (with extensions) longer than this is refused.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Trailer section size at most.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Bytes reserved for a read when the buffer has less room than `MIN_READ`.
const READ_SIZE: usize = 16 * 1024;
const MIN_READ: usize = 2048;
/// Body data up to this size is copied next to its framing (one write);
/// larger pieces are written from their own buffer.
const COPY_DATA: usize = 8 * 1024;
/// A write buffer grown past this by one large head is not kept pooled.
const KEEP_WBUF: usize = 64 * 1024;

/// Why an upstream response could not be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// httparse refused the head.
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    /// The head did not end within [`MAX_HEAD_BYTES`].
    #[error("response head too large")]
    HeadTooLarge,
    /// More than [`MAX_INTERIM`] 1xx responses.
    #[error("too many interim responses")]
    TooManyInterim,
    /// `101 Switching Protocols` to a request that asked for no upgrade.
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedSwitch,
    /// A `Content-Length` that is not one decimal number, or several differing ones.
    #[error("invalid Content-Length")]
    ContentLength,
    /// A transfer-coding other than a single `chunked` (or any on HTTP/1.0).
    #[error("unsupported Transfer-Encoding")]
    TransferEncoding,
    /// A malformed chunk-size line or a chunk not followed by CRLF.
    #[error("invalid chunk")]
    Chunk,
    /// Malformed or oversized trailers.
    #[error("invalid trailers")]
    Trailers,
    /// The connection closed before the framing said the body ends.
    #[error("upstream closed before the body ended")]
    Truncated,
    /// The connection closed before a complete response head.
    #[error("upstream closed before a response head")]
    NoResponse,
}

/// How the body of a response is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: HEAD, 1xx, 204, 304 (or `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// Where one header field lies in the head buffer.
#[derive(Debug, Clone, Copy, Default)]
pub struct FieldIdx {
    name: (u32, u32),
    value: (u32, u32),
}

/// A parsed response head, final or interim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, final CRLF included.
    pub len: usize,
    /// The status code.
    pub status: u16,
    /// How the body is delimited.
    pub framing: Framing,
    /// The connection may carry another request once the body has ended.
    pub reusable: bool,
    /// Header fields (their places in `FieldIdx`).
    pub fields: usize,
    /// A `Content-Length` field must not be forwarded (chunked won) or
    /// several must become one.
    pub rewrite_length: bool,
    /// Every hop-by-hop field of the head is one of the fixed names
    /// (`Connection` names nothing but `keep-alive`/`close`, no `TE`), so
    /// they can be dropped by name as the header map is built.
    pub hop_by_hop_by_name: bool,
}

/// Parse a response head at the start of `buf` (`Ok(None)`: incomplete).
///
/// `head_request`: the request was HEAD (no body whatever the head says).
///
/// # Errors
/// Any framing the module refuses (see [`FramingError`]).
pub fn parse_head(
    buf: &[u8],
    head_request: bool,
    idx: &mut [FieldIdx; MAX_HEADERS],
) -> Result<Option<Head>, FramingError> {
    let mut fields = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(FramingError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(FramingError::Head(e)),
    };
    if len > MAX_HEAD_BYTES {
        return Err(FramingError::HeadTooLarge);
    }
    let status = res.code.unwrap_or(0);
    let http10 = res.version == Some(0);
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
    let mut length: Option<u64> = None;
    let mut lengths = 0usize;
    let mut chunked = false;
    let mut codings = 0usize;
    let mut close = http10;
    let mut hop_by_hop_by_name = true;
    for (i, f) in res.headers.iter().enumerate() {
        let name = f.name.as_bytes();
        idx[i] = FieldIdx {
            name: (at(name), name.len() as u32),
            value: (at(f.value), f.value.len() as u32),
        };
        if name.eq_ignore_ascii_case(b"content-length") {
            for item in f.value.split(|&b| b == b',') {
                let n = parse_length(item.trim_ascii()).ok_or(FramingError::ContentLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(FramingError::ContentLength);
                }
                length = Some(n);
                lengths += 1;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for item in f.value.split(|&b| b == b',') {
                let item = item.trim_ascii();
                // Empty list elements are allowed (RFC 9110 §5.6.1).
                if item.is_empty() {
                    continue;
                }
                codings += 1;
                chunked = item.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for item in f.value.split(|&b| b == b',') {
                let item = item.trim_ascii();
                if item.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !item.is_empty() && !item.eq_ignore_ascii_case(b"keep-alive") {
                    hop_by_hop_by_name = false;
                }
            }
        } else if name.eq_ignore_ascii_case(b"te") {
            // `TE: trailers` is kept: the header-hygiene pass decides.
            hop_by_hop_by_name = false;
        }
    }
    let fields = res.headers.len();
    let mut head = Head {
        len,
        status,
        framing: Framing::Empty,
        reusable: !close,
        fields,
        rewrite_length: false,
        hop_by_hop_by_name,
    };
    if (100..200).contains(&status) {
        if status == 101 {
            return Err(FramingError::UnexpectedSwitch);
        }
        // Interim: no body; the final response follows on this connection.
        return Ok(Some(head));
    }
    let transfer = codings > 0;
    if transfer && http10 {
        // RFC 9112 §6.1: HTTP/1.0 with Transfer-Encoding is faulty framing.
        return Err(FramingError::TransferEncoding);
    }
    if head_request || status == 204 || status == 304 {
        // No body whatever the fields say; a 204/304 that announces one
        // may send it anyway, so such a connection is not trusted again.
        if (status == 204 || status == 304) && (transfer || length.is_some_and(|n| n > 0)) {
            head.reusable = false;
        }
        return Ok(Some(head));
    }
    if transfer {
        // Only a single `chunked` is a coding we can decode and re-frame.
        if codings != 1 || !chunked {
            return Err(FramingError::TransferEncoding);
        }
        head.framing = Framing::Chunked;
        if length.is_some() {
            // §6.3 item 3: chunked wins, but the sender is suspect.
            head.reusable = false;
            head.rewrite_length = true;
        }
        return Ok(Some(head));
    }
    match length {
        Some(0) => head.framing = Framing::Empty,
        Some(n) => head.framing = Framing::Length(n),
        None => {
            head.framing = Framing::Close;
            head.reusable = false;
        }
    }
    head.rewrite_length = lengths > 1;
    Ok(Some(head))
}

/// `1*DIGIT` as a `u64`, nothing else (no sign, no spaces, no overflow).
fn parse_length(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// One step of body decoding.
#[derive(Debug)]
pub enum Step {
    /// Body bytes.
    Data(Bytes),
    /// The trailer fields (non-empty), the body's last frame.
    Trailers(HeaderMap),
    /// More input is needed.
    NeedMore,
    /// The body has ended.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes left of a `Content-Length` body, or of the current chunk.
    Length(u64),
    /// Waiting for a chunk-size line.
    ChunkSize,
    /// Inside a chunk, this many bytes left.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailers and the final CRLF.
    Trailers,
    /// Until EOF.
    Close,
    Done,
}

/// A body decoder over the connection's read buffer.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
}

impl Decoder {
    /// A decoder for `framing`.
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        Decoder { state }
    }

    /// The body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// Decode from the front of `buf`, consuming what was decoded.
    ///
    /// # Errors
    /// Malformed chunked framing or trailers.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, FramingError> {
        loop {
            match self.state {
                State::Done => return Ok(Step::Done),
                State::Length(n) | State::ChunkData(n) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = n - take as u64;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), l) => State::Length(l),
                        (_, 0) => State::ChunkEnd,
                        (_, l) => State::ChunkData(l),
                    };
                    return Ok(Step::Data(data));
                }
                State::Close => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::Data(buf.split().freeze()));
                }
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(FramingError::Chunk);
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::ChunkSize => match chunk_size(buf)? {
                    None => return Ok(Step::NeedMore),
                    Some((used, 0)) => {
                        buf.advance(used);
                        self.state = State::Trailers;
                    }
                    Some((used, size)) => {
                        buf.advance(used);
                        self.state = State::ChunkData(size);
                    }
                },
                State::Trailers => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((used, fields))) => {
                            // Only framing fields: nothing to forward.
                            let map = if fields.is_empty() {
                                None
                            } else {
                                Some(trailer_map(fields)?).filter(|m| !m.is_empty())
                            };
                            buf.advance(used);
                            self.state = State::Done;
                            return Ok(map.map_or(Step::Done, Step::Trailers));
                        }
                        Ok(httparse::Status::Partial) if buf.len() >= MAX_TRAILER_BYTES => {
                            return Err(FramingError::Trailers);
                        }
                        Ok(httparse::Status::Partial) => return Ok(Step::NeedMore),
                        Err(_) => return Err(FramingError::Trailers),
                    }
                }
            }
        }
    }

    /// The connection reached EOF: fine only for a close-delimited body.
    ///
    /// # Errors
    /// [`FramingError::Truncated`] when the body should have gone on.
    pub fn eof(&mut self) -> Result<(), FramingError> {
        match self.state {
            State::Close | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(FramingError::Truncated),
        }
    }
}

/// A chunk-size line: `(bytes used, size)`, `None` when incomplete.
fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, FramingError> {
    // httparse takes an empty size ("\r\n") as 0 and any octet in an
    // extension; both are refused here, so the line is exactly
    // 1*HEXDIG [ extensions without CR/LF ] CRLF.
    if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
        return Err(FramingError::Chunk);
    }
    match httparse::parse_chunk_size(buf) {
        Ok(httparse::Status::Complete((used, size))) => {
            if buf[..used - 2].iter().any(|&b| b == b'\n' || b == b'\r') {
                return Err(FramingError::Chunk);
            }
            Ok(Some((used, size)))
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_CHUNK_LINE => Err(FramingError::Chunk),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(FramingError::Chunk),
    }
}

fn trailer_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, FramingError> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| FramingError::Trailers)?;
        // Framing and connection fields never belong in trailers (RFC 9110 §6.5.1).
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || name == header::HOST
        {
            continue;
        }
        let value = HeaderValue::from_bytes(f.value).map_err(|_| FramingError::Trailers)?;
        map.append(name, value);
    }
    Ok(map)
}

/// An HTTP/1.1 connection to an upstream, idle in the pool or in use.
pub(crate) struct Conn {
    pub(crate) stream: UpstreamStream,
    /// Read but not yet consumed; empty whenever the connection is idle.
    rbuf: BytesMut,
    /// The request head (and small body pieces with their framing).
    wbuf: Vec<u8>,
}

impl Conn {
    pub(crate) fn new(stream: UpstreamStream) -> Box<Self> {
        Box::new(Conn {
            stream,
            rbuf: BytesMut::new(),
            wbuf: Vec::new(),
        })
    }

    /// The idle connection is still usable: the upstream has neither closed
    /// it nor sent anything unasked. One non-blocking peek, and no system
    /// call at all unless the socket was reported readable.
    pub(crate) fn is_usable(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        let mut rb = ReadBuf::new(&mut byte);
        // Over TLS the peek sees records, not plaintext: anything readable
        // while idle (a close_notify, stray data) makes the connection unusable
        // just the same.
        matches!(self.stream.tcp().poll_peek(&mut cx, &mut rb), Poll::Pending)
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < MIN_READ {
            self.rbuf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.rbuf)
    }
}

/// How the request body is framed upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqFraming {
    None,
    Length(u64),
    Chunked,
}

fn method_has_payload(m: &Method) -> bool {
    !matches!(
        *m,
        Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT
    )
}

/// Write the request head into `out`; returns the body framing.
fn encode_head(
    out: &mut Vec<u8>,
    req: &Request<RequestBody>,
    added: &AddedFields,
) -> Result<ReqFraming, UpstreamError> {
    let body = req.body();
    let mut length: Option<u64> = None;
    let mut several = false;
    for v in req.headers().get_all(header::CONTENT_LENGTH) {
        let n = v
            .to_str()
            .ok()
            .and_then(|s| parse_length(s.trim().as_bytes()))
            .ok_or(UpstreamError::RequestFraming)?;
        if length.is_some_and(|l| l != n) {
            return Err(UpstreamError::RequestFraming);
        }
        several |= length.is_some();
        length = Some(n);
    }
    let framing = match length {
        Some(n) => ReqFraming::Length(n),
        None if body.is_end_stream() => ReqFraming::None,
        None => match body.size_hint().exact() {
            Some(n) => ReqFraming::Length(n),
            None => ReqFraming::Chunked,
        },
    };
    out.clear();
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let write_length = several || (length.is_none() && framing != ReqFraming::Chunked);
    for (name, value) in req.headers() {
        // Framing is ours to state; the pipeline removed Transfer-Encoding.
        if (write_length && name == header::CONTENT_LENGTH) || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    added.write_to(out);
    match framing {
        ReqFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ReqFraming::Length(n) if write_length => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa_u64(n, &mut [0u8; 20]));
            out.extend_from_slice(b"\r\n");
        }
        ReqFraming::None if method_has_payload(req.method()) => {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    Ok(framing)
}

fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// What one exchange achieved before it failed, for the retry decision.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Progress {
    /// A body frame was taken from the request (it cannot be sent again).
    pub(crate) body_polled: bool,
    /// Some response byte arrived.
    pub(crate) response_bytes: bool,
    /// Every request byte was written.
    pub(crate) request_written: bool,
    /// Some request byte was written.
    pub(crate) wrote_any: bool,
}

/// The request written and the response head read on `conn`.
struct Exchange<'a> {
    conn: &'a mut Conn,
    body: &'a mut RequestBody,
    framing: ReqFraming,
    /// `conn.wbuf[wpos..]` is still to be written.
    wpos: usize,
    /// A large body piece to write after `wbuf`, then `tail`.
    data: Bytes,
    tail: &'static [u8],
    /// Body bytes still due under `Content-Length`.
    due: u64,
    body_done: bool,
    head_request: bool,
    interim: usize,
    progress: Progress,
    /// The request's header map, taken once its head is encoded: cleared,
    /// it holds the response's fields (see [`exchange`]).
    spare: HeaderMap,
}

impl Exchange<'_> {
    fn out_pending(&self) -> bool {
        self.wpos < self.conn.wbuf.len() || !self.data.is_empty() || !self.tail.is_empty()
    }

    /// Write what is pending; `Ready(Ok)` once all is out.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pending() {
            let stream = Pin::new(&mut self.conn.stream);
            let n = if self.wpos < self.conn.wbuf.len() && self.data.is_empty() {
                ready!(stream.poll_write(cx, &self.conn.wbuf[self.wpos..]))?
            } else {
                let bufs = [
                    io::IoSlice::new(&self.conn.wbuf[self.wpos..]),
                    io::IoSlice::new(&self.data),
                    io::IoSlice::new(self.tail),
                ];
                ready!(stream.poll_write_vectored(cx, &bufs))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.progress.wrote_any = true;
            let mut n = n;
            let head = (self.conn.wbuf.len() - self.wpos).min(n);
            self.wpos += head;
            n -= head;
            let data = self.data.len().min(n);
            self.data.advance(data);
            n -= data;
            self.tail = &self.tail[n.min(self.tail.len())..];
        }
        self.conn.wbuf.clear();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }

    /// Queue one piece of the request body with its framing.
    fn queue(&mut self, data: Bytes) -> Result<(), UpstreamError> {
        if data.is_empty() {
            return Ok(());
        }
        let wbuf = &mut self.conn.wbuf;
        if self.framing == ReqFraming::Chunked {
            let mut hex = [0u8; 16];
            let mut i = hex.len();
            let mut n = data.len();
            loop {
                i -= 1;
                hex[i] = b"0123456789abcdef"[n & 15];
                n >>= 4;
                if n == 0 {
                    break;
                }
            }
            wbuf.extend_from_slice(&hex[i..]);
            wbuf.extend_from_slice(b"\r\n");
        } else {
            let len = data.len() as u64;
            if len > self.due {
                return Err(UpstreamError::RequestFraming);
            }
            self.due -= len;
        }
        let tail: &'static [u8] = if self.framing == ReqFraming::Chunked {
            b"\r\n"
        } else {
            b""
        };
        if data.len() <= COPY_DATA {
            wbuf.extend_from_slice(&data);
            wbuf.extend_from_slice(tail);
        } else {
            self.data = data;
            self.tail = tail;
        }
        Ok(())
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(Head, HeaderMap), UpstreamError>> {
        // Send until the body is out or the socket is full.
        while !self.body_done || self.out_pending() {
            if self.out_pending() {
                match self.poll_flush(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(UpstreamError::Io(e))),
                    Poll::Ready(Ok(())) => continue,
                }
            }
            match Pin::new(&mut *self.body).poll_frame(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => {
                    self.body_done = true;
                    match self.framing {
                        ReqFraming::Chunked => {
                            self.conn.wbuf.extend_from_slice(b"0\r\n\r\n");
                        }
                        ReqFraming::Length(_) if self.due != 0 => {
                            return Poll::Ready(Err(UpstreamError::RequestFraming));
                        }
                        _ => {}
                    }
                }
                Poll::Ready(Some(Ok(frame))) => {
                    self.progress.body_polled = true;
                    if let Ok(data) = frame.into_data()
                        && let Err(e) = self.queue(data)
                    {
                        return Poll::Ready(Err(e));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.progress.body_polled = true;
                    return Poll::Ready(Err(UpstreamError::Body(e)));
                }
            }
        }
        if self.body_done && !self.out_pending() {
            self.progress.request_written = true;
        }
        // Read (also while the body is still going: an early answer is
        // forwarded, and the connection is then never reused). The field
        // places live on this stack frame, not in the request's future.
        let mut idx = [FieldIdx::default(); MAX_HEADERS];
        loop {
            if !self.conn.rbuf.is_empty() {
                match parse_head(&self.conn.rbuf, self.head_request, &mut idx) {
                    Err(e) => return Poll::Ready(Err(UpstreamError::Framing(e))),
                    Ok(Some(head)) if (100..200).contains(&head.status) => {
                        self.interim += 1;
                        if self.interim > MAX_INTERIM {
                            return Poll::Ready(Err(UpstreamError::Framing(
                                FramingError::TooManyInterim,
                            )));
                        }
                        self.conn.rbuf.advance(head.len);
                        continue;
                    }
                    Ok(Some(mut head)) => {
                        if !self.progress.request_written {
                            head.reusable = false;
                        }
                        let map = std::mem::take(&mut self.spare);
                        return Poll::Ready(
                            take_headers(&mut self.conn.rbuf, &head, &idx, map).map(|h| (head, h)),
                        );
                    }
                    Ok(None) => {}
                }
            }
            match ready!(self.conn.poll_read(cx)) {
                Ok(0) => {
                    return Poll::Ready(Err(UpstreamError::Framing(FramingError::NoResponse)));
                }
                Ok(_) => self.progress.response_bytes = true,
                Err(e) => return Poll::Ready(Err(UpstreamError::Io(e))),
            }
        }
    }
}

/// Send `req` on `conn` and read the final response head.
///
/// On failure the [`Progress`] says what was done, so the caller can tell
/// whether the request may go out again on another connection.
pub(crate) async fn exchange(
    pool: &Arc<Pool>,
    mut conn: Box<Conn>,
    req: &mut Request<RequestBody>,
    added: &AddedFields,
) -> Result<Response<ResponseBody>, (UpstreamError, Progress)> {
    let framing = match encode_head(&mut conn.wbuf, req, added) {
        Ok(f) => f,
        Err(e) => return Err((e, Progress::default())),
    };
    let head_request = req.method() == Method::HEAD;
    let body_done = framing == ReqFraming::None;
    // The request's header map becomes the response's: the head is written,
    // and the request goes out again (with its fields put back) only when
    // this attempt fails before an answer. Its capacity already fits a
    // proxied request's fields, and hyper's server keeps a response's map
    // for the connection's next request head, so a keep-alive connection
    // reuses one map instead of allocating one and growing another per
    // request (bench/callgrind.sh).
    let spare = std::mem::take(req.headers_mut());
    let mut x = Exchange {
        conn: &mut conn,
        body: req.body_mut(),
        framing,
        wpos: 0,
        data: Bytes::new(),
        tail: b"",
        due: match framing {
            ReqFraming::Length(n) => n,
            _ => 0,
        },
        body_done,
        head_request,
        interim: 0,
        progress: Progress::default(),
        spare,
    };
    // To an endpoint on this host, write after the scheduler's other ready
    // work: tokio runs a yielded task after it has polled every task that
    // was ready and the I/O driver once more, so the requests of all
    // connections that became readable together reach the upstream in one
    // burst instead of one at a time. An upstream sharing the gateway's
    // CPU then wakes once per burst rather than once per request and
    // preempts the gateway about half as often (bench/run.sh: gateway/nginx
    // throughput 0.84x -> 1.00-1.03x, CPU per request 1.12x -> 0.97-0.99x;
    // see docs/performance.md). The yield must sit right before the write:
    // at the start of the pipeline instead (a shallower second poll, 280
    // instructions less) the writes spread out again and the batching is
    // lost (involuntary switches 0.52 -> 0.85 a request, CPU per request
    // +2-4 %, measured 2026-12-04). A remote endpoint's wake-ups cost this
    // host nothing, so there the yield would only cost its second poll of
    // the connection task (2,400 instructions a request) and queueing delay.
    if pool.batches_writes() {
        tokio::task::yield_now().await;
    }
    let head = std::future::poll_fn(|cx| x.poll(cx)).await;
    let Exchange {
        progress, spare, ..
    } = x;
    let (head, headers) = match head {
        Ok(h) => h,
        Err(e) => {
            *req.headers_mut() = spare;
            return Err((e, progress));
        }
    };
    if conn.wbuf.capacity() > KEEP_WBUF {
        conn.wbuf = Vec::new();
    }
    let status = StatusCode::from_u16(head.status).map_err(|_| {
        (
            UpstreamError::Framing(FramingError::Head(httparse::Error::Status)),
            progress,
        )
    })?;
    let mut resp = Response::new(ResponseBody {
        decoder: Decoder::new(head.framing),
        conn: Some(conn),
        pool: Arc::clone(pool),
        reusable: head.reusable,
        hop_by_hop_removed: head.hop_by_hop_by_name,
    });
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    // An empty body is complete now; its connection goes back at once.
    resp.body_mut().release_if_done();
    Ok(resp)
}

/// The response header names upstreams send most, as they spell them
/// (canonical or lower case): one comparison instead of
/// `HeaderName::from_bytes`' lower-casing and lookup (bench/callgrind.sh).
/// Any other spelling takes the general path.
fn common_name(raw: &[u8]) -> Option<HeaderName> {
    Some(match raw {
        b"Date" | b"date" => header::DATE,
        b"Server" | b"server" => header::SERVER,
        b"Content-Type" | b"content-type" => header::CONTENT_TYPE,
        b"Content-Length" | b"content-length" => header::CONTENT_LENGTH,
        b"Connection" | b"connection" => header::CONNECTION,
        b"Cache-Control" | b"cache-control" => header::CACHE_CONTROL,
        b"ETag" | b"etag" => header::ETAG,
        b"Last-Modified" | b"last-modified" => header::LAST_MODIFIED,
        b"Vary" | b"vary" => header::VARY,
        b"Transfer-Encoding" | b"transfer-encoding" => header::TRANSFER_ENCODING,
        b"Content-Encoding" | b"content-encoding" => header::CONTENT_ENCODING,
        b"Set-Cookie" | b"set-cookie" => header::SET_COOKIE,
        b"Location" | b"location" => header::LOCATION,
        b"Accept-Ranges" | b"accept-ranges" => header::ACCEPT_RANGES,
        b"Expires" | b"expires" => header::EXPIRES,
        _ => return None,
    })
}

/// The head's fields as a header map, its bytes taken off `rbuf` (values
/// share them: no copy per field). Hop-by-hop fields are left out when the
/// head allows it by name (`Head::hop_by_hop_by_name`), which saves the
/// dispatcher's header-hygiene pass over the finished map.
fn take_headers(
    rbuf: &mut BytesMut,
    head: &Head,
    idx: &[FieldIdx; MAX_HEADERS],
    mut headers: HeaderMap,
) -> Result<HeaderMap, UpstreamError> {
    let bytes = rbuf.split_to(head.len).freeze();
    headers.clear();
    headers.reserve(head.fields);
    for f in &idx[..head.fields] {
        let (ns, nl) = (f.name.0 as usize, f.name.1 as usize);
        let raw = &bytes[ns..ns + nl];
        let name = match common_name(raw) {
            Some(n) => n,
            None => HeaderName::from_bytes(raw).map_err(|_| {
                UpstreamError::Framing(FramingError::Head(httparse::Error::HeaderName))
            })?,
        };
        if (head.rewrite_length && name == header::CONTENT_LENGTH)
            || (head.hop_by_hop_by_name && crate::dispatch::headers::is_fixed_hop_by_hop(&name))
        {
            continue;
        }
        let (vs, vl) = (f.value.0 as usize, f.value.1 as usize);
        let value = HeaderValue::from_maybe_shared(bytes.slice(vs..vs + vl)).map_err(|_| {
            UpstreamError::Framing(FramingError::Head(httparse::Error::HeaderValue))
        })?;
        headers.append(name, value);
    }
    if head.rewrite_length
        && let Framing::Length(n) = head.framing
    {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(headers)
}

/// A response body read straight from the upstream connection; the
/// connection goes back to the pool when the body has ended and its end
/// was certain.
pub struct ResponseBody {
    decoder: Decoder,
    conn: Option<Box<Conn>>,
    pool: Arc<Pool>,
    reusable: bool,
    /// The head's hop-by-hop fields were left out of its header map.
    hop_by_hop_removed: bool,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("h1::ResponseBody")
            .field("decoder", &self.decoder)
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    /// The response's header map holds no hop-by-hop field.
    pub(crate) fn hop_by_hop_removed(&self) -> bool {
        self.hop_by_hop_removed
    }

    fn release_if_done(&mut self) {
        if self.decoder.is_done()
            && let Some(conn) = self.conn.take()
            && self.reusable
            && conn.rbuf.is_empty()
        {
            self.pool.put_h1(conn);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let step = match this.decoder.decode(&mut conn.rbuf) {
                Ok(s) => s,
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(UpstreamError::Framing(e))));
                }
            };
            match step {
                Step::Data(b) => {
                    this.release_if_done();
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Step::Trailers(t) => {
                    this.release_if_done();
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                Step::Done => {
                    this.release_if_done();
                    return Poll::Ready(None);
                }
                Step::NeedMore => match conn.poll_read(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) => {
                        // EOF: the end of a close-delimited body, else truncation.
                        this.reusable = false;
                        let r = this.decoder.eof();
                        this.conn = None;
                        return Poll::Ready(r.err().map(|e| Err(UpstreamError::Framing(e))));
                    }
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(UpstreamError::Io(e))));
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body hyper never polled (HEAD, 204, 304) is complete anyway.
        self.release_if_done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(bytes: &[u8]) -> Result<Option<Head>, FramingError> {
        parse_head(bytes, false, &mut [FieldIdx::default(); MAX_HEADERS])
    }

    fn framing(bytes: &str) -> Result<(Framing, bool), FramingError> {
        head(bytes.as_bytes()).map(|h| {
            let h = h.expect("complete");
            (h.framing, h.reusable)
        })
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        use Framing::*;
        let ok = |s: &str| framing(&format!("HTTP/1.1 200 OK\r\n{s}\r\n"));
        assert_eq!(ok("content-length: 5\r\n"), Ok((Length(5), true)));
        assert_eq!(ok("content-length: 0\r\n"), Ok((Empty, true)));
        assert_eq!(
            ok("content-length: 5\r\ncontent-length: 5\r\n"),
            Ok((Length(5), true))
        );
        assert_eq!(ok("content-length: 5, 5\r\n"), Ok((Length(5), true)));
        assert_eq!(ok("transfer-encoding: chunked\r\n"), Ok((Chunked, true)));
        assert_eq!(ok("transfer-encoding: Chunked\r\n"), Ok((Chunked, true)));
        // Chunked wins over a length, but the connection is not trusted.
        assert_eq!(
            ok("content-length: 3\r\ntransfer-encoding: chunked\r\n"),
            Ok((Chunked, false))
        );
        assert_eq!(ok(""), Ok((Close, false)));
        assert_eq!(
            ok("connection: close\r\ncontent-length: 1\r\n"),
            Ok((Length(1), false))
        );
        assert_eq!(
            ok("connection: keep-alive, Close\r\ncontent-length: 1\r\n"),
            Ok((Length(1), false))
        );
        for bad in [
            "5, 6",
            "+5",
            "-5",
            "5 5",
            "0x5",
            "",
            "5.0",
            "18446744073709551616",
        ] {
            assert_eq!(
                ok(&format!("content-length: {bad}\r\n")),
                Err(FramingError::ContentLength),
                "{bad:?}"
            );
        }
        assert_eq!(
            ok("content-length: 18446744073709551615\r\n"),
            Ok((Length(u64::MAX), true))
        );
        assert_eq!(
            ok("content-length: 5\r\ncontent-length: 6\r\n"),
            Err(FramingError::ContentLength)
        );
        for bad in [
            "gzip",
            "gzip, chunked",
            "chunked, chunked",
            "chunked, gzip",
            "identity",
            ",",
        ] {
            assert_eq!(
                ok(&format!("transfer-encoding: {bad}\r\n")),
                if bad == "," {
                    Ok((Close, false))
                } else {
                    Err(FramingError::TransferEncoding)
                },
                "{bad:?}"
            );
        }
        assert_eq!(
            ok("transfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n"),
            Err(FramingError::TransferEncoding)
        );
        // HTTP/1.0: never kept; Transfer-Encoding there is faulty.
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n"),
            Ok((Length(2), false))
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            Err(FramingError::TransferEncoding)
        );
    }

    #[test]
    fn bodiless_statuses_and_head_requests() {
        use Framing::*;
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\n\r\n"),
            Ok((Empty, true))
        );
        assert_eq!(
            framing("HTTP/1.1 304 Not Modified\r\n\r\n"),
            Ok((Empty, true))
        );
        // Announcing a body on a bodiless status: no body, no reuse.
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n"),
            Ok((Empty, false))
        );
        assert_eq!(
            framing("HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n"),
            Ok((Empty, false))
        );
        let mut idx = [FieldIdx::default(); MAX_HEADERS];
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            true,
            &mut idx,
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.framing, h.reusable), (Empty, true));
        // Interim answers parse as such; 101 unasked is refused.
        let h = head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.len), (100, 25));
        assert_eq!(
            head(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            Err(FramingError::UnexpectedSwitch)
        );
    }

    #[test]
    fn common_names_are_what_the_general_path_makes() {
        for raw in [
            "Date",
            "date",
            "Server",
            "server",
            "Content-Type",
            "content-type",
            "Content-Length",
            "content-length",
            "Connection",
            "connection",
            "Cache-Control",
            "cache-control",
            "ETag",
            "etag",
            "Last-Modified",
            "last-modified",
            "Vary",
            "vary",
            "Transfer-Encoding",
            "transfer-encoding",
            "Content-Encoding",
            "content-encoding",
            "Set-Cookie",
            "set-cookie",
            "Location",
            "location",
            "Accept-Ranges",
            "accept-ranges",
            "Expires",
            "expires",
        ] {
            assert_eq!(
                common_name(raw.as_bytes()),
                Some(HeaderName::from_bytes(raw.as_bytes()).unwrap()),
                "{raw}"
            );
        }
        // Other spellings take the general path (which lower-cases them).
        assert_eq!(common_name(b"CONTENT-TYPE"), None);
        assert_eq!(common_name(b"X-Custom"), None);
    }

    #[test]
    fn heads_are_bounded_and_strict() {
        assert_eq!(head(b"HTTP/1.1 200 OK\r\ncontent-len"), Ok(None));
        let mut big = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        big.resize(MAX_HEAD_BYTES, b'a');
        assert_eq!(head(&big), Err(FramingError::HeadTooLarge));
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            many.extend_from_slice(b"x: y\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(
            head(&many),
            Err(FramingError::Head(httparse::Error::TooManyHeaders))
        ));
        for bad in [
            &b"HTTP/1.1 200 OK\r\nx : y\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nx: y\r\n folded\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.2 200 OK\r\n\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx: a\0b\r\n\r\n",
        ] {
            assert!(
                matches!(head(bad), Err(FramingError::Head(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn decode_all(framing: Framing, input: &[u8]) -> (Vec<u8>, Result<bool, FramingError>, usize) {
        let mut d = Decoder::new(framing);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf) {
                Ok(Step::Data(b)) => out.extend_from_slice(&b),
                Ok(Step::Trailers(_)) | Ok(Step::Done) => return (out, Ok(true), buf.len()),
                Ok(Step::NeedMore) => return (out, d.eof().map(|()| false), buf.len()),
                Err(e) => return (out, Err(e), buf.len()),
            }
        }
    }

    #[test]
    fn chunked_decoding_is_strict() {
        let (out, r, left) = decode_all(
            Framing::Chunked,
            b"5;a=\"b c\"\r\nhello\r\n1\r\n!\r\n0\r\nx-t: 1\r\n\r\nNEXT",
        );
        assert_eq!((&out[..], r, left), (&b"hello!"[..], Ok(true), 4));
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&b"1\r\na\r\n0\r\nx-t: 1\r\n\r\n"[..]);
        assert!(matches!(d.decode(&mut buf), Ok(Step::Data(_))));
        match d.decode(&mut buf) {
            Ok(Step::Trailers(t)) => assert_eq!(t["x-t"], "1"),
            other => panic!("{other:?}"),
        }
        for bad in [
            &b"\r\n"[..],
            b"g\r\n",
            b" 5\r\nhello\r\n",
            b"5\nhello\r\n",
            b"5;a\nb\r\nhello\r\n",
            b"5\r\nhelloXX",
            b"10000000000000000\r\n",
            b"0\r\nbad trailer\r\n\r\n",
        ] {
            let (_, r, _) = decode_all(Framing::Chunked, bad);
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // Trailers of framing fields only are dropped, not an empty frame.
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&b"0\r\ntransfer-encoding: chunked\r\n\r\n"[..]);
        assert!(matches!(d.decode(&mut buf), Ok(Step::Done)));
        // Truncation is an error, never a short body.
        assert_eq!(
            decode_all(Framing::Chunked, b"5\r\nhel").1,
            Err(FramingError::Truncated)
        );
        assert_eq!(
            decode_all(Framing::Length(5), b"hel").1,
            Err(FramingError::Truncated)
        );
        assert_eq!(decode_all(Framing::Close, b"all of it").1, Ok(false));
        let line = vec![b'1'; MAX_CHUNK_LINE];
        assert_eq!(
            decode_all(Framing::Chunked, &line).1,
            Err(FramingError::Chunk)
        );
    }

    fn chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes
                .get(i)
                .copied()
                .unwrap_or(rest.len())
                .clamp(1, rest.len());
            out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
            i += 1;
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    proptest! {
        /// Fed in arbitrary pieces, the decoder yields exactly the body,
        /// stops exactly at the framing's end and leaves what follows.
        #[test]
        fn decoding_in_pieces_yields_exactly_the_body(
            body in proptest::collection::vec(any::<u8>(), 0..2000),
            sizes in proptest::collection::vec(1usize..300, 0..20),
            cuts in proptest::collection::vec(1usize..64, 1..50),
            chunk in any::<bool>(),
            next in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let (framing, mut wire) = if chunk {
                (Framing::Chunked, chunked(&body, &sizes))
            } else {
                (Framing::Length(body.len() as u64), body.clone())
            };
            let framed = wire.len();
            wire.extend_from_slice(&next);
            let mut d = Decoder::new(framing);
            let mut buf = BytesMut::new();
            let mut fed = 0;
            let mut out = Vec::new();
            let mut cut = cuts.iter().cycle();
            let mut done = d.is_done();
            while !done {
                match d.decode(&mut buf).unwrap() {
                    Step::Data(b) => out.extend_from_slice(&b),
                    Step::Trailers(_) | Step::Done => done = true,
                    Step::NeedMore => {
                        prop_assert!(fed < framed, "wants more than the framing says");
                        let n = (*cut.next().unwrap()).min(wire.len() - fed);
                        buf.extend_from_slice(&wire[fed..fed + n]);
                        fed += n;
                    }
                }
                done |= d.is_done();
            }
            prop_assert_eq!(&out, &body);
            // Whatever was fed past the framing is still in the buffer.
            prop_assert_eq!(fed - buf.len(), framed);
        }

        /// Heads never panic the parser, and a reusable head always has a
        /// definite end.
        #[test]
        fn any_head_is_refused_or_definite_when_reused(
            status in 100u16..1000,
            fields in proptest::collection::vec(
                (prop::sample::select(vec!["content-length", "transfer-encoding", "connection", "x"]),
                 prop::sample::select(vec!["5", "0", "5, 5", "5, 6", "chunked", "gzip", "close", "", "-1", "chunked, gzip"])),
                0..5),
            head_request in any::<bool>(),
        ) {
            let mut text = format!("HTTP/1.1 {status} X\r\n");
            for (n, v) in &fields {
                text.push_str(&format!("{n}: {v}\r\n"));
            }
            text.push_str("\r\n");
            let mut idx = [FieldIdx::default(); MAX_HEADERS];
            if let Ok(Some(h)) = parse_head(text.as_bytes(), head_request, &mut idx) {
                prop_assert_eq!(h.len, text.len());
                if h.reusable {
                    prop_assert!(h.framing != Framing::Close);
                }
                let lengths: Vec<&str> = fields.iter().filter(|(n, _)| *n == "content-length").map(|(_, v)| *v).collect();
                let te = fields.iter().any(|(n, v)| *n == "transfer-encoding" && !v.trim().is_empty());
                if te && !lengths.is_empty() && h.framing == Framing::Chunked {
                    prop_assert!(!h.reusable);
                }
            }
        }
    }
}
