//! HTTP/2 on the plain listener (h2c), by prior knowledge and by cargo's
//! `Upgrade: h2c`.
//!
//! cargo allows itself two connections per host. Over https it multiplexes
//! every request on one HTTP/2 connection (ALPN); over plain http it asks for an
//! upgrade (`Connection: Upgrade, HTTP2-Settings`, `Upgrade: h2c`) on the first
//! request of a connection. actix-http serves HTTP/2 over any IO but does not
//! implement that upgrade, and it answers such a request with `connection:
//! upgrade`, after which curl closes the connection: one TCP connect per
//! request, never more than two in flight.
//!
//! So each plain connection starts here. The first bytes decide:
//! - the HTTP/2 connection preface: HTTP/2 by prior knowledge;
//! - an HTTP/1.1 request asking for h2c with no body (RFC 7540 §3.2): answer
//!   `101 Switching Protocols`, read the client's preface and SETTINGS, and hand
//!   actix's HTTP/2 dispatcher an IO that presents them followed by a
//!   synthesized HEADERS frame for stream 1 carrying the upgraded request (HPACK
//!   literals without indexing, so the dynamic table stays untouched); the
//!   response to it goes out as stream 1, as the RFC asks;
//! - anything else: HTTP/1.1, with the bytes read so far replayed. A request
//!   that asked for an upgrade we do not make has the upgrade headers removed,
//!   so it is answered as a normal keep-alive request.
//!
//! Only the first request of an HTTP/1.1 connection is looked at: cargo asks
//! for the upgrade there, and once upgraded everything is HTTP/2.
//!
//! The upgrade is never made behind a proxy. After a `101` a proxy that
//! forwarded `Upgrade` only copies bytes: every later request on the
//! connection reaches the mirror uninspected (past the proxy's own access
//! rules) and from the proxy's address, so with that address in
//! `trusted-proxies` even its forged `X-Forwarded-Host` would be believed. So
//! a request from a trusted proxy, or one carrying forwarding headers (which
//! say a proxy is in between), is answered as plain HTTP/1.1; and
//! `h2c-upgrade off` declines every upgrade ([`UpgradePolicy`]).
//!
//! A head ends where actix's parser (httparse) ends it: at an empty line,
//! with CRLF or bare LF line ends alike. A request that asks for h2c with an
//! `HTTP2-Settings` header that is not exactly one base64url SETTINGS payload
//! (RFC 7540 §3.2.1, §6.5.2) is answered `400` and the connection closed.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::Protocol;
use actix_service::{Service, ServiceFactory};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::proxies::TrustedProxies;

/// The HTTP/2 client connection preface (RFC 7540 §3.5).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes of a first request head looked at; a longer head goes to actix as is,
/// which refuses it.
const MAX_HEAD: usize = 16 * 1024;
/// The default (and smallest allowed) SETTINGS_MAX_FRAME_SIZE: the synthesized
/// HEADERS frame must fit in one frame of it.
const MAX_FRAME: usize = 16_384;
/// How long a new connection has to send its first request (or preface).
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

const SWITCHING: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
/// Settings one `HTTP2-Settings` header may carry. RFC 7540 defines six and
/// extensions a few more; a client has no reason to repeat them, and the
/// bound keeps 15 KB of settings from being decoded for nothing.
const MAX_SETTINGS: usize = 32;

/// Headers that a proxy adds: a request carrying one came through a proxy,
/// which would tunnel whatever follows a `101` (the `x-forwarded-` prefix
/// counts too).
const FORWARDING: [&str; 9] = [
    "forwarded",
    "via",
    "x-real-ip",
    "x-client-ip",
    "client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
];

/// When the plain listener makes cargo's h2c upgrade (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct UpgradePolicy {
    /// `h2c-upgrade`: off declines every upgrade.
    pub enabled: bool,
    /// A peer in it is a proxy: its requests are never upgraded.
    pub trusted_proxies: TrustedProxies,
}

impl UpgradePolicy {
    /// Whether a connection from `peer` may be upgraded at all (an unknown
    /// peer may be a proxy).
    fn allows(&self, peer: Option<IpAddr>) -> bool {
        self.enabled && peer.is_some_and(|peer| !self.trusted_proxies.trusts(peer))
    }
}

/// How a plain connection ended up being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    Http1,
    /// HTTP/2 from the first byte.
    PriorKnowledge,
    /// HTTP/2 after `Upgrade: h2c`.
    Upgraded,
}

