use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn decode_all(codec: &mut Codec, bytes: &[u8]) -> Vec<Frame> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = codec.decode(&mut buf).unwrap() {
        out.push(f);
    }
    assert!(buf.is_empty(), "{} bytes left", buf.len());
    out
}

/// Two SYN_STREAMs in a row from C zlib (another implementation than ours), the second
/// compressed against the context the first left: header blocks share one stream.
#[test]
fn decodes_syn_streams_compressed_by_zlib() {
    let wire = [
        hex(
            "80030001000000280000000100000000000078bbe3c6a7c202a62346703a2b294a4dcc851625\
             aca9a08006000000ffff",
        ),
        hex(
            "80030001000000270000000300000000000002651c0c2960624ec90797d1c022bb0844b35a18\
             30581802000000ffff",
        ),
    ]
    .concat();
    let mut codec = Codec::new();
    let frames = decode_all(&mut codec, &wire);
    assert_eq!(
        frames,
        [
            Frame::SynStream {
                stream_id: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "error".into())],
            },
            Frame::SynStream {
                stream_id: 3,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: vec![
                    ("streamtype".into(), "stdout".into()),
                    ("port".into(), "80\u{0}81".into())
                ],
            },
        ]
    );
}

#[test]
fn a_partial_frame_waits_for_the_rest() {
    let wire = hex("0000000301000005" /* data, stream 3, FIN, 5 bytes */);
    let mut codec = Codec::new();
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"hel");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"lo");
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"hello")
        })
    );
}

#[test]
fn control_frames_encode_as_the_draft_says() {
    let mut codec = Codec::new();
    let mut out = BytesMut::new();
    codec.encode(&Frame::Ping { id: 7 }, &mut out);
    assert_eq!(
        &out[..],
        hex("80030006000000040000_0007".replace('_', "").as_str())
    );
    out.clear();
    codec.encode(
        &Frame::RstStream {
            stream_id: 5,
            status: RST_CANCEL,
        },
        &mut out,
    );
    assert_eq!(
        &out[..],
        hex("800300030000000800000005_00000005"
            .replace('_', "")
            .as_str())
    );
    out.clear();
    codec.encode(
        &Frame::WindowUpdate {
            stream_id: 1,
            delta: 65536,
        },
        &mut out,
    );
    assert_eq!(&out[..], hex("80030009000000080000000100010000"));
    out.clear();
    codec.encode(
        &Frame::Data {
            stream_id: 9,
            flags: FLAG_FIN,
            data: Bytes::new(),
        },
        &mut out,
    );
    assert_eq!(&out[..], hex("0000000901000000"));
}

/// Our header blocks decode with a fresh peer context, block after block.
#[test]
fn header_blocks_round_trip_through_both_contexts() {
    let mut ours = Codec::new();
    let mut peer = Codec::new();
    let mut wire = BytesMut::new();
    let replies: Vec<Frame> = (0..3)
        .map(|i| Frame::SynReply {
            stream_id: 1 + 2 * i,
            flags: 0,
            headers: if i == 1 {
                vec![("x-a".into(), "b".into()), ("x-c".into(), "d\u{0}e".into())]
            } else {
                vec![]
            },
        })
        .collect();
    for f in &replies {
        ours.encode(f, &mut wire);
    }
    let got = decode_all(&mut peer, &wire);
    assert_eq!(got, replies);
}

#[test]
fn bad_frames_are_errors() {
    let mut codec = Codec::new();
    // Version 2.
    let mut buf = BytesMut::from(&hex("8002000600000004_00000001".replace('_', "").as_str())[..]);
    assert!(codec.decode(&mut buf).is_err());
    // A PING too short.
    let mut buf = BytesMut::from(&hex("800300060000000200_00".replace('_', "").as_str())[..]);
    assert!(codec.decode(&mut buf).is_err());
    // A header block that is not zlib.
    let mut buf = BytesMut::from(&hex("8003000200000008000000010badf00d")[..]);
    assert!(Codec::new().decode(&mut buf).is_err());
}

/// zlib inflates a thousandfold: a header block's inflated size is bounded, or a frame
/// of a few KiB would take gigabytes.
#[test]
fn a_header_block_that_inflates_too_far_is_refused() {
    let big = |n: usize| Frame::SynStream {
        stream_id: 1,
        associated: 0,
        priority: 0,
        flags: 0,
        headers: vec![("x".into(), "a".repeat(n))],
    };
    let mut wire = BytesMut::new();
    Codec::new().encode(&big(MAX_HEADER_BLOCK + 1), &mut wire);
    assert!(wire.len() < 8 * 1024, "{} bytes on the wire", wire.len());
    let err = Codec::new().decode(&mut wire).unwrap_err();
    assert!(err.to_string().contains("header block"), "{err}");
    // Just under the bound is fine.
    let mut wire = BytesMut::new();
    Codec::new().encode(&big(MAX_HEADER_BLOCK - 64), &mut wire);
    assert_eq!(
        decode_all(&mut Codec::new(), &wire),
        [big(MAX_HEADER_BLOCK - 64)]
    );
}
