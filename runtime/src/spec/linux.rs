//! The `linux` section: namespaces, cgroups path and resources, sysctls, devices, and
//! masked and read-only paths.

use std::collections::HashMap;
use std::path::PathBuf;

use crust_proto::cri::{LinuxContainerResources, NamespaceMode};
use oci_spec::runtime::{
    Linux, LinuxCpu, LinuxHugepageLimit, LinuxIdMapping, LinuxIdMappingBuilder, LinuxMemory,
    LinuxNamespace, LinuxNamespaceType, LinuxResources,
};

use super::{ContainerSpecRequest, HostFacts, PodNamespace, Result, devices, seccomp};
use crate::pod::userns::{Mapping, PodUserns};

/// Paths of /proc and /sys hidden from non-privileged containers (containerd's defaults).
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// Paths of /proc read-only in non-privileged containers (containerd's defaults).
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Sysctls of the IPC namespace besides `fs.mqueue.*` (the kernel's, as libcontainer
/// validates them).
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

pub(super) fn linux(req: &ContainerSpecRequest) -> Result<Linux> {
    if req.cgroups_path.is_empty() {
        return Err(req.invalid("cgroups_path", "no cgroups path given"));
    }
    let (nodes, rules) = devices::devices(req)?;
    let mut resources = resources(req)?;
    resources.set_devices(Some(rules));
    let (masked, readonly) = proc_paths(req);
    let mut linux = Linux::default();
    linux
        .set_namespaces(Some(namespaces(req)?))
        .set_cgroups_path(Some(PathBuf::from(req.cgroups_path)))
        .set_resources(Some(resources))
        .set_sysctl(sysctls(req)?)
        .set_devices(Some(nodes))
        .set_masked_paths(Some(masked))
        .set_readonly_paths(Some(readonly))
        .set_uid_mappings(id_mappings(req, |u| u.uid))
        .set_gid_mappings(id_mappings(req, |u| u.gid))
        .set_seccomp(seccomp::seccomp(req)?)
        .set_mount_label(None);
    Ok(linux)
}

/// The pod user namespace's mapping `pick` chooses, in OCI form.
fn id_mappings(
    req: &ContainerSpecRequest,
    pick: impl Fn(&PodUserns) -> Mapping,
) -> Option<Vec<LinuxIdMapping>> {
    let (_, userns) = req.namespaces.user.as_ref()?;
    let m = pick(userns);
    LinuxIdMappingBuilder::default()
        .container_id(m.container)
        .host_id(m.host)
        .size(m.length)
        .build()
        .ok()
        .map(|map| vec![map])
}

fn namespace(typ: LinuxNamespaceType, path: Option<&PathBuf>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ).set_path(path.cloned());
    ns
}

/// The pod's user namespace if it has one; a new mount namespace; the pod's network,
/// IPC and UTS namespaces (none, meaning the host's, for host ones); the PID namespace
/// by the container's PID mode.
fn namespaces(req: &ContainerSpecRequest) -> Result<Vec<LinuxNamespace>> {
    let pod = req.namespaces;
    let mut out = Vec::new();
    if let Some((path, _)) = &pod.user {
        out.push(namespace(LinuxNamespaceType::User, Some(path)));
    }
    out.push(namespace(LinuxNamespaceType::Mount, None));
    for (typ, ns) in [
        (LinuxNamespaceType::Network, &pod.network),
        (LinuxNamespaceType::Ipc, &pod.ipc),
        (LinuxNamespaceType::Uts, &pod.uts),
    ] {
        if let PodNamespace::Pinned(path) = ns {
            out.push(namespace(typ, Some(path)));
        }
    }
    let mode = req
        .security()
        .and_then(|s| s.namespace_options.as_ref())
        .map_or(NamespaceMode::Pod as i32, |n| n.pid);
    match NamespaceMode::try_from(mode) {
        Ok(NamespaceMode::Pod) => match &pod.pid {
            Some(PodNamespace::Pinned(path)) => {
                out.push(namespace(LinuxNamespaceType::Pid, Some(path)))
            }
            Some(PodNamespace::Host) => {}
            None => {
                return Err(req.invalid(
                    "namespace_options.pid",
                    "PID mode POD but the pod has no shared PID namespace",
                ));
            }
        },
        Ok(NamespaceMode::Container) => out.push(namespace(LinuxNamespaceType::Pid, None)),
        Ok(NamespaceMode::Node) => {}
        Ok(NamespaceMode::Target) => match &pod.target_pid {
            Some(path) => out.push(namespace(LinuxNamespaceType::Pid, Some(path))),
            None => {
                return Err(req.invalid(
                    "namespace_options.target_id",
                    "PID mode TARGET without the target container's PID namespace",
                ));
            }
        },
        Err(_) => {
            return Err(req.invalid("namespace_options.pid", format!("unknown mode {mode}")));
        }
    }
    // containerd hides the host's cgroup tree on cgroup v2 (not on v1, for compatibility).
    if req.host.unified_cgroups && !req.privileged() {
        out.push(namespace(LinuxNamespaceType::Cgroup, None));
    }
    Ok(out)
}

