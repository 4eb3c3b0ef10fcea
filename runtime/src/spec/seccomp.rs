//! The container's seccomp filter (`linux.seccomp`), from the security context's
//! profile: RuntimeDefault is crust's built-in profile, Localhost a JSON profile file on
//! the node (read by the caller, see [`seccomp_localhost_path`]), Unconfined or no
//! profile at all means no filter, as containerd does by default. A privileged container
//! never gets a filter.
//!
//! Profiles are written in the format Docker and containerd use: `defaultAction`,
//! `architectures` or `archMap`, and `syscalls` whose rules may hold only `includes`
//! (capabilities the container must have, architectures, a minimum kernel) or not
//! hold under `excludes`. Those conditions are decided here, for this container, and
//! the spec gets the plain OCI rules that remain.
//!
//! The built-in profile allows what Docker's default allows: a fixed list of syscalls,
//! the syscalls of a capability only when the container holds it, `clone` without the
//! namespace flags (with CAP_SYS_ADMIN, any `clone`), `clone3` answered with ENOSYS so
//! that libc falls back to `clone`, `personality` with the usual personas only, and
//! everything else refused with EPERM.
//!
//! `SCMP_CMP_MASKED_EQ` arguments follow runc's reading, which every published profile
//! uses: `value` is the mask and `valueTwo` the value compared to.

use std::collections::HashSet;
use std::path::PathBuf;

use crust_proto::cri::{ContainerConfig, SecurityProfile, security_profile::ProfileType};
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;

use super::{ContainerSpecRequest, Error, Result, caps};

/// The seccomp profile a container asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeccompChoice {
    /// No filter: `Unconfined`, no profile at all, or a privileged container.
    Unconfined,
    /// crust's built-in default profile.
    RuntimeDefault,
    /// A profile file on the node, by its absolute path.
    Localhost(PathBuf),
}

impl std::fmt::Display for SeccompChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeccompChoice::Unconfined => f.write_str("Unconfined"),
            SeccompChoice::RuntimeDefault => f.write_str("RuntimeDefault"),
            SeccompChoice::Localhost(p) => write!(f, "Localhost {}", p.display()),
        }
    }
}

/// The profile `config` asks for: its `seccomp` field, else the deprecated
/// `seccomp_profile_path` (`runtime/default`, `docker/default`, `unconfined`,
/// `localhost/<path>`). A privileged container is unconfined whatever it asks.
pub fn seccomp_choice(id: &str, config: &ContainerConfig) -> Result<SeccompChoice> {
    let Some(sc) = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
    else {
        return Ok(SeccompChoice::Unconfined);
    };
    if sc.privileged {
        return Ok(SeccompChoice::Unconfined);
    }
    let invalid = |reason: String| Error::Invalid {
        id: id.to_string(),
        field: "security_context.seccomp",
        reason,
    };
    let localhost = |path: &str| {
        let path = PathBuf::from(path);
        if path.is_absolute() {
            Ok(SeccompChoice::Localhost(path))
        } else {
            Err(invalid(format!(
                "localhost profile {:?} is not an absolute path",
                path.display()
            )))
        }
    };
    match &sc.seccomp {
        Some(SecurityProfile {
            profile_type,
            localhost_ref,
        }) => match ProfileType::try_from(*profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(SeccompChoice::RuntimeDefault),
            Ok(ProfileType::Unconfined) => Ok(SeccompChoice::Unconfined),
            Ok(ProfileType::Localhost) => localhost(localhost_ref),
            Err(_) => Err(invalid(format!("unknown profile type {profile_type}"))),
        },
        #[allow(deprecated)] // still sent by older kubelets
        None => match sc.seccomp_profile_path.as_str() {
            "" | "unconfined" => Ok(SeccompChoice::Unconfined),
            "runtime/default" | "docker/default" => Ok(SeccompChoice::RuntimeDefault),
            other => match other.strip_prefix("localhost/") {
                Some(path) => localhost(path),
                None => Err(invalid(format!("unknown profile {other:?}"))),
            },
        },
    }
}

/// The file whose content the caller must pass as
/// [`ContainerSpecRequest::seccomp_localhost`], if the container asks for a Localhost
/// profile.
pub fn seccomp_localhost_path(id: &str, config: &ContainerConfig) -> Result<Option<PathBuf>> {
    Ok(match seccomp_choice(id, config)? {
        SeccompChoice::Localhost(path) => Some(path),
        _ => None,
    })
}

