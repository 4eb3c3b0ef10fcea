//! crust-image-store owns images on the node: references and their normalisation, the
//! registry client, the content store (blobs by digest), layer unpacking into
//! snapshots, image metadata and garbage collection. It depends on no other crust
//! crate and knows nothing of containers or gRPC; it must never write outside the
//! directories it is given, whatever an image contains.

pub mod usage;