fn resources(req: &ContainerSpecRequest) -> Result<LinuxResources> {
    match req.config.linux.as_ref().and_then(|l| l.resources.as_ref()) {
        Some(r) => linux_resources(req.id, r, req.host),
        None => Ok(LinuxResources::default()),
    }
}

/// The OCI resources of CRI container resources, for the spec and for
/// UpdateContainerResources.
pub fn linux_resources(
    id: &str,
    r: &LinuxContainerResources,
    host: &HostFacts,
) -> Result<LinuxResources> {
    let mut out = LinuxResources::default();
    let invalid = |field: &'static str, reason: String| super::Error::Invalid {
        id: id.to_string(),
        field,
        reason,
    };
    let non_negative = |field: &'static str, v: i64| -> Result<u64> {
        u64::try_from(v).map_err(|_| invalid(field, format!("{v} is negative")))
    };

    let mut cpu = LinuxCpu::default();
    if r.cpu_period != 0 {
        cpu.set_period(Some(non_negative("resources.cpu_period", r.cpu_period)?));
    }
    if r.cpu_quota != 0 {
        cpu.set_quota(Some(r.cpu_quota));
    }
    if r.cpu_shares != 0 {
        cpu.set_shares(Some(non_negative("resources.cpu_shares", r.cpu_shares)?));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(r.cpuset_cpus.clone()));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.set_mems(Some(r.cpuset_mems.clone()));
    }
    if cpu != LinuxCpu::default() {
        out.set_cpu(Some(cpu));
    }

    let mut memory = LinuxMemory::default();
    if r.memory_limit_in_bytes != 0 {
        non_negative("resources.memory_limit_in_bytes", r.memory_limit_in_bytes)?;
        memory.set_limit(Some(r.memory_limit_in_bytes));
    }
    if host.swap_controller {
        // Swap equal to the limit: no swapping unless asked (containerd).
        if r.memory_swap_limit_in_bytes != 0 {
            memory.set_swap(Some(r.memory_swap_limit_in_bytes));
        } else if r.memory_limit_in_bytes != 0 {
            memory.set_swap(Some(r.memory_limit_in_bytes));
        }
    }
    if memory != LinuxMemory::default() {
        out.set_memory(Some(memory));
    }

    if host.hugetlb_controller && !r.hugepage_limits.is_empty() {
        let mut limits = Vec::new();
        for h in &r.hugepage_limits {
            let mut l = LinuxHugepageLimit::default();
            let limit = i64::try_from(h.limit).map_err(|_| {
                invalid(
                    "resources.hugepage_limits",
                    format!("{} is too large", h.limit),
                )
            })?;
            l.set_page_size(h.page_size.clone()).set_limit(limit);
            limits.push(l);
        }
        out.set_hugepage_limits(Some(limits));
    }
    if !r.unified.is_empty() {
        out.set_unified(Some(r.unified.clone()));
    }
    Ok(out)
}

/// The pod's sysctls, namespaced ones only: `net.*` (not with host network), the IPC
/// ones (not with host IPC). Others would change the host.
fn sysctls(req: &ContainerSpecRequest) -> Result<Option<HashMap<String, String>>> {
    let Some(sysctls) = req.sandbox.linux.as_ref().map(|l| &l.sysctls) else {
        return Ok(None);
    };
    if sysctls.is_empty() {
        return Ok(None);
    }
    for key in sysctls.keys() {
        let name = key.replace('/', ".");
        let refuse = |reason: &str| req.invalid("sysctls", format!("sysctl {key:?}: {reason}"));
        if name.starts_with("net.") {
            if req.namespaces.network == PodNamespace::Host {
                return Err(refuse("the pod uses the host's network namespace"));
            }
        } else if IPC_SYSCTLS.contains(&name.as_str()) || name.starts_with("fs.mqueue.") {
            if req.namespaces.ipc == PodNamespace::Host {
                return Err(refuse("the pod uses the host's IPC namespace"));
            }
        } else {
            return Err(refuse("not a namespaced sysctl"));
        }
    }
    Ok(Some(sysctls.clone()))
}

