//! crust-image-store owns images on the node: references and their normalisation, the
//! registry client, the content store (blobs by digest), layer unpacking into
//! snapshots, image metadata and garbage collection. It depends on no other crust
//! crate and knows nothing of containers or gRPC; it must never write outside the
//! directories it is given, whatever an image contains, and never deletes content an
//! image, a pull in progress or a holder (a container) still uses.
//!
//! The entry point is [`ImageStore`]: [`ImageStore::open`], then
//! [`pull`](ImageStore::pull), [`status`](ImageStore::status),
//! [`list`](ImageStore::list), [`remove`](ImageStore::remove),
//! [`lower_dirs`](ImageStore::lower_dirs), [`hold`](ImageStore::hold) /
//! [`release`](ImageStore::release), [`gc`](ImageStore::gc) and
//! [`usage`](ImageStore::usage). Errors carry an [`ErrorKind`] for the gRPC layer.

#![warn(missing_docs)]

pub mod archive;
pub mod digest;
pub mod error;
pub mod image;
mod locks;
pub mod manifest;
mod meta;
pub mod options;
mod pull;
pub mod reference;
mod registry;
mod store;
pub mod unpack;
pub mod usage;

pub use digest::Digest;
pub use error::{Error, ErrorKind, Result};
pub use image::{Image, Layer, Manifests};
pub use options::{Auth, StoreOptions};
pub use reference::ImageRef;
pub use store::{GcReport, ImageStore, PullStats, Registry};
