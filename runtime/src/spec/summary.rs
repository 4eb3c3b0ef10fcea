//! The security settings a container runs with, for the verbose ContainerStatus
//! (`crictl inspect`): what was asked, resolved, next to what the spec applies.

use crust_proto::cri::ContainerConfig;
use oci_spec::runtime::Spec;
use serde_json::{Value, json};

use super::seccomp::seccomp_choice;

/// A JSON summary of the security settings in `spec`, the spec of the container
/// created from `config`.
pub fn security_summary(id: &str, config: &ContainerConfig, spec: &Spec) -> Value {
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let process = spec.process().as_ref();
    let linux = spec.linux().as_ref();
    let seccomp = linux.and_then(|l| l.seccomp().as_ref());
    let mut caps: Vec<String> = process
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
        .map(|b| b.iter().map(|c| format!("CAP_{c}")).collect())
        .unwrap_or_default();
    caps.sort();
    let user = process.map(|p| p.user());
    let namespaces: Vec<Value> = linux
        .and_then(|l| l.namespaces().as_ref())
        .map(|ns| {
            ns.iter()
                .map(|n| json!({ "type": n.typ(), "path": n.path() }))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "privileged": sc.is_some_and(|s| s.privileged),
        "seccomp": {
            "profile": seccomp_choice(id, config).map_or_else(|e| e.to_string(), |c| c.to_string()),
            "applied": seccomp.is_some(),
            "defaultAction": seccomp.map(|s| s.default_action().to_string()),
            "rules": seccomp.and_then(|s| s.syscalls().as_ref()).map_or(0, Vec::len),
        },
        "apparmorProfile": process.and_then(|p| p.apparmor_profile().clone()),
        "selinuxLabel": process.and_then(|p| p.selinux_label().clone()),
        "noNewPrivileges": process.and_then(|p| p.no_new_privileges()).unwrap_or(false),
        "readonlyRootfs": spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false),
        "user": user.map(|u| json!({
            "uid": u.uid(),
            "gid": u.gid(),
            "additionalGids": u.additional_gids(),
        })),
        "capabilities": caps,
        "maskedPaths": linux.and_then(|l| l.masked_paths().clone()),
        "readonlyPaths": linux.and_then(|l| l.readonly_paths().clone()),
        "namespaces": namespaces,
        "uidMappings": linux.and_then(|l| l.uid_mappings().clone()),
        "gidMappings": linux.and_then(|l| l.gid_mappings().clone()),
    })
}

#[cfg(test)]
mod tests {
    use crust_proto::cri::{SecurityProfile, security_profile::ProfileType};

    use super::super::testutil::Fixture;
    use super::*;

    #[test]
    fn summarises_the_applied_settings() {
        let mut f = Fixture::new();
        f.security().seccomp = Some(SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
        f.security().readonly_rootfs = true;
        let spec = f.spec().unwrap();
        let s = security_summary("c1", &f.config, &spec);
        assert_eq!(s["privileged"], false);
        assert_eq!(s["seccomp"]["profile"], "RuntimeDefault");
        assert_eq!(s["seccomp"]["applied"], true);
        assert_eq!(s["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(s["readonlyRootfs"], true);
        assert_eq!(s["noNewPrivileges"], false);
        assert_eq!(s["user"]["uid"], 0);
        assert!(
            s["capabilities"]
                .as_array()
                .unwrap()
                .contains(&json!("CAP_CHOWN"))
        );
        assert!(
            s["maskedPaths"]
                .as_array()
                .unwrap()
                .contains(&json!("/proc/kcore"))
        );
        assert_eq!(s["namespaces"][0]["type"], "mount");
    }
}