/// containerd's defaults unless the security context lists paths (proto3 cannot tell an
/// empty list from none); nothing for a privileged container.
fn proc_paths(req: &ContainerSpecRequest) -> (Vec<String>, Vec<String>) {
    if req.privileged() {
        return (Vec::new(), Vec::new());
    }
    let given = |f: fn(&crust_proto::cri::LinuxContainerSecurityContext) -> &Vec<String>,
                 default: &[&str]| {
        match req.security().map(f) {
            Some(paths) if !paths.is_empty() => paths.clone(),
            _ => default.iter().map(|s| s.to_string()).collect(),
        }
    };
    (
        given(|s| &s.masked_paths, &DEFAULT_MASKED_PATHS),
        given(|s| &s.readonly_paths, &DEFAULT_READONLY_PATHS),
    )
}

#[cfg(test)]
mod tests {
    use crust_proto::cri::{HugepageLimit, LinuxPodSandboxConfig, NamespaceOption};

    use super::super::ErrorKind;
    use super::super::testutil::Fixture;
    use super::*;

    fn linux_of(f: &Fixture) -> Linux {
        f.spec().unwrap().linux().clone().unwrap()
    }

    fn namespaces_of(f: &Fixture) -> Vec<(LinuxNamespaceType, Option<String>)> {
        linux_of(f)
            .namespaces()
            .clone()
            .unwrap()
            .iter()
            .map(|n| (n.typ(), n.path().as_ref().map(|p| p.display().to_string())))
            .collect()
    }

    fn pid_mode(f: &mut Fixture, mode: NamespaceMode) {
        f.security().namespace_options = Some(NamespaceOption {
            pid: mode as i32,
            ..Default::default()
        });
    }

    fn pid_of(f: &Fixture) -> Option<Option<String>> {
        namespaces_of(f)
            .into_iter()
            .find(|(t, _)| *t == LinuxNamespaceType::Pid)
            .map(|(_, p)| p)
    }

    #[test]
    fn pod_namespaces_are_joined() {
        use LinuxNamespaceType::*;
        let f = Fixture::new();
        assert_eq!(
            namespaces_of(&f),
            [
                (Mount, None),
                (Network, Some("/run/crust/ns/net".into())),
                (Ipc, Some("/run/crust/ns/ipc".into())),
                (Uts, Some("/run/crust/ns/uts".into())),
                (Pid, Some("/run/crust/ns/pid".into())),
            ]
        );
        assert_eq!(
            linux_of(&f).cgroups_path().clone(),
            Some("/kubepods/crust-c1".into())
        );
    }

    #[test]
    fn host_namespaces_are_left_out() {
        let mut f = Fixture::new();
        f.namespaces.network = PodNamespace::Host;
        f.namespaces.uts = PodNamespace::Host;
        f.namespaces.ipc = PodNamespace::Host;
        f.namespaces.pid = Some(PodNamespace::Host);
        pid_mode(&mut f, NamespaceMode::Node);
        assert_eq!(namespaces_of(&f), [(LinuxNamespaceType::Mount, None)]);
    }

