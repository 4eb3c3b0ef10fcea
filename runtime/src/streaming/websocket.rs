//! The WebSocket transport. Remote command (`v5.channel.k8s.io`, `v4.channel.k8s.io`,
//! and the unversioned `channel.k8s.io`, also taken when the client names no
//! subprotocol, as kubelet does) multiplexes streams in binary messages whose first
//! byte is the channel: 0 stdin, 1 stdout, 2 stderr, 3 error (the status: JSON from v4
//! on, before it only the failure's text), 4 resize; in v5 the client sends
//! `[255, channel]` to close a channel. Port forwarding
//! (`SPDY/3.1+portforward.k8s.io`) tunnels a whole SPDY connection in binary messages:
//! [`tunnel`] turns the WebSocket back into a byte stream for the SPDY code.

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Remote-command subprotocols, preferred first.
pub const CHANNEL_PROTOCOLS: [&str; 3] =
    ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"];
/// The port-forward subprotocol: SPDY tunnelled in WebSocket.
pub const PORTFORWARD_PROTOCOLS: [&str; 1] = ["SPDY/3.1+portforward.k8s.io"];

/// Channel of the client's stdin.
pub const STDIN: u8 = 0;
/// Channel of stdout.
pub const STDOUT: u8 = 1;
/// Channel of stderr.
pub const STDERR: u8 = 2;
/// Channel of the final status.
pub const ERROR: u8 = 3;
/// Channel of terminal resizes.
pub const RESIZE: u8 = 4;
/// v5: the client closes the channel in the next byte.
pub const CLOSE: u8 = 255;

/// A message from the client on the channel protocol.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// Data on a channel.
    Data(u8, &'a [u8]),
    /// v5: the client closed a channel.
    Close(u8),
    /// Nothing usable (an empty message).
    Empty,
}

/// Splits a binary message of the channel protocol.
pub fn parse(msg: &[u8], v5: bool) -> Inbound<'_> {
    match msg {
        [] => Inbound::Empty,
        [CLOSE, ch, ..] if v5 => Inbound::Close(*ch),
        [ch, rest @ ..] => Inbound::Data(*ch, rest),
    }
}

/// A binary message of `data` on `channel`.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    v
}

/// Makes `ws` a byte stream: binary messages in, bytes out, and the reverse. Returns
/// the other end; it sees end of file when the client closes, and closing it closes
/// the WebSocket (code 1000).
pub fn tunnel<S>(ws: WebSocketStream<S>) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (near, far) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(near);
        let inbound = async {
            while let Some(Ok(msg)) = stream.next().await {
                match msg {
                    Message::Binary(b) if wr.write_all(&b).await.is_err() => break,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = wr.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let msg = Message::Binary(buf[..n].to_vec().into());
                        if sink.send(msg).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = sink.send(Message::Close(Some(normal_close()))).await;
        };
        // Either side ending ends the tunnel.
        tokio::select! {
            () = inbound => {}
            () = outbound => {}
        }
    });
    far
}

/// A Close frame's payload for a normal end (1000), which client-go expects.
pub fn normal_close() -> tokio_tungstenite::tungstenite::protocol::CloseFrame {
    tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_messages() {
        assert_eq!(parse(&[0, b'h', b'i'], true), Inbound::Data(STDIN, b"hi"));
        assert_eq!(parse(&[4, b'{', b'}'], false), Inbound::Data(RESIZE, b"{}"));
        assert_eq!(parse(&[255, 0], true), Inbound::Close(STDIN));
        // v4 has no close message: 255 is just an unknown channel.
        assert_eq!(parse(&[255, 0], false), Inbound::Data(255, &[0]));
        assert_eq!(parse(&[], true), Inbound::Empty);
        assert_eq!(parse(&[STDIN], true), Inbound::Data(STDIN, &[]));
        assert_eq!(frame(STDOUT, b"out"), b"\x01out");
        assert_eq!(frame(ERROR, b""), [3]);
    }
}
