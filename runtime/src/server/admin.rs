//! crust's admin API on the CRI socket (`crust.admin.v1.Images`), which `crustd image
//! import` and `crustd image export` call: images in and out as archives, for nodes
//! without a registry. The image store does the work with a pull's checks; this only
//! moves chunks.

use std::io::{self, Write};

use bytes::Bytes;
use crust_proto::admin::images_server::Images;
use crust_proto::admin::{ArchiveChunk, CHUNK_BYTES, ExportRequest, ImageInfo, ImportResponse};
use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::{Request, Status, Streaming};

use super::error::Error;
use super::instrument::{self, Verbosity};
use super::{BoxStream, CriService, Rpc};

fn info(image: &crust_image_store::Image) -> ImageInfo {
    ImageInfo {
        id: image.id.to_string(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: image.repo_digests.clone(),
    }
}

#[tonic::async_trait]
impl Images for CriService {
    type ExportStream = BoxStream<ArchiveChunk>;

    async fn import(&self, r: Request<Streaming<ArchiveChunk>>) -> Rpc<ImportResponse> {
        let chunks = r.into_inner().map(|chunk| {
            chunk
                .map(|c| Bytes::from(c.data))
                .map_err(|s| io::Error::other(s.message().to_owned()))
        });
        let body = async {
            let images = self.ctx.images.import_stream(chunks).await?;
            Ok(ImportResponse {
                images: images.iter().map(info).collect(),
            })
        };
        self.call("Import", "", Verbosity::Change, body).await
    }

    async fn export(&self, r: Request<ExportRequest>) -> Rpc<Self::ExportStream> {
        let req = r.into_inner();
        let id = req.images.join(",");
        let body = async {
            if req.images.is_empty() {
                return Err(Error::InvalidArgument {
                    rpc: "Export",
                    message: "no image named".into(),
                });
            }
            let export = self.ctx.images.export(&req.images).await?;
            let (tx, rx) = mpsc::channel(4);
            let writer = ChunkWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK_BYTES),
            };
            tokio::spawn(async move {
                if let Err(e) = export.write(Box::new(writer)).await {
                    tracing::warn!(error = %e, "export failed");
                    let _ = tx.send(Err(instrument::status(&Error::from(e)))).await;
                }
            });
            let chunks = tokio_stream::wrappers::ReceiverStream::new(rx);
            Ok(Box::pin(chunks) as Self::ExportStream)
        };
        self.call("Export", &id, Verbosity::Change, body).await
    }
}

/// Sends what the export writes, in chunks, to the response stream; runs on the
/// export's blocking thread. A client that goes away fails the write.
struct ChunkWriter {
    tx: mpsc::Sender<Result<ArchiveChunk, Status>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.tx
            .blocking_send(Ok(ArchiveChunk { data }))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = bytes.len().min(CHUNK_BYTES - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == CHUNK_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
