//! crust-proto owns the wire types: the CRI v1 API (`runtime.v1`, fetched by
//! `proto/update` at a pinned k8s.io/cri-api version, never edited by hand) and crust's
//! own crustd <-> crust-shim API (`shim.v1`) with the message limits both ends of it
//! keep, crust's admin API (`crust.admin.v1`, image import and export), and the messages
//! of NRI's API (`nri.pkg.api.v1alpha1`, fetched by `proto/update` at a pinned
//! github.com/containerd/nri version, never edited by hand). It holds
//! generated code and those constants (and the shim's file names in the state dir)
//! only: it must never carry logic of the runtime
//! or the shim.

/// The CRI v1 API: `RuntimeService` and `ImageService`, their messages and clients.
pub mod cri {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("runtime.v1");
}

/// The API each crust-shim serves to crustd on a Unix socket in the container's state dir.
pub mod shim {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("shim.v1");

    /// The largest message either end of the shim API sends or accepts, both ways:
    /// kubelet's own limit for a CRI message, so that an ExecSync answer the shim
    /// sends goes on to kubelet as it is.
    pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

    /// The shim's gRPC socket, in the container's state dir.
    pub const SOCKET: &str = "shim.sock";

    /// The shim's exit socket, in the container's state dir: the shim closes its
    /// connections once the init has exited and [`EXIT_FILE`] is written.
    pub const EXIT_SOCKET: &str = "exit.sock";

    /// The file the shim writes, atomically, when the init exits.
    pub const EXIT_FILE: &str = "exit.json";

    /// The most output an ExecSync answer carries, stdout and stderr together: the
    /// message limit less room for the answer's other fields and framing.
    pub const EXEC_SYNC_OUTPUT_BYTES: usize = MAX_MESSAGE_BYTES - 64;
}

/// crust's own API on the CRI socket for the node's operator: image import and export.
pub mod admin {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("crust.admin.v1");

    /// The bytes of one archive chunk.
    pub const CHUNK_BYTES: usize = 1024 * 1024;
}

/// NRI's API (the Node Resource Interface): the messages of its `Runtime` and `Plugin`
/// services, which crustd's NRI adaptation carries over ttrpc.
pub mod nri {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("nri.pkg.api.v1alpha1");

    /// The fully qualified name of the service a plugin serves (crustd calls it).
    pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";
    /// The fully qualified name of the service crustd serves to plugins.
    pub const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::shim::{EXEC_SYNC_OUTPUT_BYTES, MAX_MESSAGE_BYTES};

    #[test]
    fn an_exec_sync_answer_with_all_the_output_fits_one_message() {
        let half = EXEC_SYNC_OUTPUT_BYTES / 2;
        for (out, err) in [
            (EXEC_SYNC_OUTPUT_BYTES, 0),
            (0, EXEC_SYNC_OUTPUT_BYTES),
            (EXEC_SYNC_OUTPUT_BYTES - half, half),
        ] {
            // -1 takes the longest varint.
            let shim = super::shim::ExecSyncResponse {
                stdout: vec![b'x'; out],
                stderr: vec![b'x'; err],
                exit_code: -1,
                timed_out: true,
            };
            assert!(shim.encoded_len() <= MAX_MESSAGE_BYTES, "{out} + {err}");
            let cri = super::cri::ExecSyncResponse {
                stdout: shim.stdout,
                stderr: shim.stderr,
                exit_code: -1,
            };
            assert!(cri.encoded_len() <= MAX_MESSAGE_BYTES, "{out} + {err}");
        }
    }
}
