//! Port forwarding (`portforward.k8s.io`): for each connection it forwards, the client
//! opens two SPDY streams with the same `requestid` and `port` headers — `error`, on
//! which the server reports a failure ([`error_report`]), and `data`, the bytes both
//! ways. Each
//! pair is forwarded to localhost:port inside the pod's network namespace, several at
//! once; all end with the SPDY connection. Over WebSocket the same SPDY connection
//! comes tunnelled in binary messages.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;

use super::spdy::{Conn, Stream, header};
use super::{Runtime, websocket};

/// The SPDY port-forward subprotocol.
pub const SPDY_PROTOCOLS: [&str; 1] = ["portforward.k8s.io"];

/// How long the end of a session waits for the client to close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Half of a pair, waiting for the other.
#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
}

/// Serves port forwarding for `sandbox` on a SPDY connection.
pub async fn serve_spdy(mut conn: Conn, sandbox: String, rt: Arc<dyn Runtime>) {
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    loop {
        let stream = tokio::select! {
            s = conn.incoming.recv() => match s {
                Some(s) => s,
                None => break,
            },
            Some(_) = forwards.join_next(), if !forwards.is_empty() => continue,
        };
        let key = match (
            header(&stream.headers, "requestid"),
            header(&stream.headers, "port"),
        ) {
            (Some(id), _) => id.to_owned(),
            (None, Some(port)) => format!("port {port}"),
            (None, None) => {
                tracing::debug!(id = stream.id, "port forward: stream without port");
                stream.writer.close().await;
                continue;
            }
        };
        let pair = pending.entry(key.clone()).or_default();
        match header(&stream.headers, "streamtype") {
            Some("error") => pair.error = Some(stream),
            Some("data") => pair.data = Some(stream),
            other => {
                tracing::debug!(?other, "port forward: unexpected stream type");
                stream.writer.close().await;
                continue;
            }
        }
        if pair.error.is_some() && pair.data.is_some() {
            let Pair { error, data } = pending.remove(&key).expect("the pair is pending");
            let (error, data) = (error.expect("checked"), data.expect("checked"));
            forwards.spawn(forward(Arc::clone(&rt), sandbox.clone(), error, data));
        }
    }
    // The connection is gone: every forward ends with it.
    forwards.shutdown().await;
    conn.shutdown(CLOSE_GRACE).await;
}

/// Serves port forwarding for `sandbox` on SPDY tunnelled in a WebSocket.
pub async fn serve_tunnel<S>(ws: WebSocketStream<S>, sandbox: String, rt: Arc<dyn Runtime>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (r, w) = tokio::io::split(websocket::tunnel(ws));
    serve_spdy(Conn::serve(r, w), sandbox, rt).await
}

/// A failure report for a port's error stream, as kubelet writes it: JSON with the
/// message and whether the client should give up on the whole session
/// (`closeConnection`, left out when false), and a newline.
pub fn error_report(port: u16, sandbox: &str, err: &str, close_connection: bool) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Report {
        #[serde(rename = "closeConnection", skip_serializing_if = "std::ops::Not::not")]
        close_connection: bool,
        message: String,
    }
    let report = Report {
        close_connection,
        // The pod's uid is not known here, as in kubelet's CRI streaming server.
        message: format!("error forwarding port {port} to pod {sandbox}, uid : {err}"),
    };
    let mut json = serde_json::to_vec(&report).expect("a report serializes");
    json.push(b'\n');
    json
}

/// The port a stream names.
fn port_of(s: &Stream) -> Result<u16, String> {
    let raw = header(&s.headers, "port").unwrap_or("");
    match raw.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("invalid port {raw:?}")),
    }
}

/// Forwards one connection: data both ways until both directions have ended.
async fn forward(rt: Arc<dyn Runtime>, sandbox: String, error: Stream, data: Stream) {
    let connected = match port_of(&data) {
        Ok(port) => rt.connect(&sandbox, port).await.map(|c| (c, port)),
        Err(e) => Err(e),
    };
    let (tcp, port) = match connected {
        Ok(c) => c,
        Err(msg) => {
            tracing::info!(sandbox, %msg, "port forward failed");
            let port = port_of(&data).unwrap_or(0);
            let report = error_report(port, &sandbox, &msg, true);
            let _ = error.writer.write(&report).await;
            error.writer.close().await;
            data.writer.close().await;
            return;
        }
    };
    tracing::debug!(sandbox, port, "port forward connected");
    let (mut rd, mut wr) = tcp.into_split();
    let Stream {
        data: mut inbound,
        writer,
        ..
    } = data;
    let up = async {
        while let Some(b) = inbound.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if writer.write(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        writer.close().await;
    };
    tokio::join!(up, down);
    error.writer.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reports_as_kubelet_writes_them() {
        assert_eq!(
            error_report(80, "p1", "connection refused", true),
            b"{\"closeConnection\":true,\"message\":\"error forwarding port 80 to pod p1, uid : connection refused\"}\n"
        );
        assert_eq!(
            error_report(8080, "p2", "reset", false),
            b"{\"message\":\"error forwarding port 8080 to pod p2, uid : reset\"}\n"
        );
    }
}
