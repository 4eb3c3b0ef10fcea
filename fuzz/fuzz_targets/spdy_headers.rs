//! SPDY header blocks: the name/value lists of SYN_STREAM, SYN_REPLY and HEADERS
//! frames, zlib-compressed against the SPDY dictionary in one stream per connection.
//! The blocks are built here from the fuzzer's lists (well formed or not) and
//! compressed as a client would, so the fuzzer reaches crust's decoding of the lists
//! rather than stopping at zlib; raw blocks that are not zlib at all are mixed in.
//! A well-formed list must come back as sent.

#![no_main]

use arbitrary::Arbitrary;
use bytes::{BufMut, BytesMut};
use crust_runtime::streaming::spdy::dict::DICTIONARY;
use crust_runtime::streaming::spdy::frame::{Codec, Frame, Headers};
use flate2::{Compress, Compression, FlushCompress};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Block {
    /// A well-formed list of names and values.
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
    /// Any bytes as the uncompressed list.
    Raw(Vec<u8>),
    /// Any bytes as the compressed block (breaks the connection's zlib stream).
    NotZlib(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Sent {
    /// SYN_STREAM (0), SYN_REPLY (1) or HEADERS (anything else).
    kind: u8,
    stream_id: u32,
    flags: u8,
    block: Block,
}

/// The client's compressor: one zlib stream for the connection, primed with the
/// dictionary, a sync flush after each block.
struct Deflater(Compress);

impl Deflater {
    fn new() -> Self {
        let mut c = Compress::new(Compression::default(), true);
        c.set_dictionary(DICTIONARY)
            .expect("a fresh stream takes a dictionary");
        Deflater(c)
    }

    fn block(&mut self, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = raw;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.0.total_in();
            self.0
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("deflate into memory");
            input = &input[(self.0.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

/// An uncompressed name/value list.
fn list(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut raw = Vec::new();
    raw.put_u32(pairs.len() as u32);
    for (name, value) in pairs {
        raw.put_u32(name.len() as u32);
        raw.put_slice(name);
        raw.put_u32(value.len() as u32);
        raw.put_slice(value);
    }
    raw
}

/// A control frame of `kind` around `block`.
fn control(kind: u16, flags: u8, stream_id: u32, block: &[u8], out: &mut BytesMut) {
    let prefix = if kind == 1 { 10 } else { 4 };
    out.put_u16(0x8003);
    out.put_u16(kind);
    out.put_u32((u32::from(flags) << 24) | (prefix + block.len()) as u32);
    out.put_u32(stream_id & 0x7fff_ffff);
    if kind == 1 {
        out.put_u32(0);
        out.put_u16(0);
    }
    out.put_slice(block);
}

fn headers_of(frame: &Frame) -> &Headers {
    match frame {
        Frame::SynStream { headers, .. }
        | Frame::SynReply { headers, .. }
        | Frame::Headers { headers, .. } => headers,
        other => panic!("a header frame was read as {other:?}"),
    }
}

fuzz_target!(|sent: Vec<Sent>| {
    let mut deflater = Deflater::new();
    let mut codec = Codec::new();
    let mut buf = BytesMut::new();
    for s in &sent {
        let block = match &s.block {
            Block::Pairs(pairs) => deflater.block(&list(pairs)),
            Block::Raw(raw) => deflater.block(raw),
            Block::NotZlib(bytes) => bytes.clone(),
        };
        let kind = match s.kind {
            0 => 1,
            1 => 2,
            _ => 8,
        };
        control(kind, s.flags, s.stream_id, &block, &mut buf);
        let frame = match codec.decode(&mut buf) {
            Ok(frame) => frame.expect("a whole frame is read"),
            Err(_) if matches!(s.block, Block::Pairs(_)) => {
                panic!("a well-formed block was refused: {s:?}")
            }
            // The connection ends at a bad block.
            Err(_) => return,
        };
        assert!(buf.is_empty());
        let headers = headers_of(&frame);
        if let Block::Pairs(pairs) = &s.block {
            let want: Headers = pairs
                .iter()
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(n).to_ascii_lowercase(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect();
            assert_eq!(headers, &want);
        }
        if matches!(s.block, Block::NotZlib(_)) {
            // Whatever inflated, the stream is not the client's any more.
            return;
        }
    }
});