/// A profile in Docker's and containerd's JSON format.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<Arch>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    flags: Vec<LinuxSeccompFilterFlag>,
    #[serde(default)]
    listener_path: Option<PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Vec<Arch>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    names: Vec<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<LinuxSeccompArg>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

/// When a rule holds: capabilities (`CAP_…`), architectures (Go's names: `amd64`,
/// `arm64`, ...) and, for `includes`, the least kernel version (`4.8`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// What the conditions of a rule are decided against.
struct Target<'a> {
    caps: HashSet<String>,
    arch: &'a str,
    kernel: (u32, u32),
}

impl Filter {
    /// As `includes`: every capability held, the architecture listed, the kernel new
    /// enough (an empty part always holds).
    fn includes(&self, t: &Target) -> bool {
        self.caps.iter().all(|c| t.caps.contains(c))
            && (self.arches.is_empty() || self.arches.iter().any(|a| a == t.arch))
            && self
                .min_kernel
                .as_deref()
                .is_none_or(|v| t.kernel >= parse_kernel(v))
    }

    /// As `excludes`: any capability held or the architecture listed.
    fn excludes(&self, t: &Target) -> bool {
        self.caps.iter().any(|c| t.caps.contains(c)) || self.arches.iter().any(|a| a == t.arch)
    }
}

