//! A pod sandbox's record: [`SandboxMetadata`] fixed at RunPodSandbox, and
//! [`SandboxStatus`], which moves through this state machine:
//!
//! ```text
//!               RunPodSandbox: record persisted before any setup
//!                          |
//!                  +-------v------+  setup done: mark_ready  +-------+
//!                  |   NOTREADY   +------------------------->| READY |
//!                  |  (starting)  |                          +---+---+
//!                  +--+--------+--+                              |
//!     setup failed:   |        | mark_stopped    StopPodSandbox, namespaces
//!     undone, record  |        |                 lost: mark_stopped
//!     removed         |        v                                 |
//!                     |  +-----+--------------+                  |
//!                     |  |      NOTREADY      <------------------+
//!                     |  |   stopped = true   |  CNI DEL succeeded, once:
//!                     |  +-----+--------------+  mark_network_torn_down
//!                     |        | RemovePodSandbox
//!                     v        v
//!                       DELETED
//! ```
//!
//! NOTREADY and READY are CRI's two sandbox states; `stopped` tells a sandbox being
//! set up from one that was stopped (stopping again is a no-op), and
//! `network_torn_down` makes CNI DEL run exactly once across restarts.

use std::path::PathBuf;

use crust_proto::cri::{PodSandboxConfig, PodSandboxState};
use serde::{Deserialize, Serialize};

use super::entry::proto_base64;
use super::error::{Error, Object, Result};
use super::ids::SandboxId;
use super::names::sandbox_name;

/// What is fixed when a sandbox is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxMetadata {
    /// The sandbox's id.
    pub id: SandboxId,
    /// Its reserved unique name (see [`sandbox_name`]).
    pub name: String,
    /// The pod's name (CRI `PodSandboxMetadata.name`).
    pub pod_name: String,
    /// The pod's UID.
    pub uid: String,
    /// The pod's namespace.
    pub namespace: String,
    /// Kubelet's attempt number for this sandbox.
    pub attempt: u32,
    /// The CRI config as kubelet sent it.
    #[serde(with = "proto_base64")]
    pub config: PodSandboxConfig,
    /// The pinned network namespace; `None` for a host-network pod.
    pub netns_path: Option<PathBuf>,
    /// The pod's cgroup parent, as given in the config.
    pub cgroup_parent: String,
    /// The CRI runtime handler asked for ("" for the default).
    pub runtime_handler: String,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_at: i64,
}

impl SandboxMetadata {
    /// Metadata for `config`: the name fields come from its CRI metadata; the netns
    /// path, cgroup parent and runtime handler are left empty for the caller to set.
    pub fn new(id: SandboxId, config: PodSandboxConfig, created_at: i64) -> Self {
        let m = config.metadata.clone().unwrap_or_default();
        let cgroup_parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        Self {
            id,
            name: sandbox_name(&m),
            pod_name: m.name,
            uid: m.uid,
            namespace: m.namespace,
            attempt: m.attempt,
            config,
            netns_path: None,
            cgroup_parent,
            runtime_handler: String::new(),
            created_at,
        }
    }
}

/// CRI's sandbox states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SandboxState {
    /// Being set up, stopped, or broken.
    NotReady,
    /// Set up and running.
    Ready,
}

impl SandboxState {
    /// The state as CRI's enum.
    pub fn cri(self) -> PodSandboxState {
        match self {
            SandboxState::NotReady => PodSandboxState::SandboxNotready,
            SandboxState::Ready => PodSandboxState::SandboxReady,
        }
    }
}

/// What changes during a sandbox's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxStatus {
    /// The CRI state.
    pub state: SandboxState,
    /// The pod's IPs from CNI, the primary first; empty for host network.
    pub pod_ips: Vec<String>,
    /// StopPodSandbox (or the loss of the pod's namespaces) happened.
    pub stopped: bool,
    /// CNI DEL succeeded (or there was no network to tear down).
    pub network_torn_down: bool,
    /// When it became READY, nanoseconds since the Unix epoch.
    pub ready_at: Option<i64>,
    /// When it was stopped, nanoseconds since the Unix epoch.
    pub stopped_at: Option<i64>,
}

impl Default for SandboxStatus {
    fn default() -> Self {
        Self {
            state: SandboxState::NotReady,
            pod_ips: Vec::new(),
            stopped: false,
            network_torn_down: false,
            ready_at: None,
            stopped_at: None,
        }
    }
}

impl SandboxStatus {
    fn invalid(&self, id: &SandboxId, action: &'static str) -> Error {
        let state = if self.stopped {
            "SANDBOX_NOTREADY (stopped)"
        } else {
            self.state.cri().as_str_name()
        };
        Error::InvalidState {
            what: Object::Sandbox,
            id: id.to_string(),
            action,
            state,
        }
    }

    /// Its RunPodSandbox is still running: neither READY once nor stopped.
    pub fn starting(&self) -> bool {
        self.ready_at.is_none() && !self.stopped
    }

    /// NOTREADY (starting) -> READY, with the pod's IPs.
    pub fn mark_ready(&mut self, id: &SandboxId, pod_ips: Vec<String>, at: i64) -> Result<()> {
        if self.state != SandboxState::NotReady || self.stopped {
            return Err(self.invalid(id, "mark ready"));
        }
        self.state = SandboxState::Ready;
        self.pod_ips = pod_ips;
        self.ready_at = Some(at);
        Ok(())
    }

    /// Any state -> NOTREADY (stopped). Stopping a stopped sandbox changes nothing.
    pub fn mark_stopped(&mut self, at: i64) {
        if self.stopped {
            return;
        }
        self.state = SandboxState::NotReady;
        self.stopped = true;
        self.stopped_at = Some(at);
    }

    /// Records that CNI DEL succeeded, so it is not run again.
    pub fn mark_network_torn_down(&mut self) {
        self.network_torn_down = true;
    }
}

#[cfg(test)]
mod tests {
    use crust_proto::cri::PodSandboxMetadata;

    use super::*;

    #[test]
    fn metadata_from_config() {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                uid: "u".into(),
                namespace: "ns".into(),
                attempt: 1,
            }),
            hostname: "web-0".into(),
            ..Default::default()
        };
        let m = SandboxMetadata::new(SandboxId::generate(), config.clone(), 7);
        assert_eq!(m.name, "web_ns_u_1");
        assert_eq!((m.pod_name.as_str(), m.attempt), ("web", 1));
        let json = serde_json::to_string(&m).unwrap();
        let back: SandboxMetadata = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.config, config);
    }

    #[test]
    fn state_machine() {
        let id = SandboxId::generate();
        let mut s = SandboxStatus::default();
        assert_eq!(s.state.cri(), PodSandboxState::SandboxNotready);
        s.mark_ready(&id, vec!["10.0.0.2".into()], 1).unwrap();
        assert_eq!(s.state, SandboxState::Ready);
        let err = s.mark_ready(&id, vec![], 2).unwrap_err();
        assert!(err.to_string().contains(id.as_str()), "{err}");
        s.mark_stopped(3);
        s.mark_stopped(4);
        assert_eq!(
            (s.state, s.stopped, s.stopped_at),
            (SandboxState::NotReady, true, Some(3))
        );
        assert!(s.mark_ready(&id, vec![], 5).is_err());
        s.mark_network_torn_down();
        assert!(s.network_torn_down);
    }
}
