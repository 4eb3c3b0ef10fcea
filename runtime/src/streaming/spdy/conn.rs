//! The server side of one SPDY/3.1 connection: a reader task that parses frames and
//! hands each new stream over (after replying to it), and a writer task that owns the
//! socket's write half and the header deflater, so frames go out whole and in order.
//!
//! Flow control: the Go peer (moby/spdystream) neither enforces nor sends windows, so
//! nothing waits on the peer's window; WINDOW_UPDATE is still sent for what was
//! received, for peers that keep count. Back pressure comes from bounded channels: a
//! stream whose consumer is slow holds up the reader, and so the TCP connection.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::frame::{Codec, FLAG_FIN, Frame, Headers, RST_PROTOCOL_ERROR};

/// The largest data frame sent.
const MAX_DATA: usize = 32 * 1024;
/// Data a stream may have queued for its consumer.
const STREAM_BACKLOG: usize = 32;
/// Frames queued for the writer.
const WRITE_BACKLOG: usize = 64;
/// Received bytes on a stream before a WINDOW_UPDATE is sent for them.
const WINDOW_ACK: u32 = 32 * 1024;

/// The connection went away.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("spdy connection closed")]
pub struct Closed;

/// A stream the client opened.
#[derive(Debug)]
pub struct Stream {
    /// Its id.
    pub id: u32,
    /// The headers of its SYN_STREAM.
    pub headers: Headers,
    /// Its data; ends at the client's FIN or RST (or the connection's end).
    pub data: mpsc::Receiver<Bytes>,
    /// Sends on it.
    pub writer: StreamWriter,
}

/// Sends data on one stream.
#[derive(Debug, Clone)]
pub struct StreamWriter {
    id: u32,
    tx: mpsc::Sender<Frame>,
}

impl StreamWriter {
    /// Sends `data`, in frames of at most 32 KiB.
    pub async fn write(&self, data: &[u8]) -> Result<(), Closed> {
        for chunk in data.chunks(MAX_DATA) {
            let frame = Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: Bytes::copy_from_slice(chunk),
            };
            self.tx.send(frame).await.map_err(|_| Closed)?;
        }
        Ok(())
    }

    /// Ends the server's side of the stream (FIN).
    pub async fn close(&self) {
        let frame = Frame::Data {
            stream_id: self.id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        };
        let _ = self.tx.send(frame).await;
    }
}

/// One SPDY connection being served.
#[derive(Debug)]
pub struct Conn {
    /// Streams as the client opens them; ends with the connection.
    pub incoming: mpsc::Receiver<Stream>,
    closed: watch::Receiver<bool>,
    /// Both tasks; taken by `shutdown`, aborted when dropped.
    tasks: Option<(JoinHandle<()>, JoinHandle<()>)>,
}

impl Conn {
    /// Serves the SPDY connection on `read` and `write` (an upgraded HTTP connection).
    pub fn serve<R, W>(read: R, write: W) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (frames, frames_rx) = mpsc::channel(WRITE_BACKLOG);
        let (incoming_tx, incoming) = mpsc::channel(16);
        let (closed_tx, closed) = watch::channel(false);
        let writer = tokio::spawn(write_loop(write, frames_rx));
        let reader = tokio::spawn(read_loop(read, frames, incoming_tx, closed_tx));
        Conn {
            incoming,
            closed,
            tasks: Some((reader, writer)),
        }
    }

    /// Resolves when the client has closed the connection (or it broke).
    pub async fn closed(&self) {
        let mut rx = self.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Ends the connection: waits up to `grace` for what is queued to go out and for the
    /// client to close its side, then drops the socket.
    pub async fn shutdown(mut self, grace: Duration) {
        let Some((reader, mut writer)) = self.tasks.take() else {
            return;
        };
        self.incoming.close();
        let mut closed = self.closed.clone();
        drop(self);
        let wait = async {
            let _ = closed.wait_for(|c| *c).await;
        };
        let _ = tokio::time::timeout(grace, wait).await;
        reader.abort();
        if tokio::time::timeout(grace, &mut writer).await.is_err() {
            writer.abort();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some((reader, writer)) = self.tasks.take() {
            reader.abort();
            writer.abort();
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Frame>) {
    let mut codec = Codec::new();
    let mut buf = BytesMut::with_capacity(8 * 1024);
    while let Some(frame) = rx.recv().await {
        codec.encode(&frame, &mut buf);
        while buf.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(f) => codec.encode(&f, &mut buf),
                Err(_) => break,
            }
        }
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
            return;
        }
        buf.clear();
    }
    let _ = w.shutdown().await;
}

