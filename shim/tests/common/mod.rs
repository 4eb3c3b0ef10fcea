//! A container for the real crust-shim binary: a busybox rootfs, an OCI bundle, a
//! state dir, and a client on the shim's socket. Needs root and Debian's
//! busybox-static (`/bin/busybox`).

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crust_proto::shim::shim_client::ShimClient;
use crust_proto::shim::{ShutdownRequest, StateRequest};
use hyper_util::rt::TokioIo;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// The shim binary under test: `CRUST_SHIM` or the one cargo built.
pub fn shim_bin() -> String {
    std::env::var("CRUST_SHIM").unwrap_or_else(|_| env!("CARGO_BIN_EXE_crust-shim").to_owned())
}

const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "head", "tail", "tr", "printf", "true", "ps", "tty", "yes",
];

/// Fails the test, saying what is missing, unless it runs as root with busybox-static.
pub fn require_prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the shim tests need root (namespaces, cgroups, mounts)"
    );
    assert!(
        Path::new("/bin/busybox").exists(),
        "the shim tests need /bin/busybox: apt-get install busybox-static (scripts/test does)"
    );
}

/// One container's bundle and state dir.
pub struct Fixture {
    /// Container id.
    pub id: String,
    /// Holds the bundle, state dir and log.
    pub dir: TempDir,
    /// Extra command line arguments for the shim.
    pub extra: Vec<String>,
}

impl Fixture {
    /// A bundle running `args` with pid, mount, ipc, uts and net namespaces;
    /// `tweak` may change the spec before it is written.
    pub fn new(name: &str, args: &[&str], tweak: impl FnOnce(&mut Spec)) -> Self {
        let id = format!("{name}-{}", std::process::id());
        let dir = tempfile::Builder::new().prefix("shim").tempdir().unwrap();
        let rootfs = dir.path().join("bundle/rootfs");
        fs::create_dir_all(rootfs.join("bin")).unwrap();
        for d in ["proc", "dev", "sys", "tmp"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for a in APPLETS {
            fs::hard_link(rootfs.join("bin/busybox"), rootfs.join("bin").join(a)).unwrap();
        }
        let mut spec = Spec::default();
        let mut process = spec.process().clone().unwrap();
        process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        spec.set_process(Some(process));
        let mut linux = spec.linux().clone().unwrap();
        linux.set_cgroups_path(Some(PathBuf::from(format!("/crust-test/{id}"))));
        let mut ns = linux.namespaces().clone().unwrap();
        ns.retain(|n| {
            use LinuxNamespaceType::*;
            matches!(n.typ(), Pid | Mount | Ipc | Uts | Network)
        });
        linux.set_namespaces(Some(ns));
        spec.set_linux(Some(linux));
        tweak(&mut spec);
        spec.save(dir.path().join("bundle/config.json")).unwrap();
        Self {
            id,
            dir,
            extra: Vec::new(),
        }
    }

    /// The bundle dir.
    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    /// The state dir.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The CRI log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("c.log")
    }

    /// The shim's socket.
    pub fn socket(&self) -> PathBuf {
        self.state().join(crust_proto::shim::SOCKET)
    }

    /// The shim command line.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(shim_bin());
        cmd.arg("--id").arg(&self.id);
        cmd.arg("--bundle").arg(self.bundle());
        cmd.arg("--state").arg(self.state());
        cmd.arg("--log-path").arg(self.log_path());
        cmd.args(&self.extra);
        cmd
    }

    /// Runs the shim's starting process to its end (the container is then created).
    pub fn spawn(&self) -> Output {
        self.command().output().unwrap()
    }

    /// Runs the shim and expects success.
    pub fn create(&self) {
        let out = self.spawn();
        assert!(
            out.status.success(),
            "shim failed: {}\n{}",
            stderr(&out),
            self.shim_log()
        );
    }

    /// The shim's own log.
    pub fn shim_log(&self) -> String {
        fs::read_to_string(self.state().join("shim.log")).unwrap_or_default()
    }

    /// A client on the shim's socket.
    pub async fn client(&self) -> ShimClient<Channel> {
        connect(self.socket()).await
    }

    /// The records of the CRI log: (stream, tag, content), after checking each
    /// timestamp's shape.
    pub fn log_records(&self) -> Vec<(String, String, String)> {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        text.lines().map(parse_record).collect()
    }

    /// The container's cgroup dir under one v1 controller.
    pub fn cgroup(&self, controller: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join("crust-test")
            .join(&self.id)
    }

    /// Pids in the container's cgroup.
    pub fn cgroup_pids(&self) -> Vec<i32> {
        let text = fs::read_to_string(self.cgroup("pids").join("cgroup.procs")).unwrap_or_default();
        text.lines().filter_map(|l| l.parse().ok()).collect()
    }

    /// The parsed exit file.
    pub fn exit_file(&self) -> Option<serde_json::Value> {
        let data = fs::read(self.state().join(crust_proto::shim::EXIT_FILE)).ok()?;
        Some(serde_json::from_slice(&data).unwrap())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("CRUST_SHIM_PRINT_LOG").is_some() {
            eprintln!("--- shim.log of {}:\n{}", self.id, self.shim_log());
        }
        let socket = self.socket();
        if !socket.exists() {
            return;
        }
        // Tests run on a runtime already: clean up from a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut c = connect(socket).await;
                let _ = c.shutdown(ShutdownRequest { force: true }).await;
            });
        })
        .join();
    }
}

/// A client on a shim socket.
pub async fn connect(path: PathBuf) -> ShimClient<Channel> {
    let channel = Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .unwrap();
    ShimClient::new(channel)
}

/// stderr of a command, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn parse_record(line: &str) -> (String, String, String) {
    let mut parts = line.splitn(4, ' ');
    let ts = parts.next().unwrap();
    // 2016-10-06T00:17:09.669794202Z
    assert_eq!(ts.len(), 30, "timestamp {ts:?}");
    assert!(
        ts.ends_with('Z') && &ts[10..11] == "T" && &ts[19..20] == ".",
        "timestamp {ts:?}"
    );
    let stream = parts.next().unwrap().to_owned();
    let tag = parts.next().unwrap().to_owned();
    let content = parts.next().unwrap_or("").to_owned();
    (stream, tag, content)
}

/// Polls `f` until it is true or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// The shim's view of the container's state.
pub async fn state(c: &mut ShimClient<Channel>) -> crust_proto::shim::StateResponse {
    c.state(StateRequest {}).await.unwrap().into_inner()
}

/// A field of /proc/<pid>/status (or smaps_rollup), e.g. "VmRSS" -> "1234 kB".
pub fn proc_field(pid: u32, file: &str, name: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix(':')
            .map(|v| v.trim().to_owned())
    })
}

/// The shim's pid: the parent of the container's init.
pub fn shim_pid(init: u32) -> u32 {
    proc_field(init, "status", "PPid").unwrap().parse().unwrap()
}
