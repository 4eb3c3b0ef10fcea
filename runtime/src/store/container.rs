//! A container's record: [`ContainerMetadata`] fixed at CreateContainer, and
//! [`ContainerStatus`], which moves through CRI's container states:
//!
//! ```text
//!                 CreateContainer (shim started, container created)
//!                        |
//!                  +-----v-----+
//!                  |  CREATED  +---------------------+
//!                  +-----+-----+                     |
//!                        | StartContainer: start     | start failed,
//!                  +-----v-----+                     | stopped unstarted: exit
//!                  |  RUNNING  |                     |
//!                  +-----+-----+                     |
//!                        | process exited,           |
//!                        | StopContainer: exit       |
//!                  +-----v-----+                     |
//!                  |  EXITED   <---------------------+
//!                  +--^--+-----+
//!            exit     |  | RemoveContainer: begin_removing, then the record goes
//!   (exit file read)  |  v
//!                  +--+--------+      DELETED
//!                  |  UNKNOWN  |
//!                  +-----^-----+
//!                        | mark_unknown: after a restart, the shim of a
//!                        | CREATED or RUNNING container can't be reached
//! ```
//!
//! `removing` is set once RemoveContainer begins (never on a RUNNING container), so
//! a second remove or a start can't race it; it is persisted, so recovery finishes a
//! removal that a crash interrupted.

use std::path::PathBuf;

use crust_proto::cri::{ContainerConfig, ContainerState as CriState, LinuxContainerResources};
use serde::{Deserialize, Serialize};

use super::entry::{proto_base64, proto_base64_opt};
use super::error::{Error, Object, Result};
use super::ids::{ContainerId, SandboxId};

/// What is fixed when a container is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerMetadata {
    /// The container's id.
    pub id: ContainerId,
    /// The sandbox it belongs to.
    pub sandbox_id: SandboxId,
    /// Its reserved unique name (see [`super::names::container_name`]).
    pub name: String,
    /// The container's name in the pod (CRI `ContainerMetadata.name`).
    pub container_name: String,
    /// Kubelet's attempt number for this container.
    pub attempt: u32,
    /// The CRI config as kubelet sent it.
    #[serde(with = "proto_base64")]
    pub config: ContainerConfig,
    /// The image id (its config digest).
    pub image_id: String,
    /// The image reference the container was created from, as kubelet gave it.
    pub image_ref: String,
    /// The image as the container status reports it: its first tag, else the
    /// reference the request gave.
    #[serde(default)]
    pub image_name: String,
    /// The signal StopContainer sends first (the image's StopSignal, else SIGTERM).
    #[serde(default)]
    pub stop_signal: String,
    /// The container's cgroup (cgroupfs path).
    #[serde(default)]
    pub cgroups_path: String,
    /// The CRI log file (sandbox log directory joined with the config's log path);
    /// `None` when kubelet asked for no log.
    pub log_path: Option<PathBuf>,
    /// The OCI bundle directory.
    pub bundle_dir: PathBuf,
    /// The container's state directory (shim socket, exit file).
    pub state_dir: PathBuf,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_at: i64,
    /// The user the container's process runs as, as its spec says; `None` for records
    /// written before crust recorded it.
    #[serde(default)]
    pub user: Option<ProcessUser>,
}

/// The identity of a container's process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessUser {
    /// The uid.
    pub uid: u32,
    /// The primary gid.
    pub gid: u32,
    /// Every group of the process, the primary one included.
    pub supplemental_groups: Vec<u32>,
}

/// CRI's container states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Its process runs.
    Running,
    /// Its process exited, or it never started.
    Exited,
    /// Its shim could not be reached after a restart.
    Unknown,
}

impl ContainerState {
    /// The state as CRI's enum.
    pub fn cri(self) -> CriState {
        match self {
            ContainerState::Created => CriState::ContainerCreated,
            ContainerState::Running => CriState::ContainerRunning,
            ContainerState::Exited => CriState::ContainerExited,
            ContainerState::Unknown => CriState::ContainerUnknown,
        }
    }
}

/// How a container's process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The exit code (128 + signal for a signalled process).
    pub code: i32,
    /// When, nanoseconds since the Unix epoch.
    pub at: i64,
    /// CRI's reason: "Completed", "Error", "OOMKilled", "StartError".
    pub reason: String,
    /// A human-readable detail, possibly empty.
    pub message: String,
}