    #[test]
    fn pid_modes() {
        let mut f = Fixture::new();
        pid_mode(&mut f, NamespaceMode::Pod);
        assert_eq!(pid_of(&f), Some(Some("/run/crust/ns/pid".into())));
        pid_mode(&mut f, NamespaceMode::Container);
        assert_eq!(pid_of(&f), Some(None));
        pid_mode(&mut f, NamespaceMode::Node);
        assert_eq!(pid_of(&f), None);
        pid_mode(&mut f, NamespaceMode::Target);
        assert_eq!(f.spec().unwrap_err().kind(), ErrorKind::InvalidArgument);
        f.namespaces.target_pid = Some("/proc/42/ns/pid".into());
        assert_eq!(pid_of(&f), Some(Some("/proc/42/ns/pid".into())));
        pid_mode(&mut f, NamespaceMode::Pod);
        f.namespaces.pid = None;
        assert_eq!(f.spec().unwrap_err().kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn cgroup_namespace_on_unified_hosts_only() {
        let mut f = Fixture::new();
        assert!(
            !namespaces_of(&f)
                .iter()
                .any(|(t, _)| *t == LinuxNamespaceType::Cgroup)
        );
        f.host.unified_cgroups = true;
        assert!(
            namespaces_of(&f)
                .iter()
                .any(|(t, _)| *t == LinuxNamespaceType::Cgroup)
        );
    }

    #[test]
    fn resources_map_to_the_spec() {
        let mut f = Fixture::new();
        let r = f.resources();
        r.cpu_period = 100_000;
        r.cpu_quota = 50_000;
        r.cpu_shares = 256;
        r.cpuset_cpus = "0-1".into();
        r.cpuset_mems = "0".into();
        r.memory_limit_in_bytes = 64 << 20;
        r.hugepage_limits = vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: 4 << 20,
        }];
        r.unified = [("memory.high".to_string(), "1000000".to_string())].into();
        let res = linux_of(&f).resources().clone().unwrap();
        let cpu = res.cpu().clone().unwrap();
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.shares(), Some(256));
        assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        let memory = res.memory().unwrap();
        assert_eq!(memory.limit(), Some(64 << 20));
        assert_eq!(memory.swap(), Some(64 << 20), "swap defaults to the limit");
        let huge = res.hugepage_limits().clone().unwrap();
        assert_eq!(
            (huge[0].page_size().as_str(), huge[0].limit()),
            ("2MB", 4 << 20)
        );
        assert_eq!(res.unified().clone().unwrap()["memory.high"], "1000000");
    }

    #[test]
    fn swap_and_hugepages_follow_the_host() {
        let mut f = Fixture::new();
        f.resources().memory_limit_in_bytes = 64 << 20;
        f.resources().memory_swap_limit_in_bytes = 128 << 20;
        f.resources().hugepage_limits = vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: 1,
        }];
        let res = linux_of(&f).resources().clone().unwrap();
        assert_eq!(res.memory().unwrap().swap(), Some(128 << 20));
        f.host.swap_controller = false;
        f.host.hugetlb_controller = false;
        let res = linux_of(&f).resources().clone().unwrap();
        assert_eq!(res.memory().unwrap().swap(), None);
        assert_eq!(res.memory().unwrap().limit(), Some(64 << 20));
        assert!(res.hugepage_limits().is_none());
    }

    #[test]
    fn no_resources_no_limits() {
        let res = linux_of(&Fixture::new()).resources().clone().unwrap();
        assert!(res.cpu().is_none() && res.memory().is_none() && res.unified().is_none());
    }

    #[test]
    fn negative_resources_are_invalid() {
        let mut f = Fixture::new();
        f.resources().cpu_shares = -2;
        assert_eq!(f.spec().unwrap_err().kind(), ErrorKind::InvalidArgument);
    }

    fn with_sysctl(key: &str) -> Fixture {
        let mut f = Fixture::new();
        f.sandbox.linux = Some(LinuxPodSandboxConfig {
            sysctls: [(key.to_string(), "1".to_string())].into(),
            ..Default::default()
        });
        f
    }

    #[test]
    fn sysctls_accepted_and_refused() {
        for key in [
            "net.ipv4.ip_forward",
            "net/ipv4/ping_group_range",
            "kernel.shmmax",
            "kernel.sem",
            "fs.mqueue.msg_max",
        ] {
            let sysctl = linux_of(&with_sysctl(key)).sysctl().clone().unwrap();
            assert_eq!(sysctl[key], "1", "{key}");
        }
        for key in [
            "kernel.hostname",
            "vm.swappiness",
            "kernel.msg_next_id",
            "fs.file-max",
        ] {
            assert_eq!(
                with_sysctl(key).spec().unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{key}"
            );
        }
        let mut f = with_sysctl("net.core.somaxconn");
        f.namespaces.network = PodNamespace::Host;
        assert!(f.spec().unwrap_err().to_string().contains("network"));
        let mut f = with_sysctl("kernel.shmmni");
        f.namespaces.ipc = PodNamespace::Host;
        assert!(f.spec().unwrap_err().to_string().contains("IPC"));
        assert!(linux_of(&Fixture::new()).sysctl().is_none());
    }

    #[test]
    fn masked_and_readonly_paths() {
        let mut f = Fixture::new();
        let linux = linux_of(&f);
        assert_eq!(linux.masked_paths().clone().unwrap(), DEFAULT_MASKED_PATHS);
        assert_eq!(
            linux.readonly_paths().clone().unwrap(),
            DEFAULT_READONLY_PATHS
        );
        f.security().masked_paths = vec!["/proc/x".into()];
        f.security().readonly_paths = vec!["/proc/y".into()];
        let linux = linux_of(&f);
        assert_eq!(linux.masked_paths().clone().unwrap(), ["/proc/x"]);
        assert_eq!(linux.readonly_paths().clone().unwrap(), ["/proc/y"]);
        let mut f = f.privileged_pod();
        f.security().privileged = true;
        let linux = linux_of(&f);
        assert!(linux.masked_paths().clone().unwrap().is_empty());
        assert!(linux.readonly_paths().clone().unwrap().is_empty());
    }
}
