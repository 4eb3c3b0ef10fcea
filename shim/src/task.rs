//! The one container a shim runs, and its state machine:
//!
//! ```text
//!   launch ──> Created ──start──> Running ──init reaped, output drained,──> Stopped
//!                 │                            exit file written              ^
//!                 └──────────────── init killed before start ─────────────────┘
//! ```
//!
//! The state comes from waitpid, never from libcontainer's state file. `Stopped` is
//! entered only once the exit file is on disk, so a caller that sees it can rely on
//! the file.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use libcontainer::container::Container;
use nix::unistd::Pid;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;

use crate::container::{self, CreateOptions, HostLimits, InitStdio};
use crate::exit::{self, ExitInfo, OomCounter};
use crate::io::{self, Chunk, ConsoleSocket, FdReader, FdWriter};
use crate::log::{LogFile, Stream};
use crate::reaper::Reaper;
use crate::systemd;

/// Chunks of output an attach may fall behind by before it misses some.
const ATTACH_BACKLOG: usize = 256;

/// How long the exit waits for the container's output to reach end of file: processes
/// outside the init's pid namespace may keep the pipes open.
const IO_DRAIN: Duration = Duration::from_secs(2);

/// Errors of task operations; server.rs maps them to gRPC codes.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The operation is not valid in the container's current state.
    #[error("container {id}: {op}: container is {state}")]
    WrongState {
        /// Container id.
        id: String,
        /// The operation.
        op: &'static str,
        /// The state it is in.
        state: &'static str,
    },
    /// The request is malformed.
    #[error("container {id}: {op}: {reason}")]
    Invalid {
        /// Container id.
        id: String,
        /// The operation.
        op: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A container operation failed.
    #[error("container {id}: {op}: {source}")]
    Container {
        /// Container id.
        id: String,
        /// The operation.
        op: &'static str,
        /// What went wrong.
        source: Box<container::Error>,
    },
    /// A system call failed.
    #[error("container {id}: {op}: {source}")]
    Io {
        /// Container id.
        id: String,
        /// The operation.
        op: &'static str,
        /// What went wrong.
        source: std::io::Error,
    },
}

impl TaskError {
    /// The error without the container's id, for a caller that names the container
    /// itself; the operation is left out too when it is `call`, the caller's own.
    pub fn detail(&self, call: &str) -> String {
        let (op, cause) = match self {
            TaskError::WrongState { op, state, .. } => (*op, format!("container is {state}")),
            TaskError::Invalid { op, reason, .. } => (*op, reason.clone()),
            TaskError::Container { op, source, .. } => (*op, source.to_string()),
            TaskError::Io { op, source, .. } => (*op, source.to_string()),
        };
        if op == call {
            cause
        } else {
            format!("{op}: {cause}")
        }
    }
}

/// The result of task operations.
pub type Result<T> = std::result::Result<T, TaskError>;

/// Where the init process is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Created, waiting for start.
    Created,
    /// Started (or its exit is being recorded).
    Running,
    /// Exited; the exit file is written.
    Stopped,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Created => "created",
            Phase::Running => "running",
            Phase::Stopped => "stopped",
        }
    }
}

/// A snapshot of the init's state.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    /// Where the init is.
    pub phase: Phase,
    /// Its pid; None once reaped.
    pub pid: Option<Pid>,
    /// Unix nanoseconds of start; 0 before.
    pub started_at: i64,
    /// The exit, once stopped.
    pub exit: Option<ExitInfo>,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    pid: Pid,
    reaped: bool,
    started_at: i64,
    exit: Option<ExitInfo>,
}

