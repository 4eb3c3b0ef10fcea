//! Applies an NRI plugin's `ContainerAdjustment` to the container's OCI spec (as JSON,
//! whose field names the runtime spec fixes). Each field an adjustment sets is owned by
//! the plugin that set it: another plugin setting it too is a conflict, which fails the
//! create, as in NRI's own adaptation. A key prefixed with `-` removes what the key
//! names (an annotation, a mount's destination, an env name); OCI hooks accumulate.
//! What crust can't apply (another cgroups path, namespaces, seccomp, scheduler, RDT,
//! net devices, memory policy, I/O priority, block I/O and RDT classes) is refused by name, never
//! silently dropped. CDI devices a plugin asks for are returned for the CDI injection
//! that follows.

use std::collections::HashMap;

use crust_proto::nri as api;
use serde_json::{Map, Value, json};

/// Who set which field of the container, `field -> plugin`.
#[derive(Debug, Default)]
pub struct Owners {
    fields: HashMap<String, String>,
}

impl Owners {
    /// Claims `field` for `plugin`; a field another plugin set is a conflict.
    fn claim(&mut self, field: String, plugin: &str) -> Result<(), String> {
        match self.fields.get(&field) {
            Some(owner) if owner != plugin => Err(format!(
                "plugins {owner:?} and {plugin:?} both tried to set {field}"
            )),
            _ => {
                self.fields.insert(field, plugin.to_owned());
                Ok(())
            }
        }
    }
}

/// Adds `adj` to `merged`, the adjustments of all plugins so far, as validators see
/// them: maps and lists accumulate, a later plugin's single values win.
pub fn merge(merged: &mut api::ContainerAdjustment, adj: &api::ContainerAdjustment) {
    merged.annotations.extend(adj.annotations.clone());
    merged.mounts.extend(adj.mounts.iter().cloned());
    merged.env.extend(adj.env.iter().cloned());
    merged.rlimits.extend(adj.rlimits.iter().cloned());
    merged.cdi_devices.extend(adj.cdi_devices.iter().cloned());
    if !adj.args.is_empty() {
        merged.args = adj.args.clone();
    }
    if let Some(h) = &adj.hooks {
        let m = merged.hooks.get_or_insert_with(Default::default);
        m.prestart.extend(h.prestart.iter().cloned());
        m.create_runtime.extend(h.create_runtime.iter().cloned());
        m.create_container
            .extend(h.create_container.iter().cloned());
        m.start_container.extend(h.start_container.iter().cloned());
        m.poststart.extend(h.poststart.iter().cloned());
        m.poststop.extend(h.poststop.iter().cloned());
    }
    if let Some(l) = &adj.linux {
        let m = merged.linux.get_or_insert_with(Default::default);
        m.devices.extend(l.devices.iter().cloned());
        m.sysctl.extend(l.sysctl.clone());
        if let Some(r) = &l.resources {
            m.resources = Some(crate::nri::convert::merge_resources(
                m.resources.take().unwrap_or_default(),
                r,
            ));
        }
        if l.oom_score_adj.is_some() {
            m.oom_score_adj = l.oom_score_adj;
        }
    }
}

/// The object at `key` of `v`, made an object if it is not one.
fn object<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    let entry = v
        .as_object_mut()
        .map(|o| o.entry(key.to_owned()).or_insert_with(|| json!({})));
    let Some(entry) = entry else {
        unreachable!("made an object above")
    };
    if !entry.is_object() {
        *entry = json!({});
    }
    match entry.as_object_mut() {
        Some(o) => o,
        None => unreachable!("made an object above"),
    }
}

/// The array at `key` of the object `o`, made an array if it is not one.
fn array<'a>(o: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let entry = o.entry(key.to_owned()).or_insert_with(|| json!([]));
    if !entry.is_array() {
        *entry = json!([]);
    }
    match entry.as_array_mut() {
        Some(a) => a,
        None => unreachable!("made an array above"),
    }
}

/// A key and whether it is a removal (`-key`).
fn removal(key: &str) -> (&str, bool) {
    match key.strip_prefix('-') {
        Some(k) => (k, true),
        None => (key, false),
    }
}

