//! Device nodes and the device cgroup: CRI devices (a host node, or every node under a
//! host directory), the default allowed devices, and privileged containers (every host
//! device, every access allowed), as containerd's `WithDevices`/`WithHostDevices` do.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use super::{ContainerSpecRequest, Error, Result};

/// A device node on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDevice {
    /// Its path relative to the path looked up (empty for the path itself).
    pub relative: PathBuf,
    /// Character, block or fifo.
    pub kind: LinuxDeviceType,
    /// The major number.
    pub major: i64,
    /// The minor number.
    pub minor: i64,
    /// The permission bits of the node.
    pub file_mode: u32,
    /// The owner.
    pub uid: u32,
    /// The group.
    pub gid: u32,
}

/// The host's device nodes.
pub trait DeviceLookup {
    /// The device node at `path` (symlinks followed), or every device node under it when
    /// it is a directory; empty when `path` is neither.
    fn devices(&self, path: &Path) -> io::Result<Vec<HostDevice>>;
}

/// [`DeviceLookup`] on the real host, with `stat(2)`.
pub struct HostDevices;

/// Directories under `/dev` that hold no devices a container should get (containerd's
/// and runc's list).
const SKIPPED_DIRS: [&str; 7] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

impl DeviceLookup for HostDevices {
    fn devices(&self, path: &Path) -> io::Result<Vec<HostDevice>> {
        let meta = fs::metadata(path)?;
        let mut out = Vec::new();
        if meta.is_dir() {
            walk(path, Path::new(""), &mut out)?;
        } else if let Some(device) = host_device(&meta, PathBuf::new()) {
            out.push(device);
        }
        Ok(out)
    }
}

fn walk(root: &Path, relative: &Path, out: &mut Vec<HostDevice>) -> io::Result<()> {
    for entry in fs::read_dir(root.join(relative))? {
        let entry = entry?;
        let name = entry.file_name();
        let rel = relative.join(&name);
        // Entries vanish under /dev all the time: skip what can no longer be read.
        let Ok(meta) = fs::symlink_metadata(root.join(&rel)) else {
            continue;
        };
        if meta.is_dir() {
            if !SKIPPED_DIRS.iter().any(|d| name == *d) {
                walk(root, &rel, out)?;
            }
        } else if name != "console" {
            out.extend(host_device(&meta, rel));
        }
    }
    Ok(())
}

