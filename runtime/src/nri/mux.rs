//! NRI's multiplexed connection: one stream (the trunk) between crustd and a plugin
//! carries two byte streams, each a ttrpc connection of its own. Each frame on the trunk
//! is an 8-byte big-endian header, the connection id and the payload's length, and the
//! payload. Connection 1 carries the plugin's service (crustd is the ttrpc client),
//! connection 2 crustd's service to the plugin. Opening and closing a connection is not
//! signalled: frames for a connection that is not open are dropped, so both are open
//! before the trunk is read; the trunk's end ends both.
//!
//! A plugin written with NRI's Go stub reads each frame whole into the 4096-byte buffer
//! of its ttrpc reader, so crustd sends frames of at most [`MAX_OUT_FRAME`] bytes.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

/// The connection of the plugin's service: crustd is its ttrpc client.
pub const PLUGIN_SERVICE_CONN: u32 = 1;
/// The connection of crustd's service to the plugin: crustd is its ttrpc server.
pub const RUNTIME_SERVICE_CONN: u32 = 2;

/// The largest frame crustd sends (a Go peer's ttrpc read buffer).
pub const MAX_OUT_FRAME: usize = 4096;
/// The largest frame crustd accepts: NRI's limit, a 4 MiB ttrpc message and its header.
pub const MAX_IN_FRAME: usize = (4 << 20) + 10;
/// The buffer of each connection between the trunk and its ttrpc end.
const PIPE_BYTES: usize = 256 << 10;

/// A running multiplexer. Dropping it closes the trunk and both connections.
pub struct Mux {
    tasks: Vec<JoinHandle<()>>,
    closed: watch::Receiver<bool>,
}

/// The two connections' ttrpc ends.
pub struct Conns {
    /// Connection 1, for crustd's ttrpc client of the plugin.
    pub plugin: DuplexStream,
    /// Connection 2, for crustd's ttrpc server.
    pub runtime: DuplexStream,
}

impl Mux {
    /// Starts multiplexing `trunk`; answers the two connections' ends.
    pub fn start<S>(trunk: S) -> (Mux, Conns)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut read, write) = tokio::io::split(trunk);
        let write = Arc::new(Mutex::new(write));
        let (plugin, plugin_ours) = tokio::io::duplex(PIPE_BYTES);
        let (runtime, runtime_ours) = tokio::io::duplex(PIPE_BYTES);
        let (plugin_in, plugin_out) = tokio::io::split(plugin_ours);
        let (runtime_in, runtime_out) = tokio::io::split(runtime_ours);
        let (closed_tx, closed) = watch::channel(false);
        let closed_tx = Arc::new(closed_tx);
        let mut tasks = Vec::new();
        for (conn, from) in [
            (PLUGIN_SERVICE_CONN, plugin_in),
            (RUNTIME_SERVICE_CONN, runtime_in),
        ] {
            let (write, closed_tx) = (Arc::clone(&write), Arc::clone(&closed_tx));
            tasks.push(tokio::spawn(async move {
                if let Err(err) = send_frames(conn, from, &write).await {
                    tracing::debug!(conn, %err, "nri: trunk write");
                }
                let _ = closed_tx.send(true);
            }));
        }
        tasks.push(tokio::spawn(async move {
            let mut outs = [
                (PLUGIN_SERVICE_CONN, plugin_out),
                (RUNTIME_SERVICE_CONN, runtime_out),
            ];
            if let Err(err) = receive_frames(&mut read, &mut outs).await {
                tracing::debug!(%err, "nri: trunk read");
            }
            // The connections' ttrpc ends read their end.
            for (_, out) in &mut outs {
                let _ = out.shutdown().await;
            }
            let _ = closed_tx.send(true);
        }));
        (Mux { tasks, closed }, Conns { plugin, runtime })
    }

    /// Resolves once the trunk has ended (either way).
    pub async fn closed(&self) {
        let mut closed = self.closed.clone();
        let _ = closed.wait_for(|c| *c).await;
    }

    /// A receiver that turns true once the trunk has ended; it does not keep the
    /// multiplexer.
    pub fn closed_signal(&self) -> watch::Receiver<bool> {
        self.closed.clone()
    }

    /// Whether the trunk has ended.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Sends what connection `conn`'s ttrpc end writes as frames on the trunk.