/// Applies `adj` from `plugin` to `spec`; answers the CDI devices it asks for.
pub fn apply(
    spec: &mut Value,
    adj: &api::ContainerAdjustment,
    plugin: &str,
    owners: &mut Owners,
) -> Result<Vec<String>, String> {
    for (key, value) in &adj.annotations {
        let (key, remove) = removal(key);
        owners.claim(format!("annotation {key:?}"), plugin)?;
        let annotations = object(spec, "annotations");
        if remove {
            annotations.remove(key);
        } else {
            annotations.insert(key.to_owned(), json!(value));
        }
    }
    for m in &adj.mounts {
        let (dest, remove) = removal(&m.destination);
        owners.claim(format!("mount {dest:?}"), plugin)?;
        let root = spec.as_object_mut().ok_or("the spec is not an object")?;
        let mounts = array(root, "mounts");
        mounts.retain(|x| x["destination"].as_str() != Some(dest));
        if !remove {
            if !dest.starts_with('/') {
                return Err(format!("mount destination {dest:?} is not absolute"));
            }
            mounts.push(json!({
                "destination": dest,
                "type": m.r#type,
                "source": m.source,
                "options": m.options,
            }));
        }
    }
    for kv in &adj.env {
        let (name, remove) = removal(&kv.key);
        if name.is_empty() || name.contains('=') {
            return Err(format!("env name {name:?} is not a name"));
        }
        owners.claim(format!("env {name:?}"), plugin)?;
        let env = array(object(spec, "process"), "env");
        let prefix = format!("{name}=");
        env.retain(|e| !e.as_str().is_some_and(|e| e.starts_with(&prefix)));
        if !remove {
            env.push(json!(format!("{name}={}", kv.value)));
        }
    }
    if let Some(h) = &adj.hooks {
        let hooks = object(spec, "hooks");
        for (key, list) in [
            ("prestart", &h.prestart),
            ("createRuntime", &h.create_runtime),
            ("createContainer", &h.create_container),
            ("startContainer", &h.start_container),
            ("poststart", &h.poststart),
            ("poststop", &h.poststop),
        ] {
            for hook in list {
                let mut j = json!({"path": hook.path});
                if !hook.args.is_empty() {
                    j["args"] = json!(hook.args);
                }
                if !hook.env.is_empty() {
                    j["env"] = json!(hook.env);
                }
                if let Some(t) = &hook.timeout {
                    j["timeout"] = json!(t.value);
                }
                array(hooks, key).push(j);
            }
        }
    }
    for r in &adj.rlimits {
        owners.claim(format!("rlimit {}", r.r#type), plugin)?;
        let rlimits = array(object(spec, "process"), "rlimits");
        rlimits.retain(|x| x["type"].as_str() != Some(r.r#type.as_str()));
        rlimits.push(json!({"type": r.r#type, "hard": r.hard, "soft": r.soft}));
    }
    if !adj.args.is_empty() {
        owners.claim("args".into(), plugin)?;
        let args: Vec<&String> = match adj.args.first() {
            Some(first) if first.is_empty() => adj.args[1..].iter().collect(),
            _ => adj.args.iter().collect(),
        };
        object(spec, "process").insert("args".into(), json!(args));
    }
    if let Some(l) = &adj.linux {
        linux(spec, l, plugin, owners)?;
    }
    Ok(adj.cdi_devices.iter().map(|d| d.name.clone()).collect())
}

fn linux(
    spec: &mut Value,
    l: &api::LinuxContainerAdjustment,
    plugin: &str,
    owners: &mut Owners,
) -> Result<(), String> {
    let unsupported = [
        ("cgroups_path", !l.cgroups_path.is_empty()),
        ("seccomp_policy", l.seccomp_policy.is_some()),
        ("namespaces", !l.namespaces.is_empty()),
        ("net_devices", !l.net_devices.is_empty()),
        ("scheduler", l.scheduler.is_some()),
        ("rdt", l.rdt.is_some()),
        ("memory_policy", l.memory_policy.is_some()),
        ("io_priority", l.io_priority.is_some()),
        (
            "resources.blockio_class",
            l.resources
                .as_ref()
                .is_some_and(|r| r.blockio_class.is_some()),
        ),
        (
            "resources.rdt_class",
            l.resources.as_ref().is_some_and(|r| r.rdt_class.is_some()),
        ),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(format!(
            "crust does not apply an adjustment of linux.{field}"
        ));
    }
    for d in &l.devices {
        let (path, remove) = removal(&d.path);
        owners.claim(format!("device {path:?}"), plugin)?;
        let devices = array(object(spec, "linux"), "devices");
        devices.retain(|x| x["path"].as_str() != Some(path));
        if remove {
            continue;
        }
        if !matches!(d.r#type.as_str(), "c" | "b" | "u" | "p") {
            return Err(format!(
                "device {path:?}: type {:?} is not c, b, u or p",
                d.r#type
            ));
        }
        let mut j = json!({"path": path, "type": d.r#type, "major": d.major, "minor": d.minor});
        if let Some(m) = &d.file_mode {
            j["fileMode"] = json!(m.value);
        }
        if let Some(u) = &d.uid {
            j["uid"] = json!(u.value);
        }
        if let Some(g) = &d.gid {
            j["gid"] = json!(g.value);
        }
        devices.push(j);
        // The device cgroup lets the container use it, as NRI's adaptation does.
        let rules = array(object(lx_value(spec), "resources"), "devices");
        rules.push(json!({"allow": true, "type": d.r#type, "major": d.major, "minor": d.minor, "access": "rwm"}));
    }
    if let Some(r) = &l.resources {
        resources(spec, r, plugin, owners)?;
    }
    if let Some(o) = &l.oom_score_adj {
        owners.claim("oom_score_adj".into(), plugin)?;
        object(spec, "process").insert("oomScoreAdj".into(), json!(o.value));
    }
    for (key, value) in &l.sysctl {
        let (key, remove) = removal(key);
        owners.claim(format!("sysctl {key:?}"), plugin)?;
        let sysctl = object(lx_value(spec), "sysctl");
        if remove {
            sysctl.remove(key);
        } else {
            sysctl.insert(key.to_owned(), json!(value));
        }
    }
    Ok(())
}

/// The spec's `linux` value, made an object.
fn lx_value(spec: &mut Value) -> &mut Value {
    object(spec, "linux");
    &mut spec["linux"]
}

fn resources(
    spec: &mut Value,
    r: &api::LinuxResources,
    plugin: &str,
    owners: &mut Owners,
) -> Result<(), String> {
    let res = &mut object(lx_value(spec), "resources").clone();
    let mut set = |group: &str, key: &str, value: Value| -> Result<(), String> {
        owners.claim(format!("{group}.{key}"), plugin)?;
        let g = res.entry(group.to_owned()).or_insert_with(|| json!({}));
        if !g.is_object() {
            *g = json!({});
        }
        g[key] = value;
        Ok(())
    };
    if let Some(m) = &r.memory {
        for (key, v) in [
            ("limit", m.limit.as_ref().map(|v| json!(v.value))),
            (
                "reservation",
                m.reservation.as_ref().map(|v| json!(v.value)),
            ),
            ("swap", m.swap.as_ref().map(|v| json!(v.value))),
            ("kernel", m.kernel.as_ref().map(|v| json!(v.value))),
            ("kernelTCP", m.kernel_tcp.as_ref().map(|v| json!(v.value))),
            ("swappiness", m.swappiness.as_ref().map(|v| json!(v.value))),
            (
                "disableOOMKiller",
                m.disable_oom_killer.as_ref().map(|v| json!(v.value)),
            ),
            (
                "useHierarchy",
                m.use_hierarchy.as_ref().map(|v| json!(v.value)),
            ),
        ] {
            if let Some(v) = v {
                set("memory", key, v)?;
            }
        }
    }
    if let Some(c) = &r.cpu {
        for (key, v) in [
            ("shares", c.shares.as_ref().map(|v| json!(v.value))),
            ("quota", c.quota.as_ref().map(|v| json!(v.value))),
            ("period", c.period.as_ref().map(|v| json!(v.value))),
            (
                "realtimeRuntime",
                c.realtime_runtime.as_ref().map(|v| json!(v.value)),
            ),
            (
                "realtimePeriod",
                c.realtime_period.as_ref().map(|v| json!(v.value)),
            ),
            ("cpus", (!c.cpus.is_empty()).then(|| json!(c.cpus))),
            ("mems", (!c.mems.is_empty()).then(|| json!(c.mems))),
        ] {
            if let Some(v) = v {
                set("cpu", key, v)?;
            }
        }
    }
    if let Some(p) = &r.pids {
        set("pids", "limit", json!(p.limit))?;
    }
    for (key, value) in &r.unified {
        set("unified", key, json!(value))?;
    }
    for h in &r.hugepage_limits {
        owners.claim(format!("hugepageLimits.{}", h.page_size), plugin)?;
        let limits = array(res, "hugepageLimits");
        limits.retain(|x| x["pageSize"].as_str() != Some(h.page_size.as_str()));
        limits.push(json!({"pageSize": h.page_size, "limit": h.limit}));
    }
    *object(lx_value(spec), "resources") = std::mem::take(res);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Value {
        json!({
            "process": {"args": ["sleep", "1"], "env": ["PATH=/bin", "A=old"]},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"resources": {"memory": {"limit": 100}}}
        })
    }

    #[test]
    fn env_mounts_annotations_and_memory() {
        let mut s = spec();
        let adj = api::ContainerAdjustment {
            env: vec![
                api::KeyValue {
                    key: "A".into(),
                    value: "new".into(),
                },
                api::KeyValue {
                    key: "B".into(),
                    value: "b".into(),
                },
                api::KeyValue {
                    key: "-PATH".into(),
                    value: String::new(),
                },
            ],
            mounts: vec![api::Mount {
                destination: "/data".into(),
                r#type: "bind".into(),
                source: "/srv".into(),
                options: vec!["rbind".into(), "ro".into()],
            }],
            annotations: [("x".to_owned(), "y".to_owned())].into(),
            linux: Some(api::LinuxContainerAdjustment {
                resources: Some(api::LinuxResources {
                    memory: Some(api::LinuxMemory {
                        limit: Some(api::OptionalInt64 { value: 64 << 20 }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        apply(&mut s, &adj, "10-a", &mut Owners::default()).unwrap();
        assert_eq!(s["process"]["env"], json!(["A=new", "B=b"]));
        assert_eq!(s["mounts"][1]["destination"], "/data");
        assert_eq!(s["annotations"]["x"], "y");
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 << 20);
        // The result is still an OCI spec.
        let mut full = serde_json::to_value(oci_spec::runtime::Spec::default()).unwrap();
        apply(&mut full, &adj, "10-a", &mut Owners::default()).unwrap();
        serde_json::from_value::<oci_spec::runtime::Spec>(full).unwrap();
    }

    #[test]
    fn two_plugins_setting_one_field_conflict() {
        let mut s = spec();
        let mut owners = Owners::default();
        let adj = api::ContainerAdjustment {
            env: vec![api::KeyValue {
                key: "A".into(),
                value: "1".into(),
            }],
            ..Default::default()
        };
        apply(&mut s, &adj, "00-a", &mut owners).unwrap();
        apply(&mut s, &adj, "00-a", &mut owners).unwrap();
        let err = apply(&mut s, &adj, "10-b", &mut owners).unwrap_err();
        assert!(
            err.contains("00-a") && err.contains("10-b") && err.contains("env"),
            "{err}"
        );
    }

    #[test]
    fn merged_adjustments_accumulate_and_later_values_win() {
        let one = api::ContainerAdjustment {
            env: vec![api::KeyValue {
                key: "A".into(),
                value: "1".into(),
            }],
            args: vec!["a".into()],
            ..Default::default()
        };
        let two = api::ContainerAdjustment {
            env: vec![api::KeyValue {
                key: "B".into(),
                value: "2".into(),
            }],
            args: vec!["b".into()],
            linux: Some(api::LinuxContainerAdjustment {
                oom_score_adj: Some(api::OptionalInt { value: 5 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut merged = api::ContainerAdjustment::default();
        merge(&mut merged, &one);
        merge(&mut merged, &two);
        assert_eq!(merged.env.len(), 2);
        assert_eq!(merged.args, ["b"]);
        assert_eq!(merged.linux.unwrap().oom_score_adj.unwrap().value, 5);
    }

    #[test]
    fn what_crust_does_not_apply_is_refused_by_name() {
        let adj = api::ContainerAdjustment {
            linux: Some(api::LinuxContainerAdjustment {
                cgroups_path: "/elsewhere".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = apply(&mut spec(), &adj, "00-a", &mut Owners::default()).unwrap_err();
        assert!(err.contains("cgroups_path"), "{err}");
    }

    #[test]
    fn args_hooks_rlimits_and_devices() {
        let mut s = spec();
        let adj = api::ContainerAdjustment {
            args: vec![String::new(), "echo".into(), "hi".into()],
            hooks: Some(api::Hooks {
                prestart: vec![api::Hook {
                    path: "/bin/true".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            rlimits: vec![api::PosixRlimit {
                r#type: "RLIMIT_NOFILE".into(),
                hard: 10,
                soft: 5,
            }],
            linux: Some(api::LinuxContainerAdjustment {
                devices: vec![api::LinuxDevice {
                    path: "/dev/x".into(),
                    r#type: "c".into(),
                    major: 1,
                    minor: 3,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            cdi_devices: vec![api::CdiDevice {
                name: "v/c=d".into(),
            }],
            ..Default::default()
        };
        let cdi = apply(&mut s, &adj, "00-a", &mut Owners::default()).unwrap();
        assert_eq!(cdi, ["v/c=d"]);
        assert_eq!(s["process"]["args"], json!(["echo", "hi"]));
        assert_eq!(s["hooks"]["prestart"][0]["path"], "/bin/true");
        assert_eq!(s["process"]["rlimits"][0]["soft"], 5);
        assert_eq!(s["linux"]["devices"][0]["path"], "/dev/x");
        assert_eq!(s["linux"]["resources"]["devices"][0]["allow"], true);
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 100);
    }
}
