//! The HTTP/1.1 face of the streaming server: routes `/<kind>/<token>`, takes the parked
//! request for the token, negotiates the transport and subprotocol, answers 101 and
//! hands the upgraded connection to the session.

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::spdy::Conn;
use super::{Request, Runtime, Streamer, portforward, portforward_ws, remotecommand, websocket};

/// The header in which SPDY clients offer their subprotocols.
const STREAM_PROTOCOL: &str = "x-stream-protocol-version";
/// The SPDY upgrade token.
const SPDY: &str = "SPDY/3.1";

/// Port-forward subprotocols over WebSocket, preferred first: the SPDY tunnel, then
/// kubelet's channel protocols.
const PORTFORWARD_WS_PROTOCOLS: [&str; 3] = [
    websocket::PORTFORWARD_PROTOCOLS[0],
    portforward_ws::PROTOCOLS[0],
    portforward_ws::PROTOCOLS[1],
];

/// What a WebSocket session serves.
enum WsSession {
    /// Exec or attach.
    Command(Request),
    /// Port forwarding as SPDY tunnelled in the WebSocket.
    Tunnel(String),
    /// Port forwarding of fixed ports on channels, in the sandbox.
    Ports(portforward_ws::Codec, Vec<u16>, String),
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, streamer: Arc<Streamer>, runtime: Arc<dyn Runtime>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(%err, "streaming server: accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let streamer = Arc::clone(&streamer);
        let runtime = Arc::clone(&runtime);
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (streamer, runtime) = (Arc::clone(&streamer), Arc::clone(&runtime));
                async move { Ok::<_, Infallible>(route(req, &streamer, runtime)) }
            });
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades();
            if let Err(err) = conn.await {
                tracing::debug!(%peer, %err, "streaming server: connection");
            }
        });
    }
}

fn plain(status: StatusCode, msg: impl Into<String>) -> Response<String> {
    let mut r = Response::new(msg.into());
    *r.status_mut() = status;
    r
}

/// The values of a header that may repeat or be a comma-separated list.
fn offered(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The first of the client's protocols the server supports.
pub fn negotiate<'a>(client: &[String], server: &[&'a str]) -> Option<&'a str> {
    client
        .iter()
        .find_map(|c| server.iter().find(|s| **s == c.as_str()).copied())
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    offered(headers, name.as_str())
        .iter()
        .any(|v| v.eq_ignore_ascii_case(token))
}

fn route(
    mut req: http::Request<Incoming>,
    streamer: &Streamer,
    rt: Arc<dyn Runtime>,
) -> Response<String> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let mut parts = req.uri().path().trim_start_matches('/').splitn(2, '/');
    let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let Some(parked) = streamer.tokens().take(token).filter(|p| p.path() == kind) else {
        return plain(StatusCode::NOT_FOUND, "404 page not found");
    };
    let headers = req.headers();
    if has_token(headers, header::UPGRADE, "websocket") {
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .map(|k| derive_accept_key(k.as_bytes()));
        let Some(accept) = key else {
            return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
        };
        let server: &[&str] = match parked {
            Request::PortForward(_) => &PORTFORWARD_WS_PROTOCOLS,
            _ => &websocket::CHANNEL_PROTOCOLS,
        };
        let client = offered(headers, header::SEC_WEBSOCKET_PROTOCOL.as_str());
        let proto = match (negotiate(&client, server), &parked) {
            (Some(p), _) => p,
            // kubelet serves a client that names no subprotocol: port forwarding as
            // v4.channel.k8s.io, a remote command as channel.k8s.io.
            (None, _) if client.is_empty() => "",
            (None, _) => return unsupported(&client, server),
        };
        let session = match parked {
            Request::PortForward(pf) => match portforward_ws::Codec::of(proto) {
                Some(codec) => match portforward_ws::ports(req.uri().query(), &pf.port) {
                    Ok(ports) => WsSession::Ports(codec, ports, pf.pod_sandbox_id),
                    Err(msg) => return plain(StatusCode::BAD_REQUEST, msg),
                },
                None => WsSession::Tunnel(pf.pod_sandbox_id),
            },
            req => WsSession::Command(req),
        };
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let io = match upgrade.await {
                Ok(up) => TokioIo::new(up),
                Err(err) => return tracing::debug!(%err, "streaming: websocket upgrade"),
            };
            let cfg = WebSocketConfig::default();
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(cfg)).await;
            match session {
                WsSession::Tunnel(sandbox) => portforward::serve_tunnel(ws, sandbox, rt).await,
                WsSession::Ports(codec, ports, sandbox) => {
                    portforward_ws::serve(ws, codec, ports, sandbox, rt).await
                }
                WsSession::Command(req) => remotecommand::serve_ws(ws, proto, req, rt).await,
            }
        });
        let mut r = plain(StatusCode::SWITCHING_PROTOCOLS, "");
        let h = r.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if !proto.is_empty() {
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(proto),
            );
        }
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        return r;
    }
    if !has_token(headers, header::UPGRADE, SPDY) {
        return plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request",
        );
    }
    let server: &[&str] = match parked {
        Request::PortForward(_) => &portforward::SPDY_PROTOCOLS,
        _ => &remotecommand::SPDY_PROTOCOLS,
    };
    let client = offered(headers, STREAM_PROTOCOL);
    // Clients from before protocol negotiation offer nothing: the oldest protocol.
    let proto = if client.is_empty() {
        ""
    } else {
        match negotiate(&client, server) {
            Some(p) => p,
            None => return unsupported(&client, server),
        }
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(up) => TokioIo::new(up),
            Err(err) => return tracing::debug!(%err, "streaming: spdy upgrade"),
        };
        let (r, w) = tokio::io::split(io);
        let conn = Conn::serve(r, w);
        match parked {
            Request::PortForward(pf) => portforward::serve_spdy(conn, pf.pod_sandbox_id, rt).await,
            req => remotecommand::serve_spdy(conn, proto, req, rt).await,
        }
    });
    let mut r = plain(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static(SPDY));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if !proto.is_empty() {
        h.insert(STREAM_PROTOCOL, HeaderValue::from_static(proto));
    }
    r
}

fn unsupported(client: &[String], server: &[&str]) -> Response<String> {
    plain(
        StatusCode::FORBIDDEN,
        format!(
            "unable to upgrade: unable to negotiate protocol: client supports {client:?}, \
             server supports {server:?}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_takes_the_clients_first_supported() {
        let client: Vec<String> = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            negotiate(&client, &remotecommand::SPDY_PROTOCOLS),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(
            negotiate(&client, &websocket::CHANNEL_PROTOCOLS),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(negotiate(&client, &portforward::SPDY_PROTOCOLS), None);
        // The node e2e suite's Conformance exec over WebSocket offers only this one.
        let v1 = ["channel.k8s.io".to_string()];
        assert_eq!(
            negotiate(&v1, &websocket::CHANNEL_PROTOCOLS),
            Some("channel.k8s.io")
        );
    }

    #[test]
    fn offered_values_split_lists_and_repeats() {
        let mut h = HeaderMap::new();
        h.append(
            STREAM_PROTOCOL,
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        h.append(
            STREAM_PROTOCOL,
            HeaderValue::from_static("v3.channel.k8s.io, v2.channel.k8s.io"),
        );
        assert_eq!(
            offered(&h, STREAM_PROTOCOL),
            [
                "v4.channel.k8s.io",
                "v3.channel.k8s.io",
                "v2.channel.k8s.io"
            ]
        );
    }
}
