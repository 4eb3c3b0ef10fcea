//! crust-proto owns the wire types: the CRI v1 API (`runtime.v1`, fetched by
//! `proto/update` at a pinned k8s.io/cri-api version, never edited by hand) and crust's
//! own crustd <-> crust-shim API (`shim.v1`). It holds generated code only: it must
//! never carry logic of the runtime or the shim.

/// The CRI v1 API: `RuntimeService` and `ImageService`, their messages and clients.
pub mod cri {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("runtime.v1");
}

/// The API each crust-shim serves to crustd on a Unix socket in the container's state dir.
pub mod shim {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("shim.v1");
}
