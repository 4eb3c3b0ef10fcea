//! Checks of the fields of a request that decide where crust writes or what it mounts,
//! made before anything exists: a bad field gets InvalidArgument naming it and changes
//! nothing. Pure functions; the caller names the object in the message.

use std::path::{Component, Path};

use crust_proto::cri::{ContainerConfig, IdMapping};

use crate::pod::userns::{Mapping, PodUserns};

/// A refused field: which one and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The field, as CRI names it (`mounts[2].host_path`).
    pub field: String,
    /// Why it is refused.
    pub reason: String,
}

/// A `Result` of this module.
pub type Result<T = ()> = std::result::Result<T, Invalid>;

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The longest hostname the kernel takes (`HOST_NAME_MAX`).
const HOSTNAME_MAX: usize = 64;

/// A pod's hostname: empty (the host's) or an RFC 1123 host name of at most 64 bytes,
/// as `sethostname` and resolvers take it, absolute (with a final dot) or not: kubelet
/// sends `<pod>.<subdomain>.<namespace>.svc.` for a pod with `setHostnameAsFQDN` on a
/// node without a cluster domain, and the kernel takes it.
pub fn hostname(name: &str) -> Result {
    if name.is_empty() {
        return Ok(());
    }
    let refuse = |reason: String| Err(invalid("hostname", format!("{name:?}: {reason}")));
    if name.len() > HOSTNAME_MAX {
        return refuse(format!("longer than {HOSTNAME_MAX} bytes"));
    }
    for label in name.strip_suffix('.').unwrap_or(name).split('.') {
        if label.is_empty() || label.len() > 63 {
            return refuse("each dot-separated label must have 1 to 63 characters".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return refuse("a label must not start or end with '-'".into());
        }
        if let Some(c) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return refuse(format!("{c:?} is not a letter, a digit or '-'"));
        }
    }
    Ok(())
}

/// A pod's log directory: empty (no logs) or an absolute path without `..`.
pub fn log_directory(dir: &str) -> Result {
    if dir.is_empty() {
        return Ok(());
    }
    let path = Path::new(dir);
    if !path.is_absolute() {
        return Err(invalid(
            "log_directory",
            format!("{dir:?} is not an absolute path"),
        ));
    }
    no_parent("log_directory", dir)
}

/// A container's log path: empty (no log) or a path relative to the pod's log directory
/// that stays inside it.
pub fn log_path(path: &str) -> Result {
    if path.is_empty() {
        return Ok(());
    }
    if Path::new(path).is_absolute() {
        return Err(invalid(
            "log_path",
            format!("{path:?} must be relative to the pod's log directory"),
        ));
    }
    no_parent("log_path", path)?;
    if !Path::new(path)
        .components()
        .any(|c| matches!(c, Component::Normal(_)))
    {
        return Err(invalid("log_path", format!("{path:?} names no file")));
    }
    Ok(())
}

fn no_parent(field: &str, path: &str) -> Result {
    if Path::new(path)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err(invalid(field, format!("{path:?} has a '..' component")));
    }
    Ok(())
}

/// Where a missing mount source can't be created: the kernel's own file systems.
const PSEUDO_ROOTS: [&str; 2] = ["/proc", "/sys"];

/// The mounts of a container in a pod whose user namespace is `pod` (`None`: the
/// host's). A host path is absolute; id mappings on a mount are allowed only as the
/// pod's own (kubelet puts them on every mount of a `hostUsers: false` pod, and crust
/// idmaps every volume of such a pod with them). `exists` tells whether a host path
/// exists: a missing one under /proc or /sys can't be created.
pub fn mounts(
    config: &ContainerConfig,
    pod: Option<&PodUserns>,
    exists: impl Fn(&Path) -> bool,
) -> Result {
    for (n, m) in config.mounts.iter().enumerate() {
        let field = |name: &str| format!("mounts[{n}].{name}");
        let on = &m.container_path;
        if !Path::new(on).is_absolute() {
            return Err(invalid(
                field("container_path"),
                format!("{on:?} is not absolute"),
            ));
        }
        let image = m.image.as_ref().is_some_and(|i| !i.image.is_empty());
        if image {
            // An image volume: crust mounts the image; it is read-only (KEP-4639).
            if !m.host_path.is_empty() {
                return Err(invalid(
                    field("host_path"),
                    format!("mount on {on:?} names both a host path and an image"),
                ));
            }
            if !m.readonly {
                return Err(invalid(
                    field("readonly"),
                    format!("image volume on {on:?} must be read-only"),
                ));
            }
            let sub = Path::new(&m.image_sub_path);
            if sub.is_absolute()
                || sub
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(invalid(
                    field("image_sub_path"),
                    format!(
                        "{:?} must be a relative path inside the image, without ..",
                        m.image_sub_path
                    ),
                ));
            }
        } else if m.host_path.is_empty() {
            return Err(invalid(
                field("host_path"),
                format!("mount on {on:?} has no host path"),
            ));
        } else {
            let host = Path::new(&m.host_path);
            if !host.is_absolute() {
                return Err(invalid(
                    field("host_path"),
                    format!("mount on {on:?}: {:?} is not absolute", m.host_path),
                ));
            }
            if let Some(root) = PSEUDO_ROOTS.iter().find(|r| host.starts_with(r))
                && !exists(host)
            {
                return Err(invalid(
                    field("host_path"),
                    format!(
                        "mount on {on:?}: {:?} does not exist, and nothing can be created under {root}",
                        m.host_path
                    ),
                ));
            }
        }
        mappings(
            &field("uid_mappings"),
            on,
            &m.uid_mappings,
            pod.map(|p| p.uid),
        )?;
        mappings(
            &field("gid_mappings"),
            on,
            &m.gid_mappings,
            pod.map(|p| p.gid),
        )?;
    }
    Ok(())
}

