//! Port forwarding over WebSocket in kubelet's own protocol: subprotocol
//! `v4.channel.k8s.io`, `v4.base64.channel.k8s.io`, or none (then as
//! `v4.channel.k8s.io`). The ports are fixed when the session opens: the URL's `port`
//! query parameters (`?port=80&port=8080`, or `?port=80,8080`), as kubelet reads them,
//! or else the PortForward request's ports. Port i gets two channels: 2i carries the
//! data both ways, 2i+1 the server's error report (the client's messages on it are
//! ignored). The first message the server sends on each channel is the port as a
//! little-endian u16. Each port is one connection to the pod, opened at once; a
//! failure goes on its error channel as kubelet's JSON report. When a connection ends
//! its channels go quiet, and once every port's connection has ended the server closes
//! the WebSocket (1000). The client closing the WebSocket ends every connection.
//!
//! With `v4.channel.k8s.io` a message is binary, its first byte the channel. With
//! `v4.base64.channel.k8s.io` it is text: the channel as the character `'0' + channel`
//! and the data in standard base64.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::stream::SplitStream;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::{Runtime, portforward, websocket};

/// The channel subprotocols for port forwarding, besides the SPDY tunnel.
pub const PROTOCOLS: [&str; 2] = ["v4.channel.k8s.io", "v4.base64.channel.k8s.io"];

/// The query parameter naming a port (kubelet's `api.PortHeader`).
const PORT_PARAM: &str = "port";

/// Most ports in one session: their channels' characters stay ASCII digits and
/// punctuation in the base64 protocol ('0' + 79 = 127).
pub const MAX_PORTS: usize = 40;

/// Messages queued towards the client, and from the client per port.
const BACKLOG: usize = 16;

/// How long a connection whose one direction ended waits for the other, as
/// containerd's port forwarding does.
const HALF_CLOSED_GRACE: Duration = Duration::from_secs(1);

/// How long the end of a session waits for the close to get through.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Size of one read from the pod's connection.
const READ_BUF: usize = 32 * 1024;

/// How messages carry channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Binary messages, the channel in the first byte.
    Binary,
    /// Text messages: the channel as `'0' + channel`, then the data in base64.
    Base64,
}

impl Codec {
    /// The codec of a negotiated subprotocol ("" when the client offered none).
    pub fn of(protocol: &str) -> Option<Codec> {
        match protocol {
            "" | "v4.channel.k8s.io" => Some(Codec::Binary),
            "v4.base64.channel.k8s.io" => Some(Codec::Base64),
            _ => None,
        }
    }

    /// A message of `data` on `channel`.
    pub fn encode(self, channel: u8, data: &[u8]) -> Message {
        match self {
            Codec::Binary => Message::Binary(websocket::frame(channel, data).into()),
            Codec::Base64 => {
                let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
                text.push(char::from(b'0'.wrapping_add(channel)));
                BASE64.encode_string(data, &mut text);
                Message::Text(text.into())
            }
        }
    }

    /// The channel and data of a client's message; None for a message that carries
    /// none (control frames, an empty message, base64 that does not decode). Either
    /// kind of data message is read, as kubelet does.
    pub fn decode(self, msg: &Message) -> Option<(u8, Vec<u8>)> {
        let raw: &[u8] = match msg {
            Message::Binary(b) => b,
            Message::Text(t) => t.as_bytes(),
            _ => return None,
        };
        let (&first, rest) = raw.split_first()?;
        match self {
            Codec::Binary => Some((first, rest.to_vec())),
            Codec::Base64 => {
                let data = BASE64.decode(rest).ok()?;
                Some((first.wrapping_sub(b'0'), data))
            }
        }
    }
}

/// The ports of a session: the `port` parameters of the URL's query when it has any,
/// checked as kubelet checks them, else the PortForward request's. The error is the
/// message of the 400 answer.
pub fn ports(query: Option<&str>, requested: &[i32]) -> Result<Vec<u16>, String> {
    let params: Vec<String> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == PORT_PARAM)
        .map(|(_, v)| v.into_owned())
        .collect();
    let mut ports = Vec::new();
    if params.is_empty() {
        for &p in requested {
            match u16::try_from(p) {
                Ok(port) if port > 0 => ports.push(port),
                _ => {
                    return Err(format!(
                        "port {p} of the port-forward request is not a port"
                    ));
                }
            }
        }
    }
    for value in &params {
        if value.is_empty() {
            return Err(format!("query parameter {PORT_PARAM:?} cannot be empty"));
        }
        for p in value.split(',') {
            let port = p
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| p.parse::<u16>().ok())
                .flatten()
                .ok_or_else(|| {
                    format!("unable to parse {value:?} as a port: {p:?} is not a port")
                })?;
            if port == 0 {
                return Err(format!("port {value:?} must be > 0"));
            }
            ports.push(port);
        }
    }
    if ports.is_empty() {
        return Err(format!("query parameter {PORT_PARAM:?} is required"));
    }
    if ports.len() > MAX_PORTS {
        return Err(format!(
            "{} ports asked for, at most {MAX_PORTS} in one session",
            ports.len()
        ));
    }
    Ok(ports)
}

