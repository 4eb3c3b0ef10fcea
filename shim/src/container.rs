//! The container through libcontainer: adjusting the bundle's spec to what this host
//! allows, create, start, kill, exec and delete.
//!
//! libcontainer clones processes that run Rust code without exec: every call here must
//! happen on the shim's single thread (CRATES-NOTES.md). It also writes the spec's
//! `oomScoreAdj` into the caller itself, and its `kill()` records "stopped" even when
//! the signal was ignored: the real state comes from waitpid, in the task.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::error::LibcontainerError;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::{self, Executor, ExecutorError, ExecutorValidationError};
use nix::unistd::Pid;
use oci_spec::runtime::{
    LinuxResources, LinuxSeccomp, LinuxSeccompArgBuilder, LinuxSeccompOperator, PosixRlimit,
    PosixRlimitBuilder, PosixRlimitType, Process, Spec,
};

use crate::io::ChildStdio;

/// Errors of libcontainer calls and spec handling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle's config.json could not be read or parsed.
    #[error("load spec {path}: {source}")]
    LoadSpec {
        /// Path of the spec.
        path: PathBuf,
        /// What went wrong.
        source: oci_spec::OciSpecError,
    },
    /// The adjusted spec could not be written back.
    #[error("write spec {path}: {source}")]
    SaveSpec {
        /// Path of the spec.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The spec's root filesystem does not exist.
    #[error("rootfs {0} does not exist")]
    NoRootfs(PathBuf),
    /// A libcontainer call failed.
    #[error(transparent)]
    Libcontainer(#[from] LibcontainerError),
    /// libcontainer created the container but reported no init pid.
    #[error("no init pid after create")]
    NoPid,
    /// Checkpointing the container failed.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Restoring the container from its checkpoint failed.
    #[error("restore: {0}")]
    Restore(String),
}

/// The result of container operations.
pub type Result<T> = std::result::Result<T, Error>;

/// The limits of this host that a spec must stay within.
pub struct HostLimits {
    /// The lowest oom_score_adj the shim may set: -1000 with CAP_SYS_RESOURCE, else
    /// its own (lowering it needs that capability).
    pub oom_score_adj: i32,
    /// The shim's hard limit of an rlimit: nothing higher can be set.
    pub rlimit_hard: fn(PosixRlimitType) -> Option<u64>,
}

impl HostLimits {
    /// The limits of the current process.
    pub fn current() -> Self {
        let adj = fs::read_to_string("/proc/self/oom_score_adj").ok();
        let own = adj.and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let effective = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        const CAP_SYS_RESOURCE: u32 = 24;
        let oom_score_adj = if effective & (1 << CAP_SYS_RESOURCE) != 0 {
            -1000
        } else {
            own
        };
        Self {
            oom_score_adj,
            rlimit_hard: current_hard_limit,
        }
    }
}

fn current_hard_limit(typ: PosixRlimitType) -> Option<u64> {
    let mut rl = nix::libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // PosixRlimitType's discriminants are the kernel's RLIMIT_* numbers (libcontainer
    // relies on it too).
    // SAFETY: getrlimit writes one rlimit into the valid pointer given.
    let rc = unsafe { nix::libc::getrlimit(typ as _, &mut rl) };
    (rc == 0).then_some(rl.rlim_max)
}

/// Prepares `<bundle>/config.json` for this host: sets the cgroups path (`cgroups_path`
/// if given, else the spec's, else `/crust/<id>`), clamps oomScoreAdj and rlimits to
/// what the shim may set. Writes the spec back (atomically) only if it changed.
/// Returns the cgroups path.
pub fn prepare_spec(
    bundle: &Path,
    id: &str,
    cgroups_path: Option<&Path>,
    host: &HostLimits,
) -> Result<Prepared> {
    let path = bundle.join("config.json");
    let mut spec = Spec::load(&path).map_err(|source| Error::LoadSpec {
        path: path.clone(),
        source,
    })?;
    let rootfs = spec.root().as_ref().map(|r| bundle.join(r.path()));
    if let Some(rootfs) = rootfs.filter(|r| !r.is_dir()) {
        return Err(Error::NoRootfs(rootfs));
    }
    let changed = adjust_spec(&mut spec, id, cgroups_path, host);
    if changed {
        save_spec(&spec, &path).map_err(|source| Error::SaveSpec { path, source })?;
    }
    let linux = spec.linux().as_ref();
    Ok(Prepared {
        cgroups: linux
            .and_then(|l| l.cgroups_path().clone())
            .unwrap_or_default(),
        process: spec.process().clone(),
        seccomp: linux.and_then(|l| l.seccomp().clone()),
        resources: linux.and_then(|l| l.resources().clone()),
    })
}

/// What [`prepare_spec`] found in the adjusted spec.
#[derive(Debug)]
pub struct Prepared {
    /// The container's cgroups path.
    pub cgroups: PathBuf,
    /// The init's process: exec processes start from it (user, cwd, capabilities,
    /// rlimits, no_new_privileges), as runc's and containerd's do.
    pub process: Option<Process>,
    /// The container's seccomp filter, as libcontainer reads it: exec processes get it
    /// too.
    pub seccomp: Option<LinuxSeccomp>,
    /// The container's resources, which the systemd driver writes to its scope's
    /// cgroup files (`crate::systemd::finish_scope`).
    pub resources: Option<LinuxResources>,
}

/// The annotation that marks a spec whose `SCMP_CMP_MASKED_EQ` operands were put in
/// libcontainer's order, so that they are swapped once only.
const MASKED_EQ_SWAPPED: &str = "io.crust.seccomp.masked-eq-swapped";

/// Puts the operands of `SCMP_CMP_MASKED_EQ` in libcontainer 0.7's order. Profiles
/// (and runc) read `value` as the mask and `valueTwo` as the value compared to;
/// libcontainer reads them the other way round, which would turn the default profile's
/// `clone` rule into one that never matches. True if anything changed.
fn swap_masked_eq_operands(spec: &mut Spec) -> bool {
    let swapped = spec
        .annotations()
        .as_ref()
        .is_some_and(|a| a.contains_key(MASKED_EQ_SWAPPED));
    let Some(mut linux) = spec.linux().clone() else {
        return false;
    };
    let Some(mut seccomp) = linux.seccomp().clone() else {
        return false;
    };
    if swapped {
        return false;
    }
    let mut syscalls = seccomp.syscalls().clone().unwrap_or_default();
    let mut changed = false;
    for rule in &mut syscalls {
        let Some(mut args) = rule.args().clone() else {
            continue;
        };
        for arg in args
            .iter_mut()
            .filter(|a| a.op() == LinuxSeccompOperator::ScmpCmpMaskedEq)
        {
            let swapped = LinuxSeccompArgBuilder::default()
                .index(arg.index())
                .op(arg.op())
                .value(arg.value_two().unwrap_or(0))
                .value_two(arg.value())
                .build();
            if let Ok(swapped) = swapped {
                *arg = swapped;
                changed = true;
            }
        }
        rule.set_args(Some(args));
    }
    if !changed {
        return false;
    }
    seccomp.set_syscalls(Some(syscalls));
    linux.set_seccomp(Some(seccomp));
    spec.set_linux(Some(linux));
    let mut annotations = spec.annotations().clone().unwrap_or_default();
    annotations.insert(MASKED_EQ_SWAPPED.to_owned(), "true".to_owned());
    spec.set_annotations(Some(annotations));
    true
}

/// Applies the adjustments of [`prepare_spec`]; true if anything changed.
fn adjust_spec(spec: &mut Spec, id: &str, cgroups: Option<&Path>, host: &HostLimits) -> bool {
    let mut changed = swap_masked_eq_operands(spec);
    let mut linux = spec.linux().clone().unwrap_or_default();
    let want = match (cgroups, linux.cgroups_path()) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(p)) => p.clone(),
        (None, None) => PathBuf::from(format!("/crust/{id}")),
    };
    if linux.cgroups_path().as_ref() != Some(&want) {
        linux.set_cgroups_path(Some(want));
        spec.set_linux(Some(linux));
        changed = true;
    }
    let Some(process) = spec.process_mut().as_mut() else {
        return changed;
    };
    if let Some(adj) = process.oom_score_adj()
        && adj < host.oom_score_adj
    {
        tracing::info!(asked = adj, set = host.oom_score_adj, "clamp oom_score_adj");
        process.set_oom_score_adj(Some(host.oom_score_adj));
        changed = true;
    }
    if let Some(rlimits) = process.rlimits().clone() {
        let clamped: Vec<PosixRlimit> = rlimits.iter().map(|r| clamp_rlimit(*r, host)).collect();
        if clamped != rlimits {
            process.set_rlimits(Some(clamped));
            changed = true;
        }
    }
    changed
}