/// What [`Task::launch`] needs, from the command line.
#[derive(Debug)]
pub struct TaskConfig {
    /// Container id.
    pub id: String,
    /// Bundle dir with config.json.
    pub bundle: PathBuf,
    /// The container's state dir.
    pub state_dir: PathBuf,
    /// CRI log file; empty to discard output.
    pub log_path: PathBuf,
    /// Keep stdin open.
    pub stdin: bool,
    /// Give the container a pty.
    pub tty: bool,
    /// cgroups path overriding the spec's.
    pub cgroups_path: Option<PathBuf>,
    /// Use the systemd cgroup driver.
    pub systemd: bool,
    /// Restore the container from the CRIU images in this dir at start, instead of
    /// starting its process.
    pub restore: Option<PathBuf>,
}

/// What a task in state created is made of.
struct Parts<'a> {
    id: &'a str,
    state_dir: &'a Path,
    root: PathBuf,
    container: Container,
    pid: Pid,
    log: LogFile,
    oom: OomCounter,
    scope: Option<PathBuf>,
    reaper: Arc<Reaper>,
    prepared: container::Prepared,
}

/// A container to be restored at start: CRIU's images and the stdio its process gets.
#[derive(Debug)]
struct RestorePlan {
    images: PathBuf,
    stdio: io::ChildStdio,
    copiers: Vec<JoinHandle<()>>,
    resources: Option<oci_spec::runtime::LinuxResources>,
}

/// The container and everything the shim holds for it.
#[derive(Debug)]
pub struct Task {
    id: String,
    state_dir: PathBuf,
    root: PathBuf,
    container: Mutex<Container>,
    inner: Mutex<Inner>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
    log: Arc<Mutex<LogFile>>,
    pty: Option<OwnedFd>,
    /// The init's stdin (pipe or pty master), kept open so the container never sees end
    /// of file on stdin; attaches write here. Taken when a stdin_once attach ends.
    stdin: tokio::sync::Mutex<Option<Arc<FdWriter>>>,
    /// The init's output for attaches; None once the output is closed.
    output: Mutex<Option<broadcast::Sender<Chunk>>>,
    oom: OomCounter,
    /// The systemd scope's cgroup dir (systemd driver), which systemd removes once the
    /// last process in it is gone.
    scope: Option<PathBuf>,
    reaper: Arc<Reaper>,
    shutdown: watch::Sender<bool>,
    /// The init's process, which exec processes start from.
    process: Option<oci_spec::runtime::Process>,
    /// The container's seccomp filter, which exec processes get too.
    seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    /// Set until the start of a container to be restored from a checkpoint.
    restore: Mutex<Option<RestorePlan>>,
}

/// The shim's side of the init's stdio, before the container exists.
enum ShimSide {
    Pipes(io::ShimStdio),
    Console(ConsoleSocket),
}

/// Pipes, or a console socket for a tty.
fn init_stdio(cfg: &TaskConfig) -> std::io::Result<(InitStdio, ShimSide)> {
    if cfg.tty {
        let sock = ConsoleSocket::bind(&cfg.state_dir.join("console.sock"))?;
        Ok((
            InitStdio::Console(sock.path().to_path_buf()),
            ShimSide::Console(sock),
        ))
    } else {
        let (child, shim) = io::pipes(cfg.stdin)?;
        Ok((InitStdio::Pipes(child), ShimSide::Pipes(shim)))
    }
}

fn io_err(id: &str, op: &'static str) -> impl FnOnce(std::io::Error) -> TaskError {
    let id = id.to_owned();
    move |source| TaskError::Io { id, op, source }
}

