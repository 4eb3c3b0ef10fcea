//! Exec and attach sessions: the remote-command protocols over SPDY (`channel.k8s.io`
//! v1-v4: one SPDY stream per stdio stream, named by its `streamtype` header) and over
//! WebSocket (v4/v5: channels in binary messages). Both end the same way, as client-go
//! expects: the output streams are drained and closed, then the status goes on the
//! error stream — v4/v5 a metav1 Status JSON (`Success`, or `Failure` with reason
//! `NonZeroExitCode` and the code as an `ExitCode` cause), v1-v3 an error text or
//! nothing — and the connection is closed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::spdy::{Conn, Stream, StreamWriter, header};
use super::websocket::{self, Inbound};
use super::{Request, Runtime, SessionError, SessionIo, TermSize};

/// SPDY remote-command subprotocols, preferred first.
pub const SPDY_PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// How long the client has to open its streams (kubelet's streamCreationTimeout).
const STREAM_CREATION: Duration = Duration::from_secs(30);
/// How long the end of a session waits for output to drain and the client to close.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Chunks of output queued per stream.
const OUTPUT_BACKLOG: usize = 16;

/// Which streams the request asked for.
#[derive(Debug, Clone, Copy)]
struct Want {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl Want {
    fn of(req: &Request) -> Self {
        match req {
            Request::Exec(r) => Want {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr && !r.tty,
                tty: r.tty,
            },
            Request::Attach(r) => Want {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr && !r.tty,
                tty: r.tty,
            },
            Request::PortForward(_) => Want {
                stdin: false,
                stdout: false,
                stderr: false,
                tty: false,
            },
        }
    }
}

/// Runs the request against the runtime.
async fn run(rt: &dyn Runtime, req: Request, io: SessionIo) -> Result<(), SessionError> {
    match req {
        Request::Exec(r) => rt.exec(r, io).await,
        Request::Attach(r) => rt.attach(r, io).await,
        Request::PortForward(_) => Err(SessionError::Failed("not a remote command".into())),
    }
}

/// The v4/v5 status for a result.
pub fn status_json(res: &Result<(), SessionError>) -> Vec<u8> {
    let v = match res {
        Ok(()) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Err(SessionError::ExitCode(code)) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(SessionError::Failed(msg)) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": msg,
            "reason": "InternalError",
            "details": {"causes": [{"message": msg}]},
            "code": 500,
        }),
    };
    serde_json::to_vec(&v).expect("a JSON value serializes")
}

/// The v1-v3 error text for a result: empty on success.
fn status_text(res: &Result<(), SessionError>) -> Vec<u8> {
    match res {
        Ok(()) => Vec::new(),
        Err(SessionError::ExitCode(code)) => {
            format!("command terminated with non-zero exit code: exit status {code}").into_bytes()
        }
        Err(SessionError::Failed(msg)) => msg.clone().into_bytes(),
    }
}

/// Reads terminal sizes, one JSON object after another, from a byte stream.
#[derive(Debug, Default)]
pub struct SizeDecoder {
    buf: Vec<u8>,
}

impl SizeDecoder {
    /// Feeds bytes; returns the sizes complete so far. Garbage is dropped.
    pub fn push(&mut self, data: &[u8]) -> Vec<TermSize> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<TermSize>();
        let mut used = 0;
        loop {
            match it.next() {
                Some(Ok(size)) => {
                    out.push(size);
                    used = it.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    used = self.buf.len();
                    break;
                }
                None => {
                    used = self.buf.len();
                    break;
                }
            }
        }
        self.buf.drain(..used);
        out
    }
}

/// Serves one exec or attach over SPDY with the negotiated `proto`.
pub async fn serve_spdy(mut conn: Conn, proto: &'static str, req: Request, rt: Arc<dyn Runtime>) {
    let version = match proto {
        "v4.channel.k8s.io" => 4,
        "v3.channel.k8s.io" => 3,
        "v2.channel.k8s.io" => 2,
        _ => 1,
    };
    let want = Want::of(&req);
    let expected = 1
        + usize::from(want.stdin)
        + usize::from(want.stdout)
        + usize::from(want.stderr)
        + usize::from(want.tty && version >= 3);
    let mut streams: Vec<Stream> = Vec::new();
    let collect = async {
        while streams.len() < expected {
            match conn.incoming.recv().await {
                Some(s) => streams.push(s),
                None => return false,
            }
        }
        true
    };
    match tokio::time::timeout(STREAM_CREATION, collect).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(_) => {
            tracing::info!(
                expected,
                got = streams.len(),
                "streaming: client did not open its streams in time"
            );
            return;
        }
    }
    let mut error = None;
    let mut io = SessionIo::default();
    let mut pumps = Vec::new();
    for s in streams {
        match header(&s.headers, "streamtype").unwrap_or("") {
            "error" => error = Some(s.writer),
            "stdin" if want.stdin => io.stdin = Some(s.data),
            "stdout" if want.stdout => {
                let (tx, h) = pump_out(s.writer);
                io.stdout = Some(tx);
                pumps.push(h);
            }
            "stderr" if want.stderr => {
                let (tx, h) = pump_out(s.writer);
                io.stderr = Some(tx);
                pumps.push(h);
            }
            "resize" if want.tty => io.resize = Some(decode_sizes(s.data)),
            other => tracing::debug!(streamtype = other, "streaming: unexpected stream"),
        }
    }
    let res = tokio::select! {
        res = run(rt.as_ref(), req, io) => res,
        () = conn.closed() => {
            tracing::debug!("streaming: client went away");
            return;
        }
    };
    finish_pumps(pumps).await;
    if let Some(error) = error {
        let body = if version >= 4 {
            status_json(&res)
        } else {
            status_text(&res)
        };
        if !body.is_empty() {
            let _ = error.write(&body).await;
        }
        error.close().await;
    }
    conn.shutdown(CLOSE_GRACE).await;
}