fn clamp_rlimit(r: PosixRlimit, host: &HostLimits) -> PosixRlimit {
    match (host.rlimit_hard)(r.typ()) {
        Some(max) if r.hard() > max => {
            tracing::info!(typ = %r.typ(), asked = r.hard(), set = max, "clamp rlimit");
            PosixRlimitBuilder::default()
                .typ(r.typ())
                .hard(max)
                .soft(r.soft().min(max))
                .build()
                .unwrap_or(r)
        }
        _ => r,
    }
}

fn save_spec(spec: &Spec, path: &Path) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(spec)?)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// libcontainer's default executor, after resetting the standard signals to their
/// default action: an ignored signal stays ignored across exec, and Rust programs
/// ignore SIGPIPE, so without this every container process would start with SIGPIPE
/// ignored (runc's start with none).
#[derive(Clone)]
struct DefaultSignals;

impl Executor for DefaultSignals {
    fn exec(&self, spec: &Spec) -> std::result::Result<(), ExecutorError> {
        for sig in 1..32 {
            if sig != nix::libc::SIGKILL && sig != nix::libc::SIGSTOP {
                // SAFETY: SIG_DFL installs no handler; this process is about to exec.
                unsafe { nix::libc::signal(sig, nix::libc::SIG_DFL) };
            }
        }
        workload::default::get_executor().exec(spec)
    }

