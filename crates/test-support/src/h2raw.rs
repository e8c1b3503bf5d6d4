//! A raw HTTP/2 client for hostile tests: it writes whatever frames a test
//! asks for (a header block that never ends, thousands of streams reset at
//! once, an HPACK bomb) and reads frames back, with no client library in the
//! way to refuse or repair them. Blocking, over any `Read + Write`.
//!
//! Header blocks are written as HPACK literals without Huffman coding (the
//! encoding `src/http/h2c.rs` uses for the upgraded request). The client
//! announces a header table size of 0, so the server's answers never refer to
//! its dynamic table and the `:status` of a response can be read from the
//! first field of its block without a full HPACK decoder.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// RST_STREAM's CANCEL error code.
pub const CANCEL: u32 = 0x8;
/// SETTINGS_HEADER_TABLE_SIZE.
const HEADER_TABLE_SIZE: u16 = 0x1;

/// One frame: its 9-byte header followed by `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = (payload.len() as u32).to_be_bytes();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&length[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// RST_STREAM for `stream` with `code`.
pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// An integer with an N-bit prefix (RFC 7541 §5.1).
pub fn integer(out: &mut Vec<u8>, prefix_bits: u8, flags: u8, value: usize) {
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

/// A string literal without Huffman coding (RFC 7541 §5.2).
pub fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    integer(out, 7, 0x00, bytes.len());
    out.extend_from_slice(bytes);
}

/// "Literal Header Field without Indexing — New Name" (RFC 7541 §6.2.2).
pub fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    string(out, name);
    string(out, value);
}

/// "Literal Header Field with Incremental Indexing — New Name" (RFC 7541
/// §6.2.1): the field also enters the server's dynamic table, as index 62
/// (the newest entry).
pub fn literal_indexed(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x40);
    string(out, name);
    string(out, value);
}

/// "Indexed Header Field" (RFC 7541 §6.1): one byte for indexes below 127,
/// however large the field it stands for.
pub fn indexed(out: &mut Vec<u8>, index: usize) {
    integer(out, 7, 0x80, index);
}

/// The header block of a request: the pseudo-headers, then `extra`.
pub fn request_block(method: &str, path: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    literal(&mut block, b":method", method.as_bytes());
    literal(&mut block, b":scheme", b"http");
    literal(&mut block, b":path", path);
    literal(&mut block, b":authority", b"localhost");
    for (name, value) in extra {
        literal(&mut block, name.as_bytes(), value.as_bytes());
    }
    block
}

/// One frame read back.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A GOAWAY's or RST_STREAM's error code.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            GOAWAY => 4,
            RST_STREAM => 0,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }

    /// The `:status` of a HEADERS frame (the first field of the block, which
    /// servers put first; the dynamic table is off, see the module comment).
    pub fn status(&self) -> Option<u16> {
        if self.kind != HEADERS {
            return None;
        }
        let mut block = &self.payload[..];
        if self.flags & 0x8 != 0 {
            // PADDED: the pad length, then the block, then the padding.
            let pad = usize::from(*block.first()?);
            block = block.get(1..block.len().checked_sub(pad)?)?;
        }
        if self.flags & 0x20 != 0 {
            // PRIORITY: 5 bytes before the block.
            block = block.get(5..)?;
        }
        // Dynamic table size updates (001xxxxx) may come first.
        while block.first().is_some_and(|b| b & 0xe0 == 0x20) {
            let (_, used) = read_integer(block, 5)?;
            block = &block[used..];
        }
        let first = *block.first()?;
        if first & 0x80 != 0 {
            // Indexed: the static table's :status entries are 8-14.
            let (index, _) = read_integer(block, 7)?;
            return [200, 204, 206, 304, 400, 404, 500]
                .get(index.checked_sub(8)?)
                .copied();
        }
        // A literal whose name is static entry 8 (`:status`), with
        // incremental indexing (01), without (0000) or never indexed (0001).
        let prefix = if first & 0xc0 == 0x40 { 6 } else { 4 };
        let (name, used) = read_integer(block, prefix)?;
        if name != 8 {
            return None;
        }
        let rest = &block[used..];
        let huffman = *rest.first()? & 0x80 != 0;
        let (length, used) = read_integer(rest, 7)?;
        let value = rest.get(used..used + length)?;
        let digits = if huffman {
            huffman_digits(value)?
        } else {
            String::from_utf8(value.to_vec()).ok()?
        };
        digits.parse().ok()
    }
}