fn host_device(meta: &fs::Metadata, relative: PathBuf) -> Option<HostDevice> {
    let ft = meta.file_type();
    let kind = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else if ft.is_fifo() {
        LinuxDeviceType::P
    } else {
        return None;
    };
    let rdev = meta.rdev();
    Some(HostDevice {
        relative,
        kind,
        major: nix::sys::stat::major(rdev) as i64,
        minor: nix::sys::stat::minor(rdev) as i64,
        file_mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// Devices every container may use (runc's defaults): null, zero, full, random,
/// urandom, tty, ptmx and the pty slaves. libcontainer creates their nodes itself.
const DEFAULT_ALLOWED: [(i64, Option<i64>); 8] = [
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(2)),
    (136, None),
];

/// The device nodes to create and the device cgroup rules.
pub(super) fn devices(
    req: &ContainerSpecRequest,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>)> {
    let mut nodes: Vec<LinuxDevice> = Vec::new();
    let mut rules = vec![rule(false, None, None, None, "rwm")];
    rules.extend(
        DEFAULT_ALLOWED
            .iter()
            .map(|&(major, minor)| rule(true, Some(LinuxDeviceType::C), Some(major), minor, "rwm")),
    );
    for d in &req.config.devices {
        let access = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if !access.chars().all(|c| "rwm".contains(c)) {
            return Err(req.invalid(
                "devices",
                format!("device {:?}: invalid permissions {access:?}", d.host_path),
            ));
        }
        if !Path::new(&d.container_path).is_absolute() {
            return Err(req.invalid(
                "devices",
                format!(
                    "device container path {:?} is not absolute",
                    d.container_path
                ),
            ));
        }
        let found = lookup(req, Path::new(&d.host_path))?;
        if found.is_empty() {
            return Err(req.invalid("devices", format!("{:?} is not a device", d.host_path)));
        }
        for host in found {
            let path = if host.relative.as_os_str().is_empty() {
                PathBuf::from(&d.container_path)
            } else {
                Path::new(&d.container_path).join(&host.relative)
            };
            rules.push(rule(
                true,
                Some(host.kind),
                Some(host.major),
                Some(host.minor),
                access,
            ));
            push_node(&mut nodes, path, &host);
        }
    }
    if req.privileged() {
        for host in lookup(req, Path::new("/dev"))? {
            push_node(&mut nodes, Path::new("/dev").join(&host.relative), &host);
        }
        rules = vec![rule(true, None, None, None, "rwm")];
    }
    Ok((nodes, rules))
}

fn lookup(req: &ContainerSpecRequest, path: &Path) -> Result<Vec<HostDevice>> {
    req.devices.devices(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            req.invalid(
                "devices",
                format!("device {} does not exist", path.display()),
            )
        } else {
            Error::Lookup {
                id: req.id.to_string(),
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

fn push_node(nodes: &mut Vec<LinuxDevice>, path: PathBuf, host: &HostDevice) {
    if nodes.iter().any(|n| n.path() == &path) {
        return;
    }
    let mut node = LinuxDevice::default();
    node.set_path(path)
        .set_typ(host.kind)
        .set_major(host.major)
        .set_minor(host.minor)
        .set_file_mode(Some(host.file_mode))
        .set_uid(Some(host.uid))
        .set_gid(Some(host.gid));
    nodes.push(node);
}

fn rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow)
        .set_typ(typ.or(Some(LinuxDeviceType::A)))
        .set_major(major)
        .set_minor(minor)
        .set_access(Some(access.to_string()));
    r
}

#[cfg(test)]
mod tests {
    use crust_proto::cri::Device;

    use super::super::ErrorKind;
    use super::super::testutil::Fixture;
    use super::*;

    fn linux_of(f: &Fixture) -> oci_spec::runtime::Linux {
        f.spec().unwrap().linux().clone().unwrap()
    }

    fn rules_of(f: &Fixture) -> Vec<LinuxDeviceCgroup> {
        linux_of(f)
            .resources()
            .clone()
            .unwrap()
            .devices()
            .clone()
            .unwrap()
    }

    #[test]
    fn default_rules_deny_all_then_allow_the_basics() {
        let f = Fixture::new();
        let rules = rules_of(&f);
        assert!(!rules[0].allow());
        assert_eq!(rules[0].typ(), Some(LinuxDeviceType::A));
        assert_eq!(rules[0].access().as_deref(), Some("rwm"));
        let allowed: Vec<_> = rules[1..].iter().map(|r| (r.major(), r.minor())).collect();
        assert!(allowed.contains(&(Some(1), Some(3))), "null");
        assert!(allowed.contains(&(Some(5), Some(2))), "ptmx");
        assert!(allowed.contains(&(Some(136), None)), "pts");
        assert!(linux_of(&f).devices().clone().unwrap().is_empty());
    }

    #[test]
    fn cri_device_and_directory() {
        let mut f = Fixture::new();
        f.config.devices = vec![
            Device {
                container_path: "/dev/xnull".into(),
                host_path: "/dev/null".into(),
                permissions: "rw".into(),
            },
            Device {
                container_path: "/dev/snd".into(),
                host_path: "/dev/snd".into(),
                permissions: String::new(),
            },
        ];
        let linux = linux_of(&f);
        let nodes = linux.devices().clone().unwrap();
        let paths: Vec<_> = nodes
            .iter()
            .map(|n| n.path().display().to_string())
            .collect();
        assert_eq!(paths, ["/dev/xnull", "/dev/snd/pcm0", "/dev/snd/timer"]);
        assert_eq!((nodes[0].major(), nodes[0].minor()), (1, 3));
        assert_eq!(nodes[0].typ(), LinuxDeviceType::C);
        let rules = linux
            .resources()
            .clone()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        let last = &rules[rules.len() - 3];
        assert!(last.allow());
        assert_eq!((last.major(), last.minor()), (Some(1), Some(3)));
        assert_eq!(last.access().as_deref(), Some("rw"));
        assert_eq!(rules.last().unwrap().access().as_deref(), Some("rwm"));
    }

    #[test]
    fn bad_devices_are_refused() {
        let bad = [
            Device {
                container_path: "/dev/x".into(),
                host_path: "/dev/null".into(),
                permissions: "rwx".into(),
            },
            Device {
                container_path: "/dev/x".into(),
                host_path: "/missing".into(),
                permissions: "r".into(),
            },
            Device {
                container_path: "/dev/x".into(),
                host_path: "/etc/passwd".into(),
                permissions: "r".into(),
            },
            Device {
                container_path: "x".into(),
                host_path: "/dev/null".into(),
                permissions: "r".into(),
            },
        ];
        for d in bad {
            let mut f = Fixture::new();
            f.config.devices = vec![d.clone()];
            assert_eq!(
                f.spec().unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{d:?}"
            );
        }
    }

    #[test]
    fn privileged_gets_all_host_devices_and_allow_all() {
        let mut f = Fixture::new().privileged_pod();
        f.security().privileged = true;
        let linux = linux_of(&f);
        let rules = linux
            .resources()
            .clone()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert_eq!(rules.len(), 1);
        assert!(rules[0].allow());
        assert_eq!(rules[0].typ(), Some(LinuxDeviceType::A));
        let paths: Vec<_> = linux
            .devices()
            .clone()
            .unwrap()
            .iter()
            .map(|n| n.path().clone())
            .collect();
        assert!(paths.contains(&PathBuf::from("/dev/null")));
        assert!(paths.contains(&PathBuf::from("/dev/snd/timer")));
    }

    #[test]
    fn host_devices_stat_the_real_dev() {
        let null = HostDevices.devices(Path::new("/dev/null")).unwrap();
        assert_eq!(null.len(), 1);
        assert_eq!(
            (null[0].kind, null[0].major, null[0].minor),
            (LinuxDeviceType::C, 1, 3)
        );
        assert!(
            HostDevices
                .devices(Path::new("/etc/hostname"))
                .unwrap()
                .is_empty()
        );
        let all = HostDevices.devices(Path::new("/dev")).unwrap();
        assert!(all.iter().any(|d| d.relative == Path::new("zero")));
        assert!(!all.iter().any(|d| d.relative.starts_with("pts")));
    }
}