impl Negotiated {
    pub fn as_str(self) -> &'static str {
        match self {
            Negotiated::Http1 => "http1",
            Negotiated::PriorKnowledge => "h2c-prior-knowledge",
            Negotiated::Upgraded => "h2c-upgrade",
        }
    }

    fn protocol(self) -> Protocol {
        match self {
            Negotiated::Http1 => Protocol::Http1,
            Negotiated::PriorKnowledge | Negotiated::Upgraded => Protocol::Http2,
        }
    }
}

/// A connection whose first bytes were already read (or made up): they are
/// read again first, then the connection itself.
pub struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Prefixed<T> {
    fn new(prefix: impl Into<Bytes>, inner: T) -> Self {
        Self {
            prefix: prefix.into(),
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // `advance` keeps the allocation (up to the first request's
                // head) alive for the connection's life: let it go.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads a connection's first request (or preface) and decides how to serve
/// it; `peer` is where the connection comes from. A refused upgrade request is
/// answered here (`400`) and ends in an `InvalidData` error.
pub async fn negotiate<T: AsyncRead + AsyncWrite + Unpin>(
    mut io: T,
    peer: Option<IpAddr>,
    policy: &UpgradePolicy,
) -> io::Result<(Prefixed<T>, Negotiated)> {
    let may_upgrade = policy.allows(peer);
    let mut buf = BytesMut::with_capacity(4096);
    // Where the search for the head's empty line goes on: each byte is looked
    // at about once however the head arrives, and httparse runs only once an
    // empty line is there.
    let mut scanned = 0;
    loop {
        // Empty lines before the request line are ignored (RFC 9112 §2.2;
        // httparse skips them too): dropped as they come, so that they are
        // not parsed again on every read.
        let leading = leading_empty_lines(&buf);
        if leading > 0 {
            buf.advance(leading);
            scanned = 0;
        }
        let seen = buf.len().min(PREFACE.len());
        if seen > 0 && buf[..seen] == PREFACE[..seen] {
            if seen == PREFACE.len() {
                return Ok((Prefixed::new(buf, io), Negotiated::PriorKnowledge));
            }
        } else if let Some(blank) = empty_line(&buf, scanned) {
            match first_request(&buf, may_upgrade) {
                Head::Complete(end, first) => return answer(io, buf, end, first).await,
                // Not expected once leading empty lines are gone; go on
                // looking after this one (the next may start at its last LF).
                Head::Partial => scanned = blank - 1,
                // actix's parser refuses it just the same, with a 400.
                Head::Invalid => return Ok((Prefixed::new(buf, io), Negotiated::Http1)),
            }
        } else {
            scanned = buf.len().saturating_sub(2);
        }
        if buf.len() >= MAX_HEAD {
            return Ok((Prefixed::new(buf, io), Negotiated::Http1));
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Serves the first request, whose head is `buf[..end]`, as decided.
async fn answer<T: AsyncRead + AsyncWrite + Unpin>(
    io: T,
    buf: BytesMut,
    end: usize,
    first: FirstRequest,
) -> io::Result<(Prefixed<T>, Negotiated)> {
    match first {
        // Bytes after the head would have to be replayed as HTTP/2: only a
        // lone request is upgraded.
        FirstRequest::Upgrade(block) if end == buf.len() => upgrade(io, &block).await,
        FirstRequest::Upgrade(_) | FirstRequest::Declined => {
            let head = without_upgrade(&buf[..end]);
            let mut replay = BytesMut::from(&head[..]);
            replay.extend_from_slice(&buf[end..]);
            Ok((Prefixed::new(replay, io), Negotiated::Http1))
        }
        FirstRequest::Refused(why) => refuse(io, why).await,
        FirstRequest::Plain => Ok((Prefixed::new(buf, io), Negotiated::Http1)),
    }
}

/// How many bytes of empty lines (`\r\n` or `\n`) `buf` starts with.
fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match buf.get(at..) {
            Some([b'\n', ..]) => at += 1,
            Some([b'\r', b'\n', ..]) => at += 2,
            _ => return at,
        }
    }
}

/// The end of the first empty line (`\n\n` or `\n\r\n`) starting at or
/// after `from`, which is where a head can end.
fn empty_line(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(offset) = buf.get(i..)?.iter().position(|b| *b == b'\n') {
        let lf = i + offset;
        match buf.get(lf + 1..) {
            Some([b'\n', ..]) => return Some(lf + 2),
            Some([b'\r', b'\n', ..]) => return Some(lf + 3),
            _ => i = lf + 1,
        }
    }
    None
}

/// Answers a request whose upgrade we refuse, and ends the connection: its
/// client would otherwise wait for HTTP/2 on settings we cannot honour.
async fn refuse<T: AsyncRead + AsyncWrite + Unpin>(
    mut io: T,
    why: &'static str,
) -> io::Result<(Prefixed<T>, Negotiated)> {
    let body = format!("{why}\n");
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    io.write_all(answer.as_bytes()).await?;
    io.shutdown().await?;
    Err(io::Error::new(io::ErrorKind::InvalidData, why))
}

/// After `101`: the client's preface and SETTINGS frame, then our HEADERS
/// frame for stream 1, then whatever else the client already sent.
async fn upgrade<T: AsyncRead + AsyncWrite + Unpin>(
    mut io: T,
    block: &[u8],
) -> io::Result<(Prefixed<T>, Negotiated)> {
    io.write_all(SWITCHING).await?;
    io.flush().await?;
    let mut buf = BytesMut::with_capacity(256);
    let settings_end = loop {
        if buf.len() >= PREFACE.len() && buf[..PREFACE.len()] != *PREFACE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no HTTP/2 preface after the upgrade",
            ));
        }
        if buf.len() >= PREFACE.len() + 9 {
            let frame = &buf[PREFACE.len()..];
            let (length, kind) = frame_length_and_type(frame);
            // The preface must be followed by SETTINGS (RFC 7540 §3.5).
            if kind != FRAME_SETTINGS || length > MAX_FRAME {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the HTTP/2 preface is not followed by SETTINGS",
                ));
            }
            let end = PREFACE.len() + 9 + length;
            if buf.len() >= end {
                break end;
            }
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    };
    let mut replay = BytesMut::with_capacity(buf.len() + 9 + block.len());
    replay.extend_from_slice(&buf[..settings_end]);
    // HEADERS (type 1), END_STREAM | END_HEADERS, stream 1.
    replay.extend_from_slice(&frame_header(block.len(), 0x1, 0x1 | 0x4, 1));
    replay.extend_from_slice(block);
    replay.extend_from_slice(&buf[settings_end..]);
    Ok((Prefixed::new(replay, io), Negotiated::Upgraded))
}

