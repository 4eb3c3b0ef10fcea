//! The client side of crust's admin API (`crust.admin.v1`), for `crustd image import`
//! and `crustd image export` run by the node's operator against a running crustd; and
//! the Unix socket channel it shares with crustd's shim clients.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use crust_proto::admin::images_client::ImagesClient;
use crust_proto::admin::{ArchiveChunk, CHUNK_BYTES, ExportRequest, ImageInfo};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// A channel to the gRPC server on the Unix socket `socket`, connected on first use;
/// one connection attempt may take `timeout`.
pub fn unix_channel(socket: &Path, timeout: Duration) -> Channel {
    let path = socket.to_owned();
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::from_static("http://crust")
        .connect_timeout(timeout)
        .connect_with_connector_lazy(service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
}

fn client(socket: &Path) -> ImagesClient<Channel> {
    ImagesClient::new(unix_channel(socket, Duration::from_secs(5)))
}

/// Sends the archive read from `input` to crustd on `socket` to import; the images
/// recorded. A read error cancels the call, so crustd imports nothing of it.
pub async fn import(
    socket: &Path,
    mut input: impl AsyncRead + Unpin + Send + 'static,
) -> anyhow::Result<Vec<ImageInfo>> {
    let (tx, rx) = mpsc::channel(4);
    let (failed_tx, failed) = oneshot::channel();
    tokio::spawn(async move {
        loop {
            let mut data = vec![0; CHUNK_BYTES];
            let n = match input.read(&mut data).await {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    let _ = failed_tx.send(e);
                    return;
                }
            };
            data.truncate(n);
            if tx.send(ArchiveChunk { data }).await.is_err() {
                return;
            }
        }
    });
    let mut client = client(socket);
    let call = client.import(tokio_stream::wrappers::ReceiverStream::new(rx));
    tokio::select! {
        answer = call => {
            let answer = answer.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
            Ok(answer.into_inner().images)
        }
        Ok(e) = failed => Err(e).context("read the archive"),
    }
}

/// Writes the images `references` (names or ids), exported by crustd on `socket` as an
/// OCI image layout archive, to `out`.
pub async fn export(
    socket: &Path,
    references: Vec<String>,
    out: &mut (impl AsyncWrite + Unpin),
) -> anyhow::Result<()> {
    let mut chunks = client(socket)
        .export(ExportRequest { images: references })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    while let Some(chunk) = chunks
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
    {
        out.write_all(&chunk.data)
            .await
            .context("write the archive")?;
    }
    out.flush().await.context("write the archive")?;
    Ok(())
}