    fn validate(&self, spec: &Spec) -> std::result::Result<(), ExecutorValidationError> {
        workload::default::get_executor().validate(spec)
    }
}

/// Gives the process's terminal the spec's `process.consoleSize`, as runc does when it
/// opens the pty. libcontainer 0.7 opens it without a size and sends the master to the
/// console socket while the process goes on towards its exec, so a size set from the
/// master may come after the program has read its size; here it is set from the
/// process itself (its stdin is the pty), before the program is exec'd. Best effort:
/// a failure leaves the size to the first resize.
fn apply_console_size(spec: &Spec) {
    let Some(process) = spec.process() else {
        return;
    };
    let Some(size) = process
        .console_size()
        .filter(|_| process.terminal() == Some(true))
    else {
        return;
    };
    let (Ok(width), Ok(height)) = (u16::try_from(size.width()), u16::try_from(size.height()))
    else {
        return;
    };
    if width > 0 && height > 0 {
        let _ = crate::io::resize(std::io::stdin(), width, height);
    }
}

/// [`DefaultSignals`], after giving the terminal its size ([`apply_console_size`]) and
/// loading the container's seccomp filter: libcontainer 0.7
/// gives exec processes none, where runc gives them the container's. It runs after
/// the capabilities are dropped: when the process lacks both no_new_privs and
/// CAP_SYS_ADMIN the kernel refuses the filter, and then no_new_privs is set first
/// (a confined container's exec processes can't gain privileges through setuid
/// files; a process left unconfined would be worse).
#[derive(Clone)]
struct ExecSeccomp(Option<LinuxSeccomp>);