/// The type of a SETTINGS frame (RFC 7540 §6.5).
pub(super) const FRAME_SETTINGS: u8 = 0x4;

/// The payload length and type of the frame whose 9-byte header starts
/// `header` (RFC 7540 §4.1); the caller has checked there are 9 bytes.
pub(super) fn frame_length_and_type(header: &[u8]) -> (usize, u8) {
    let length =
        usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    (length, header[3])
}

fn frame_header(length: usize, kind: u8, flags: u8, stream: u32) -> [u8; 9] {
    let l = (length as u32).to_be_bytes();
    let s = stream.to_be_bytes();
    [l[1], l[2], l[3], kind, flags, s[0], s[1], s[2], s[3]]
}

/// What httparse makes of the bytes read so far.
enum Head {
    /// A whole head of this many bytes, and what to do with it.
    Complete(usize, FirstRequest),
    /// More is to come.
    Partial,
    /// Not a request head: actix answers it.
    Invalid,
}

enum FirstRequest {
    /// No upgrade asked for.
    Plain,
    /// An h2c upgrade we make: the request as an HPACK header block.
    Upgrade(Vec<u8>),
    /// An upgrade asked for that we do not make.
    Declined,
    /// An h2c upgrade with settings that are not HTTP/2's: answered 400.
    Refused(&'static str),
}

/// Headers that belong to one HTTP/1.1 hop and have no place in HTTP/2.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "upgrade",
    "http2-settings",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "host",
    "te",
];

/// Parses the first request's head from `buf` (which may hold more) as
/// actix's parser does; `may_upgrade` is the connection's [`UpgradePolicy`].
fn first_request(buf: &[u8], may_upgrade: bool) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut headers);
    let end = match request.parse(buf) {
        Ok(httparse::Status::Complete(end)) => end,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Invalid,
    };
    Head::Complete(end, upgrade_decision(&request, may_upgrade))
}

