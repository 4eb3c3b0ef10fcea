//! AppArmor and SELinux: the process's `apparmorProfile` and `selinuxLabel`.
//!
//! An unset or unconfined profile needs nothing. A Localhost AppArmor profile on a
//! kernel without AppArmor, or one the kernel has not loaded, is refused with a clear
//! error rather than ignored.
//! AppArmor's RuntimeDefault is a profile crust does not ship: it passes where the
//! kernel has no AppArmor (there is nothing to confine with, as containerd does) and is
//! refused where it has one. SELinux options on a kernel without SELinux give no
//! label, as in containerd and CRI-O (go-selinux's `InitLabels`): kubelet passes a
//! pod's `seLinuxOptions` on to every container whatever the node, and pods that set
//! one (the e2e suite's emptyDir specs among them) run on such nodes.

use crust_proto::cri::{SecurityProfile, security_profile::ProfileType};

use super::{ContainerSpecRequest, Error, Result};

/// The AppArmor profile the container asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppArmorChoice {
    /// No profile.
    Unconfined,
    /// The runtime's default profile.
    RuntimeDefault,
    /// A profile loaded on the node, by name.
    Localhost(String),
}

/// The container's AppArmor profile: its `apparmor` field, else the deprecated
/// `apparmor_profile` (`runtime/default`, `unconfined`, `localhost/<name>`).
pub(super) fn apparmor_choice(req: &ContainerSpecRequest) -> Result<AppArmorChoice> {
    let Some(sc) = req.security() else {
        return Ok(AppArmorChoice::Unconfined);
    };
    if sc.privileged {
        return Ok(AppArmorChoice::Unconfined);
    }
    let field = "security_context.apparmor";
    let localhost = |name: &str| {
        if name.is_empty() {
            Err(req.invalid(field, "a Localhost profile needs a name"))
        } else {
            Ok(AppArmorChoice::Localhost(name.to_string()))
        }
    };
    match &sc.apparmor {
        Some(SecurityProfile {
            profile_type,
            localhost_ref,
        }) => match ProfileType::try_from(*profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(AppArmorChoice::RuntimeDefault),
            Ok(ProfileType::Unconfined) => Ok(AppArmorChoice::Unconfined),
            Ok(ProfileType::Localhost) => localhost(
                localhost_ref
                    .strip_prefix("localhost/")
                    .unwrap_or(localhost_ref),
            ),
            Err(_) => Err(req.invalid(field, format!("unknown profile type {profile_type}"))),
        },
        #[allow(deprecated)] // still sent by older kubelets
        None => match sc.apparmor_profile.as_str() {
            "" | "unconfined" => Ok(AppArmorChoice::Unconfined),
            "runtime/default" => Ok(AppArmorChoice::RuntimeDefault),
            other => match other.strip_prefix("localhost/") {
                Some(name) => localhost(name),
                None => Err(req.invalid(field, format!("unknown profile {other:?}"))),
            },
        },
    }
}

/// The process's AppArmor profile.
pub(super) fn apparmor_profile(req: &ContainerSpecRequest) -> Result<Option<String>> {
    let field = "security_context.apparmor";
    match apparmor_choice(req)? {
        AppArmorChoice::Unconfined => Ok(None),
        AppArmorChoice::RuntimeDefault if !req.host.apparmor => Ok(None),
        AppArmorChoice::RuntimeDefault => Err(Error::Unsupported {
            id: req.id.to_string(),
            feature: "AppArmor's RuntimeDefault profile",
        }),
        AppArmorChoice::Localhost(name) if !req.host.apparmor => Err(req.invalid(
            field,
            format!("profile {name:?} asked for, but this kernel has no AppArmor"),
        )),
        AppArmorChoice::Localhost(name) if !profile_loaded(&name, APPARMOR_PROFILES) => Err(req
            .invalid(
                field,
                format!("profile {name:?} is not loaded on this node"),
            )),
        AppArmorChoice::Localhost(name) => Ok(Some(name)),
    }
}

/// The profiles the kernel has loaded, a line each: `name (mode)`.
const APPARMOR_PROFILES: &str = "/sys/kernel/security/apparmor/profiles";

/// Whether the AppArmor profile `name` is loaded, by the kernel's list at `list`
/// (as containerd checks before it creates the container, so that the create fails
/// naming the profile). A list that cannot be read proves nothing: the container's
/// creation decides then.
fn profile_loaded(name: &str, list: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(list) else {
        return true;
    };
    text.lines()
        .any(|l| l.rsplit_once(" (").map_or(l, |(n, _)| n) == name)
}

