//! The pod-level pieces a sandbox is made of, besides its network: pinned UTS and IPC
//! namespaces ([`namespaces`], which also holds the pinning machinery the network
//! namespace uses), the files every container of the pod mounts ([`files`]), the
//! pod's `/dev/shm` ([`shm`]) and the process that holds its shared PID namespace
//! ([`infra`]).

pub mod files;
pub mod infra;
pub mod namespaces;
pub mod shm;