/// An HPACK integer with an N-bit prefix: its value and the bytes it took.
fn read_integer(bytes: &[u8], prefix_bits: u8) -> Option<(usize, usize)> {
    let max = (1usize << prefix_bits) - 1;
    let mut value = usize::from(*bytes.first()?) & max;
    if value < max {
        return Some((value, 1));
    }
    let mut shift = 0;
    for (i, byte) in bytes.iter().enumerate().skip(1) {
        value += usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
    None
}

/// Decodes a Huffman-coded string of decimal digits (all a `:status` holds):
/// `0`-`2` are the 5-bit codes 0-2, `3`-`9` the 6-bit codes 0x19-0x1f
/// (RFC 7541 Appendix B); the padding is all ones.
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let mut out = String::new();
    let mut at = 0;
    let code = |from: usize, len: usize| -> Option<u8> {
        let slice = bits.get(from..from + len)?;
        Some(slice.iter().fold(0u8, |acc, b| acc << 1 | b))
    };
    while at < bits.len() {
        if bits[at..].iter().all(|b| *b == 1) && bits.len() - at < 8 {
            break;
        }
        match code(at, 5)? {
            five @ 0..=2 => {
                out.push(char::from(b'0' + five));
                at += 5;
            }
            _ => {
                let six = code(at, 6)?;
                if !(0x19..=0x1f).contains(&six) {
                    return None;
                }
                out.push(char::from(b'3' + (six - 0x19)));
                at += 6;
            }
        }
    }
    Some(out)
}

/// A connection that spoke the preface and its SETTINGS.
pub struct H2<S> {
    pub stream: S,
    buf: Vec<u8>,
    /// Frames read while waiting for another stream's answer, kept for
    /// `outcome` of their own stream (a GOAWAY stays for every stream).
    pending: Vec<Frame>,
}

impl H2<TcpStream> {
    /// Connects to `base` (`http://127.0.0.1:PORT`) with HTTP/2 by prior
    /// knowledge; reads time out after 10 s (a guard, not a measure).
    pub fn connect(base: &str) -> io::Result<Self> {
        let addr = base.strip_prefix("http://").unwrap_or(base);
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        H2::start(stream)
    }
}

impl<S: Read + Write> H2<S> {
    /// Sends the preface and a SETTINGS frame turning the header table off
    /// (so the server's answers stay readable, see the module comment).
    pub fn start(mut stream: S) -> io::Result<Self> {
        let mut hello = PREFACE.to_vec();
        let mut settings = HEADER_TABLE_SIZE.to_be_bytes().to_vec();
        settings.extend_from_slice(&0u32.to_be_bytes());
        hello.extend_from_slice(&frame(SETTINGS, 0, 0, &settings));
        stream.write_all(&hello)?;
        Ok(H2 {
            stream,
            buf: Vec::new(),
            pending: Vec::new(),
        })
    }

    /// Writes `bytes` (frames) as they are.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// A whole request on `stream`: one HEADERS frame with END_STREAM and
    /// END_HEADERS.
    pub fn request(&mut self, stream: u32, block: &[u8]) -> io::Result<()> {
        self.send(&frame(HEADERS, END_STREAM | END_HEADERS, stream, block))
    }