impl Executor for ExecSeccomp {
    fn exec(&self, spec: &Spec) -> std::result::Result<(), ExecutorError> {
        apply_console_size(spec);
        if let Some(seccomp) = &self.0 {
            if libcontainer::seccomp::is_notify(seccomp) {
                return Err(ExecutorError::Other(
                    "seccomp notify profiles are not supported for exec".into(),
                ));
            }
            if let Err(first) = libcontainer::seccomp::initialize_seccomp(seccomp) {
                // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes plain integers.
                let rc = unsafe { nix::libc::prctl(nix::libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                if rc != 0 {
                    return Err(ExecutorError::Other(format!(
                        "load seccomp filter: {first}"
                    )));
                }
                libcontainer::seccomp::initialize_seccomp(seccomp)
                    .map_err(|e| ExecutorError::Other(format!("load seccomp filter: {e}")))?;
            }
        }
        DefaultSignals.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> std::result::Result<(), ExecutorValidationError> {
        DefaultSignals.validate(spec)
    }
}

/// How the container's init gets its stdio.
#[derive(Debug)]
pub enum InitStdio {
    /// Pipes (or /dev/null) as fds.
    Pipes(ChildStdio),
    /// A pty, whose master the init sends to this console socket.
    Console(PathBuf),
}

/// What [`create`] needs.
#[derive(Debug)]
pub struct CreateOptions<'a> {
    /// Container id.
    pub id: &'a str,
    /// Bundle dir holding config.json.
    pub bundle: &'a Path,
    /// libcontainer's root dir (its state of the container lives below).
    pub root: &'a Path,
    /// The init's stdio.
    pub stdio: InitStdio,
    /// Use the systemd cgroup driver.
    pub systemd: bool,
}

/// Creates the container: its init process waits for [`start`]. Returns libcontainer's
/// handle and the init's pid.
pub fn create(opts: CreateOptions<'_>) -> Result<(Container, Pid)> {
    let mut builder = ContainerBuilder::new(opts.id.to_owned(), SyscallType::default())
        .with_executor(DefaultSignals)
        .with_root_path(opts.root)?;
    builder = match opts.stdio {
        InitStdio::Pipes(stdio) => builder
            .with_stdin(stdio.stdin)
            .with_stdout(stdio.stdout)
            .with_stderr(stdio.stderr),
        InitStdio::Console(path) => builder.with_console_socket(Some(path)),
    };
    let container = builder
        .validate_id()?
        .as_init(opts.bundle)
        .with_systemd(opts.systemd)
        .with_detach(true)
        .build()?;
    let pid = container.pid().ok_or(Error::NoPid)?;
    Ok((container, pid))
}

/// Lets the init process exec the container's command.
pub fn start(container: &mut Container) -> Result<()> {
    Ok(container.start()?)
}

/// Sends `signal` to every process in the container's cgroup (frozen meanwhile).
pub fn kill_all(container: &mut Container, signal: i32) -> Result<()> {
    let signal = Signal::try_from(signal)
        .map_err(|_| LibcontainerError::InvalidInput(format!("invalid signal {signal}")))?;
    Ok(container.kill(signal, true)?)
}

/// Checkpoints the running container with CRIU into `images`, leaving it running: its
/// bind mounts and cgroup mounts are external (the restore mounts them again), its
/// network and PID namespaces the pod's (external too), established TCP connections
/// and file locks kept, as CRI-O asks of its OCI runtime.
pub fn checkpoint(container: &mut Container, images: PathBuf) -> Result<()> {
    let log = images.join(CHECKPOINT_LOG);
    let opts = libcontainer::container::CheckpointOptions {
        ext_unix_sk: true,
        file_locks: true,
        image_path: images,
        leave_running: true,
        shell_job: false,
        tcp_established: true,
        work_path: None,
        manage_cgroups_mode: rust_criu::CgMode::SOFT,
        link_remap: true,
    };
    container
        .checkpoint(&opts)
        .map_err(|e| Error::Checkpoint(format!("{e:?}{}", log_tail(&log))))
}

/// The log libcontainer has CRIU write in the images (or work) dir of a dump.
const CHECKPOINT_LOG: &str = "dump.log";

/// The errors at the end of a CRIU log, for an error message.
pub fn log_tail(path: &Path) -> String {
    let Ok(text) = fs::read_to_string(path) else {
        return String::new();
    };
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error") || l.contains("error"))
        .collect();
    let tail = &errors[errors.len().saturating_sub(5)..];
    if tail.is_empty() {
        String::new()
    } else {
        format!(" (CRIU: {})", tail.join(" | "))
    }
}

/// The state of a container to be restored from a checkpoint, as libcontainer keeps
/// it (`root/<id>`): created, no process yet, the cgroup path of its spec.
pub fn prepare_restore(id: &str, bundle: &Path, root: &Path) -> Result<Container> {
    let spec_path = bundle.join("config.json");
    let spec = Spec::load(&spec_path).map_err(|source| Error::LoadSpec {
        path: spec_path.clone(),
        source,
    })?;
    let dir = root.join(id);
    fs::create_dir_all(&dir)
        .map_err(|e| Error::Restore(format!("create {}: {e}", dir.display())))?;
    libcontainer::config::YoukiConfig::from_spec(&spec, id)
        .and_then(|c| c.save(&dir))
        .map_err(|e| Error::Restore(format!("save the cgroup config: {e}")))?;
    let mut container = Container::new(
        id,
        libcontainer::container::ContainerStatus::Created,
        None,
        bundle,
        &dir,
    )?;
    container.set_systemd(false);
    container.save()?;
    Ok(container)
}

/// What [`restore`] needs.
pub struct RestoreOptions<'a> {
    /// The container, as [`prepare_restore`] made it.
    pub container: &'a mut Container,
    /// CRIU's images.
    pub images: &'a Path,
    /// The stdio the restored process gets in place of the checkpointed one's.
    pub stdio: &'a ChildStdio,
    /// The container's resources, applied to its cgroup.
    pub resources: Option<&'a LinuxResources>,
    /// The shim's reaper: the restored init becomes the shim's child.
    pub reaper: &'a crate::reaper::Reaper,
}

/// The descriptors file libcontainer's checkpoint writes: what the init's fds 0, 1
/// and 2 were (`pipe:[N]`, a path).
const DESCRIPTORS: &str = "descriptors.json";

/// Restores the container's processes from CRIU's images with the helper
/// (`crust-shim restore`, `crate::restore`): in the container's cgroup, its rootfs as
/// root, the spec's bind mounts at their destinations, the pod's network and PID
/// namespaces, and the given stdio in place of the pipes it had. Answers the restored
/// init's pid and its exit's receiver.
pub fn restore(opts: RestoreOptions<'_>) -> Result<(Pid, tokio::sync::oneshot::Receiver<i32>)> {
    use std::io::{BufRead, BufReader};
    use std::os::fd::{AsRawFd, RawFd};
    use std::os::unix::process::CommandExt;

    use libcgroups::common::CgroupManager;
    let fail = |m: String| Error::Restore(m);
    let container = opts.container;
    let spec_path = container.bundle().join("config.json");
    let spec = Spec::load(&spec_path).map_err(|source| Error::LoadSpec {
        path: spec_path.clone(),
        source,
    })?;
    let root = spec
        .root()
        .as_ref()
        .map(|r| container.bundle().join(r.path()))
        .ok_or(Error::NoRootfs(container.bundle().join("rootfs")))?;
    let mut args: Vec<String> = vec![
        "restore".into(),
        "--images".into(),
        opts.images.display().to_string(),
        "--root".into(),
        root.display().to_string(),
    ];
    for m in spec.mounts().iter().flatten() {
        let bind = m.typ().as_deref() == Some("bind")
            || m.options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
        if let (true, Some(source)) = (bind, m.source()) {
            args.push("--mount".into());
            args.push(format!(
                "{}={}",
                m.destination().display(),
                source.display()
            ));
        }
    }
    // The fds the helper gets (from 3 on) and what CRIU knows them as.
    let mut inherit: Vec<(RawFd, String)> = Vec::new();
    let descriptors = fs::read_to_string(opts.images.join(DESCRIPTORS))
        .map_err(|e| fail(format!("read {DESCRIPTORS}: {e}")))?;
    let descriptors: Vec<String> = serde_json::from_str(&descriptors)
        .map_err(|e| fail(format!("parse {DESCRIPTORS}: {e}")))?;
    let ours = [&opts.stdio.stdin, &opts.stdio.stdout, &opts.stdio.stderr];
    for (fd, what) in ours.iter().zip(&descriptors) {
        if what.starts_with("pipe:") {
            inherit.push((fd.as_raw_fd(), what.clone()));
        }
    }
    let mut namespaces = Vec::new();
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
    {
        let key = match ns.typ() {
            oci_spec::runtime::LinuxNamespaceType::Network => "extRootNetNS",
            oci_spec::runtime::LinuxNamespaceType::Pid => "extRootPidNS",
            _ => continue,
        };
        if let Some(path) = ns.path() {
            let f =
                fs::File::open(path).map_err(|e| fail(format!("open {}: {e}", path.display())))?;
            inherit.push((f.as_raw_fd(), key.into()));
            namespaces.push(f);
        }
    }
    let targets: Vec<(RawFd, RawFd)> = inherit
        .iter()
        .enumerate()
        .map(|(i, (fd, _))| (*fd, 3 + i as RawFd))
        .collect();
    for (i, (_, key)) in inherit.iter().enumerate() {
        args.push("--inherit".into());
        args.push(format!("{}={key}", 3 + i));
    }
    let exe = std::env::current_exe().map_err(|e| fail(format!("the shim's binary: {e}")))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    // SAFETY: only dup2 (async-signal-safe) runs in the child before exec. The
    // sources are first moved above every target, so no dup2 overwrites a source.
    unsafe {
        cmd.pre_exec(move || {
            let high = 3 + targets.len() as RawFd + 16;
            let mut moved = Vec::with_capacity(targets.len());
            for (i, (from, _)) in targets.iter().enumerate() {
                let tmp = high + i as RawFd;
                if nix::libc::dup2(*from, tmp) < 0 {
                    return Err(io::Error::last_os_error());
                }
                moved.push(tmp);
            }
            for (tmp, (_, to)) in moved.iter().zip(&targets) {
                if nix::libc::dup2(*tmp, *to) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut helper = cmd
        .spawn()
        .map_err(|e| fail(format!("start the restore helper: {e}")))?;
    let helper_pid = Pid::from_raw(helper.id() as i32);
    let _helper_exit = opts.reaper.register(helper_pid);
    drop(namespaces);
    let (Some(mut to), Some(from)) = (helper.stdin.take(), helper.stdout.take()) else {
        return Err(fail("the restore helper has no stdio".into()));
    };
    let kill = || {
        let _ = nix::sys::signal::kill(helper_pid, nix::sys::signal::Signal::SIGKILL);
    };
    let cgroup_path = container.spec()?.cgroup_path;
    let cgroups = libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: cgroup_path.clone(),
        systemd_cgroup: false,
        container_name: container.id().to_owned(),
    })
    .map_err(|e| fail(format!("cgroup {}: {e}", cgroup_path.display())))?;
    let joined = cgroups
        .add_task(helper_pid)
        .map_err(|e| e.to_string())
        .and_then(|()| match opts.resources {
            Some(resources) => cgroups
                .apply(&libcgroups::common::ControllerOpt {
                    resources,
                    disable_oom_killer: false,
                    oom_score_adj: None,
                    freezer_state: None,
                })
                .map_err(|e| e.to_string()),
            None => Ok(()),
        });
    if let Err(e) = joined {
        kill();
        return Err(fail(format!(
            "put the restore in cgroup {}: {e}",
            cgroup_path.display()
        )));
    }
    if let Err(e) = writeln!(to, "go") {
        kill();
        return Err(fail(format!("tell the restore helper: {e}")));
    }
    let mut line = String::new();
    let _ = BufReader::new(from).read_line(&mut line);
    let line = line.trim_end();
    let pid = match line
        .strip_prefix("pid ")
        .and_then(|p| p.parse::<i32>().ok())
    {
        Some(pid) => Pid::from_raw(pid),
        None => {
            kill();
            let why = line
                .strip_prefix("error ")
                .unwrap_or("the helper ended without an answer");
            return Err(fail(why.to_owned()));
        }
    };
    // Registered before the helper exits and hands the init to the shim.
    let init_exit = opts.reaper.register(pid);
    let _ = writeln!(to, "done");
    drop(to);
    container.set_pid(pid.as_raw());
    container.set_status(libcontainer::container::ContainerStatus::Running);
    container.save()?;
    Ok((pid, init_exit))
}

/// Deletes the container: kills what is left, removes its cgroup and state.
pub fn delete(container: &mut Container) -> Result<()> {
    Ok(container.delete(true)?)
}

/// What [`exec`] needs.
#[derive(Debug)]
pub struct ExecOptions<'a> {
    /// Container id.
    pub id: &'a str,
    /// libcontainer's root dir.
    pub root: &'a Path,
    /// Command and arguments.
    pub args: Vec<String>,
    /// Extra environment over the container's.
    pub env: HashMap<String, String>,
    /// The process's stdio: pipes, or a console socket for a new pty.
    pub stdio: InitStdio,
    /// A process.json to run instead of building one from `args` and `env` (which are
    /// then ignored).
    pub process: Option<&'a Path>,
    /// The container's seccomp filter, loaded into the process before it execs.
    pub seccomp: Option<&'a LinuxSeccomp>,
}

/// Starts a process in the running container; returns its pid (a child of the shim).
pub fn exec(opts: ExecOptions<'_>) -> Result<Pid> {
    let mut builder = ContainerBuilder::new(opts.id.to_owned(), SyscallType::default())
        .with_executor(ExecSeccomp(opts.seccomp.cloned()))
        .with_root_path(opts.root)?;
    builder = match opts.stdio {
        InitStdio::Pipes(stdio) => builder
            .with_stdin(stdio.stdin)
            .with_stdout(stdio.stdout)
            .with_stderr(stdio.stderr),
        InitStdio::Console(path) => builder.with_console_socket(Some(path)),
    };
    let pid = builder
        .as_tenant()
        .with_container_args(opts.args)
        .with_env(opts.env)
        .with_process(opts.process)
        .with_detach(true)
        .build()?;
    Ok(pid)
}

/// Sends a signal to one process; a process that is gone is no error.
pub fn signal_pid(pid: Pid, signal: i32) -> nix::Result<()> {
    let sig = nix::sys::signal::Signal::try_from(signal)?;
    match nix::sys::signal::kill(pid, sig) {
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        other => other,
    }
}

/// Returns the host's limits for tests: adj -500, hard limits of 1024.
#[cfg(test)]
fn test_host() -> HostLimits {
    HostLimits {
        oom_score_adj: -500,
        rlimit_hard: |_| Some(1024),
    }
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{LinuxBuilder, ProcessBuilder, SpecBuilder};

    use super::*;

    fn spec(adj: Option<i32>, hard: u64, cgroups: Option<&str>) -> Spec {
        let rl = PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(hard)
            .hard(hard)
            .build()
            .unwrap();
        let mut p = ProcessBuilder::default()
            .args(vec!["sh".to_owned()])
            .rlimits(vec![rl]);
        if let Some(adj) = adj {
            p = p.oom_score_adj(adj);
        }
        let mut linux = LinuxBuilder::default();
        if let Some(c) = cgroups {
            linux = linux.cgroups_path(PathBuf::from(c));
        }
        let linux = linux.build().unwrap();
        SpecBuilder::default()
            .process(p.build().unwrap())
            .linux(linux)
            .build()
            .unwrap()
    }

    fn adj_of(s: &Spec) -> Option<i32> {
        s.process().as_ref().unwrap().oom_score_adj()
    }

    #[test]
    fn clamps_oom_score_adj_below_own() {
        let mut s = spec(Some(-999), 10, Some("/x"));
        assert!(adjust_spec(&mut s, "c", None, &test_host()));
        assert_eq!(adj_of(&s), Some(-500));
        let mut s = spec(Some(-100), 10, Some("/x"));
        assert!(!adjust_spec(&mut s, "c", None, &test_host()));
        assert_eq!(adj_of(&s), Some(-100));
    }

    #[test]
    fn clamps_rlimits_to_hard_limit() {
        let mut s = spec(None, 1 << 20, Some("/x"));
        assert!(adjust_spec(&mut s, "c", None, &test_host()));
        let rl = s.process().as_ref().unwrap().rlimits().clone().unwrap();
        assert_eq!((rl[0].soft(), rl[0].hard()), (1024, 1024));
    }

    #[test]
    fn swaps_masked_eq_operands_once() {
        use oci_spec::runtime::{
            LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder,
        };
        let arg = |op, value: u64, two: u64| {
            LinuxSeccompArgBuilder::default()
                .index(0usize)
                .op(op)
                .value(value)
                .value_two(two)
                .build()
                .unwrap()
        };
        let rule = LinuxSyscallBuilder::default()
            .names(vec!["clone".to_owned()])
            .action(LinuxSeccompAction::ScmpActAllow)
            .args(vec![
                arg(LinuxSeccompOperator::ScmpCmpMaskedEq, 0x7E02_0000, 0),
                arg(LinuxSeccompOperator::ScmpCmpNe, 40, 0),
            ])
            .build()
            .unwrap();
        let seccomp = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActErrno)
            .syscalls(vec![rule])
            .build()
            .unwrap();
        let mut s = spec(None, 10, Some("/x"));
        let mut linux = s.linux().clone().unwrap();
        linux.set_seccomp(Some(seccomp));
        s.set_linux(Some(linux));
        let args = |s: &Spec| {
            let l = s.linux().clone().unwrap();
            let rules = l.seccomp().clone().unwrap().syscalls().clone().unwrap();
            rules[0].args().clone().unwrap()
        };
        assert!(adjust_spec(&mut s, "c", None, &test_host()));
        let a = args(&s);
        assert_eq!((a[0].value(), a[0].value_two()), (0, Some(0x7E02_0000)));
        assert_eq!((a[1].value(), a[1].value_two()), (40, Some(0)));
        assert!(
            !adjust_spec(&mut s, "c", None, &test_host()),
            "swapped twice"
        );
        assert_eq!(args(&s)[0].value(), 0);
    }

    #[test]
    fn sets_cgroups_path() {
        let mut s = spec(None, 10, None);
        assert!(adjust_spec(&mut s, "c1", None, &test_host()));
        let path = |s: &Spec| s.linux().as_ref().unwrap().cgroups_path().clone().unwrap();
        assert_eq!(path(&s), PathBuf::from("/crust/c1"));
        assert!(adjust_spec(
            &mut s,
            "c1",
            Some(Path::new("/pod/c1")),
            &test_host()
        ));
        assert_eq!(path(&s), PathBuf::from("/pod/c1"));
        assert!(!adjust_spec(&mut s, "c1", None, &test_host()));
    }
}
