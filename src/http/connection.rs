//! What one client connection may hold: its streams and its memory.
//!
//! Both listeners hand every accepted connection, wrapped in `Conn`, to
//! actix's HTTP/1 and HTTP/2 dispatchers:
//! - HTTP/2: actix builds its `h2` server with the window sizes only, so the
//!   server's SETTINGS would bound nothing and a client could open streams
//!   without end (one hostile connection held 11,442 requests in flight). The
//!   h2 crate writes its SETTINGS frame first on every connection; `Conn`
//!   amends that frame with SETTINGS_MAX_CONCURRENT_STREAMS = `MAX_STREAMS`,
//!   which well-behaved clients (cargo, curl) obey. For the rest,
//!   `bound_streams` counts each connection's requests in flight (the
//!   counter is the connection's own data, `Streams`) and refuses the ones
//!   past the bound with a 429 before any handler runs, so they cause no
//!   upstream work and hold nothing while they wait.
//! - Memory: mimalloc keeps the pages a worker thread freed in that thread's
//!   heap, and a worker's connection buffers are allocated and freed on that
//!   worker. A second after connections close, the worker gives those pages
//!   back to the OS (`MemoryRelease`, once however many closed meanwhile): a
//!   burst of thousands of connections no longer leaves its peak resident.
//! - Count: how many are open over all workers (`open_connections`), which
//!   the stop logs when `shutdown-timeout` runs out with some still open.
//!
//! The TLS listener's handshake and ALPN are here too (`tls_connections`), so
//! that both listeners share one connection path (and one keep-alive).

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use actix_http::Protocol;
use actix_service::{Service, ServiceFactory};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::h2c::FRAME_SETTINGS;
use super::ApiError;

/// Streams one client connection may have in flight: what the server's
/// SETTINGS advertise and what `bound_streams` enforces. cargo and curl open
/// at most 100 per connection.
pub const MAX_STREAMS: u32 = 100;

/// How long a TLS client has for its handshake (the same as for a plain
/// client's first request).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 §6.5.2).
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const FRAME_HEADER: usize = 9;
const FLAG_ACK: u8 = 0x1;

/// A client connection as the dispatchers see it.
pub struct Conn<T> {
    io: T,
    /// HTTP/2, and the server's first SETTINGS frame not written yet.
    amend_settings: bool,
    /// The amended frame, taken from the caller but not yet all written.
    pending: Vec<u8>,
    written: usize,
    /// Told when the connection closes (its worker's `MemoryRelease`).
    closed: Option<Rc<Notify>>,
}

/// Client connections open now, over every worker: what a stop past
/// `shutdown-timeout` drops (it says how many).
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// How many client connections are open.
pub fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}

impl<T> Conn<T> {
    fn new(io: T, protocol: Protocol, closed: Option<Rc<Notify>>) -> Self {
        OPEN.fetch_add(1, Ordering::Relaxed);
        Self {
            io,
            amend_settings: protocol == Protocol::Http2,
            pending: Vec::new(),
            written: 0,
            closed,
        }
    }
}

impl<T> Drop for Conn<T> {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
        if let Some(closed) = &self.closed {
            closed.notify_one();
        }
    }
}

/// How long after connections closed their worker gives freed memory back:
/// a burst of closes costs one `mi_collect`, not one each.
const RELEASE_DELAY: Duration = Duration::from_secs(1);