/// A stream open for the client to send on.
struct Inbound {
    tx: mpsc::Sender<Bytes>,
    unacked: u32,
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    frames: mpsc::Sender<Frame>,
    incoming: mpsc::Sender<Stream>,
    closed: watch::Sender<bool>,
) {
    let mut codec = Codec::new();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut streams: HashMap<u32, Inbound> = HashMap::new();
    'read: loop {
        loop {
            let frame = match codec.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(err) => {
                    tracing::debug!(%err, "spdy: bad frame, closing");
                    break 'read;
                }
            };
            if !handle(frame, &frames, &incoming, &mut streams).await {
                break 'read;
            }
        }
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(streams);
    closed.send_replace(true);
}

/// Handles one frame; false when the connection is to end.
async fn handle(
    frame: Frame,
    frames: &mpsc::Sender<Frame>,
    incoming: &mpsc::Sender<Stream>,
    streams: &mut HashMap<u32, Inbound>,
) -> bool {
    match frame {
        Frame::SynStream {
            stream_id,
            flags,
            headers,
            ..
        } => {
            if stream_id == 0 || streams.contains_key(&stream_id) {
                let rst = Frame::RstStream {
                    stream_id,
                    status: RST_PROTOCOL_ERROR,
                };
                return frames.send(rst).await.is_ok();
            }
            let reply = Frame::SynReply {
                stream_id,
                flags: 0,
                headers: Vec::new(),
            };
            if frames.send(reply).await.is_err() {
                return false;
            }
            let (tx, data) = mpsc::channel(STREAM_BACKLOG);
            if flags & FLAG_FIN == 0 {
                streams.insert(stream_id, Inbound { tx, unacked: 0 });
            }
            let stream = Stream {
                id: stream_id,
                headers,
                data,
                writer: StreamWriter {
                    id: stream_id,
                    tx: frames.clone(),
                },
            };
            // Nobody takes streams any more: the session is over, ignore the rest.
            let _ = incoming.send(stream).await;
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            let Some(s) = streams.get_mut(&stream_id) else {
                return true;
            };
            let len = data.len() as u32;
            if !data.is_empty() && s.tx.send(data).await.is_err() {
                // The consumer is gone; drop what else comes.
                streams.remove(&stream_id);
                return true;
            }
            s.unacked += len;
            if s.unacked >= WINDOW_ACK {
                let delta = std::mem::take(&mut s.unacked);
                let _ = frames.send(Frame::WindowUpdate { stream_id, delta }).await;
            }
            if flags & FLAG_FIN != 0 {
                streams.remove(&stream_id);
            }
        }
        Frame::RstStream { stream_id, .. } => {
            streams.remove(&stream_id);
        }
        Frame::Headers {
            stream_id, flags, ..
        } => {
            if flags & FLAG_FIN != 0 {
                streams.remove(&stream_id);
            }
        }
        Frame::Ping { id } => return frames.send(Frame::Ping { id }).await.is_ok(),
        Frame::GoAway { .. } => return false,
        Frame::SynReply { .. }
        | Frame::Settings
        | Frame::WindowUpdate { .. }
        | Frame::Unknown { .. } => {}
    }
    true
}