async fn send_frames<R, W>(conn: u32, mut from: R, write: &Mutex<W>) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; MAX_OUT_FRAME];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let mut frame = Vec::with_capacity(8 + n);
        frame.extend_from_slice(&conn.to_be_bytes());
        frame.extend_from_slice(&(n as u32).to_be_bytes());
        frame.extend_from_slice(&buf[..n]);
        let mut w = write.lock().await;
        w.write_all(&frame).await?;
        w.flush().await?;
    }
}

/// Reads frames off the trunk and hands each payload to its connection; a frame of a
/// connection that is not open is dropped. Ends at the trunk's end or a bad frame.
async fn receive_frames<R, W>(read: &mut R, outs: &mut [(u32, W)]) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut header = [0u8; 8];
    let mut payload = Vec::new();
    loop {
        match read.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let conn = u32::from_be_bytes(header[..4].try_into().unwrap_or_default());
        let len = u32::from_be_bytes(header[4..].try_into().unwrap_or_default()) as usize;
        if len > MAX_IN_FRAME {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("frame of {len} bytes for connection {conn}, over {MAX_IN_FRAME}"),
            ));
        }
        payload.resize(len, 0);
        read.read_exact(&mut payload).await?;
        match outs.iter_mut().find(|(id, _)| *id == conn) {
            Some((_, out)) => out.write_all(&payload).await?,
            None => tracing::debug!(conn, len, "nri: frame of a connection not open"),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn frame(conn: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = conn.to_be_bytes().to_vec();
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[tokio::test]
    async fn frames_reach_their_connection_and_unknown_ones_are_dropped() {
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let (_mux, mut conns) = Mux::start(ours);
        let mut bytes = frame(7, b"nobody");
        bytes.extend(frame(RUNTIME_SERVICE_CONN, b"to the "));
        bytes.extend(frame(PLUGIN_SERVICE_CONN, b"plugin conn"));
        bytes.extend(frame(RUNTIME_SERVICE_CONN, b""));
        bytes.extend(frame(RUNTIME_SERVICE_CONN, b"runtime"));
        peer.write_all(&bytes).await.unwrap();
        let mut got = [0u8; 14];
        conns.runtime.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"to the runtime");
        let mut got = [0u8; 11];
        conns.plugin.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"plugin conn");
    }

    #[tokio::test]
    async fn writes_go_out_in_frames_of_at_most_4096_bytes() {
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let (_mux, mut conns) = Mux::start(ours);
        let message: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        conns.plugin.write_all(&message).await.unwrap();
        let mut got = Vec::new();
        while got.len() < message.len() {
            let mut header = [0u8; 8];
            peer.read_exact(&mut header).await.unwrap();
            assert_eq!(u32::from_be_bytes(header[..4].try_into().unwrap()), 1);
            let len = u32::from_be_bytes(header[4..].try_into().unwrap()) as usize;
            assert!(len > 0 && len <= MAX_OUT_FRAME, "frame of {len} bytes");
            let mut payload = vec![0u8; len];
            peer.read_exact(&mut payload).await.unwrap();
            got.extend(payload);
        }
        assert_eq!(got, message);
    }

    #[tokio::test]
    async fn the_trunk_s_end_closes_both_connections() {
        let (ours, peer) = tokio::io::duplex(1 << 10);
        let (mux, mut conns) = Mux::start(ours);
        drop(peer);
        mux.closed().await;
        assert!(mux.is_closed());
        let mut buf = [0u8; 1];
        assert_eq!(conns.runtime.read(&mut buf).await.unwrap(), 0);
        assert_eq!(conns.plugin.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_oversized_frame_ends_the_trunk() {
        let (ours, mut peer) = tokio::io::duplex(1 << 10);
        let (mux, _conns) = Mux::start(ours);
        let mut header = RUNTIME_SERVICE_CONN.to_be_bytes().to_vec();
        header.extend_from_slice(&(MAX_IN_FRAME as u32 + 1).to_be_bytes());
        peer.write_all(&header).await.unwrap();
        mux.closed().await;
    }
}
