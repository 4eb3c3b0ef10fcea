//! Starts a real crustd in temporary dirs with its own socket and connects the
//! generated CRI clients to it. On a failing test, the daemon's log is printed.

#![allow(dead_code)]

pub mod pods;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crust_proto::cri::VersionRequest;
use crust_proto::cri::image_service_client::ImageServiceClient;
use crust_proto::cri::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// The crustd binary cargo built for these tests.
pub const CRUSTD: &str = env!("CARGO_BIN_EXE_crustd");

/// The crustd under test: CRUST_TEST_CRUSTD where the tests run away from their
/// build (the test guest gets the binaries copied in), else cargo's.
pub fn crustd_binary() -> PathBuf {
    std::env::var_os("CRUST_TEST_CRUSTD").map_or_else(|| PathBuf::from(CRUSTD), PathBuf::from)
}

/// The largest CRI message kubelet receives (cri-client's `maxMsgSize`); the clients
/// here take no more, so an answer too large for kubelet fails a test.
pub const KUBELET_MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// A running crustd with its own root, state dir, socket and log.
pub struct Crustd {
    child: Option<Child>,
    /// Holds every file of this daemon; removed on drop.
    pub dir: TempDir,
    /// The CRI socket.
    pub socket: PathBuf,
    /// The config file it was started with.
    pub config: PathBuf,
    log: PathBuf,
}

/// Paths for a daemon that is not started yet.
pub struct Layout {
    pub dir: TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
}

impl Layout {
    /// A fresh temp dir with a config naming root, state and socket inside it;
    /// `extra` is appended to the config (tables such as `[network]`).
    pub fn new(extra: &str) -> Layout {
        let dir = tempfile::Builder::new()
            .prefix("crust-it.")
            .tempdir()
            .expect("temp dir");
        // As under /run: a container's root in a pod user namespace, an unprivileged
        // host user, must be able to search down to the state dir.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .expect("chmod temp dir");
        let socket = dir.path().join("crust.sock");
        let config = dir.path().join("config.toml");
        let text = format!(
            "root = {:?}\nstate = {:?}\nlisten = \"unix://{}\"\nlog_level = \"debug\"\n{extra}\n",
            dir.path().join("root"),
            dir.path().join("state"),
            socket.display()
        );
        std::fs::write(&config, text).expect("write config");
        Layout {
            dir,
            socket,
            config,
        }
    }

    /// Starts crustd on this layout and waits until it answers Version.
    pub async fn start(self) -> Crustd {
        let log = self.dir.path().join("crustd.log");
        let child = spawn_crustd(&self.config, &log);
        let mut d = Crustd {
            child: Some(child),
            dir: self.dir,
            socket: self.socket,
            config: self.config,
            log,
        };
        d.wait_ready().await;
        d
    }
}

fn spawn_crustd(config: &Path, log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(crustd_binary())
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn crustd")
}

impl Crustd {
    /// A crustd with the default test config plus `extra`.
    pub async fn start(extra: &str) -> Crustd {
        Layout::new(extra).start().await
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = self.try_runtime().await
                && c.version(VersionRequest::default()).await.is_ok()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "crustd exited with {status} before serving:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "crustd did not answer in 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn try_runtime(&self) -> Result<RuntimeServiceClient<Channel>, tonic::transport::Error> {
        Ok(RuntimeServiceClient::new(connect(&self.socket).await?)
            .max_decoding_message_size(KUBELET_MAX_MESSAGE))
    }

    /// A RuntimeService client on the socket.
    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        self.try_runtime().await.expect("connect to crustd")
    }

    /// An ImageService client on the socket.
    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(connect(&self.socket).await.expect("connect to crustd"))
            .max_decoding_message_size(KUBELET_MAX_MESSAGE)
    }

    /// Pulls `image` (no credentials); the image id PullImage answers.
    #[allow(dead_code)] // not every test binary pulls
    pub async fn pull(&self, image: &str) -> Result<String, tonic::Status> {
        self.images()
            .await
            .pull_image(crust_proto::cri::PullImageRequest {
                image: Some(crust_proto::cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().image_ref)
    }

    /// The root dir.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Kills crustd with SIGKILL, as a crash would, and starts it again on the same
    /// dirs and config.
    pub async fn crash_and_restart(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL crustd");
        child.wait().expect("wait for crustd");
        self.child = Some(spawn_crustd(&self.config, &self.log));
        self.wait_ready().await;
    }

    /// Stops crustd with SIGTERM and starts it again on the same dirs and config.
    pub async fn restart(&mut self) {
        let status = self.terminate();
        assert!(
            status.success(),
            "crustd exited with {status}:\n{}",
            self.log()
        );
        self.child = Some(spawn_crustd(&self.config, &self.log));
        self.wait_ready().await;
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = nix_pid(child.id());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        child.wait().expect("wait for crustd")
    }
}

fn nix_pid(pid: u32) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(pid as i32)
}

impl Drop for Crustd {
    fn drop(&mut self) {
        // SIGKILL: a test's clients still hold connections that nothing polls while
        // this blocks, so SIGTERM would wait out the shutdown grace every time. Tests
        // of a clean stop call `terminate` themselves.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // crustd makes its namespace pin dirs bind mounts (they outlive it on a node);
        // here they go with the temp dir.
        for m in mounts_under(self.dir.path(), "").into_iter().rev() {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        if std::thread::panicking() {
            eprintln!("--- crustd log ---\n{}", self.log());
        }
    }
}

/// Mount points under `dir` whose path contains `what`, in the order they were mounted.
pub fn mounts_under(dir: &Path, what: &str) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_str().unwrap().to_string();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix) && p.contains(what))
        .map(String::from)
        .collect()
}

/// A gRPC channel over the Unix socket `path`.
pub async fn connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_owned();
    Endpoint::try_from("http://[::]:50051")
        .expect("static uri")
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
}

/// The local registry of the test command (`CRUST_TEST_REGISTRY`, e.g.
/// 127.0.0.1:5111). Tests that need it are `#[ignore]`d in a plain `cargo test`;
/// scripts/test runs them with `--include-ignored` and sets the variable.
pub fn registry() -> String {
    match std::env::var("CRUST_TEST_REGISTRY") {
        Ok(r) if !r.is_empty() => r,
        _ => panic!("CRUST_TEST_REGISTRY is unset: run critest-config/registry.sh and set it"),
    }
}

/// Config tables making the local registry a mirror of the upstream registries
/// critest's images come from.
pub fn mirror_config() -> String {
    let reg = registry();
    ["registry.k8s.io", "gcr.io", "k8s.gcr.io"]
        .iter()
        .map(|host| format!("[registry.mirrors.{host:?}]\nendpoints = [\"http://{reg}\"]\n"))
        .collect()
}

/// Runs crustd with `args` to completion (for commands and start-up failures).
pub fn run_crustd(args: &[&str]) -> Output {
    Command::new(crustd_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run crustd")
}