/// Copies what the runtime sends into a stream, then closes the stream.
fn pump_out(w: StreamWriter) -> (mpsc::Sender<Bytes>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(OUTPUT_BACKLOG);
    let h = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if w.write(&b).await.is_err() {
                return;
            }
        }
        w.close().await;
    });
    (tx, h)
}

async fn finish_pumps(pumps: Vec<JoinHandle<()>>) {
    for mut p in pumps {
        if tokio::time::timeout(CLOSE_GRACE, &mut p).await.is_err() {
            p.abort();
        }
    }
}

fn decode_sizes(mut data: mpsc::Receiver<Bytes>) -> mpsc::Receiver<TermSize> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut dec = SizeDecoder::default();
        while let Some(b) = data.recv().await {
            for size in dec.push(&b) {
                if tx.send(size).await.is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Serves one exec or attach over a WebSocket with the negotiated `proto`.
pub async fn serve_ws<S>(
    ws: WebSocketStream<S>,
    proto: &'static str,
    req: Request,
    rt: Arc<dyn Runtime>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let v5 = proto == "v5.channel.k8s.io";
    let json_status = v5 || proto == "v4.channel.k8s.io";
    let want = Want::of(&req);
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(OUTPUT_BACKLOG);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.flush().await;
    });
    let mut io = SessionIo::default();
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(OUTPUT_BACKLOG);
    let (resize_tx, resize_rx) = mpsc::channel::<TermSize>(4);
    if want.stdin {
        io.stdin = Some(stdin_rx);
    }
    if want.tty {
        io.resize = Some(resize_rx);
    }
    let mut pumps = Vec::new();
    for (on, ch) in [
        (want.stdout, websocket::STDOUT),
        (want.stderr, websocket::STDERR),
    ] {
        if !on {
            continue;
        }
        let (tx, mut rx) = mpsc::channel::<Bytes>(OUTPUT_BACKLOG);
        let out = out_tx.clone();
        pumps.push(tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                let msg = Message::Binary(websocket::frame(ch, &b).into());
                if out.send(msg).await.is_err() {
                    return;
                }
            }
        }));
        if ch == websocket::STDOUT {
            io.stdout = Some(tx);
        } else {
            io.stderr = Some(tx);
        }
    }
    // The client's messages: stdin, resizes, v5 closes. Ends when the client goes away.
    let reader = async move {
        let mut stdin = Some(stdin_tx);
        let mut sizes = SizeDecoder::default();
        while let Some(Ok(msg)) = source.next().await {
            let data = match msg {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            match websocket::parse(&data, v5) {
                Inbound::Data(websocket::STDIN, d) if !d.is_empty() => {
                    if let Some(tx) = &stdin
                        && tx.send(Bytes::copy_from_slice(d)).await.is_err()
                    {
                        stdin = None;
                    }
                }
                Inbound::Data(websocket::RESIZE, d) => {
                    for s in sizes.push(d) {
                        let _ = resize_tx.try_send(s);
                    }
                }
                Inbound::Close(websocket::STDIN) => stdin = None,
                _ => {}
            }
        }
    };
    tokio::pin!(reader);
    let res = tokio::select! {
        res = run(rt.as_ref(), req, io) => res,
        () = &mut reader => {
            tracing::debug!("streaming: websocket client went away");
            writer.abort();
            return;
        }
    };
    finish_pumps(pumps).await;
    let status = if json_status {
        status_json(&res)
    } else {
        status_text(&res)
    };
    if !status.is_empty() {
        let status = websocket::frame(websocket::ERROR, &status);
        let _ = out_tx.send(Message::Binary(status.into())).await;
    }
    let _ = out_tx
        .send(Message::Close(Some(websocket::normal_close())))
        .await;
    drop(out_tx);
    let _ = tokio::time::timeout(CLOSE_GRACE, writer).await;
    // Let the client answer the close, then drop the connection.
    let _ = tokio::time::timeout(CLOSE_GRACE, reader).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> serde_json::Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn statuses_as_client_go_reads_them() {
        assert_eq!(
            parse(&status_json(&Ok(()))),
            serde_json::json!({"metadata": {}, "status": "Success"})
        );
        let v = parse(&status_json(&Err(SessionError::ExitCode(3))));
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let v = parse(&status_json(&Err(SessionError::Failed("boom".into()))));
        assert_eq!(
            (v["status"].as_str(), v["message"].as_str()),
            (Some("Failure"), Some("boom"))
        );
        assert!(status_text(&Ok(())).is_empty());
        assert!(
            String::from_utf8(status_text(&Err(SessionError::ExitCode(2))))
                .unwrap()
                .contains('2')
        );
    }

    #[test]
    fn sizes_across_reads() {
        let mut d = SizeDecoder::default();
        assert_eq!(d.push(br#"{"Width":80,"#), vec![]);
        let got = d.push(b"\"Height\":24}\n{\"Width\":100,\"Height\":30}\n{\"Wi");
        assert_eq!(
            got,
            vec![
                TermSize {
                    width: 80,
                    height: 24
                },
                TermSize {
                    width: 100,
                    height: 30
                }
            ]
        );
        assert_eq!(
            d.push(br#"dth":1,"Height":2}"#),
            vec![TermSize {
                width: 1,
                height: 2
            }]
        );
        assert!(d.push(b"nonsense").is_empty());
        assert_eq!(
            d.push(br#"{"Width":5,"Height":6}"#),
            vec![TermSize {
                width: 5,
                height: 6
            }]
        );
    }
}
