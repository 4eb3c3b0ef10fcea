//! Store records as CRI messages: what List*, *Status and the events report.

use std::collections::HashMap;

use crust_proto::cri::{
    self, ContainerResources, ImageSpec, LinuxContainerResources, LinuxPodSandboxStatus, Namespace,
    NamespaceOption, PodIp, PodSandboxNetworkStatus, PodSandboxState,
};

use crate::store::{Container, Sandbox};

/// The pod's namespace options as its config gave them (all POD when unset).
pub fn namespace_options(s: &Sandbox) -> NamespaceOption {
    s.metadata()
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|c| c.namespace_options.clone())
        .unwrap_or_default()
}

/// The sandbox as ListPodSandbox reports it.
pub fn sandbox(s: &Sandbox) -> cri::PodSandbox {
    let m = s.metadata();
    cri::PodSandbox {
        id: m.id.to_string(),
        metadata: m.config.metadata.clone(),
        state: sandbox_state(s) as i32,
        created_at: m.created_at,
        labels: m.config.labels.clone(),
        annotations: m.config.annotations.clone(),
        runtime_handler: m.runtime_handler.clone(),
    }
}

fn sandbox_state(s: &Sandbox) -> PodSandboxState {
    s.status().state.cri()
}

/// The sandbox as PodSandboxStatus reports it.
pub fn sandbox_status(s: &Sandbox) -> cri::PodSandboxStatus {
    let m = s.metadata();
    let status = s.status();
    let host_network = namespace_options(s).network == cri::NamespaceMode::Node as i32;
    let network = (!host_network && !status.stopped).then(|| {
        let mut ips = status.pod_ips.iter();
        PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| PodIp { ip: ip.clone() }).collect(),
        }
    });
    cri::PodSandboxStatus {
        id: m.id.to_string(),
        metadata: m.config.metadata.clone(),
        state: status.state.cri() as i32,
        created_at: m.created_at,
        network: network.or_else(|| Some(PodSandboxNetworkStatus::default())),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(namespace_options(s)),
            }),
        }),
        labels: m.config.labels.clone(),
        annotations: m.config.annotations.clone(),
        runtime_handler: m.runtime_handler.clone(),
    }
}

/// The container as ListContainers reports it.
pub fn container(c: &Container) -> cri::Container {
    let m = c.metadata();
    cri::Container {
        id: m.id.to_string(),
        pod_sandbox_id: m.sandbox_id.to_string(),
        metadata: m.config.metadata.clone(),
        image: Some(image_spec(c)),
        image_ref: m.image_ref.clone(),
        state: c.status().state.cri() as i32,
        created_at: m.created_at,
        labels: m.config.labels.clone(),
        annotations: m.config.annotations.clone(),
        image_id: m.image_id.clone(),
    }
}

fn image_spec(c: &Container) -> ImageSpec {
    let m = c.metadata();
    let asked = m.config.image.clone().unwrap_or_default();
    ImageSpec {
        image: if m.image_name.is_empty() {
            asked.image.clone()
        } else {
            m.image_name.clone()
        },
        annotations: asked.annotations,
        user_specified_image: asked.image,
        runtime_handler: asked.runtime_handler,
        image_ref: String::new(),
    }
}

/// The resources in force: the last update's, else the config's.
pub fn resources(c: &Container) -> Option<LinuxContainerResources> {
    c.status().resources.or_else(|| {
        c.metadata()
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
    })
}

/// The container as ContainerStatus reports it.
pub fn container_status(c: &Container) -> cri::ContainerStatus {
    let m = c.metadata();
    let s = c.status();
    cri::ContainerStatus {
        id: m.id.to_string(),
        metadata: m.config.metadata.clone(),
        state: s.state.cri() as i32,
        created_at: m.created_at,
        started_at: s.started_at.unwrap_or_default(),
        finished_at: s.finished_at.unwrap_or_default(),
        exit_code: s.exit_code,
        image: Some(image_spec(c)),
        image_ref: m.image_ref.clone(),
        reason: s.reason.clone(),
        message: s.message.clone(),
        labels: m.config.labels.clone(),
        annotations: m.config.annotations.clone(),
        mounts: m.config.mounts.clone(),
        log_path: m
            .log_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        resources: resources(c).map(|linux| ContainerResources {
            linux: Some(linux),
            windows: None,
        }),
        image_id: m.image_id.clone(),
        user: m.user.as_ref().map(|u| cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: u.uid.into(),
                gid: u.gid.into(),
                supplemental_groups: u.supplemental_groups.iter().map(|&g| g.into()).collect(),
            }),
        }),
        stop_signal: m.config.stop_signal,
    }
}

/// Whether every `selector` label is on the object with the same value.
pub fn labels_match(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selector() {
        let labels: HashMap<String, String> =
            [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        assert!(labels_match(&labels, &HashMap::new()));
        assert!(labels_match(&labels, &[("a".into(), "1".into())].into()));
        assert!(!labels_match(&labels, &[("a".into(), "2".into())].into()));
        assert!(!labels_match(&labels, &[("c".into(), "1".into())].into()));
    }
}