fn parse_kernel(v: &str) -> (u32, u32) {
    let mut parts = v.split('.').map(|p| p.trim().parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The seccomp section of the container's spec; `None` for no filter.
pub(super) fn seccomp(req: &ContainerSpecRequest) -> Result<Option<LinuxSeccomp>> {
    let profile = match seccomp_choice(req.id, req.config)? {
        SeccompChoice::Unconfined => return Ok(None),
        SeccompChoice::RuntimeDefault => runtime_default(),
        SeccompChoice::Localhost(path) => {
            let text = req.seccomp_localhost.ok_or_else(|| {
                req.invalid(
                    "security_context.seccomp",
                    format!("the localhost profile {} was not read", path.display()),
                )
            })?;
            serde_json::from_str::<Profile>(text).map_err(|e| {
                req.invalid(
                    "security_context.seccomp",
                    format!("localhost profile {}: {e}", path.display()),
                )
            })?
        }
    };
    let caps = caps::capabilities(req)?
        .bounding()
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    let target = Target {
        caps,
        arch: go_arch(std::env::consts::ARCH),
        kernel: req.host.kernel,
    };
    Ok(Some(resolve(&profile, &target, std::env::consts::ARCH)))
}

/// The OCI seccomp section of `profile` for a container described by `t`.
fn resolve(profile: &Profile, t: &Target, native: &str) -> LinuxSeccomp {
    let mut architectures = profile.architectures.clone();
    if !profile.arch_map.is_empty() {
        architectures = profile
            .arch_map
            .iter()
            .filter(|m| Some(m.architecture) == native_arch(native))
            .flat_map(|m| std::iter::once(m.architecture).chain(m.sub_architectures.clone()))
            .collect();
    }
    let syscalls: Vec<LinuxSyscall> = profile
        .syscalls
        .iter()
        .filter(|r| r.includes.includes(t) && !r.excludes.excludes(t))
        .filter_map(|r| {
            let names: Vec<String> = r.name.iter().chain(r.names.iter()).cloned().collect();
            if names.is_empty() {
                return None;
            }
            let mut s = LinuxSyscall::default();
            s.set_names(names)
                .set_action(r.action)
                .set_errno_ret(r.errno_ret)
                .set_args((!r.args.is_empty()).then(|| r.args.clone()));
            Some(s)
        })
        .collect();
    let mut out = LinuxSeccomp::default();
    out.set_default_action(profile.default_action)
        .set_default_errno_ret(profile.default_errno_ret)
        .set_architectures((!architectures.is_empty()).then_some(architectures))
        .set_flags((!profile.flags.is_empty()).then(|| profile.flags.clone()))
        .set_listener_path(profile.listener_path.clone())
        .set_listener_metadata(profile.listener_metadata.clone())
        .set_syscalls(Some(syscalls));
    out
}

/// Go's name of a Rust target architecture, as profiles name architectures.
fn go_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The seccomp architecture of a Rust target architecture.
fn native_arch(rust: &str) -> Option<Arch> {
    Some(match rust {
        "x86_64" => Arch::ScmpArchX86_64,
        "x86" => Arch::ScmpArchX86,
        "aarch64" => Arch::ScmpArchAarch64,
        "arm" => Arch::ScmpArchArm,
        "s390x" => Arch::ScmpArchS390x,
        "powerpc64" => Arch::ScmpArchPpc64le,
        "riscv64" => Arch::ScmpArchRiscv64,
        "loongarch64" => Arch::ScmpArchLoongarch64,
        _ => return None,
    })
}

/// Syscalls every container may make.
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    // Files and directories.
    "access", "chdir", "chmod", "chown", "chown32", "close", "close_range", "copy_file_range",
    "creat", "dup", "dup2", "dup3", "faccessat", "faccessat2", "fadvise64", "fadvise64_64",
    "fallocate", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
    "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fremovexattr",
    "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
    "ftruncate64", "futimesat", "getcwd", "getdents", "getdents64", "getxattr", "lchown",
    "lchown32", "lgetxattr", "link", "linkat", "listxattr", "llistxattr", "_llseek",
    "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "mkdir", "mkdirat", "mknod",
    "mknodat", "name_to_handle_at", "newfstatat", "open", "openat", "openat2", "pread64",
    "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
    "readlinkat", "readv", "removexattr", "rename", "renameat", "renameat2", "rmdir",
    "sendfile", "sendfile64", "setxattr", "splice", "stat", "stat64", "statfs", "statfs64",
    "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "tee", "truncate",
    "truncate64", "umask", "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64",
    "utimes", "vmsplice", "write", "writev",
    // Waiting and events.
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
    "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "fanotify_mark",
    "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel",
    "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_setup",
    "io_submit", "ioctl", "_newselect", "pause", "pipe", "pipe2", "poll", "ppoll",
    "ppoll_time64", "pselect6", "pselect6_time64", "select", "signalfd", "signalfd4",
    "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64",
    // Memory.
    "brk", "cachestat", "madvise", "map_shadow_stack", "membarrier", "memfd_create",
    "memfd_secret", "mincore", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect",
    "mremap", "msync", "munlock", "munlockall", "munmap", "pkey_alloc", "pkey_free",
    "pkey_mprotect", "remap_file_pages",
    // Processes, threads, signals.
    "alarm", "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork", "futex",
    "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake",
    "get_robust_list", "get_thread_area", "getcpu", "getitimer", "getpgid", "getpgrp",
    "getpid", "getppid", "getpriority", "getrandom", "getrlimit", "getrusage", "getsid",
    "gettid", "ioprio_get", "ioprio_set", "kill", "landlock_add_rule",
    "landlock_create_ruleset", "landlock_restrict_self", "nanosleep", "pidfd_open",
    "pidfd_send_signal", "prctl", "prlimit64", "process_mrelease", "restart_syscall", "rseq",
    "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
    "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_getscheduler", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
    "sched_setscheduler", "sched_yield", "seccomp", "set_robust_list", "set_thread_area",
    "set_tid_address", "setitimer", "setpgid", "setpriority", "setrlimit", "setsid",
    "sigaltstack", "sigprocmask", "sigreturn", "tgkill", "tkill", "ugetrlimit", "vfork",
    "wait4", "waitid", "waitpid",
    // Identity.
    "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
    "getgroups32", "getresgid", "getresgid32", "getresuid", "getresuid32", "getuid",
    "getuid32", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
    "setgroups", "setgroups32", "setregid", "setregid32", "setresgid", "setresgid32",
    "setresuid", "setresuid32", "setreuid", "setreuid32", "setuid", "setuid32",
    // Time.
    "adjtimex", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64",
    "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64",
    "gettimeofday", "time", "timer_create", "timer_delete", "timer_getoverrun",
    "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64", "times",
    // Sockets and IPC.
    "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt",
    "ipc", "listen", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "msgctl",
    "msgget", "msgrcv", "msgsnd", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64",
    "recvmsg", "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send",
    "sendmmsg", "sendmsg", "sendto", "setsockopt", "shmat", "shmctl", "shmdt", "shmget",
    "shutdown", "socketcall", "socketpair",
    // The system.
    "sysinfo", "uname",
];

/// Syscalls allowed on kernels that no longer let ptrace bypass seccomp (4.8+).
const PTRACE: &[&str] = &[
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
];

/// Syscalls allowed only to a container holding a capability.
const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (
        Capability::SysModule,
        &["delete_module", "finit_module", "init_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (Capability::SysPtrace, PTRACE),
    (Capability::SysRawio, &["ioperm", "iopl"]),
    (
        Capability::SysTime,
        &["clock_settime", "clock_settime64", "settimeofday", "stime"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
    (Capability::DacReadSearch, &["open_by_handle_at"]),
];

/// The namespace flags of clone(2): CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET. Without CAP_SYS_ADMIN a clone must set none of them.
const CLONE_NAMESPACE_FLAGS: u64 = 0x0002_0000 | 0x0200_0000 | 0x7C00_0000;

/// personality(2) personas allowed: PER_LINUX, UNAME26, PER_LINUX32, PER_LINUX32 |
/// UNAME26, and the query 0xffffffff.
const PERSONAS: [u64; 5] = [0x0, 0x0008, 0x0002_0000, 0x0002_0008, 0xffff_ffff];

/// AF_VSOCK: talking to the hypervisor is not a container's business.
const AF_VSOCK: u64 = 40;

const ENOSYS: u32 = 38;
const EPERM: u32 = 1;

fn rule(names: &[&str], action: LinuxSeccompAction) -> Rule {
    Rule {
        name: None,
        names: names.iter().map(|n| n.to_string()).collect(),
        action,
        errno_ret: None,
        args: Vec::new(),
        includes: Filter::default(),
        excludes: Filter::default(),
    }
}

fn arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> Vec<LinuxSeccompArg> {
    let mut a = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    if let Some(two) = value_two {
        a = a.value_two(two);
    }
    vec![a.build().expect("every field of a seccomp argument is set")]
}

fn cap_name(c: Capability) -> String {
    format!("CAP_{c}")
}

/// crust's built-in profile (see the module's documentation).
fn runtime_default() -> Profile {
    use LinuxSeccompAction::{ScmpActAllow as Allow, ScmpActErrno as Errno};
    let mut syscalls = vec![rule(ALLOWED, Allow)];
    let mut ptrace = rule(PTRACE, Allow);
    ptrace.includes.min_kernel = Some("4.8".into());
    syscalls.push(ptrace);
    for persona in PERSONAS {
        let mut r = rule(&["personality"], Allow);
        r.args = arg(0, LinuxSeccompOperator::ScmpCmpEq, persona, None);
        syscalls.push(r);
    }
    let mut socket = rule(&["socket"], Allow);
    socket.args = arg(0, LinuxSeccompOperator::ScmpCmpNe, AF_VSOCK, None);
    syscalls.push(socket);
    let mut x86 = rule(&["arch_prctl", "modify_ldt"], Allow);
    x86.includes.arches = vec!["amd64".into(), "386".into()];
    syscalls.push(x86);
    let sys_admin = cap_name(Capability::SysAdmin);
    let mut clone = rule(&["clone"], Allow);
    clone.args = arg(
        0,
        LinuxSeccompOperator::ScmpCmpMaskedEq,
        CLONE_NAMESPACE_FLAGS,
        Some(0),
    );
    clone.excludes.caps = vec![sys_admin.clone()];
    syscalls.push(clone);
    let mut clone3 = rule(&["clone3"], Errno);
    clone3.errno_ret = Some(ENOSYS);
    clone3.excludes.caps = vec![sys_admin];
    syscalls.push(clone3);
    for (cap, names) in BY_CAPABILITY {
        let mut r = rule(names, Allow);
        r.includes.caps = vec![cap_name(*cap)];
        syscalls.push(r);
    }
    Profile {
        default_action: Errno,
        default_errno_ret: Some(EPERM),
        arch_map: vec![
            ArchMap {
                architecture: Arch::ScmpArchX86_64,
                sub_architectures: vec![Arch::ScmpArchX86, Arch::ScmpArchX32],
            },
            ArchMap {
                architecture: Arch::ScmpArchAarch64,
                sub_architectures: vec![Arch::ScmpArchArm],
            },
            ArchMap {
                architecture: Arch::ScmpArchS390x,
                sub_architectures: vec![Arch::ScmpArchS390],
            },
            ArchMap {
                architecture: Arch::ScmpArchRiscv64,
                sub_architectures: Vec::new(),
            },
            ArchMap {
                architecture: Arch::ScmpArchPpc64le,
                sub_architectures: Vec::new(),
            },
            ArchMap {
                architecture: Arch::ScmpArchLoongarch64,
                sub_architectures: Vec::new(),
            },
        ],
        syscalls,
        ..Profile::default()
    }
}

#[cfg(test)]
mod tests {
    use crust_proto::cri::Capability as CriCaps;

    use super::super::ErrorKind;
    use super::super::testutil::Fixture;
    use super::*;

    fn profile(t: ProfileType, localhost_ref: &str) -> Option<SecurityProfile> {
        Some(SecurityProfile {
            profile_type: t as i32,
            localhost_ref: localhost_ref.into(),
        })
    }

    fn seccomp_of(f: &Fixture) -> Option<LinuxSeccomp> {
        f.spec()
            .unwrap()
            .linux()
            .as_ref()
            .unwrap()
            .seccomp()
            .clone()
    }

    /// The rules naming `name`, as (action, errno, args).
    fn rules_for(s: &LinuxSeccomp, name: &str) -> Vec<LinuxSyscall> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names().iter().any(|n| n == name))
            .cloned()
            .collect()
    }

    fn allowed_unconditionally(s: &LinuxSeccomp, name: &str) -> bool {
        rules_for(s, name)
            .iter()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
    }

    fn default_profile() -> Fixture {
        let mut f = Fixture::new();
        f.security().seccomp = profile(ProfileType::RuntimeDefault, "");
        f
    }

    #[test]
    fn no_profile_and_unconfined_give_no_filter() {
        let mut f = Fixture::new();
        assert_eq!(seccomp_of(&f), None);
        f.security().seccomp = profile(ProfileType::Unconfined, "");
        assert_eq!(seccomp_of(&f), None);
        f.security().seccomp = None;
        #[allow(deprecated)]
        {
            f.security().seccomp_profile_path = "unconfined".into();
        }
        assert_eq!(seccomp_of(&f), None);
    }

    #[test]
    fn runtime_default_refuses_by_default_with_eperm() {
        let s = seccomp_of(&default_profile()).unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(EPERM));
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                s.architectures().clone().unwrap(),
                vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
            );
            assert!(allowed_unconditionally(&s, "arch_prctl"));
        }
        for name in ["read", "execve", "chmod", "sethostname", "mount", "ptrace"] {
            let want = matches!(name, "read" | "execve" | "chmod" | "ptrace");
            assert_eq!(allowed_unconditionally(&s, name), want, "{name}");
        }
        for name in ["init_module", "finit_module", "reboot", "unshare", "setns"] {
            assert!(rules_for(&s, name).is_empty(), "{name}");
        }
    }

    #[test]
    fn runtime_default_clone_without_namespace_flags() {
        let s = seccomp_of(&default_profile()).unwrap();
        let clone = rules_for(&s, "clone");
        assert_eq!(clone.len(), 1);
        let args = clone[0].args().clone().unwrap();
        assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(
            (args[0].value(), args[0].value_two()),
            (0x7E02_0000, Some(0))
        );
        let clone3 = rules_for(&s, "clone3");
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(ENOSYS));
    }

    #[test]
    fn runtime_default_follows_capabilities() {
        let mut f = default_profile();
        f.security().capabilities = Some(CriCaps {
            add_capabilities: vec!["SYS_ADMIN".into(), "SYS_TIME".into()],
            drop_capabilities: vec!["SYS_CHROOT".into()],
            ..Default::default()
        });
        let s = seccomp_of(&f).unwrap();
        for name in ["mount", "sethostname", "clone", "clone3", "settimeofday"] {
            assert!(allowed_unconditionally(&s, name), "{name}");
        }
        assert!(rules_for(&s, "clone").iter().all(|r| r.args().is_none()));
        assert!(rules_for(&s, "chroot").is_empty());
        assert!(rules_for(&s, "reboot").is_empty());
    }

    #[test]
    fn privileged_gets_no_filter_and_reads_no_file() {
        let mut f = Fixture::new().privileged_pod();
        f.security().privileged = true;
        f.security().seccomp = profile(ProfileType::Localhost, "/etc/crust/p.json");
        assert_eq!(seccomp_of(&f), None);
        assert_eq!(seccomp_localhost_path("c1", &f.config).unwrap(), None);
    }

    const BLOCK_CHMOD: &str = r#"{
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [ { "names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO" } ]
    }"#;

    #[test]
    fn localhost_profile_from_the_request() {
        let mut f = Fixture::new();
        f.security().seccomp = profile(ProfileType::Localhost, "/etc/crust/block.json");
        assert_eq!(
            seccomp_localhost_path("c1", &f.config).unwrap(),
            Some(PathBuf::from("/etc/crust/block.json"))
        );
        let err = f.spec().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        f.seccomp_localhost = Some(BLOCK_CHMOD.into());
        let s = seccomp_of(&f).unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(s.architectures(), &None);
        let chmod = rules_for(&s, "fchmodat");
        assert_eq!(chmod[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(chmod[0].errno_ret(), None);
        f.seccomp_localhost = Some("{ not json".into());
        let err = f.spec().unwrap_err();
        assert!(err.to_string().contains("/etc/crust/block.json"), "{err}");
    }

    #[test]
    fn deprecated_profile_path_forms() {
        let mut f = Fixture::new();
        #[allow(deprecated)]
        {
            f.security().seccomp_profile_path = "localhost//etc/p.json".into();
        }
        assert_eq!(
            seccomp_choice("c1", &f.config).unwrap(),
            SeccompChoice::Localhost("/etc/p.json".into())
        );
        #[allow(deprecated)]
        {
            f.security().seccomp_profile_path = "docker/default".into();
        }
        assert_eq!(
            seccomp_choice("c1", &f.config).unwrap(),
            SeccompChoice::RuntimeDefault
        );
        #[allow(deprecated)]
        {
            f.security().seccomp_profile_path = "localhost/relative.json".into();
        }
        assert!(seccomp_choice("c1", &f.config).is_err());
        #[allow(deprecated)]
        {
            f.security().seccomp_profile_path = "bogus".into();
        }
        assert!(seccomp_choice("c1", &f.config).is_err());
    }

    #[test]
    fn includes_excludes_and_arch_map() {
        let text = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "archMap": [
                { "architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"] },
                { "architecture": "SCMP_ARCH_AARCH64", "subArchitectures": [] }
            ],
            "syscalls": [
                { "name": "one", "action": "SCMP_ACT_ALLOW" },
                { "names": ["admin"], "action": "SCMP_ACT_ALLOW",
                  "includes": { "caps": ["CAP_SYS_ADMIN"] } },
                { "names": ["not-admin"], "action": "SCMP_ACT_ALLOW",
                  "excludes": { "caps": ["CAP_SYS_ADMIN"] } },
                { "names": ["new-kernel"], "action": "SCMP_ACT_ALLOW",
                  "includes": { "minKernel": "7.4" } },
                { "names": ["old-kernel"], "action": "SCMP_ACT_ALLOW",
                  "includes": { "minKernel": "4.8" } },
                { "names": ["arm-only"], "action": "SCMP_ACT_ALLOW",
                  "includes": { "arches": ["arm64"] } },
                { "names": ["masked"], "action": "SCMP_ACT_ALLOW",
                  "args": [ { "index": 1, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" } ] }
            ]
        }"#;
        let p: Profile = serde_json::from_str(text).unwrap();
        let t = Target {
            caps: HashSet::new(),
            arch: "amd64",
            kernel: (6, 1),
        };
        let s = resolve(&p, &t, "x86_64");
        assert_eq!(
            s.architectures().clone().unwrap(),
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86]
        );
        let names: Vec<String> = s
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|r| r.names().clone())
            .collect();
        assert_eq!(names, ["one", "not-admin", "old-kernel", "masked"]);
        let args = rules_for(&s, "masked")[0].args().clone().unwrap();
        assert_eq!((args[0].index(), args[0].value()), (1, 8));
        let admin = Target {
            caps: ["CAP_SYS_ADMIN".to_string()].into(),
            arch: "arm64",
            kernel: (6, 1),
        };
        let s = resolve(&p, &admin, "aarch64");
        assert_eq!(
            s.architectures().clone().unwrap(),
            vec![Arch::ScmpArchAarch64]
        );
        let names: Vec<String> = s
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|r| r.names().clone())
            .collect();
        assert_eq!(names, ["one", "admin", "old-kernel", "arm-only", "masked"]);
    }

    #[test]
    fn runtime_default_round_trips_through_json() {
        let s = seccomp_of(&default_profile()).unwrap();
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], 1);
        let back: LinuxSeccomp = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }
}
