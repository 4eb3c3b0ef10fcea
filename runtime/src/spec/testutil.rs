//! Test fixtures: a request with a fake image, fake users and fake host devices.

use std::io;
use std::path::Path;

use crust_proto::cri::{
    ContainerConfig, LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, PodSandboxConfig,
};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{LinuxDeviceType, Spec};

use super::caps;
use super::{
    ContainerSpecRequest, DeviceLookup, GroupEntry, HostDevice, HostFacts, PasswdEntry,
    PodNamespace, Result, SandboxFiles, SandboxNamespaces, UserLookup, container_spec,
};

/// Users: root 0:0, alice 1000:1000 (in wheel and users), bob 1001:100 (in users).
pub(crate) struct FakeUsers {
    pub fail: bool,
}

impl UserLookup for FakeUsers {
    fn passwd(&self) -> io::Result<Vec<PasswdEntry>> {
        if self.fail {
            return Err(io::Error::other("disk on fire"));
        }
        let p = |name: &str, uid, gid| PasswdEntry {
            name: name.into(),
            uid,
            gid,
        };
        Ok(vec![
            p("root", 0, 0),
            p("alice", 1000, 1000),
            p("bob", 1001, 100),
        ])
    }

    fn groups(&self) -> io::Result<Vec<GroupEntry>> {
        let g = |name: &str, gid, members: &[&str]| GroupEntry {
            name: name.into(),
            gid,
            members: members.iter().map(|m| m.to_string()).collect(),
        };
        Ok(vec![
            g("root", 0, &[]),
            g("wheel", 10, &["alice"]),
            g("users", 100, &["alice", "bob"]),
            g("alice", 1000, &[]),
        ])
    }
}

/// Devices: /dev/null (1:3), /dev/zero (1:5), /dev/snd/{pcm0,timer} (116:*).
pub(crate) struct FakeDevices;

fn dev(relative: &str, major: i64, minor: i64) -> HostDevice {
    HostDevice {
        relative: relative.into(),
        kind: LinuxDeviceType::C,
        major,
        minor,
        file_mode: 0o666,
        uid: 0,
        gid: 0,
    }
}

impl DeviceLookup for FakeDevices {
    fn devices(&self, path: &Path) -> io::Result<Vec<HostDevice>> {
        Ok(match path.to_str().unwrap_or("") {
            "/dev/null" => vec![dev("", 1, 3)],
            "/dev/snd" => vec![dev("pcm0", 116, 2), dev("timer", 116, 33)],
            "/dev" => vec![
                dev("null", 1, 3),
                dev("zero", 1, 5),
                dev("snd/pcm0", 116, 2),
                dev("snd/timer", 116, 33),
            ],
            "/missing" => return Err(io::ErrorKind::NotFound.into()),
            _ => Vec::new(),
        })
    }
}

/// A request to edit, then turn into a spec.
pub(crate) struct Fixture {
    pub config: ContainerConfig,
    pub sandbox: PodSandboxConfig,
    pub image: ImageConfiguration,
    pub namespaces: SandboxNamespaces,
    pub files: SandboxFiles,
    pub users: FakeUsers,
    pub host: HostFacts,
    /// The content of the container's Localhost seccomp profile, as the caller read it.
    pub seccomp_localhost: Option<String>,
}

impl Fixture {
    /// A plain container of a plain pod; the image runs `sh`.
    pub fn new() -> Fixture {
        let mut f = Fixture {
            config: ContainerConfig::default(),
            sandbox: PodSandboxConfig::default(),
            image: ImageConfiguration::default(),
            namespaces: SandboxNamespaces {
                network: PodNamespace::Pinned("/run/crust/ns/net".into()),
                ipc: PodNamespace::Pinned("/run/crust/ns/ipc".into()),
                uts: PodNamespace::Pinned("/run/crust/ns/uts".into()),
                pid: Some(PodNamespace::Pinned("/run/crust/ns/pid".into())),
                target_pid: None,
                user: None,
            },
            files: SandboxFiles {
                hostname: Some("/run/crust/pod/hostname".into()),
                resolv_conf: Some("/run/crust/pod/resolv.conf".into()),
                hosts: Some("/run/crust/pod/hosts".into()),
                shm: Some("/run/crust/pod/shm".into()),
            },
            users: FakeUsers { fail: false },
            host: HostFacts {
                oom_score_adj_floor: 0,
                // This host's root: everything but CAP_SYS_RESOURCE.
                capabilities: caps::from_mask(0x000001fffeffffff),
                hostname: "node-1".into(),
                swap_controller: true,
                hugetlb_controller: true,
                unified_cgroups: false,
                mount_setattr: true,
                cgroup_v1_mounts: Vec::new(),
                kernel: (6, 1),
                apparmor: false,
                selinux: false,
            },
            seccomp_localhost: None,
        };
        f.image_config(serde_json::json!({ "Cmd": ["sh"] }));
        f
    }

    /// Makes the pod privileged.
    pub fn privileged_pod(mut self) -> Fixture {
        self.sandbox.linux = Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        });
        self
    }

    /// Replaces the image's `config` object.
    pub fn image_config(&mut self, config: serde_json::Value) {
        let image = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": [] },
        });
        self.image = serde_json::from_value(image).unwrap();
    }

    fn linux(&mut self) -> &mut LinuxContainerConfig {
        self.config.linux.get_or_insert_with(Default::default)
    }

    /// The container's security context, created empty if missing.
    pub fn security(&mut self) -> &mut LinuxContainerSecurityContext {
        self.linux()
            .security_context
            .get_or_insert_with(Default::default)
    }

    /// The container's resources, created empty if missing.
    pub fn resources(&mut self) -> &mut LinuxContainerResources {
        self.linux().resources.get_or_insert_with(Default::default)
    }

    pub fn spec(&self) -> Result<Spec> {
        container_spec(&ContainerSpecRequest {
            id: "c1",
            config: &self.config,
            sandbox: &self.sandbox,
            image: &self.image,
            rootfs: Path::new("/run/crust/c1/rootfs"),
            namespaces: &self.namespaces,
            files: &self.files,
            cgroups_path: "/kubepods/crust-c1",
            users: &self.users,
            devices: &FakeDevices,
            host: &self.host,
            seccomp_localhost: self.seccomp_localhost.as_deref(),
        })
    }
}