fn upgrade_decision(request: &httparse::Request<'_, '_>, may_upgrade: bool) -> FirstRequest {
    let value = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let Some(upgrade) = value("upgrade") else {
        return FirstRequest::Plain;
    };
    let tokens = |v: Option<&[u8]>| -> Vec<String> {
        v.and_then(|v| std::str::from_utf8(v).ok())
            .map(|v| {
                v.split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default()
    };
    let connection = tokens(value("connection"));
    let no_body =
        value("transfer-encoding").is_none() && value("content-length").is_none_or(|v| v == b"0");
    let asks_h2c = tokens(Some(upgrade)).iter().any(|t| t == "h2c")
        && value("http2-settings").is_some()
        && connection.iter().any(|t| t == "upgrade")
        && connection.iter().any(|t| t == "http2-settings")
        && request.version == Some(1);
    let forwarded = request.headers.iter().any(|h| {
        let name = h.name.to_ascii_lowercase();
        name.starts_with("x-forwarded-") || FORWARDING.contains(&name.as_str())
    });
    if !(asks_h2c && no_body && may_upgrade) || forwarded {
        return FirstRequest::Declined;
    }
    let mut settings = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("http2-settings"));
    let (Some(settings), None) = (settings.next(), settings.next()) else {
        return FirstRequest::Refused("more than one HTTP2-Settings header");
    };
    if let Err(why) = decode_settings(settings.value) {
        return FirstRequest::Refused(why);
    }
    match header_block(request, &connection) {
        Some(block) if block.len() <= MAX_FRAME => FirstRequest::Upgrade(block),
        _ => FirstRequest::Declined,
    }
}

/// The upgraded request as an HPACK block: pseudo-headers first, then every
/// end-to-end header, names lowercased, each a literal without indexing.
fn header_block(request: &httparse::Request<'_, '_>, connection: &[String]) -> Option<Vec<u8>> {
    let method = request.method?;
    let target = request.path?;
    // Absolute-form targets carry the authority themselves.
    let (authority, path) = match target.strip_prefix("http://") {
        Some(rest) => match rest.find('/') {
            Some(slash) => (Some(&rest.as_bytes()[..slash]), &rest[slash..]),
            None => (Some(rest.as_bytes()), "/"),
        },
        None => (None, target),
    };
    if !path.starts_with('/') && path != "*" {
        return None;
    }
    let authority = authority.or_else(|| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("host"))
            .map(|h| h.value)
    });
    let mut block = Vec::with_capacity(512);
    literal(&mut block, b":method", method.as_bytes());
    literal(&mut block, b":scheme", b"http");
    literal(&mut block, b":path", path.as_bytes());
    if let Some(authority) = authority {
        literal(&mut block, b":authority", authority);
    }
    for header in request.headers.iter() {
        let name = header.name.to_ascii_lowercase();
        let trailers_only = name == "te" && header.value.eq_ignore_ascii_case(b"trailers");
        if (HOP_BY_HOP.contains(&name.as_str()) && !trailers_only) || connection.contains(&name) {
            continue;
        }
        literal(&mut block, name.as_bytes(), header.value);
    }
    Some(block)
}

/// The settings of an `HTTP2-Settings` value (RFC 7540 §3.2.1): the
/// base64url encoding, without padding, of a SETTINGS frame's payload, each
/// known setting within its range (§6.5.2). Unknown identifiers are kept,
/// as a SETTINGS frame's are ignored (§6.5.2), not refused. Only validated:
/// actix's HTTP/2 takes the client's settings from the SETTINGS frame that
/// follows the preface.
fn decode_settings(value: &[u8]) -> Result<Vec<(u16, u32)>, &'static str> {
    let value = value.trim_ascii();
    // Six bytes a setting are eight base64 digits: never any padding.
    if !value.len().is_multiple_of(8) {
        return Err("HTTP2-Settings is not a whole number of settings");
    }
    if value.len() / 8 > MAX_SETTINGS {
        return Err("HTTP2-Settings has too many settings");
    }
    let mut settings = Vec::with_capacity(value.len() / 8);
    for digits in value.chunks_exact(8) {
        let mut bits = 0u64;
        for digit in digits {
            let sextet = match digit {
                b'A'..=b'Z' => digit - b'A',
                b'a'..=b'z' => digit - b'a' + 26,
                b'0'..=b'9' => digit - b'0' + 52,
                b'-' => 62,
                b'_' => 63,
                _ => return Err("HTTP2-Settings is not base64url"),
            };
            bits = bits << 6 | u64::from(sextet);
        }
        let id = (bits >> 32) as u16;
        let value = bits as u32;
        let valid = match id {
            // ENABLE_PUSH
            0x2 => value <= 1,
            // INITIAL_WINDOW_SIZE
            0x4 => value <= 0x7fff_ffff,
            // MAX_FRAME_SIZE
            0x5 => (16_384..=16_777_215).contains(&value),
            _ => true,
        };
        if !valid {
            return Err("HTTP2-Settings has a setting out of its range");
        }
        settings.push((id, value));
    }
    Ok(settings)
}