/// The two channels of one port, towards the client.
#[derive(Clone)]
struct PortChannels {
    out: mpsc::Sender<Message>,
    codec: Codec,
    data: u8,
}

impl PortChannels {
    async fn data(&self, b: &[u8]) -> Result<(), ()> {
        let msg = self.codec.encode(self.data, b);
        self.out.send(msg).await.map_err(|_| ())
    }

    async fn error(&self, report: &[u8]) {
        let msg = self.codec.encode(self.data + 1, report);
        let _ = self.out.send(msg).await;
    }
}

/// Serves port forwarding of `ports` in `sandbox` on a WebSocket.
pub async fn serve<S>(
    ws: WebSocketStream<S>,
    codec: Codec,
    ports: Vec<u16>,
    sandbox: String,
    rt: Arc<dyn Runtime>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    // Each channel's port first, before any data.
    for (i, port) in ports.iter().enumerate() {
        for ch in [2 * i, 2 * i + 1] {
            let msg = codec.encode(ch as u8, &port.to_le_bytes());
            if sink.feed(msg).await.is_err() {
                return;
            }
        }
    }
    if sink.flush().await.is_err() {
        return;
    }
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(BACKLOG);
    // Sends in order; once every port is done, closes the WebSocket.
    let mut writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        let close = Message::Close(Some(websocket::normal_close()));
        let _ = sink.send(close).await;
    });
    let mut inbound = Vec::with_capacity(ports.len());
    let mut forwards = JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        let (tx, rx) = mpsc::channel::<Bytes>(BACKLOG);
        inbound.push(Some(tx));
        let channels = PortChannels {
            out: out_tx.clone(),
            codec,
            data: (2 * i) as u8,
        };
        forwards.spawn(forward(
            Arc::clone(&rt),
            sandbox.clone(),
            port,
            rx,
            channels,
        ));
    }
    drop(out_tx);
    let client_gone = tokio::select! {
        () = read_client(&mut source, codec, &mut inbound) => true,
        () = async { while forwards.join_next().await.is_some() {} } => false,
    };
    // The client is gone (nothing more can reach it), or every port is done.
    forwards.shutdown().await;
    drop(inbound);
    if tokio::time::timeout(CLOSE_GRACE, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    if !client_gone {
        // Let the client answer the close before the connection drops.
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(m)) = source.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    tracing::debug!(sandbox, ?ports, client_gone, "websocket port forward ended");
}

/// Hands the client's data to its ports until the client closes the WebSocket or the
/// connection breaks.
async fn read_client<S>(
    source: &mut SplitStream<WebSocketStream<S>>,
    codec: Codec,
    inbound: &mut [Option<mpsc::Sender<Bytes>>],
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(Ok(msg)) = source.next().await {
        if matches!(msg, Message::Close(_)) {
            break;
        }
        let Some((channel, data)) = codec.decode(&msg) else {
            continue;
        };
        // Odd channels carry the server's errors; the client has nothing to say there.
        if channel % 2 == 1 || data.is_empty() {
            continue;
        }
        let slot = inbound.get_mut(usize::from(channel / 2));
        if let Some(slot) = slot
            && let Some(tx) = slot
            && tx.send(Bytes::from(data)).await.is_err()
        {
            // That port's connection has ended: its data goes nowhere.
            *slot = None;
        }
    }
}

