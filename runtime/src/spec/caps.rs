//! Process capabilities: containerd's default set, the security context's add/drop
//! (with or without `CAP_`, `ALL` on either side) and privileged containers.
//!
//! Like containerd 1.6+ (CVE-2022-24769), the set goes into bounding, effective and
//! permitted only; inheritable and ambient stay empty.

use std::collections::HashSet;
use std::str::FromStr;

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use super::{ContainerSpecRequest, Result};

/// The capabilities of a non-privileged container when the security context changes
/// nothing: containerd's (and Docker's) default set.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Capabilities by their kernel number (`CAP_CHOWN` is 0).
const BY_NUMBER: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// The capabilities in a kernel bit mask (as in `CapPrm:` of `/proc/<pid>/status`).
pub(super) fn from_mask(mask: u64) -> Vec<Capability> {
    BY_NUMBER
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, cap)| *cap)
        .collect()
}

/// The process capabilities of the container.
pub(super) fn capabilities(req: &ContainerSpecRequest) -> Result<LinuxCapabilities> {
    let set: Capabilities = if req.privileged() {
        req.host.capabilities.iter().copied().collect()
    } else {
        let mut set: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
        if let Some(c) = req.security().and_then(|s| s.capabilities.as_ref()) {
            if c.add_capabilities.iter().any(|n| is_all(n)) {
                set = req.host.capabilities.iter().copied().collect();
            }
            if c.drop_capabilities.iter().any(|n| is_all(n)) {
                set.clear();
            }
            for name in c.add_capabilities.iter().filter(|n| !is_all(n)) {
                set.insert(parse(req, "capabilities.add_capabilities", name)?);
            }
            for name in c.drop_capabilities.iter().filter(|n| !is_all(n)) {
                set.remove(&parse(req, "capabilities.drop_capabilities", name)?);
            }
            if !c.add_ambient_capabilities.is_empty() {
                return Err(super::Error::Unsupported {
                    id: req.id.to_string(),
                    feature: "ambient capabilities",
                });
            }
        }
        set
    };
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()))
        .set_effective(Some(set.clone()))
        .set_permitted(Some(set))
        .set_inheritable(Some(HashSet::new()))
        .set_ambient(Some(HashSet::new()));
    Ok(caps)
}

fn is_all(name: &str) -> bool {
    name.eq_ignore_ascii_case("ALL")
}

/// A capability by its CRI name: `NET_ADMIN`, `CAP_NET_ADMIN`, any case.
fn parse(req: &ContainerSpecRequest, field: &'static str, name: &str) -> Result<Capability> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(bare)
        .map_err(|_| req.invalid(field, format!("unknown capability {name:?}")))
}

#[cfg(test)]
mod tests {
    use crust_proto::cri::Capability as CriCaps;

    use super::super::ErrorKind;
    use super::super::testutil::Fixture;
    use super::*;

    fn caps_of(f: &Fixture) -> LinuxCapabilities {
        f.spec()
            .unwrap()
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap()
    }

    fn with(add: &[&str], drop: &[&str]) -> Fixture {
        let mut f = Fixture::new();
        f.security().capabilities = Some(CriCaps {
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        });
        f
    }

    fn set(caps: &[Capability]) -> Capabilities {
        caps.iter().copied().collect()
    }

    #[test]
    fn default_set_in_bounding_effective_permitted_only() {
        let caps = caps_of(&Fixture::new());
        let default = set(&DEFAULT_CAPABILITIES);
        assert_eq!(caps.bounding().as_ref(), Some(&default));
        assert_eq!(caps.effective().as_ref(), Some(&default));
        assert_eq!(caps.permitted().as_ref(), Some(&default));
        assert_eq!(caps.inheritable().as_ref(), Some(&HashSet::new()));
        assert_eq!(caps.ambient().as_ref(), Some(&HashSet::new()));
    }

    #[test]
    fn add_and_drop_with_or_without_prefix() {
        let caps = caps_of(&with(
            &["NET_ADMIN", "cap_sys_time"],
            &["CAP_CHOWN", "kill"],
        ));
        let bounding = caps.bounding().clone().unwrap();
        assert!(bounding.contains(&Capability::NetAdmin));
        assert!(bounding.contains(&Capability::SysTime));
        assert!(!bounding.contains(&Capability::Chown));
        assert!(!bounding.contains(&Capability::Kill));
        assert!(bounding.contains(&Capability::Setuid));
    }

    #[test]
    fn drop_all_then_add_one() {
        let caps = caps_of(&with(&["CHOWN"], &["ALL"]));
        assert_eq!(caps.bounding().clone().unwrap(), set(&[Capability::Chown]));
    }

    #[test]
    fn add_all_then_drop_one() {
        let f = with(&["ALL"], &["CHOWN"]);
        let caps = caps_of(&f);
        let mut want = set(&f.host.capabilities);
        want.remove(&Capability::Chown);
        assert_eq!(caps.bounding().clone().unwrap(), want);
        assert!(!want.contains(&Capability::SysResource), "host lacks it");
    }

    #[test]
    fn unknown_capability_is_refused() {
        let err = with(&["NOT_A_CAP"], &[]).spec().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("NOT_A_CAP"), "{err}");
    }

    #[test]
    fn privileged_gets_all_of_crustds_capabilities() {
        let mut f = Fixture::new().privileged_pod();
        f.security().privileged = true;
        let caps = caps_of(&f);
        assert_eq!(caps.bounding().clone().unwrap(), set(&f.host.capabilities));
        assert_eq!(caps.effective().clone().unwrap(), set(&f.host.capabilities));
    }

    #[test]
    fn mask_maps_kernel_numbers() {
        assert_eq!(from_mask(0b1), vec![Capability::Chown]);
        assert_eq!(from_mask(1 << 21), vec![Capability::SysAdmin]);
        assert_eq!(from_mask(1 << 40), vec![Capability::CheckpointRestore]);
        // This host's root: everything but CAP_SYS_RESOURCE.
        let caps = from_mask(0x000001fffeffffff);
        assert_eq!(caps.len(), 40);
        assert!(!caps.contains(&Capability::SysResource));
    }
}