/// "Literal Header Field without Indexing — New Name" (RFC 7541 §6.2.2).
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    string(out, name);
    string(out, value);
}

/// A string literal without Huffman coding (RFC 7541 §5.2).
fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    integer(out, 7, 0x00, bytes.len());
    out.extend_from_slice(bytes);
}

/// An integer with an N-bit prefix (RFC 7541 §5.1).
fn integer(out: &mut Vec<u8>, prefix_bits: u8, flags: u8, value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// The head without `Upgrade` and `HTTP2-Settings`, and without those tokens in
/// `Connection`, so actix answers it as an ordinary keep-alive request. Line
/// ends come out as CRLF whatever they were (httparse takes both).
fn without_upgrade(head: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + 64);
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        // Empty lines before the request line are skipped, as httparse does.
        .skip_while(|line| line.is_empty())
        .take_while(|line| !line.is_empty());
    if let Some(request_line) = lines.next() {
        out.extend_from_slice(request_line);
        out.extend_from_slice(b"\r\n");
    }
    for line in lines {
        let colon = line.iter().position(|b| *b == b':').unwrap_or(line.len());
        let name = String::from_utf8_lossy(&line[..colon])
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "upgrade" | "http2-settings" => continue,
            "connection" => {
                let value = String::from_utf8_lossy(line.get(colon + 1..).unwrap_or(&[]));
                let kept: Vec<&str> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| {
                        !t.is_empty()
                            && !t.eq_ignore_ascii_case("upgrade")
                            && !t.eq_ignore_ascii_case("http2-settings")
                    })
                    .collect();
                if !kept.is_empty() {
                    out.extend_from_slice(
                        format!("Connection: {}\r\n", kept.join(", ")).as_bytes(),
                    );
                }
                continue;
            }
            _ => {}
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Serves plain connections: negotiates each, then hands it to `http` (actix's
/// HTTP/1 and HTTP/2 dispatchers) with the protocol chosen; `policy` decides
/// which upgrades are made. `on_connection` is told how each connection was
/// served (for the metrics).
pub fn plain_connections<F>(
    http: F,
    policy: UpgradePolicy,
    on_connection: impl Fn(Negotiated) + Clone + 'static,
) -> impl ServiceFactory<TcpStream, Config = (), Response = (), Error = (), InitError = ()>
where
    F: ServiceFactory<
            (Prefixed<TcpStream>, Protocol, Option<SocketAddr>),
            Config = (),
            Response = (),
        > + 'static,
    F::Service: 'static,
    F::Error: std::fmt::Debug,
    F::InitError: std::fmt::Debug,
{
    let http = Rc::new(http);
    let policy = Rc::new(policy);
    actix_service::fn_factory(move || {
        let ready = http.new_service(());
        let on_connection = on_connection.clone();
        let policy = policy.clone();
        async move {
            let service = Rc::new(ready.await.map_err(|err| {
                tracing::error!(error = ?err, "starting the HTTP service failed");
            })?);
            Ok(actix_service::fn_service(move |stream: TcpStream| {
                let service = service.clone();
                let on_connection = on_connection.clone();
                let policy = policy.clone();
                async move {
                    let peer = stream.peer_addr().ok();
                    let negotiated = tokio::time::timeout(
                        FIRST_REQUEST_TIMEOUT,
                        negotiate(stream, peer.map(|p| p.ip()), &policy),
                    )
                    .await;
                    let (io, how) = match negotiated {
                        Ok(Ok(found)) => found,
                        // A client that sent nothing usable in time, or an
                        // upgrade refused (and answered): nothing more to do.
                        Ok(Err(err)) => {
                            tracing::debug!(error = %err, "connection ended before its first request");
                            return Ok(());
                        }
                        Err(_) => return Ok(()),
                    };
                    on_connection(how);
                    if let Err(err) = service.call((io, how.protocol(), peer)).await {
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
    use tokio::io::duplex;

    /// A client's address.
    const CLIENT: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));

    fn open() -> UpgradePolicy {
        UpgradePolicy {
            enabled: true,
            trusted_proxies: TrustedProxies::default(),
        }
    }

    /// What `first_request` decides of a whole head from an allowed client.
    fn decide(head: &[u8]) -> FirstRequest {
        match first_request(head, true) {
            Head::Complete(end, first) => {
                assert_eq!(end, head.len());
                first
            }
            Head::Partial | Head::Invalid => panic!("not a whole head"),
        }
    }

    #[test]
    fn integers_follow_rfc_7541_examples() {
        // C.1.1: 10 with a 5-bit prefix; C.1.2: 1337 with a 5-bit prefix.
        let mut out = Vec::new();
        integer(&mut out, 5, 0, 10);
        assert_eq!(out, [10]);
        out.clear();
        integer(&mut out, 5, 0, 1337);
        assert_eq!(out, [31, 154, 10]);
        out.clear();
        integer(&mut out, 7, 0, 127);
        assert_eq!(out, [127, 0]);
    }

    const UPGRADE_HEAD: &[u8] = b"GET /index/se/rd/serde HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: cargo\r\nAccept-Encoding: gzip\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";

    #[test]
    fn an_h2c_request_becomes_a_header_block() {
        let FirstRequest::Upgrade(block) = decide(UPGRADE_HEAD) else {
            panic!("not upgraded");
        };
        let text = String::from_utf8_lossy(&block);
        for part in [
            ":method",
            "GET",
            ":path",
            "/index/se/rd/serde",
            ":authority",
            "127.0.0.1:8080",
            "user-agent",
            "accept-encoding",
        ] {
            assert!(text.contains(part), "{part} missing from {text:?}");
        }
        for gone in [
            "Upgrade",
            "upgrade",
            "http2-settings",
            "HTTP2-Settings",
            "connection",
            "host\0",
        ] {
            assert!(!text.contains(gone), "{gone} left in {text:?}");
        }
    }

    #[test]
    fn upgrades_with_a_body_or_without_settings_are_declined_and_stripped() {
        let with_body = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
        assert!(matches!(decide(with_body), FirstRequest::Declined));
        let websocket = b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert!(matches!(decide(websocket), FirstRequest::Declined));
        let stripped = String::from_utf8(without_upgrade(websocket)).unwrap();
        assert_eq!(
            stripped,
            "GET /x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"
        );
        let plain = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
        assert!(matches!(decide(plain), FirstRequest::Plain));
    }

    #[tokio::test]
    async fn the_upgrade_answers_101_and_replays_preface_settings_then_stream_1() {
        let (mut client, server) = duplex(64 * 1024);
        let settings = [0u8, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
        let task = tokio::spawn(async move { negotiate(server, CLIENT, &open()).await });
        client.write_all(UPGRADE_HEAD).await.unwrap();
        let mut answer = vec![0u8; SWITCHING.len()];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer, SWITCHING);
        client.write_all(PREFACE).await.unwrap();
        client.write_all(&settings).await.unwrap();
        let (mut io, how) = task.await.unwrap().unwrap();
        assert_eq!(how, Negotiated::Upgraded);
        let mut replay = vec![0u8; PREFACE.len() + settings.len() + 9];
        io.read_exact(&mut replay).await.unwrap();
        assert_eq!(&replay[..PREFACE.len()], PREFACE);
        assert_eq!(
            &replay[PREFACE.len()..PREFACE.len() + settings.len()],
            settings
        );
        let headers = &replay[PREFACE.len() + settings.len()..];
        assert_eq!(headers[3], 0x1, "a HEADERS frame");
        assert_eq!(headers[4], 0x5, "END_STREAM | END_HEADERS");
        assert_eq!(&headers[5..9], &[0, 0, 0, 1], "stream 1");
    }

    #[tokio::test]
    async fn prior_knowledge_and_plain_requests_are_replayed_unchanged() {
        let (mut client, server) = duplex(4096);
        let task = tokio::spawn(async move { negotiate(server, CLIENT, &open()).await });
        client.write_all(PREFACE).await.unwrap();
        let (mut io, how) = task.await.unwrap().unwrap();
        assert_eq!(how, Negotiated::PriorKnowledge);
        let mut replay = vec![0u8; PREFACE.len()];
        io.read_exact(&mut replay).await.unwrap();
        assert_eq!(replay, PREFACE);

        let (mut client, server) = duplex(4096);
        let task = tokio::spawn(async move { negotiate(server, CLIENT, &open()).await });
        let request = b"GET /health HTTP/1.1\r\nHost: h\r\n\r\nGET /ready HTTP/1.1\r\n";
        client.write_all(request).await.unwrap();
        let (mut io, how) = task.await.unwrap().unwrap();
        assert_eq!(how, Negotiated::Http1);
        let mut replay = vec![0u8; request.len()];
        io.read_exact(&mut replay).await.unwrap();
        assert_eq!(&replay[..], &request[..]);
    }

    #[test]
    fn http2_settings_are_decoded_per_rfc_7540() {
        assert_eq!(
            decode_settings(b"AAMAAABkAAQCAAAAAAIAAAAA"),
            Ok(vec![(3, 100), (4, 0x0200_0000), (2, 0)])
        );
        // No settings at all is a valid SETTINGS payload; an unknown id is
        // ignored, as in a SETTINGS frame.
        assert_eq!(decode_settings(b""), Ok(vec![]));
        assert_eq!(decode_settings(b"AAkAAAAB"), Ok(vec![(9, 1)]));
        assert_eq!(decode_settings(b"AAUAAEAA"), Ok(vec![(5, 16_384)]));
        for bad in [
            &b"AAMAAAB"[..],
            b"AAMAAABkAAQ",
            b"AAMAAABk====",
            b"AAMAAAB=",
            b"AAMAAAB+",
            b"AAMAAAB/",
            b"AAMA AABk",
            // ENABLE_PUSH 2, INITIAL_WINDOW_SIZE 2^31, MAX_FRAME_SIZE 4096 and 2^24.
            b"AAIAAAAC",
            b"AASAAAAA",
            b"AAUAABAA",
            b"AAUBAAAA",
        ] {
            assert!(
                decode_settings(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let many = "AAMAAABk".repeat(MAX_SETTINGS);
        assert!(decode_settings(many.as_bytes()).is_ok());
        let too_many = "AAMAAABk".repeat(MAX_SETTINGS + 1);
        assert!(decode_settings(too_many.as_bytes()).is_err());
        let junk = "!".repeat(15 * 1024);
        assert!(decode_settings(junk.as_bytes()).is_err());
    }

    #[test]
    fn malformed_or_repeated_settings_refuse_the_upgrade() {
        let text = std::str::from_utf8(UPGRADE_HEAD).unwrap();
        let bad = text.replace("AAMAAABkAAQCAAAAAAIAAAAA", "not base64url!");
        assert!(matches!(decide(bad.as_bytes()), FirstRequest::Refused(_)));
        let twice = text.replace(
            "\r\n\r\n",
            "\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
        );
        assert!(matches!(decide(twice.as_bytes()), FirstRequest::Refused(_)));
        // Junk settings on an upgrade we decline anyway are only stripped.
        assert!(matches!(
            first_request(bad.as_bytes(), false),
            Head::Complete(_, FirstRequest::Declined)
        ));
    }

    #[test]
    fn proxies_and_forwarded_requests_are_not_upgraded() {
        let trusting = UpgradePolicy {
            enabled: true,
            trusted_proxies: TrustedProxies::parse("10.0.0.0/8").unwrap(),
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(trusting.allows(ip("192.0.2.7")));
        assert!(!trusting.allows(ip("10.1.2.3")));
        assert!(!trusting.allows(ip("::ffff:10.1.2.3")));
        assert!(!trusting.allows(None));
        let off = UpgradePolicy {
            enabled: false,
            ..open()
        };
        assert!(!off.allows(ip("192.0.2.7")));
        assert!(matches!(
            first_request(UPGRADE_HEAD, false),
            Head::Complete(_, FirstRequest::Declined)
        ));

        let text = std::str::from_utf8(UPGRADE_HEAD).unwrap();
        for header in [
            "Forwarded: for=192.0.2.1",
            "X-Forwarded-For: 192.0.2.1",
            "x-forwarded-host: mirror.example.com",
            "X-Forwarded-Proto: https",
            "X-Forwarded-Port: 443",
            "X-Real-IP: 192.0.2.1",
            "Via: 1.1 proxy.example.com",
        ] {
            let head = text.replace("\r\n\r\n", &format!("\r\n{header}\r\n\r\n"));
            assert!(
                matches!(decide(head.as_bytes()), FirstRequest::Declined),
                "{header}"
            );
        }
    }

    #[test]
    fn heads_end_at_an_empty_line_with_crlf_or_bare_lf() {
        assert_eq!(
            empty_line(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 0),
            Some(27)
        );
        assert_eq!(empty_line(b"GET / HTTP/1.1\nHost: h\n\nrest", 0), Some(24));
        assert_eq!(empty_line(b"GET / HTTP/1.1\nHost: h\n\r\n", 0), Some(25));
        assert_eq!(empty_line(b"GET / HTTP/1.1\r\nHost: h\r\n\n", 0), Some(26));
        assert_eq!(empty_line(b"GET / HTTP/1.1\r\nHost: h\r\n", 0), None);
        assert_eq!(empty_line(b"GET / HTTP/1.1\r\nHost: h\r\n\r", 0), None);

        let lf = b"GET /x HTTP/1.1\nHost: h\n\n";
        assert!(matches!(decide(lf), FirstRequest::Plain));
        let lf_upgrade = std::str::from_utf8(UPGRADE_HEAD)
            .unwrap()
            .replace("\r\n", "\n");
        assert!(matches!(
            decide(lf_upgrade.as_bytes()),
            FirstRequest::Upgrade(_)
        ));
        // What is declined goes to actix with CRLF line ends.
        let websocket =
            b"\r\nGET /x HTTP/1.1\nHost: h\r\nConnection: Upgrade\nUpgrade: websocket\n\r\n";
        assert_eq!(
            String::from_utf8(without_upgrade(websocket)).unwrap(),
            "GET /x HTTP/1.1\r\nHost: h\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_pipelined_request_after_a_bare_lf_upgrade_head_is_kept() {
        let lf_upgrade = std::str::from_utf8(UPGRADE_HEAD)
            .unwrap()
            .replace("\r\n", "\n");
        let second = "GET /health HTTP/1.1\r\nHost: h\r\n\r\n";
        let (mut client, server) = duplex(64 * 1024);
        client
            .write_all(format!("{lf_upgrade}{second}").as_bytes())
            .await
            .unwrap();
        let (mut io, how) = negotiate(server, CLIENT, &open()).await.unwrap();
        assert_eq!(how, Negotiated::Http1);
        drop(client);
        let mut replay = Vec::new();
        io.read_to_end(&mut replay).await.unwrap();
        let replay = String::from_utf8(replay).unwrap();
        assert!(
            replay.starts_with("GET /index/se/rd/serde HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"),
            "{replay}"
        );
        assert!(replay.ends_with(&format!("\r\n\r\n{second}")), "{replay}");
        assert!(!replay.to_ascii_lowercase().contains("upgrade"), "{replay}");
    }

    #[tokio::test]
    async fn empty_lines_before_the_request_line_are_dropped() {
        assert_eq!(leading_empty_lines(b"\r\n\n\r\nGET"), 5);
        assert_eq!(leading_empty_lines(b"\r\n\r"), 2);
        assert_eq!(leading_empty_lines(b"GET /\r\n"), 0);
        let (mut client, server) = duplex(64 * 1024);
        let task = tokio::spawn(async move { negotiate(server, CLIENT, &open()).await });
        for _ in 0..100 {
            client.write_all(b"\r\n").await.unwrap();
        }
        client.write_all(UPGRADE_HEAD).await.unwrap();
        let mut answer = vec![0u8; SWITCHING.len()];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer, SWITCHING);
        drop(client);
        assert!(task.await.unwrap().is_err(), "no preface followed");
    }

    #[tokio::test]
    async fn a_refused_upgrade_is_answered_400_and_closed() {
        let text = std::str::from_utf8(UPGRADE_HEAD).unwrap();
        let bad = text.replace("AAMAAABkAAQCAAAAAAIAAAAA", &"!".repeat(15 * 1024));
        let (mut client, server) = duplex(64 * 1024);
        client.write_all(bad.as_bytes()).await.unwrap();
        let negotiated = negotiate(server, CLIENT, &open()).await;
        assert!(negotiated.is_err());
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        assert!(answer.contains("Connection: close"), "{answer}");
    }
}
