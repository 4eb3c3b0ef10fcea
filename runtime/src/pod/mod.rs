//! The pod-level pieces a sandbox is made of, besides its network: pinned UTS and IPC
//! namespaces ([`namespaces`], which also holds the pinning machinery the network
//! namespace uses), the files every container of the pod mounts ([`files`]), the
//! pod's `/dev/shm` ([`shm`]), the process that holds its shared PID namespace
//! ([`infra`]) and the pod's own user namespace with its idmapped mounts ([`userns`]).

pub mod files;
pub mod infra;
pub mod namespaces;
pub mod shm;
pub mod userns;