/// The process's SELinux label, from the container's options (the pod's when it has
/// none); unset parts take the usual container defaults.
pub(super) fn selinux_label(req: &ContainerSpecRequest) -> Result<Option<String>> {
    let options = req
        .security()
        .and_then(|s| s.selinux_options.as_ref())
        .or_else(|| {
            req.sandbox
                .linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref())
                .and_then(|s| s.selinux_options.as_ref())
        });
    let Some(o) = options.filter(|o| {
        !(o.user.is_empty() && o.role.is_empty() && o.r#type.is_empty() && o.level.is_empty())
    }) else {
        return Ok(None);
    };
    if req.privileged() {
        return Ok(None);
    }
    if !req.host.selinux {
        return Ok(None);
    }
    let or = |v: &str, default: &str| {
        if v.is_empty() {
            default.to_string()
        } else {
            v.to_string()
        }
    };
    Ok(Some(format!(
        "{}:{}:{}:{}",
        or(&o.user, "system_u"),
        or(&o.role, "system_r"),
        or(&o.r#type, "container_t"),
        or(&o.level, "s0"),
    )))
}

#[cfg(test)]
mod tests {
    use crust_proto::cri::SeLinuxOption;

    use super::super::ErrorKind;
    use super::super::testutil::Fixture;
    use super::*;

    fn apparmor(t: ProfileType, name: &str) -> Option<SecurityProfile> {
        Some(SecurityProfile {
            profile_type: t as i32,
            localhost_ref: name.into(),
        })
    }

    fn profile_of(f: &Fixture) -> Option<String> {
        f.spec()
            .unwrap()
            .process()
            .as_ref()
            .unwrap()
            .apparmor_profile()
            .clone()
    }

    #[test]
    fn apparmor_without_the_module() {
        let mut f = Fixture::new();
        assert_eq!(profile_of(&f), None);
        f.security().apparmor = apparmor(ProfileType::Unconfined, "");
        assert_eq!(profile_of(&f), None);
        f.security().apparmor = apparmor(ProfileType::RuntimeDefault, "");
        assert_eq!(profile_of(&f), None);
        f.security().apparmor = apparmor(ProfileType::Localhost, "deny-write");
        let err = f.spec().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("no AppArmor"), "{err}");
    }

    #[test]
    fn loaded_profiles_by_the_kernels_list() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("profiles");
        std::fs::write(
            &list,
            "crust-deny-write (enforce)\n/usr/bin/man (complain)\nwith space (enforce)\n",
        )
        .unwrap();
        let list = list.to_str().unwrap();
        for name in ["crust-deny-write", "/usr/bin/man", "with space"] {
            assert!(profile_loaded(name, list), "{name}");
        }
        for name in ["crust-deny", "enforce", "crust-deny-write (enforce)"] {
            assert!(!profile_loaded(name, list), "{name}");
        }
        let absent = dir.path().join("absent");
        assert!(
            profile_loaded("any", absent.to_str().unwrap()),
            "unreadable: no proof"
        );
    }

    #[test]
    fn apparmor_with_the_module() {
        let mut f = Fixture::new();
        f.host.apparmor = true;
        f.security().apparmor = apparmor(ProfileType::Localhost, "localhost/deny-write");
        assert_eq!(profile_of(&f), Some("deny-write".into()));
        f.security().apparmor = apparmor(ProfileType::RuntimeDefault, "");
        assert_eq!(f.spec().unwrap_err().kind(), ErrorKind::Unsupported);
        f.security().apparmor = None;
        #[allow(deprecated)]
        {
            f.security().apparmor_profile = "localhost/audit".into();
        }
        assert_eq!(profile_of(&f), Some("audit".into()));
    }

    #[test]
    fn selinux_only_with_the_module() {
        let mut f = Fixture::new();
        let label = |f: &Fixture| {
            f.spec()
                .unwrap()
                .process()
                .as_ref()
                .unwrap()
                .selinux_label()
                .clone()
        };
        f.security().selinux_options = Some(SeLinuxOption::default());
        assert_eq!(label(&f), None);
        f.security().selinux_options = Some(SeLinuxOption {
            level: "s0:c1,c2".into(),
            ..Default::default()
        });
        assert_eq!(label(&f), None, "no label where the kernel has no SELinux");
        f.host.selinux = true;
        assert_eq!(
            label(&f),
            Some("system_u:system_r:container_t:s0:c1,c2".into())
        );
    }
}