    /// The next frame; `None` once the server closed the connection. Server
    /// SETTINGS are acknowledged and PINGs answered on the way (both are
    /// still returned).
    pub fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if self.buf.len() >= 9 {
                let length = usize::from(self.buf[0]) << 16
                    | usize::from(self.buf[1]) << 8
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + length {
                    let rest = self.buf.split_off(9 + length);
                    let bytes = std::mem::replace(&mut self.buf, rest);
                    let frame = Frame {
                        kind: bytes[3],
                        flags: bytes[4],
                        stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]])
                            & 0x7fff_ffff,
                        payload: bytes[9..].to_vec(),
                    };
                    if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                        self.send(&self::frame(SETTINGS, ACK, 0, &[]))?;
                    }
                    if frame.kind == PING && frame.flags & ACK == 0 {
                        self.send(&self::frame(PING, ACK, 0, &frame.payload))?;
                    }
                    return Ok(Some(frame));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads until `stream` is answered (its response HEADERS, or its
    /// RST_STREAM), the connection is told to go away, or it closes; the
    /// DATA of the stream is gathered on the way.
    pub fn outcome(&mut self, stream: u32) -> io::Result<Outcome> {
        let mut status = None;
        let mut body = Vec::new();
        loop {
            let kept = self
                .pending
                .iter()
                .position(|f| f.stream == stream || f.kind == GOAWAY);
            let next = match kept {
                Some(at) if self.pending[at].kind == GOAWAY => Some(self.pending[at].clone()),
                Some(at) => Some(self.pending.remove(at)),
                None => self.read_frame()?,
            };
            let Some(frame) = next else {
                return Ok(match status {
                    Some(status) => Outcome::Answered { status, body },
                    None => Outcome::Closed,
                });
            };
            match frame.kind {
                GOAWAY => {
                    if kept.is_none() {
                        self.pending.push(frame.clone());
                    }
                    if let Some(status) = status {
                        return Ok(Outcome::Answered { status, body });
                    }
                    return Ok(Outcome::GoAway(frame.error_code().unwrap_or(0)));
                }
                RST_STREAM if frame.stream == stream => {
                    return Ok(Outcome::Reset(frame.error_code().unwrap_or(0)));
                }
                HEADERS if frame.stream == stream && status.is_none() => {
                    status = Some(frame.status().ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidData, "unreadable :status")
                    })?);
                    if frame.flags & END_STREAM != 0 {
                        return Ok(Outcome::Answered {
                            status: status.unwrap_or(0),
                            body,
                        });
                    }
                }
                DATA if frame.stream == stream => {
                    body.extend_from_slice(&frame.payload);
                    if frame.flags & END_STREAM != 0 {
                        return Ok(Outcome::Answered {
                            status: status.unwrap_or(0),
                            body,
                        });
                    }
                }
                DATA | HEADERS | RST_STREAM if frame.stream != stream && frame.stream != 0 => {
                    self.pending.push(frame);
                }
                _ => {}
            }
        }
    }
}

/// How the server dealt with one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A response: its status and body.
    Answered { status: u16, body: Vec<u8> },
    /// The stream was reset with this error code.
    Reset(u32),
    /// The connection was told to go away with this error code.
    GoAway(u32),
    /// The connection closed without a word about the stream.
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_statuses_read_back() {
        let mut out = Vec::new();
        integer(&mut out, 5, 0, 1337);
        assert_eq!(out, [31, 154, 10]);
        assert_eq!(read_integer(&out, 5), Some((1337, 3)));
        let headers = |payload: Vec<u8>| Frame {
            kind: HEADERS,
            flags: END_HEADERS,
            stream: 1,
            payload,
        };
        assert_eq!(headers(vec![0x88]).status(), Some(200));
        assert_eq!(headers(vec![0x8d]).status(), Some(404));
        // "401" as a plain literal, and Huffman-coded (011010 00000 00001);
        // "431" with padding (011010 011001 00001 + 111).
        assert_eq!(headers(vec![0x08, 3, b'4', b'0', b'1']).status(), Some(401));
        assert_eq!(headers(vec![0x48, 0x82, 0x68, 0x01]).status(), Some(401));
        assert_eq!(
            headers(vec![0x08, 0x83, 0x69, 0x90, 0xff]).status(),
            Some(431)
        );
        // A table size update first.
        assert_eq!(headers(vec![0x20, 0x88]).status(), Some(200));
    }
}