/// Forwards one port: connects to it in the pod, then copies both ways. As containerd
/// does, the first direction to end ends the connection, after a short grace for the
/// other. A failure goes on the port's error channel.
async fn forward(
    rt: Arc<dyn Runtime>,
    sandbox: String,
    port: u16,
    mut from_client: mpsc::Receiver<Bytes>,
    to_client: PortChannels,
) {
    let tcp = match rt.connect(&sandbox, port).await {
        Ok(tcp) => tcp,
        Err(msg) => {
            tracing::info!(sandbox, port, %msg, "port forward failed");
            let report = portforward::error_report(port, &sandbox, &msg, true);
            to_client.error(&report).await;
            return;
        }
    };
    tracing::debug!(sandbox, port, "websocket port forward connected");
    let (mut rd, mut wr) = tcp.into_split();
    let up = async {
        while let Some(b) = from_client.recv().await {
            wr.write_all(&b).await?;
        }
        wr.shutdown().await
    };
    let down = async {
        let mut buf = vec![0u8; READ_BUF];
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 || to_client.data(&buf[..n]).await.is_err() {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    tokio::pin!(up, down);
    let result = tokio::select! {
        r = &mut up => r.and(grace(&mut down).await),
        r = &mut down => r.and(grace(&mut up).await),
    };
    if let Err(err) = result {
        // A reset or a broken pipe ends this connection only; anything else tells
        // the client to give up, as kubelet's report does.
        use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
        let close = !matches!(err.kind(), ConnectionReset | BrokenPipe);
        tracing::info!(sandbox, port, %err, "port forward ended with an error");
        let report = portforward::error_report(port, &sandbox, &err.to_string(), close);
        to_client.error(&report).await;
    }
}

/// The rest of a connection whose other direction has ended, for a short while.
async fn grace(rest: impl Future<Output = std::io::Result<()>>) -> std::io::Result<()> {
    tokio::time::timeout(HALF_CLOSED_GRACE, rest)
        .await
        .unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    use futures::future::BoxFuture;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;
    use crate::streaming::{SessionError, SessionIo};
    use crust_proto::cri::{AttachRequest, ExecRequest};

    /// Port forwarding to this host's loopback; no exec or attach.
    struct Loopback;

    impl Runtime for Loopback {
        fn exec(&self, _: ExecRequest, _: SessionIo) -> BoxFuture<'_, Result<(), SessionError>> {
            Box::pin(async { Err(SessionError::Failed("no exec here".into())) })
        }
        fn attach(
            &self,
            _: AttachRequest,
            _: SessionIo,
        ) -> BoxFuture<'_, Result<(), SessionError>> {
            Box::pin(async { Err(SessionError::Failed("no attach here".into())) })
        }
        fn connect(&self, _: &str, port: u16) -> BoxFuture<'_, Result<TcpStream, String>> {
            Box::pin(async move {
                TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map_err(|e| e.to_string())
            })
        }
    }

    /// A server answering one connection: reads 5 bytes, sends them upper-cased with
    /// `tag`, closes.
    async fn upper_server(tag: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            let reply = format!("{tag}{}", String::from_utf8_lossy(&buf).to_uppercase());
            s.write_all(reply.as_bytes()).await.unwrap();
        });
        port
    }

    /// A port nothing listens on.
    async fn closed_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    }

    /// Runs a session over an in-memory connection and plays the client: sends
    /// "hello" on each data channel, collects every channel's bytes until the close.
    async fn session(codec: Codec, ports: Vec<u16>) -> (Vec<Vec<u8>>, Option<u16>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let n = ports.len();
        let task = tokio::spawn(serve(
            server,
            codec,
            ports,
            "pod1".into(),
            Arc::new(Loopback),
        ));
        for i in 0..n {
            let msg = codec.encode((2 * i) as u8, b"hello");
            client.send(msg).await.unwrap();
        }
        let mut channels = vec![Vec::new(); 2 * n];
        let mut close = None;
        while let Some(Ok(msg)) = client.next().await {
            if let Message::Close(frame) = &msg {
                close = frame.as_ref().map(|f| u16::from(f.code));
                break;
            }
            let (ch, data) = codec.decode(&msg).expect("a channel message");
            channels[usize::from(ch)].extend_from_slice(&data);
        }
        drop(client);
        task.await.unwrap();
        (channels, close)
    }

    #[tokio::test]
    async fn two_ports_a_refused_one_and_the_close() {
        for codec in [Codec::Binary, Codec::Base64] {
            let (p1, p2, refused) = (
                upper_server("a:").await,
                upper_server("b:").await,
                closed_port().await,
            );
            let (ch, close) = session(codec, vec![p1, p2, refused]).await;
            let le = |p: u16| p.to_le_bytes().to_vec();
            // Each channel starts with its port; data comes back, the errors stay empty.
            assert_eq!(ch[0], [le(p1), b"a:HELLO".to_vec()].concat(), "{codec:?}");
            assert_eq!(ch[1], le(p1), "{codec:?}");
            assert_eq!(ch[2], [le(p2), b"b:HELLO".to_vec()].concat(), "{codec:?}");
            assert_eq!(ch[3], le(p2), "{codec:?}");
            // The refused port: nothing but its port on data, the report on error.
            assert_eq!(ch[4], le(refused), "{codec:?}");
            let report = String::from_utf8_lossy(&ch[5][2..]).into_owned();
            assert!(
                report.starts_with(&format!(
                    "{{\"closeConnection\":true,\"message\":\"error forwarding port {refused} to pod pod1, uid : "
                )) && report.contains("refused") && report.ends_with("\"}\n"),
                "{codec:?}: {report}"
            );
            // Every port done: the server closes normally.
            assert_eq!(close, Some(1000), "{codec:?}");
        }
    }

    #[tokio::test]
    async fn the_client_closing_ends_the_session() {
        // A server that never answers: only the client's close can end this.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let held = tokio::spawn(async move { l.accept().await.map(|(s, _)| s) });
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let task = tokio::spawn(serve(
            server,
            Codec::Binary,
            vec![port],
            "pod1".into(),
            Arc::new(Loopback),
        ));
        // The two port messages, then the client leaves.
        for _ in 0..2 {
            client.next().await.unwrap().unwrap();
        }
        client.close(None).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the session ends when the client closes")
            .unwrap();
        // And the connection to the pod was closed with it.
        let mut pod_side = held.await.unwrap().unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(pod_side.read(&mut buf).await.unwrap(), 0);
    }

    #[test]
    fn ports_from_the_query_as_kubelet_reads_them() {
        assert_eq!(ports(Some("port=80"), &[]), Ok(vec![80]));
        assert_eq!(ports(Some("port=80&port=8080"), &[]), Ok(vec![80, 8080]));
        assert_eq!(
            ports(Some("port=80%2C8080&port=9"), &[]),
            Ok(vec![80, 8080, 9])
        );
        // The query wins over the request; other parameters are ignored.
        assert_eq!(ports(Some("x=1&port=443"), &[80]), Ok(vec![443]));
        // Without a port in the query, the request's.
        assert_eq!(ports(None, &[80, 81]), Ok(vec![80, 81]));
        assert_eq!(ports(Some("other=1"), &[22]), Ok(vec![22]));
    }

    #[test]
    fn bad_ports_are_refused_with_kubelets_messages() {
        assert_eq!(
            ports(None, &[]),
            Err("query parameter \"port\" is required".into())
        );
        assert_eq!(
            ports(Some("port="), &[]),
            Err("query parameter \"port\" cannot be empty".into())
        );
        assert_eq!(
            ports(Some("port=0"), &[]),
            Err("port \"0\" must be > 0".into())
        );
        for bad in [
            "port=x",
            "port=65536",
            "port=-1",
            "port=%2B80",
            "port=80,",
            "port=1.5",
        ] {
            let err = ports(Some(bad), &[]).unwrap_err();
            assert!(err.starts_with("unable to parse"), "{bad}: {err}");
        }
        assert!(ports(None, &[0]).is_err());
        assert!(ports(None, &[70000]).is_err());
        let many = vec!["port=1"; MAX_PORTS + 1].join("&");
        assert!(ports(Some(&many), &[]).is_err());
        let most = vec!["port=1"; MAX_PORTS].join("&");
        assert_eq!(ports(Some(&most), &[]).map(|p| p.len()), Ok(MAX_PORTS));
    }

    #[test]
    fn protocols_and_their_codecs() {
        assert_eq!(Codec::of(""), Some(Codec::Binary));
        assert_eq!(Codec::of("v4.channel.k8s.io"), Some(Codec::Binary));
        assert_eq!(Codec::of("v4.base64.channel.k8s.io"), Some(Codec::Base64));
        assert_eq!(Codec::of("v5.channel.k8s.io"), None);
        for p in PROTOCOLS {
            assert!(Codec::of(p).is_some());
        }
    }

    #[test]
    fn binary_messages() {
        // Port 8080 announced on data channel 2 (the second port).
        let m = Codec::Binary.encode(2, &8080u16.to_le_bytes());
        assert_eq!(m, Message::Binary(vec![2, 0x90, 0x1f].into()));
        assert_eq!(Codec::Binary.decode(&m), Some((2, vec![0x90, 0x1f])));
        let hello = Message::Binary(b"\x00hello".to_vec().into());
        assert_eq!(Codec::Binary.decode(&hello), Some((0, b"hello".to_vec())));
        assert_eq!(Codec::Binary.decode(&Message::Binary(Bytes::new())), None);
        assert_eq!(Codec::Binary.decode(&Message::Ping(Bytes::new())), None);
    }

    #[test]
    fn base64_messages() {
        let m = Codec::Base64.encode(1, &80u16.to_le_bytes());
        assert_eq!(m, Message::Text("1UAA=".into()));
        assert_eq!(Codec::Base64.decode(&m), Some((1, vec![80, 0])));
        // "foo\n" on channel 0.
        let foo = Message::Text("0Zm9vCg==".into());
        assert_eq!(Codec::Base64.decode(&foo), Some((0, b"foo\n".to_vec())));
        assert_eq!(Codec::Base64.encode(0, b"foo\n"), foo);
        // Channel 10 is ':'.
        assert_eq!(Codec::Base64.encode(10, b""), Message::Text(":".into()));
        assert_eq!(Codec::Base64.decode(&Message::Text("0%%%".into())), None);
    }
}