/// One per HTTP worker, on its thread: a second after a connection closed,
/// gives the memory the worker freed back to the OS (mimalloc returns a
/// thread's pages only when that thread allocates again). The task belongs
/// to the worker's connection service and is stopped with it.
struct MemoryRelease {
    closed: Rc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl MemoryRelease {
    fn start() -> Self {
        let closed = Rc::new(Notify::new());
        let signal = closed.clone();
        let task = tokio::task::spawn_local(async move {
            loop {
                // Closes meanwhile leave one permit: one more release after.
                signal.notified().await;
                tokio::time::sleep(RELEASE_DELAY).await;
                crate::blocking::release_thread_memory();
            }
        });
        Self { closed, task }
    }
}

impl Drop for MemoryRelease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Wraps `http` (actix's dispatchers) so that each connection it serves is a
/// `Conn`: SETTINGS amended on HTTP/2, memory given back after it closes.
pub fn connections<T, F>(
    http: F,
) -> impl ServiceFactory<
    (T, Protocol, Option<SocketAddr>),
    Config = (),
    Response = (),
    Error = F::Error,
    InitError = F::InitError,
>
where
    T: 'static,
    F: ServiceFactory<(Conn<T>, Protocol, Option<SocketAddr>), Config = (), Response = ()>
        + 'static,
    F::Service: 'static,
{
    let http = Rc::new(http);
    actix_service::fn_factory(move || {
        let ready = http.new_service(());
        async move {
            let service = Rc::new(ready.await?);
            let release = Rc::new(MemoryRelease::start());
            Ok(actix_service::fn_service(
                move |(io, protocol, peer): (T, Protocol, Option<SocketAddr>)| {
                    let service = service.clone();
                    let conn = Conn::new(io, protocol, Some(release.closed.clone()));
                    async move { service.call((conn, protocol, peer)).await }
                },
            ))
        }
    })
}

/// The server's first SETTINGS frame at the start of `buf`, with
/// SETTINGS_MAX_CONCURRENT_STREAMS added (and how many bytes of `buf` it
/// replaces); `None` when `buf` does not start with a whole SETTINGS frame
/// or that frame already bounds the streams.
fn amended_settings(buf: &[u8]) -> Option<(usize, Vec<u8>)> {
    let header = buf.get(..FRAME_HEADER)?;
    let (length, kind) = super::h2c::frame_length_and_type(header);
    let is_settings = kind == FRAME_SETTINGS && header[4] & FLAG_ACK == 0;
    if !is_settings || header[5..9] != [0; 4] || length % 6 != 0 {
        return None;
    }
    let payload = buf.get(FRAME_HEADER..FRAME_HEADER + length)?;
    if payload
        .chunks_exact(6)
        .any(|p| u16::from_be_bytes([p[0], p[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS)
    {
        return None;
    }
    let new_length = u32::try_from(length + 6).ok()?.to_be_bytes();
    let mut frame = Vec::with_capacity(FRAME_HEADER + length + 6);
    frame.extend_from_slice(&new_length[1..]);
    frame.extend_from_slice(&header[3..]);
    frame.extend_from_slice(payload);
    frame.extend_from_slice(&SETTINGS_MAX_CONCURRENT_STREAMS.to_be_bytes());
    frame.extend_from_slice(&MAX_STREAMS.to_be_bytes());
    Some((FRAME_HEADER + length, frame))
}

impl<T: AsyncWrite + Unpin> Conn<T> {
    /// Writes what is left of the amended frame.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if !self.pending.is_empty() {
            self.pending = Vec::new();
            self.written = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Conn<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Conn<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if this.amend_settings && !buf.is_empty() {
            this.amend_settings = false;
            match amended_settings(buf) {
                Some((replaced, frame)) => {
                    this.pending = frame;
                    // The frame is ours to write now: the caller is told it
                    // was written, and whatever is left goes out before any
                    // later byte (and on flush).
                    if let Poll::Ready(Err(err)) = this.poll_pending(cx) {
                        return Poll::Ready(Err(err));
                    }
                    return Poll::Ready(Ok(replaced));
                }
                None => tracing::debug!("HTTP/2 connection not started by a SETTINGS frame"),
            }
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.amend_settings || !self.pending.is_empty() {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            return self.poll_write(cx, first);
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// One connection's requests in flight: the connection's own data (actix's
/// `on_connect_ext`), shared by its requests on its worker thread.
#[derive(Clone, Default)]
pub struct Streams(Rc<Cell<u32>>);

/// A request counted in its connection's `Streams` until dropped.
struct InFlight(Rc<Cell<u32>>);

impl Streams {
    fn enter(&self) -> Option<InFlight> {
        let now = self.0.get();
        if now >= MAX_STREAMS {
            return None;
        }
        self.0.set(now + 1);
        Some(InFlight(self.0.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// Marks a connection that came in over TLS (its connection data), so that
/// the public URL made from a request says `https`.
#[derive(Clone, Copy)]
pub struct Tls;

/// Puts the per-connection data into a new connection's extensions.
pub fn on_connect<T>(tls: bool) -> impl Fn(&T, &mut actix_http::Extensions) + 'static {
    move |_, data| {
        data.insert(Streams::default());
        if tls {
            data.insert(Tls);
        }
    }
}

/// Refuses a request past its connection's `MAX_STREAMS` in flight (a client
/// that ignored the SETTINGS) before any handler runs: a 429 with
/// `Retry-After`, no upstream work, nothing held while waiting.
pub async fn bound_streams(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let streams = req.conn_data::<Streams>().cloned();
    let _in_flight = match streams.map(|s| s.enter()) {
        Some(None) => {
            let refusal = req.error_response(ApiError::TooManyStreams);
            return Ok(refusal.map_into_right_body());
        }
        Some(Some(in_flight)) => Some(in_flight),
        // Connections not accepted by `serve` (tests of the app alone).
        None => None,
    };
    Ok(next.call(req).await?.map_into_left_body())
}

/// Serves TLS connections: the handshake (within `TLS_HANDSHAKE_TIMEOUT`),
/// then `http` (`connections` around actix's dispatchers) with the protocol
/// ALPN chose.
pub fn tls_connections<F>(
    http: F,
    tls: Arc<rustls::ServerConfig>,
) -> impl ServiceFactory<TcpStream, Config = (), Response = (), Error = (), InitError = ()>
where
    F: ServiceFactory<
            (
                tokio_rustls::server::TlsStream<TcpStream>,
                Protocol,
                Option<SocketAddr>,
            ),
            Config = (),
            Response = (),
        > + 'static,
    F::Service: 'static,
    F::Error: std::fmt::Debug,
    F::InitError: std::fmt::Debug,
{
    let http = Rc::new(http);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    actix_service::fn_factory(move || {
        let ready = http.new_service(());
        let acceptor = acceptor.clone();
        async move {
            let service = Rc::new(ready.await.map_err(|err| {
                tracing::error!(error = ?err, "starting the HTTP service failed");
            })?);
            Ok(actix_service::fn_service(move |stream: TcpStream| {
                let service = service.clone();
                let acceptor = acceptor.clone();
                async move {
                    let peer = stream.peer_addr().ok();
                    let accepted =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    let stream = match accepted {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            tracing::debug!(error = %err, "TLS handshake failed");
                            return Ok(());
                        }
                        Err(_) => return Ok(()),
                    };
                    let protocol = match stream.get_ref().1.alpn_protocol() {
                        Some(b"h2") => Protocol::Http2,
                        _ => Protocol::Http1,
                    };
                    if let Err(err) = service.call((stream, protocol, peer)).await {
                        tracing::debug!(error = ?err, "connection ended with an error");
                    }
                    Ok::<_, ()>(())
                }
            }))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SETTINGS: [u8; 15] = [0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 4, 0, 0x10, 0, 0];
    const WINDOW_UPDATE: [u8; 13] = [0, 0, 4, 0x8, 0, 0, 0, 0, 0, 0, 0x0f, 0, 1];

    #[actix_web::test]
    async fn the_first_settings_frame_of_http2_gains_max_concurrent_streams() {
        let (client, server) = tokio::io::duplex(4096);
        let mut conn = Conn::new(server, Protocol::Http2, None);
        let mut first = SETTINGS.to_vec();
        first.extend_from_slice(&WINDOW_UPDATE);
        conn.write_all(&first).await.unwrap();
        // A later SETTINGS frame is not touched.
        conn.write_all(&SETTINGS).await.unwrap();
        conn.flush().await.unwrap();
        drop(conn);
        let mut out = Vec::new();
        let mut client = client;
        client.read_to_end(&mut out).await.unwrap();
        let mut expected = vec![0, 0, 12, 0x4, 0, 0, 0, 0, 0];
        expected.extend_from_slice(&SETTINGS[9..]);
        expected.extend_from_slice(&[0, 3, 0, 0, 0, 100]);
        expected.extend_from_slice(&WINDOW_UPDATE);
        expected.extend_from_slice(&SETTINGS);
        assert_eq!(out, expected);
    }

    #[actix_web::test]
    async fn http1_bytes_and_odd_starts_pass_unchanged() {
        for (protocol, bytes) in [
            (Protocol::Http1, SETTINGS.to_vec()),
            (Protocol::Http2, WINDOW_UPDATE.to_vec()),
            (Protocol::Http2, SETTINGS[..12].to_vec()),
        ] {
            let (mut client, server) = tokio::io::duplex(4096);
            let mut conn = Conn::new(server, protocol, None);
            conn.write_all(&bytes).await.unwrap();
            drop(conn);
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.unwrap();
            assert_eq!(out, bytes);
        }
    }

    #[test]
    fn a_settings_frame_that_bounds_streams_already_is_kept() {
        let bounded = [0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 10];
        assert!(amended_settings(&bounded).is_none());
        let ack = [0, 0, 0, 0x4, 0x1, 0, 0, 0, 0];
        assert!(amended_settings(&ack).is_none());
    }

    #[test]
    fn streams_past_the_bound_are_refused_until_one_ends() {
        let streams = Streams::default();
        let held: Vec<_> = (0..MAX_STREAMS).map(|_| streams.enter().unwrap()).collect();
        assert!(streams.enter().is_none());
        drop(held);
        assert!(streams.enter().is_some());
    }
}
