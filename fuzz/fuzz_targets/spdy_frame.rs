//! SPDY/3.1 frames as a client sends them to the streaming server: whatever the bytes,
//! the reader neither panics nor depends on how the socket split them, and every frame
//! it reads is written back by crust's own encoder into bytes that read the same.

#![no_main]

use bytes::BytesMut;
use crust_runtime::streaming::spdy::frame::{Codec, Frame};
use libfuzzer_sys::fuzz_target;

/// What one connection's reader made of a byte stream.
#[derive(Debug, PartialEq, Eq)]
struct Read {
    frames: Vec<Frame>,
    /// The error that ends the connection, if any.
    error: Option<String>,
    /// Bytes of an unfinished frame (when no error ended the connection).
    pending: usize,
}

/// Feeds `wire` to one connection's codec in reads of `chunk` bytes, as the server's
/// read loop does: every whole frame is taken off before the next read.
fn read(wire: &[u8], chunk: usize) -> Read {
    let mut codec = Codec::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in wire.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(err) => {
                    return Read {
                        frames,
                        error: Some(err.to_string()),
                        pending: 0,
                    };
                }
            }
        }
    }
    Read {
        frames,
        error: None,
        pending: buf.len(),
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte is the size of the socket reads.
    let Some((&chunk, wire)) = data.split_first() else {
        return;
    };
    let whole = read(wire, wire.len());
    let split = read(wire, usize::from(chunk));
    assert_eq!(whole, split, "reads of {chunk} bytes");

    // Frames of a type the server does not use are dropped, not echoed.
    let known: Vec<Frame> = whole
        .frames
        .into_iter()
        .filter(|f| !matches!(f, Frame::Unknown { .. }))
        .collect();
    let mut codec = Codec::new();
    let mut wire = BytesMut::new();
    for frame in &known {
        codec.encode(frame, &mut wire);
    }
    let again = read(&wire, wire.len());
    assert_eq!(again.error, None);
    assert_eq!(again.pending, 0);
    assert_eq!(again.frames, known);
});
