//! The CRI calls of the workload, as kubelet makes them for a plain pod: one
//! client over the runtime's Unix socket, pods with their own PID namespace per
//! container (kubelet's default) and a cgroup parent of their own, the busybox
//! image.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use crust_proto::cri::image_service_client::ImageServiceClient;
use crust_proto::cri::runtime_service_client::RuntimeServiceClient;
use crust_proto::cri::*;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

use crate::cgroups;

/// The label every pod of the benchmark carries, so leftovers can be found.
pub const LABEL: &str = "crust-bench";

/// A deadline for any single call: generous, the figures are what matter.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Makes one call and times it, from the request's sending to the whole answer;
/// `what` names the call in an error.
async fn timed<T, C>(
    call: impl Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    what: impl FnOnce() -> C,
) -> Result<(Duration, T)>
where
    C: std::fmt::Display + Send + Sync + 'static,
{
    let t = Instant::now();
    let r = call.await.with_context(what)?.into_inner();
    Ok((t.elapsed(), r))
}

/// A gRPC channel over the Unix socket of `endpoint` (`unix:///path`).
pub async fn connect(endpoint: &str) -> Result<Channel> {
    let Some(path) = endpoint.strip_prefix("unix://") else {
        bail!("endpoint {endpoint}: only unix:///path is supported");
    };
    let path = PathBuf::from(path);
    Endpoint::try_from("http://[::]:50051")?
        .timeout(CALL_TIMEOUT)
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .with_context(|| format!("connect to {endpoint}"))
}

/// How long each step of a pod start took.
#[derive(Debug, Clone, Copy)]
pub struct StartTimes {
    pub run_pod: Duration,
    pub create: Duration,
    pub start: Duration,
}

impl StartTimes {
    pub fn total(&self) -> Duration {
        self.run_pod + self.create + self.start
    }
}

/// How long each step of a pod teardown took.
#[derive(Debug, Clone, Copy)]
pub struct StopTimes {
    pub stop: Duration,
    pub remove: Duration,
}

impl StopTimes {
    pub fn total(&self) -> Duration {
        self.stop + self.remove
    }
}

/// A running pod of the benchmark.
#[derive(Debug, Clone)]
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
    /// Its containers' ids.
    pub containers: Vec<String>,
}

/// One client of the runtime under test.
#[derive(Clone)]
pub struct Cri {
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
    image: String,
    log_dir: PathBuf,
    run: String,
}

fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

impl Cri {
    /// A client on `channel` running `image`; pods log under `log_dir`; `run` tells
    /// this run's pods from others (it goes into names and the label).
    pub fn new(channel: Channel, image: &str, log_dir: &Path, run: &str) -> Cri {
        Cri {
            rt: RuntimeServiceClient::new(channel.clone()),
            img: ImageServiceClient::new(channel),
            image: image.to_owned(),
            log_dir: log_dir.to_owned(),
            run: run.to_owned(),
        }
    }

    /// The runtime's name and version.
    pub async fn version(&mut self) -> Result<String> {
        let v = self
            .rt
            .version(VersionRequest::default())
            .await
            .context("Version")?
            .into_inner();
        Ok(format!("{} {}", v.runtime_name, v.runtime_version))
    }

    /// Pulls the image (not timed: the pull benchmark measures pulls).
    pub async fn pull(&mut self) -> Result<()> {
        self.img
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: self.image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .with_context(|| format!("PullImage {}", self.image))?;
        Ok(())
    }

