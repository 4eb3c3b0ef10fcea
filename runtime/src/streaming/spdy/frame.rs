//! SPDY/3.1 frames and their header compression (the SPDY/3 draft, sections 2.2-2.6).
//!
//! A control frame is `1 | version(15) | type(16) | flags(8) | length(24) | data`, a
//! data frame `0 | stream id(31) | flags(8) | length(24) | data`. Header blocks (of
//! SYN_STREAM, SYN_REPLY and HEADERS) are name/value lists compressed with zlib, one
//! stream per direction for the connection's life, primed with the SPDY dictionary and
//! flushed with a sync flush after each block.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dict::DICTIONARY;

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// FLAG_FIN: the sender's last frame on the stream.
pub const FLAG_FIN: u8 = 0x01;
/// The largest frame payload (24-bit length).
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// The largest header block accepted, inflated. Kubernetes streaming sends a few
/// short headers, while zlib inflates up to about a thousandfold: unbounded, one frame
/// of a few KiB could take gigabytes (as GHSA-pc3f-x583-g7j2 did to moby/spdystream).
pub const MAX_HEADER_BLOCK: usize = 1 << 20;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status: PROTOCOL_ERROR.
pub const RST_PROTOCOL_ERROR: u32 = 1;
/// RST_STREAM status: CANCEL.
pub const RST_CANCEL: u32 = 5;

/// Errors reading frames.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A frame is malformed.
    #[error("spdy: {0}")]
    Protocol(String),
    /// A header block does not decompress.
    #[error("spdy: header block: {0}")]
    Compression(String),
}

/// A `Result` of frame decoding.
pub type Result<T> = std::result::Result<T, Error>;

fn protocol(msg: impl Into<String>) -> Error {
    Error::Protocol(msg.into())
}

/// Header names (lower case) and values; several values of one name are joined by NUL.
pub type Headers = Vec<(String, String)>;

/// The value of `name` in `headers`.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One SPDY frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// The new stream's id.
        stream_id: u32,
        /// The stream it belongs to, or 0.
        associated: u32,
        /// Priority, 0 (highest) to 7.
        priority: u8,
        /// FLAG_FIN, FLAG_UNIDIRECTIONAL.
        flags: u8,
        /// Its headers.
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN.
        flags: u8,
        /// Reply headers.
        headers: Headers,
    },
    /// Ends a stream abnormally.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// Why.
        status: u32,
    },
    /// Connection settings (read and ignored).
    Settings,
    /// A ping, answered with the same id.
    Ping {
        /// Its id.
        id: u32,
    },
    /// The sender closes the connection.
    GoAway {
        /// The last stream it accepted.
        last_good: u32,
        /// Why.
        status: u32,
    },
    /// More headers for a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN.
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// More room in the peer's receive window.
    WindowUpdate {
        /// The stream (0 for the connection).
        stream_id: u32,
        /// Bytes added.
        delta: u32,
    },
    /// Stream data.
    Data {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN.
        flags: u8,
        /// The payload.
        data: Bytes,
    },
    /// A control frame of a type this server does not use.
    Unknown {
        /// Its type.
        kind: u16,
    },
}

/// The header compression contexts of one connection, each made on first use (the
/// reading side needs only the inflater, the writing side only the deflater).
#[derive(Default)]
pub struct Codec {
    inflate: Option<Decompress>,
    deflate: Option<Compress>,
}