fn container_err(id: &str, op: &'static str) -> impl FnOnce(container::Error) -> TaskError {
    let id = id.to_owned();
    move |source| TaskError::Container {
        id,
        op,
        source: Box::new(source),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Task {
    /// Creates the container and starts watching it: copies its output into the log,
    /// waits for its init and records the exit.
    pub fn launch(cfg: &TaskConfig, reaper: Arc<Reaper>) -> Result<Arc<Self>> {
        if cfg.restore.is_some() {
            return Self::launch_restored(cfg, reaper);
        }
        let id = cfg.id.as_str();
        let root = cfg.state_dir.join("libcontainer");
        std::fs::create_dir_all(&root).map_err(io_err(id, "create libcontainer root"))?;
        let log = LogFile::open(&cfg.log_path).map_err(io_err(id, "open log file"))?;
        let host = HostLimits::current();
        let prepared = container::prepare_spec(&cfg.bundle, id, cfg.cgroups_path.as_deref(), &host)
            .map_err(container_err(id, "prepare spec"))?;
        let (stdio, shim_side) = init_stdio(cfg).map_err(io_err(id, "set up stdio"))?;
        let opts = CreateOptions {
            id,
            bundle: &cfg.bundle,
            root: &root,
            stdio,
            systemd: cfg.systemd,
        };
        let (mut container, pid) = container::create(opts).map_err(container_err(id, "create"))?;
        let (oom, scope) = if cfg.systemd {
            match systemd::finish_scope(pid, prepared.resources.as_ref()) {
                Ok(dir) => (OomCounter::watched(&dir), Some(dir)),
                Err(err) => {
                    if let Err(e) = container::delete(&mut container) {
                        tracing::error!(id, %e, "delete after failed scope setup");
                    }
                    return Err(io_err(id, "set up the container's systemd scope")(err));
                }
            }
        } else {
            let oom = OomCounter::new(Path::new(systemd::ROOT), &prepared.cgroups);
            (oom, None)
        };
        // No await since create: the reaper can't have reaped the init yet.
        let init_exit = reaper.register(pid);
        let parts = Parts {
            id,
            state_dir: &cfg.state_dir,
            root,
            container,
            pid,
            log,
            oom,
            scope,
            reaper,
            prepared,
        };
        let mut task = Task::created(parts);
        let copiers = match shim_side {
            ShimSide::Pipes(shim) => task.attach_pipes(shim),
            ShimSide::Console(sock) => task.attach_pty(sock, cfg.stdin),
        };
        let copiers = match copiers {
            Ok(c) => c,
            Err(err) => {
                if let Err(e) = container::delete(&mut lock(&task.container)) {
                    tracing::error!(id, %e, "delete after failed stdio setup");
                }
                return Err(io_err(id, "attach stdio")(err));
            }
        };
        let task = Arc::new(task);
        tokio::spawn(Arc::clone(&task).watch_init(init_exit, copiers));
        Ok(task)
    }

    /// A task in state created, from its parts.
    fn created(p: Parts<'_>) -> Task {
        Task {
            id: p.id.to_owned(),
            state_dir: p.state_dir.to_owned(),
            root: p.root,
            container: Mutex::new(p.container),
            inner: Mutex::new(Inner {
                phase: Phase::Created,
                pid: p.pid,
                reaped: false,
                started_at: 0,
                exit: None,
            }),
            exit_tx: watch::Sender::new(None),
            log: Arc::new(Mutex::new(p.log)),
            pty: None,
            stdin: tokio::sync::Mutex::new(None),
            output: Mutex::new(Some(broadcast::Sender::new(ATTACH_BACKLOG))),
            oom: p.oom,
            scope: p.scope,
            reaper: p.reaper,
            shutdown: watch::Sender::new(false),
            process: p.prepared.process,
            seccomp: p.prepared.seccomp,
            restore: Mutex::new(None),
        }
    }

    /// A container to be restored from a checkpoint at start: its state and cgroup
    /// config as libcontainer keeps them, its output pipes copied to the log, no
    /// process until the start.
    fn launch_restored(cfg: &TaskConfig, reaper: Arc<Reaper>) -> Result<Arc<Self>> {
        let id = cfg.id.as_str();
        let images = cfg.restore.clone().unwrap_or_default();
        if cfg.tty || cfg.systemd {
            return Err(TaskError::Invalid {
                id: id.to_owned(),
                op: "restore",
                reason: "crust restores containers without a terminal, under the cgroupfs \
                         driver only"
                    .into(),
            });
        }
        let root = cfg.state_dir.join("libcontainer");
        let log = LogFile::open(&cfg.log_path).map_err(io_err(id, "open log file"))?;
        let host = HostLimits::current();
        let prepared = container::prepare_spec(&cfg.bundle, id, cfg.cgroups_path.as_deref(), &host)
            .map_err(container_err(id, "prepare spec"))?;
        let container = container::prepare_restore(id, &cfg.bundle, &root)
            .map_err(container_err(id, "prepare restore"))?;
        let (child, shim) = io::pipes(cfg.stdin).map_err(io_err(id, "set up stdio"))?;
        let oom = OomCounter::new(Path::new(systemd::ROOT), &prepared.cgroups);
        let resources = prepared.resources.clone();
        let parts = Parts {
            id,
            state_dir: &cfg.state_dir,
            root,
            container,
            pid: Pid::from_raw(0),
            log,
            oom,
            scope: None,
            reaper,
            prepared,
        };
        let mut task = Task::created(parts);
        let copiers = task
            .attach_pipes(shim)
            .map_err(io_err(id, "attach stdio"))?;
        *task
            .restore
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = Some(RestorePlan {
            images,
            stdio: child,
            copiers,
            resources,
        });
        Ok(Arc::new(task))
    }

    /// Restores the container from its checkpoint: see `crate::restore`.
    fn start_restored(self: &Arc<Self>, plan: RestorePlan) -> Result<Pid> {
        let id = self.id.clone();
        let (pid, init_exit) = container::restore(container::RestoreOptions {
            container: &mut lock(&self.container),
            images: &plan.images,
            stdio: &plan.stdio,
            resources: plan.resources.as_ref(),
            reaper: &self.reaper,
        })
        .map_err(container_err(&id, "restore"))?;
        drop(plan.stdio);
        tokio::spawn(Arc::clone(self).watch_init(init_exit, plan.copiers));
        Ok(pid)
    }

    fn tap(&self) -> Option<broadcast::Sender<Chunk>> {
        lock(&self.output).clone()
    }

    fn attach_pipes(&mut self, shim: io::ShimStdio) -> std::io::Result<Vec<JoinHandle<()>>> {
        if let Some(fd) = shim.stdin {
            *self.stdin.get_mut() = Some(Arc::new(FdWriter::new(fd)?));
        }
        let out = FdReader::new(shim.stdout)?;
        let err = FdReader::new(shim.stderr)?;
        let log = &self.log;
        Ok(vec![
            tokio::spawn(io::copy_to_log(
                out,
                Stream::Stdout,
                Arc::clone(log),
                self.tap(),
            )),
            tokio::spawn(io::copy_to_log(
                err,
                Stream::Stderr,
                Arc::clone(log),
                self.tap(),
            )),
        ])
    }

    fn attach_pty(
        &mut self,
        sock: ConsoleSocket,
        stdin: bool,
    ) -> std::io::Result<Vec<JoinHandle<()>>> {
        let master = sock.receive_master()?;
        self.pty = Some(master.try_clone()?);
        if stdin {
            *self.stdin.get_mut() = Some(Arc::new(FdWriter::new(master.try_clone()?)?));
        }
        let reader = FdReader::new(master)?;
        Ok(vec![tokio::spawn(io::copy_to_log(
            reader,
            Stream::Stdout,
            Arc::clone(&self.log),
            self.tap(),
        ))])
    }

    /// Subscribes to the init's output; None once it is closed.
    pub fn subscribe_output(&self) -> Option<broadcast::Receiver<Chunk>> {
        lock(&self.output)
            .as_ref()
            .map(broadcast::Sender::subscribe)
    }

    /// The init's stdin, if it has one that is still open.
    pub async fn stdin(&self) -> Option<Arc<FdWriter>> {
        self.stdin.lock().await.clone()
    }

    /// Closes the init's stdin (for stdin_once): it sees end of file once no attach
    /// holds it any more.
    pub async fn close_stdin(&self) {
        self.stdin.lock().await.take();
    }

    /// Whether the container has a pty.
    pub fn has_tty(&self) -> bool {
        self.pty.is_some()
    }

    /// Records the init's exit: waits for the reaper, then for the output, then
    /// writes the exit file and wakes the waiters.
    async fn watch_init(
        self: Arc<Self>,
        exit: oneshot::Receiver<i32>,
        copiers: Vec<JoinHandle<()>>,
    ) {
        let code = exit.await.unwrap_or(255);
        let finished_at = exit::now_nanos();
        let started_at = {
            let mut inner = lock(&self.inner);
            inner.reaped = true;
            inner.started_at
        };
        tracing::info!(id = %self.id, code, "init exited");
        // Read now, before systemd can remove a scope's cgroup.
        let oom_killed = self.oom.oom_killed(code);
        let drain = async {
            for c in copiers {
                let _ = c.await;
            }
        };
        if tokio::time::timeout(IO_DRAIN, drain).await.is_err() {
            tracing::warn!(id = %self.id, "container output still open after exit");
        }
        // Attaches end once the copiers, which hold the other senders, have ended.
        lock(&self.output).take();
        let info = ExitInfo {
            exit_code: code,
            started_at,
            finished_at,
            oom_killed,
        };
        if let Err(err) = exit::write_exit_file(&self.state_dir, &info) {
            tracing::error!(id = %self.id, %err, "write exit file");
        }
        {
            let mut inner = lock(&self.inner);
            inner.phase = Phase::Stopped;
            inner.exit = Some(info);
        }
        self.exit_tx.send_replace(Some(info));
    }

    /// Container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// libcontainer's root dir.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The container's state dir.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The init's process, which exec processes start from.
    pub fn process(&self) -> Option<&oci_spec::runtime::Process> {
        self.process.as_ref()
    }

    /// The container's seccomp filter, which exec processes get too.
    pub fn seccomp(&self) -> Option<&oci_spec::runtime::LinuxSeccomp> {
        self.seccomp.as_ref()
    }

    /// The reaper, for exec processes.
    pub fn reaper(&self) -> &Reaper {
        &self.reaper
    }

    /// The init's current state.
    pub fn snapshot(&self) -> Snapshot {
        let inner = lock(&self.inner);
        Snapshot {
            phase: inner.phase,
            pid: (!inner.reaped).then_some(inner.pid),
            started_at: inner.started_at,
            exit: inner.exit,
        }
    }

    fn wrong_state(&self, op: &'static str, phase: Phase) -> TaskError {
        TaskError::WrongState {
            id: self.id.clone(),
            op,
            state: phase.as_str(),
        }
    }

    /// Fails unless the init is running (and not yet reaped).
    pub fn ensure_running(&self, op: &'static str) -> Result<()> {
        let inner = lock(&self.inner);
        match inner.phase {
            Phase::Running if !inner.reaped => Ok(()),
            Phase::Running => Err(self.wrong_state(op, Phase::Stopped)),
            p => Err(self.wrong_state(op, p)),
        }
    }

    /// Lets the init exec the container's command; returns its pid.
    pub fn start(self: &Arc<Self>) -> Result<Pid> {
        let mut inner = lock(&self.inner);
        if inner.phase != Phase::Created || inner.reaped {
            let phase = if inner.reaped {
                Phase::Stopped
            } else {
                inner.phase
            };
            return Err(self.wrong_state("start", phase));
        }
        let plan = lock(&self.restore).take();
        match plan {
            Some(plan) => inner.pid = self.start_restored(plan)?,
            None => container::start(&mut lock(&self.container))
                .map_err(container_err(&self.id, "start"))?,
        }
        inner.phase = Phase::Running;
        inner.started_at = exit::now_nanos();
        tracing::info!(id = %self.id, pid = %inner.pid, "started");
        Ok(inner.pid)
    }

    /// Checkpoints the running container with CRIU into `images` (its log too),
    /// leaving it running.
    pub fn checkpoint(&self, images: PathBuf) -> Result<()> {
        let (phase, reaped) = {
            let inner = lock(&self.inner);
            (inner.phase, inner.reaped)
        };
        if phase != Phase::Running || reaped {
            return Err(TaskError::WrongState {
                id: self.id.clone(),
                op: "checkpoint",
                state: if phase == Phase::Created {
                    "created"
                } else {
                    "stopped"
                },
            });
        }
        let mut c = lock(&self.container);
        container::checkpoint(&mut c, images).map_err(container_err(&self.id, "checkpoint"))
    }

    /// Sends `signal` to the init, or with `all` to every process of the container.
    /// Signalling an exited container succeeds.
    pub fn kill(&self, signal: i32, all: bool) -> Result<()> {
        let (pid, reaped) = {
            let inner = lock(&self.inner);
            (inner.pid, inner.reaped)
        };
        if all {
            // A scope systemd removed (before or while this ran) holds no process left
            // to signal.
            let gone = || self.scope.as_ref().is_some_and(|d| !d.exists());
            if gone() {
                return Ok(());
            }
            let mut c = lock(&self.container);
            return match container::kill_all(&mut c, signal) {
                Err(_) if gone() => Ok(()),
                r => r.map_err(container_err(&self.id, "kill all")),
            };
        }
        // A container to be restored has no process before its start.
        if reaped || pid.as_raw() <= 0 {
            return Ok(());
        }
        container::signal_pid(pid, signal).map_err(|e| TaskError::Invalid {
            id: self.id.clone(),
            op: "kill",
            reason: format!("signal {signal}: {e}"),
        })
    }

    /// Waits until the exit is recorded.
    pub async fn wait(&self) -> ExitInfo {
        let mut rx = self.exit_tx.subscribe();
        let res = rx.wait_for(Option::is_some).await;
        res.ok().and_then(|v| *v).unwrap_or_default()
    }

    /// Reopens the log file after rotation.
    pub fn reopen_log(&self) -> Result<()> {
        lock(&self.log)
            .reopen()
            .map_err(io_err(&self.id, "reopen log"))
    }

    /// Resizes the container's pty.
    pub fn resize_pty(&self, width: u16, height: u16) -> Result<()> {
        let Some(pty) = &self.pty else {
            return Err(TaskError::Invalid {
                id: self.id.clone(),
                op: "resize pty",
                reason: "container has no tty".into(),
            });
        };
        io::resize(pty, width, height).map_err(io_err(&self.id, "resize pty"))
    }

    /// Deletes the container and asks the shim to exit. Refused while the init runs
    /// unless `force`, which kills everything first.
    pub async fn shutdown(&self, force: bool) -> Result<()> {
        // A container never restored has no process: nothing to wait for.
        if lock(&self.restore).take().is_some() {
            let mut inner = lock(&self.inner);
            inner.phase = Phase::Stopped;
            inner.reaped = true;
        }
        if lock(&self.inner).phase != Phase::Stopped {
            if !force {
                return Err(self.wrong_state("shutdown", lock(&self.inner).phase));
            }
            if let Err(err) = self.kill(nix::libc::SIGKILL, true) {
                tracing::warn!(%err, "kill before shutdown");
                self.kill(nix::libc::SIGKILL, false)?;
            }
            self.wait().await;
        }
        container::delete(&mut lock(&self.container)).map_err(container_err(&self.id, "delete"))?;
        tracing::info!(id = %self.id, "deleted");
        self.shutdown.send_replace(true);
        Ok(())
    }

    /// Resolves once a shutdown has been done.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }
}