    fn pod_config(&self, name: &str) -> Result<PodSandboxConfig> {
        let log_directory = self.log_dir.join(name);
        // kubelet creates the pod's log dir before RunPodSandbox
        std::fs::create_dir_all(&log_directory)
            .with_context(|| format!("create {}", log_directory.display()))?;
        Ok(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_owned(),
                uid: format!("{}-{name}", self.run),
                namespace: LABEL.to_owned(),
                attempt: 0,
            }),
            hostname: name.to_owned(),
            log_directory: log_directory.display().to_string(),
            labels: HashMap::from([(LABEL.to_owned(), self.run.clone())]),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: cgroups::parent(&self.run, name),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn container_config(&self, name: &str) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.to_owned(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: vec!["sleep".into(), "86400".into()],
            log_path: format!("{name}.log"),
            labels: HashMap::from([(LABEL.to_owned(), self.run.clone())]),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox, then a `sleep` container created and started in it.
    pub async fn start_pod(&mut self, name: &str) -> Result<(Pod, StartTimes)> {
        let config = self.pod_config(name)?;
        let (run_pod, r) = timed(
            self.rt.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            }),
            || format!("RunPodSandbox {name}"),
        )
        .await?;
        let mut pod = Pod {
            id: r.pod_sandbox_id,
            config,
            containers: Vec::new(),
        };
        let (create, start) = self.add_container(&mut pod, "sleep").await?;
        Ok((
            pod,
            StartTimes {
                run_pod,
                create,
                start,
            },
        ))
    }

    /// Creates and starts one more `sleep` container named `name` in `pod`.
    pub async fn add_container(
        &mut self,
        pod: &mut Pod,
        name: &str,
    ) -> Result<(Duration, Duration)> {
        let config = self.container_config(name);
        let (create, r) = timed(
            self.rt.create_container(CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(config),
                sandbox_config: Some(pod.config.clone()),
            }),
            || format!("CreateContainer {name} in pod {}", pod.id),
        )
        .await?;
        let id = r.container_id;
        let (start, _) = timed(
            self.rt.start_container(StartContainerRequest {
                container_id: id.clone(),
            }),
            || format!("StartContainer {id}"),
        )
        .await?;
        pod.containers.push(id);
        Ok((create, start))
    }

    /// StopPodSandbox, then RemovePodSandbox.
    pub async fn stop_pod(&mut self, pod_id: &str) -> Result<StopTimes> {
        let (stop, _) = timed(
            self.rt.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod_id.to_owned(),
            }),
            || format!("StopPodSandbox {pod_id}"),
        )
        .await?;
        let (remove, _) = timed(
            self.rt.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.to_owned(),
            }),
            || format!("RemovePodSandbox {pod_id}"),
        )
        .await?;
        Ok(StopTimes { stop, remove })
    }

    /// ExecSync of `true` in `container`; fails unless it exits 0.
    pub async fn exec_true(&mut self, container: &str) -> Result<Duration> {
        let (took, r) = timed(
            self.rt.exec_sync(ExecSyncRequest {
                container_id: container.to_owned(),
                cmd: vec!["true".into()],
                timeout: 10,
            }),
            || format!("ExecSync true in {container}"),
        )
        .await?;
        if r.exit_code != 0 {
            bail!("ExecSync true in {container}: exit code {}", r.exit_code);
        }
        Ok(took)
    }

    /// ListContainers without a filter (as kubelet's relist); returns the time and
    /// how many it listed.
    pub async fn list_containers(&mut self) -> Result<(Duration, usize)> {
        let (t, r) = timed(
            self.rt.list_containers(ListContainersRequest::default()),
            || "ListContainers",
        )
        .await?;
        Ok((t, r.containers.len()))
    }

    /// ListPodSandbox without a filter; returns the time and how many it listed.
    pub async fn list_pods(&mut self) -> Result<(Duration, usize)> {
        let (t, r) = timed(
            self.rt.list_pod_sandbox(ListPodSandboxRequest::default()),
            || "ListPodSandbox",
        )
        .await?;
        Ok((t, r.items.len()))
    }

    /// Status, as kubelet's runtime health check; returns the time and whether both
    /// RuntimeReady and NetworkReady are true.
    pub async fn status(&mut self) -> Result<(Duration, bool)> {
        let (t, r) = timed(
            self.rt.status(StatusRequest { verbose: false }),
            || "Status",
        )
        .await?;
        let ready = |kind: &str| {
            r.status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.r#type == kind && c.status))
        };
        Ok((t, ready("RuntimeReady") && ready("NetworkReady")))
    }

    /// ListContainerStats without a filter; returns the time and how many it listed.
    pub async fn list_container_stats(&mut self) -> Result<(Duration, usize)> {
        let (t, r) = timed(
            self.rt
                .list_container_stats(ListContainerStatsRequest::default()),
            || "ListContainerStats",
        )
        .await?;
        Ok((t, r.stats.len()))
    }

    /// ListPodSandboxStats without a filter; returns the time and how many it listed.
    pub async fn list_pod_sandbox_stats(&mut self) -> Result<(Duration, usize)> {
        let (t, r) = timed(
            self.rt
                .list_pod_sandbox_stats(ListPodSandboxStatsRequest::default()),
            || "ListPodSandboxStats",
        )
        .await?;
        Ok((t, r.stats.len()))
    }

    /// How many of this run's containers ListContainers (without a filter, as
    /// kubelet's relist) reports running.
    pub async fn running_containers(&mut self) -> Result<usize> {
        let r = self
            .rt
            .list_containers(ListContainersRequest::default())
            .await
            .context("ListContainers")?
            .into_inner();
        Ok(r.containers
            .iter()
            .filter(|c| {
                c.state == ContainerState::ContainerRunning as i32
                    && c.labels.get(LABEL) == Some(&self.run)
            })
            .count())
    }

    /// Pulls `image`; returns how long it took.
    pub async fn pull_image(&mut self, image: &str) -> Result<Duration> {
        let (t, _) = timed(
            self.img.pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            || format!("PullImage {image}"),
        )
        .await?;
        Ok(t)
    }

    /// Removes `image` if the runtime has it.
    pub async fn remove_image(&mut self, image: &str) -> Result<()> {
        let spec = ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        };
        let known = self
            .img
            .image_status(ImageStatusRequest {
                image: Some(spec.clone()),
                verbose: false,
            })
            .await
            .with_context(|| format!("ImageStatus {image}"))?
            .into_inner()
            .image
            .is_some();
        if known {
            self.img
                .remove_image(RemoveImageRequest { image: Some(spec) })
                .await
                .with_context(|| format!("RemoveImage {image}"))?;
        }
        Ok(())
    }

    /// The same client on another channel (after the daemon was restarted).
    pub fn with_channel(&self, channel: Channel) -> Cri {
        Cri {
            rt: RuntimeServiceClient::new(channel.clone()),
            img: ImageServiceClient::new(channel),
            ..self.clone()
        }
    }

    /// The ids of this run's pods still known to the runtime.
    pub async fn leftover_pods(&mut self) -> Result<Vec<String>> {
        let r = self
            .rt
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    label_selector: HashMap::from([(LABEL.to_owned(), self.run.clone())]),
                    ..Default::default()
                }),
            })
            .await
            .context("ListPodSandbox")?
            .into_inner();
        Ok(r.items.into_iter().map(|p| p.id).collect())
    }
}