fn mappings(field: &str, on: &str, given: &[IdMapping], pod: Option<Mapping>) -> Result {
    if given.is_empty() {
        return Ok(());
    }
    let Some(pod) = pod else {
        return Err(invalid(
            field,
            format!("mount on {on:?}: id mappings need a pod with its own user namespace"),
        ));
    };
    let same = matches!(given, [m] if m.container_id == pod.container
        && m.host_id == pod.host
        && m.length == pod.length);
    if !same {
        let shown: Vec<String> = given
            .iter()
            .map(|m| format!("{}:{}:{}", m.container_id, m.host_id, m.length))
            .collect();
        return Err(invalid(
            field,
            format!(
                "mount on {on:?}: mappings {} differ from the pod's user namespace ({})",
                shown.join(","),
                pod.arg()
            ),
        ));
    }
    Ok(())
}

/// The command of an exec: a program to run first.
pub fn exec_command(cmd: &[String]) -> Result {
    match cmd.first() {
        None => Err(invalid("cmd", "no command given")),
        Some(program) if program.is_empty() => {
            Err(invalid("cmd", "the first argument (the program) is empty"))
        }
        Some(program) if program.contains('\0') => Err(invalid(
            "cmd",
            "the first argument (the program) holds a NUL byte",
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use crust_proto::cri::Mount;

    use super::*;

    fn map(host: u32) -> Mapping {
        Mapping {
            container: 0,
            host,
            length: 65536,
        }
    }

    fn cri_map(host: u32) -> Vec<IdMapping> {
        vec![IdMapping {
            container_id: 0,
            host_id: host,
            length: 65536,
        }]
    }

    fn with_mounts(mounts: Vec<Mount>) -> ContainerConfig {
        ContainerConfig {
            mounts,
            ..Default::default()
        }
    }

    fn bind(host: &str, on: &str) -> Mount {
        Mount {
            host_path: host.into(),
            container_path: on.into(),
            ..Default::default()
        }
    }

    #[test]
    fn hostnames() {
        for good in [
            "",
            "pod",
            "my-pod.example.com",
            "pod.sub.ns.svc.",
            "a1",
            &"a".repeat(63),
        ] {
            assert_eq!(hostname(good), Ok(()), "{good}");
        }
        let long = format!("{}.{}", "a".repeat(40), "b".repeat(40));
        for bad in [
            long.as_str(),
            "-pod",
            "pod-",
            "po_d",
            "pod..x",
            ".pod",
            ".",
            "pod..",
            "pod/x",
            "pod\0x",
            "pöd",
            &"a".repeat(64 + 1),
        ] {
            let err = hostname(bad).unwrap_err();
            assert_eq!(err.field, "hostname", "{bad}");
        }
    }

    #[test]
    fn log_paths() {
        for good in ["", "c/0.log", "c_0.log", "./c.log"] {
            assert_eq!(log_path(good), Ok(()), "{good}");
        }
        for bad in ["../x.log", "c/../../etc/x", "/etc/x.log", ".", "./"] {
            assert_eq!(log_path(bad).unwrap_err().field, "log_path", "{bad}");
        }
        for good in ["", "/var/log/pods/ns_p_uid"] {
            assert_eq!(log_directory(good), Ok(()), "{good}");
        }
        for bad in ["var/log", "/var/log/../../etc", "logs"] {
            assert_eq!(
                log_directory(bad).unwrap_err().field,
                "log_directory",
                "{bad}"
            );
        }
    }

    #[test]
    fn image_volumes() {
        let volume = |readonly: bool, sub: &str| Mount {
            container_path: "/mnt/v".into(),
            readonly,
            image: Some(crust_proto::cri::ImageSpec {
                image: "sha256:abc".into(),
                ..Default::default()
            }),
            image_sub_path: sub.into(),
            ..Default::default()
        };
        let yes = |_: &Path| true;
        for good in ["", "etc", "usr/share", "./etc"] {
            let c = with_mounts(vec![volume(true, good)]);
            assert_eq!(mounts(&c, None, yes), Ok(()), "{good}");
        }
        let c = with_mounts(vec![volume(false, "")]);
        assert_eq!(
            mounts(&c, None, yes).unwrap_err().field,
            "mounts[0].readonly"
        );
        for bad in ["/etc", "../x", "etc/../../x"] {
            let c = with_mounts(vec![volume(true, bad)]);
            assert_eq!(
                mounts(&c, None, yes).unwrap_err().field,
                "mounts[0].image_sub_path",
                "{bad}"
            );
        }
        let mut both = volume(true, "");
        both.host_path = "/srv".into();
        let c = with_mounts(vec![both]);
        assert_eq!(
            mounts(&c, None, yes).unwrap_err().field,
            "mounts[0].host_path"
        );
    }

    #[test]
    fn mount_paths() {
        let yes = |_: &Path| true;
        let no = |_: &Path| false;
        let ok = with_mounts(vec![bind("/srv", "/data"), bind("/proc/x", "/x")]);
        assert_eq!(mounts(&ok, None, yes), Ok(()));
        let relative = with_mounts(vec![bind("/srv", "/a"), bind("srv/data", "/data")]);
        let err = mounts(&relative, None, yes).unwrap_err();
        assert_eq!(err.field, "mounts[1].host_path");
        assert!(err.reason.contains("\"srv/data\" is not absolute"), "{err}");
        let err = mounts(&with_mounts(vec![bind("/srv", "data")]), None, yes).unwrap_err();
        assert_eq!(err.field, "mounts[0].container_path");
        let err = mounts(&with_mounts(vec![bind("", "/data")]), None, yes).unwrap_err();
        assert_eq!(err.field, "mounts[0].host_path");
        // A missing source is created, except under /proc and /sys.
        assert_eq!(
            mounts(&with_mounts(vec![bind("/srv/new", "/d")]), None, no),
            Ok(())
        );
        for pseudo in ["/proc/nothing", "/sys/nothing/here"] {
            let err = mounts(&with_mounts(vec![bind(pseudo, "/d")]), None, no).unwrap_err();
            assert!(err.reason.contains(pseudo), "{err}");
            assert!(err.reason.contains("does not exist"), "{err}");
        }
    }

    #[test]
    fn mount_mappings_must_be_the_pods() {
        let yes = |_: &Path| true;
        let pod = PodUserns {
            uid: map(100_000),
            gid: map(100_000),
        };
        let mut m = bind("/srv", "/data");
        m.uid_mappings = cri_map(100_000);
        m.gid_mappings = cri_map(100_000);
        // kubelet's shape: the pod's mappings on each mount.
        let config = with_mounts(vec![m.clone(), bind("/etc/x", "/etc/hosts")]);
        assert_eq!(mounts(&config, Some(&pod), yes), Ok(()));
        // Without a pod user namespace.
        let err = mounts(&config, None, yes).unwrap_err();
        assert_eq!(err.field, "mounts[0].uid_mappings");
        assert!(err.reason.contains("\"/data\""), "{err}");
        // Other mappings than the pod's.
        let mut other = m.clone();
        other.gid_mappings = cri_map(200_000);
        let err = mounts(&with_mounts(vec![other]), Some(&pod), yes).unwrap_err();
        assert_eq!(err.field, "mounts[0].gid_mappings");
        assert!(err.reason.contains("0:200000:65536"), "{err}");
        assert!(err.reason.contains("0:100000:65536"), "{err}");
        let mut two = m;
        two.uid_mappings.push(IdMapping {
            container_id: 65536,
            host_id: 1,
            length: 1,
        });
        assert!(mounts(&with_mounts(vec![two]), Some(&pod), yes).is_err());
    }

    #[test]
    fn exec_commands() {
        assert_eq!(exec_command(&["ls".into()]), Ok(()));
        assert!(exec_command(&[]).is_err());
        assert!(exec_command(&["".into(), "x".into()]).is_err());
        assert!(exec_command(&["l\0s".into()]).is_err());
    }
}
