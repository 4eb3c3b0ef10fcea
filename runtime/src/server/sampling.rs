//! Sampling a pod's or container's usage for the stats and metrics RPCs: the blocking
//! reads (cgroup files, the pod's network namespace, the writable layer and its
//! filesystem) run off the async thread, one blocking task per call rather than per
//! object.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crust_proto::cri::{
    ContainerAttributes, ContainerStats, PodSandboxAttributes, PodSandboxStats,
};

use super::Context;
use super::cgroups::{self, Cgroup};
use super::error::{Result, blocking};
use crate::stats::{self, CgroupSample, Figures, FsCapacity, NetworkSample, PodStatsInput};
use crate::store::{Container, ContainerState, Sandbox};

/// One container's usage, sampled.
pub struct ContainerSample {
    /// The container.
    pub container: Arc<Container>,
    /// Its cgroup; None when it is not running or its cgroup is gone.
    pub cgroup: Option<CgroupSample>,
    /// Its writable layer's usage.
    pub layer: Option<stats::FsSample>,
    /// The filesystem the writable layer is on.
    pub filesystem: Option<FsCapacity>,
}

/// One pod's usage, sampled.
pub struct PodSample {
    /// The pod.
    pub sandbox: Arc<Sandbox>,
    /// The pod cgroup.
    pub cgroup: Option<CgroupSample>,
    /// Its network counters; None for host network or a pod without namespace.
    pub network: Option<NetworkSample>,
    /// Its containers.
    pub containers: Vec<ContainerSample>,
}

fn sample_cgroup(cgroup: &Cgroup, figures: Figures) -> Option<CgroupSample> {
    let path = cgroup.fs_path()?;
    match stats::sample(&path, figures) {
        Ok(s) => s,
        Err(err) => {
            tracing::debug!(cgroup = %path.display(), %err, "sample cgroup");
            None
        }
    }
}

/// The filesystem holding the writable layers, measured once per call.
fn layers_filesystem(root: &Path) -> Option<FsCapacity> {
    stats::filesystem(root)
        .inspect_err(|err| tracing::debug!(%err, "measure the layers' filesystem"))
        .ok()
}

fn sample_container(
    figures: Figures,
    images_fs: &Path,
    filesystem: Option<FsCapacity>,
    layers: PathBuf,
    c: Arc<Container>,
) -> ContainerSample {
    let running = c.status().state == ContainerState::Running;
    let cgroup = running
        .then(|| sample_cgroup(&Cgroup::parse(&c.metadata().cgroups_path), figures))
        .flatten();
    let layer = stats::writable_layer(&layers.join("upper"), images_fs).ok();
    ContainerSample {
        container: c,
        cgroup,
        layer,
        filesystem,
    }
}

/// Samples the containers, in one blocking task.
pub async fn containers(
    ctx: &Arc<Context>,
    list: Vec<Arc<Container>>,
) -> Result<Vec<ContainerSample>> {
    let ctx = Arc::clone(ctx);
    blocking("sample containers", move || {
        let fs = ctx.paths.layer_root();
        let capacity = layers_filesystem(&fs);
        Ok(list
            .into_iter()
            .map(|c| {
                let layer = ctx.paths.layer_dir(&c.metadata().id);
                sample_container(Figures::Stats, &fs, capacity.clone(), layer, c)
            })
            .collect())
    })
    .await
}

/// Samples the pods with their containers, in one blocking task: the CRI stats'
/// figures, or the metrics' too.
pub async fn pods(
    ctx: &Arc<Context>,
    list: Vec<Arc<Sandbox>>,
    figures: Figures,
) -> Result<Vec<PodSample>> {
    let ctx = Arc::clone(ctx);
    let driver = ctx.config.cgroup.driver;
    blocking("sample pods", move || {
        let fs = ctx.paths.layer_root();
        let capacity = layers_filesystem(&fs);
        Ok(list
            .into_iter()
            .map(|s| {
                let m = s.metadata();
                let ready = s.status().state == crate::store::SandboxState::Ready;
                let cgroup = ready
                    .then(|| sample_cgroup(&cgroups::pod_cgroup(driver, m), figures))
                    .flatten();
                let of_pod = ctx.store.containers_of(&m.id);
                let pids = of_pod
                    .iter()
                    .map(|c| c.status())
                    .filter(|st| st.state == ContainerState::Running)
                    .filter_map(|st| st.pid);
                let network = m
                    .netns_path
                    .as_deref()
                    .filter(|_| ready)
                    .and_then(|ns| stats::network_via(ns, pids).ok());
                let containers = of_pod
                    .into_iter()
                    .map(|c| {
                        let layer = ctx.paths.layer_dir(&c.metadata().id);
                        sample_container(figures, &fs, capacity.clone(), layer, c)
                    })
                    .collect();
                PodSample {
                    sandbox: s,
                    cgroup,
                    network,
                    containers,
                }
            })
            .collect())
    })
    .await
}

/// The CRI attributes of a container.
pub fn container_attributes(c: &Container) -> ContainerAttributes {
    let m = c.metadata();
    ContainerAttributes {
        id: m.id.to_string(),
        metadata: m.config.metadata.clone(),
        labels: m.config.labels.clone(),
        annotations: m.config.annotations.clone(),
    }
}

/// A sampled container as CRI stats.
pub fn container_stats(ctx: &Context, s: &ContainerSample) -> ContainerStats {
    let id = s.container.metadata().id.as_str();
    let rate = s
        .cgroup
        .as_ref()
        .and_then(|cg| ctx.cpu.usage_nano_cores(id, cg));
    stats::container_stats(
        container_attributes(&s.container),
        s.cgroup.as_ref(),
        rate,
        s.layer.clone(),
    )
}

/// A sampled pod as CRI stats.
pub fn pod_stats(ctx: &Context, s: &PodSample) -> PodSandboxStats {
    let m = s.sandbox.metadata();
    let rate = s
        .cgroup
        .as_ref()
        .and_then(|cg| ctx.cpu.usage_nano_cores(m.id.as_str(), cg));
    stats::pod_stats(PodStatsInput {
        attributes: PodSandboxAttributes {
            id: m.id.to_string(),
            metadata: m.config.metadata.clone(),
            labels: m.config.labels.clone(),
            annotations: m.config.annotations.clone(),
        },
        cgroup: s.cgroup.as_ref(),
        nano_cores: rate,
        network: s.network.as_ref(),
        containers: s
            .containers
            .iter()
            .map(|c| container_stats(ctx, c))
            .collect(),
    })
}