/// What changes during a container's life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// The CRI state.
    pub state: ContainerState,
    /// The init process's pid, once started.
    pub pid: Option<u32>,
    /// When it started, nanoseconds since the Unix epoch.
    pub started_at: Option<i64>,
    /// When it exited, nanoseconds since the Unix epoch.
    pub finished_at: Option<i64>,
    /// The exit code, once exited.
    pub exit_code: i32,
    /// CRI's reason for the current state.
    pub reason: String,
    /// A human-readable detail of the current state.
    pub message: String,
    /// RemoveContainer has begun.
    pub removing: bool,
    /// The shim's socket, once its shim runs.
    pub shim_socket: Option<PathBuf>,
    /// Resources set by UpdateContainerResources; None while the config's apply.
    #[serde(default, with = "proto_base64_opt")]
    pub resources: Option<LinuxContainerResources>,
}

impl Default for ContainerStatus {
    fn default() -> Self {
        Self {
            state: ContainerState::Created,
            pid: None,
            started_at: None,
            finished_at: None,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            removing: false,
            shim_socket: None,
            resources: None,
        }
    }
}

impl ContainerStatus {
    fn invalid(&self, id: &ContainerId, action: &'static str) -> Error {
        Error::InvalidState {
            what: Object::Container,
            id: id.to_string(),
            action,
            state: if self.removing {
                "removing"
            } else {
                self.state.cri().as_str_name()
            },
        }
    }

    /// CREATED -> RUNNING with the init process's pid.
    pub fn start(&mut self, id: &ContainerId, pid: u32, at: i64) -> Result<()> {
        if self.state != ContainerState::Created || self.removing {
            return Err(self.invalid(id, "start"));
        }
        self.state = ContainerState::Running;
        self.pid = Some(pid);
        self.started_at = Some(at);
        Ok(())
    }

    /// CREATED, RUNNING or UNKNOWN -> EXITED. An exited container keeps its first
    /// exit: a second report (the shim's, then the exit file's) changes nothing.
    pub fn exit(&mut self, exit: Exit) {
        if self.state == ContainerState::Exited {
            return;
        }
        self.state = ContainerState::Exited;
        self.finished_at = Some(exit.at);
        self.exit_code = exit.code;
        self.reason = exit.reason;
        self.message = exit.message;
    }

    /// CREATED or RUNNING -> UNKNOWN, when the shim can't be reached.
    pub fn mark_unknown(&mut self, id: &ContainerId) -> Result<()> {
        match self.state {
            ContainerState::Created | ContainerState::Running => {
                self.state = ContainerState::Unknown;
                Ok(())
            }
            ContainerState::Unknown => Ok(()),
            ContainerState::Exited => Err(self.invalid(id, "mark unknown")),
        }
    }

    /// Begins RemoveContainer: refused while RUNNING (stop it first) or when a removal
    /// already runs.
    pub fn begin_removing(&mut self, id: &ContainerId) -> Result<()> {
        if self.state == ContainerState::Running || self.removing {
            return Err(self.invalid(id, "remove"));
        }
        self.removing = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32, at: i64) -> Exit {
        Exit {
            code,
            at,
            reason: "Error".into(),
            message: String::new(),
        }
    }

    #[test]
    fn created_running_exited_removed() {
        let id = ContainerId::generate();
        let mut s = ContainerStatus::default();
        assert_eq!(s.state.cri(), CriState::ContainerCreated);
        s.start(&id, 42, 10).unwrap();
        assert_eq!(
            (s.state, s.pid, s.started_at),
            (ContainerState::Running, Some(42), Some(10))
        );
        let err = s.begin_removing(&id).unwrap_err();
        assert!(err.to_string().contains(id.as_str()), "{err}");
        assert!(err.to_string().contains("CONTAINER_RUNNING"), "{err}");
        assert!(s.start(&id, 43, 11).is_err());
        s.exit(exit(1, 20));
        s.exit(exit(2, 30));
        assert_eq!(
            (s.state, s.exit_code, s.finished_at),
            (ContainerState::Exited, 1, Some(20))
        );
        assert!(s.mark_unknown(&id).is_err());
        s.begin_removing(&id).unwrap();
        assert!(s.begin_removing(&id).is_err());
    }

    #[test]
    fn unknown_then_exited() {
        let id = ContainerId::generate();
        let mut s = ContainerStatus::default();
        s.mark_unknown(&id).unwrap();
        assert!(s.start(&id, 1, 1).is_err());
        s.exit(exit(137, 5));
        assert_eq!(s.state, ContainerState::Exited);
    }

    #[test]
    fn a_removing_container_does_not_start() {
        let id = ContainerId::generate();
        let mut s = ContainerStatus::default();
        s.begin_removing(&id).unwrap();
        let err = s.start(&id, 1, 1).unwrap_err();
        assert!(err.to_string().contains("removing"), "{err}");
    }
}
