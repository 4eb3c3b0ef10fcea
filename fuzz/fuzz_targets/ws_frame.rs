//! WebSocket channel messages from a streaming client: the remote-command channel
//! byte (v4, v5 with its close message), port forwarding's binary and base64 channel
//! messages and its `port` query, and the terminal sizes on the resize channel.

#![no_main]

use arbitrary::Arbitrary;
use crust_runtime::streaming::portforward_ws::{self, Codec, MAX_PORTS};
use crust_runtime::streaming::remotecommand::SizeDecoder;
use crust_runtime::streaming::websocket::{self, Inbound};
use libfuzzer_sys::fuzz_target;
use tokio_tungstenite::tungstenite::Message;

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    /// A binary message on the remote-command channel protocol.
    Channel(&'a [u8]),
    /// A port-forward message, binary or text.
    PortForward { binary: bool, msg: &'a [u8] },
    /// The query of a port-forward URL and the PortForward request's ports.
    Ports { query: &'a str, requested: Vec<i32> },
    /// Terminal sizes sent as JSON, in reads of the given sizes.
    Sizes {
        sizes: Vec<(u16, u16)>,
        reads: Vec<u8>,
    },
    /// Any bytes on the resize channel.
    Resize(Vec<&'a [u8]>),
}

fn channel(msg: &[u8]) {
    for v5 in [false, true] {
        match websocket::parse(msg, v5) {
            Inbound::Empty => assert!(msg.is_empty()),
            Inbound::Close(ch) => {
                assert!(v5);
                assert_eq!(&msg[..2], [websocket::CLOSE, ch]);
            }
            Inbound::Data(ch, data) => assert_eq!(websocket::frame(ch, data), msg),
        }
    }
}

fn port_forward(binary: bool, msg: &[u8]) {
    let (codec, msg) = if binary {
        (Codec::Binary, Message::Binary(msg.to_vec().into()))
    } else {
        let Ok(text) = std::str::from_utf8(msg) else {
            return;
        };
        (Codec::Base64, Message::Text(text.into()))
    };
    let Some((ch, data)) = codec.decode(&msg) else {
        return;
    };
    // What the server sends on a channel reads back the same.
    let echoed = codec.encode(ch, &data);
    assert_eq!(codec.decode(&echoed), Some((ch, data)));
    // The client's text starts with an ASCII channel character, which the server's
    // own messages spell the same way.
    if msg.is_text() && msg.to_text().is_ok_and(|t| t.as_bytes()[0].is_ascii()) {
        assert_eq!(echoed, msg);
    }
}

fn ports(query: &str, requested: &[i32]) {
    if let Ok(ports) = portforward_ws::ports(Some(query), requested) {
        assert!(!ports.is_empty() && ports.len() <= MAX_PORTS);
        assert!(ports.iter().all(|&p| p > 0));
    }
}

fn sizes(sizes: &[(u16, u16)], reads: &[u8]) {
    let stream: Vec<u8> = sizes
        .iter()
        .flat_map(|(w, h)| format!("{{\"Width\":{w},\"Height\":{h}}}").into_bytes())
        .collect();
    let mut decoder = SizeDecoder::default();
    let mut got = Vec::new();
    let mut rest = &stream[..];
    let mut reads = reads.iter().map(|&n| usize::from(n).max(1));
    while !rest.is_empty() {
        let n = reads.next().unwrap_or(rest.len()).min(rest.len());
        got.extend(decoder.push(&rest[..n]));
        rest = &rest[n..];
    }
    let got: Vec<(u16, u16)> = got.iter().map(|s| (s.width, s.height)).collect();
    assert_eq!(got, sizes);
}

fuzz_target!(|input: Input<'_>| {
    match input {
        Input::Channel(msg) => channel(msg),
        Input::PortForward { binary, msg } => port_forward(binary, msg),
        Input::Ports { query, requested } => ports(query, &requested),
        Input::Sizes { sizes: s, reads } => sizes(&s, &reads),
        Input::Resize(reads) => {
            let mut decoder = SizeDecoder::default();
            for r in reads {
                decoder.push(r);
            }
        }
    }
});