impl Codec {
    /// Fresh contexts, as at the start of a connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one whole frame off the front of `buf`; None until one has arrived.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + len {
            buf.reserve(8 + len - buf.len());
            return Ok(None);
        }
        let head = buf.split_to(8);
        let mut body = buf.split_to(len).freeze();
        let flags = head[4];
        if head[0] & 0x80 == 0 {
            let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            return Ok(Some(Frame::Data {
                stream_id,
                flags,
                data: body,
            }));
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != VERSION {
            return Err(protocol(format!("version {version}, want {VERSION}")));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = |body: &Bytes, n: usize| {
            if body.len() < n {
                Err(protocol(format!(
                    "frame type {kind} of {} bytes",
                    body.len()
                )))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            SYN_STREAM => {
                need(&body, 10)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let associated = body.get_u32() & 0x7fff_ffff;
                let priority = body.get_u8() >> 5;
                body.advance(1);
                let headers = self.read_headers(&body)?;
                Frame::SynStream {
                    stream_id,
                    associated,
                    priority,
                    flags,
                    headers,
                }
            }
            SYN_REPLY | HEADERS => {
                need(&body, 4)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let headers = self.read_headers(&body)?;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                need(&body, 8)?;
                Frame::RstStream {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            SETTINGS => Frame::Settings,
            PING => {
                need(&body, 4)?;
                Frame::Ping { id: body.get_u32() }
            }
            GOAWAY => {
                need(&body, 8)?;
                Frame::GoAway {
                    last_good: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            WINDOW_UPDATE => {
                need(&body, 8)?;
                Frame::WindowUpdate {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                    delta: body.get_u32() & 0x7fff_ffff,
                }
            }
            kind => Frame::Unknown { kind },
        };
        Ok(Some(frame))
    }

    /// Appends `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) {
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                out.put_u32(stream_id & 0x7fff_ffff);
                put_flags_len(out, *flags, data.len());
                out.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated,
                priority,
                flags,
                headers,
            } => {
                let block = self.write_headers(headers);
                put_control(out, SYN_STREAM, *flags, 10 + block.len());
                out.put_u32(*stream_id);
                out.put_u32(*associated);
                out.put_u8(priority << 5);
                out.put_u8(0);
                out.put_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                let block = self.write_headers(headers);
                put_control(out, kind, *flags, 4 + block.len());
                out.put_u32(*stream_id);
                out.put_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                put_control(out, RST_STREAM, 0, 8);
                out.put_u32(*stream_id);
                out.put_u32(*status);
            }
            Frame::Settings => {
                put_control(out, SETTINGS, 0, 4);
                out.put_u32(0);
            }
            Frame::Ping { id } => {
                put_control(out, PING, 0, 4);
                out.put_u32(*id);
            }
            Frame::GoAway { last_good, status } => {
                put_control(out, GOAWAY, 0, 8);
                out.put_u32(*last_good);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                put_control(out, WINDOW_UPDATE, 0, 8);
                out.put_u32(*stream_id);
                out.put_u32(*delta);
            }
            Frame::Unknown { .. } => {}
        }
    }

    fn read_headers(&mut self, block: &[u8]) -> Result<Headers> {
        let raw = self.inflate_block(block)?;
        let mut b = &raw[..];
        let take = |b: &mut &[u8]| -> Result<String> {
            if b.len() < 4 {
                return Err(protocol("truncated header block"));
            }
            let n = b.get_u32() as usize;
            if b.len() < n {
                return Err(protocol("truncated header block"));
            }
            let s = String::from_utf8_lossy(&b[..n]).into_owned();
            b.advance(n);
            Ok(s)
        };
        if b.len() < 4 {
            return Err(protocol("truncated header block"));
        }
        let count = b.get_u32() as usize;
        let mut headers = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let name = take(&mut b)?.to_ascii_lowercase();
            let value = take(&mut b)?;
            headers.push((name, value));
        }
        Ok(headers)
    }

    fn inflate_block(&mut self, mut input: &[u8]) -> Result<Vec<u8>> {
        let inflate = self.inflate.get_or_insert_with(|| Decompress::new(true));
        let mut out = Vec::with_capacity((input.len() * 4 + 64).min(MAX_HEADER_BLOCK));
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let (in0, out0) = (inflate.total_in(), out.len());
            let res = inflate.decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(inflate.total_in() - in0) as usize..];
            if out.len() > MAX_HEADER_BLOCK {
                return Err(protocol(format!(
                    "header block inflates past {MAX_HEADER_BLOCK} bytes"
                )));
            }
            match res {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    let stalled = out.len() == out0 && inflate.total_in() == in0;
                    if (input.is_empty() && out.len() < out.capacity()) || stalled {
                        break;
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => inflate
                    .set_dictionary(DICTIONARY)
                    .map(drop)
                    .map_err(|e| Error::Compression(e.to_string()))?,
                Err(e) => return Err(Error::Compression(e.to_string())),
            }
        }
        Ok(out)
    }

    fn write_headers(&mut self, headers: &Headers) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.put_u32(headers.len() as u32);
        for (n, v) in headers {
            raw.put_u32(n.len() as u32);
            raw.put_slice(n.to_ascii_lowercase().as_bytes());
            raw.put_u32(v.len() as u32);
            raw.put_slice(v.as_bytes());
        }
        let deflate = self.deflate.get_or_insert_with(|| {
            let mut d = Compress::new(Compression::default(), true);
            d.set_dictionary(DICTIONARY)
                .expect("zlib takes a dictionary before the first block");
            d
        });
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let in0 = deflate.total_in();
            deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("deflate of an in-memory buffer");
            input = &input[(deflate.total_in() - in0) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        out
    }
}

fn put_control(out: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    put_flags_len(out, flags, len);
}

fn put_flags_len(out: &mut BytesMut, flags: u8, len: usize) {
    debug_assert!(len <= MAX_PAYLOAD);
    out.put_u32(((flags as u32) << 24) | (len as u32 & 0x00ff_ffff));
}

#[cfg(test)]
mod tests;
