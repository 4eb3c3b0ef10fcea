//! crust-runtime is crustd: the CRI v1 RuntimeService and ImageService on a Unix socket.
//! It owns the records of pods and containers, their networks and the streaming
//! server, and drives one crust-shim per container. It never forks a container itself
//! (that is the shim's job, so a crustd restart stops nothing) and never panics on a
//! request: every failure is a gRPC status naming what failed.

pub mod admin;
pub mod config;
pub mod daemon;
pub mod events;
pub mod metrics;
pub mod network;
pub mod nri;
pub mod paths;
pub mod pod;
pub mod recover;
pub mod server;
pub mod shims;
pub mod spec;
pub mod stats;
pub mod store;
pub mod streaming;
pub mod trash;
