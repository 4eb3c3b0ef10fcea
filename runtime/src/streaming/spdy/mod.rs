//! SPDY/3.1 as Kubernetes streaming uses it: a server side that accepts the client's
//! streams, replies to each, and carries their data both ways. No crate serves SPDY, so
//! the framing ([`frame`]) and the connection ([`conn`]) are written here.

pub mod conn;
pub mod dict;
pub mod frame;

pub use conn::{Conn, Stream, StreamWriter};
pub use frame::{Headers, header};
