//! crust's pods and containers as NRI sees them, and resources both ways between CRI and
//! NRI. A container's NRI view comes from its OCI spec (the bundle's config.json once
//! written), so plugins see what the container gets, their own adjustments included.

use crust_proto::cri::LinuxContainerResources;
use crust_proto::nri as api;
use serde_json::Value;

use crate::store::{Container, ContainerState, Sandbox};

/// The pod as NRI sees it.
pub fn pod(s: &Sandbox) -> api::PodSandbox {
    let m = s.metadata();
    let config = &m.config;
    api::PodSandbox {
        id: m.id.to_string(),
        name: m.pod_name.clone(),
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        labels: config.labels.clone().into_iter().collect(),
        annotations: config.annotations.clone().into_iter().collect(),
        runtime_handler: m.runtime_handler.clone(),
        linux: Some(api::LinuxPodSandbox {
            cgroup_parent: m.cgroup_parent.clone(),
            pod_overhead: config
                .linux
                .as_ref()
                .and_then(|l| l.overhead.as_ref())
                .map(resources_to_nri),
            pod_resources: config
                .linux
                .as_ref()
                .and_then(|l| l.resources.as_ref())
                .map(resources_to_nri),
            ..Default::default()
        }),
        pid: 0,
        ips: s.status().pod_ips.clone(),
    }
}

/// What NRI knows of a container before its spec: id, pod, name, labels and the
/// CRI's annotations.
pub fn container_base(
    id: &str,
    sandbox_id: &str,
    config: &crust_proto::cri::ContainerConfig,
) -> api::Container {
    api::Container {
        id: id.to_owned(),
        pod_sandbox_id: sandbox_id.to_owned(),
        name: config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        labels: config.labels.clone().into_iter().collect(),
        annotations: config.annotations.clone().into_iter().collect(),
        ..Default::default()
    }
}

/// A stored container as NRI sees it: its record and its bundle's spec.
pub fn container(c: &Container) -> api::Container {
    let m = c.metadata();
    let base = container_base(m.id.as_str(), m.sandbox_id.as_str(), &m.config);
    let spec = std::fs::read(m.bundle_dir.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .unwrap_or(Value::Null);
    let mut out = container_from_spec(&base, &spec);
    let s = c.status();
    out.state = match s.state {
        ContainerState::Created => api::ContainerState::ContainerCreated,
        ContainerState::Running => api::ContainerState::ContainerRunning,
        ContainerState::Exited => api::ContainerState::ContainerStopped,
        ContainerState::Unknown => api::ContainerState::ContainerUnknown,
    } as i32;
    out.pid = s.pid.unwrap_or_default();
    out.created_at = m.created_at;
    out.started_at = s.started_at.unwrap_or_default();
    out.finished_at = s.finished_at.unwrap_or_default();
    out.exit_code = s.exit_code;
    out.status_reason = s.reason.clone();
    out.status_message = s.message.clone();
    if let Some(r) = &s.resources
        && let Some(linux) = out.linux.as_mut()
    {
        linux.resources = Some(merge_resources(
            linux.resources.take().unwrap_or_default(),
            &resources_to_nri(r),
        ));
    }
    out
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn opt_i64(v: &Value) -> Option<api::OptionalInt64> {
    v.as_i64().map(|value| api::OptionalInt64 { value })
}

fn opt_u64(v: &Value) -> Option<api::OptionalUInt64> {
    v.as_u64().map(|value| api::OptionalUInt64 { value })
}

fn hooks(v: &Value) -> Vec<api::Hook> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|h| api::Hook {
                    path: h["path"].as_str().unwrap_or_default().to_owned(),
                    args: strings(&h["args"]),
                    env: strings(&h["env"]),
                    timeout: h["timeout"]
                        .as_i64()
                        .map(|value| api::OptionalInt { value }),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The container as `base` with what its OCI spec (JSON) says: args, env, mounts,
/// hooks, rlimits, annotations and the Linux part.
pub fn container_from_spec(base: &api::Container, spec: &Value) -> api::Container {
    let mut c = base.clone();
    if spec.is_null() {
        return c;
    }
    let process = &spec["process"];
    c.args = strings(&process["args"]);
    c.env = strings(&process["env"]);
    if let Some(a) = spec["annotations"].as_object() {
        for (k, v) in a {
            if let Some(v) = v.as_str() {
                c.annotations.insert(k.clone(), v.to_owned());
            }
        }
    }
    c.mounts = spec["mounts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| api::Mount {
                    destination: m["destination"].as_str().unwrap_or_default().to_owned(),
                    r#type: m["type"].as_str().unwrap_or_default().to_owned(),
                    source: m["source"].as_str().unwrap_or_default().to_owned(),
                    options: strings(&m["options"]),
                })
                .collect()
        })
        .unwrap_or_default();
    let h = &spec["hooks"];
    if h.is_object() {
        c.hooks = Some(api::Hooks {
            prestart: hooks(&h["prestart"]),
            create_runtime: hooks(&h["createRuntime"]),
            create_container: hooks(&h["createContainer"]),
            start_container: hooks(&h["startContainer"]),
            poststart: hooks(&h["poststart"]),
            poststop: hooks(&h["poststop"]),
        });
    }
    c.rlimits = process["rlimits"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| api::PosixRlimit {
                    r#type: r["type"].as_str().unwrap_or_default().to_owned(),
                    hard: r["hard"].as_u64().unwrap_or_default(),
                    soft: r["soft"].as_u64().unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    let user = &process["user"];
    c.user = Some(api::User {
        uid: user["uid"].as_u64().unwrap_or_default() as u32,
        gid: user["gid"].as_u64().unwrap_or_default() as u32,
        additional_gids: user["additionalGids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| g.as_u64())
                    .map(|g| g as u32)
                    .collect()
            })
            .unwrap_or_default(),
    });
    let linux = &spec["linux"];
    c.linux = Some(api::LinuxContainer {
        namespaces: linux["namespaces"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| api::LinuxNamespace {
                        r#type: n["type"].as_str().unwrap_or_default().to_owned(),
                        path: n["path"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        devices: linux["devices"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| api::LinuxDevice {
                        path: d["path"].as_str().unwrap_or_default().to_owned(),
                        r#type: d["type"].as_str().unwrap_or_default().to_owned(),
                        major: d["major"].as_i64().unwrap_or_default(),
                        minor: d["minor"].as_i64().unwrap_or_default(),
                        file_mode: d["fileMode"].as_u64().map(|value| api::OptionalFileMode {
                            value: value as u32,
                        }),
                        uid: d["uid"].as_u64().map(|value| api::OptionalUInt32 {
                            value: value as u32,
                        }),
                        gid: d["gid"].as_u64().map(|value| api::OptionalUInt32 {
                            value: value as u32,
                        }),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        resources: Some(resources_from_spec(&linux["resources"])),
        oom_score_adj: process["oomScoreAdj"]
            .as_i64()
            .map(|value| api::OptionalInt { value }),
        cgroups_path: linux["cgroupsPath"].as_str().unwrap_or_default().to_owned(),
        sysctl: linux["sysctl"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default(),
        ..Default::default()
    });
    c
}

/// The `linux.resources` of an OCI spec (JSON) as NRI's.
pub fn resources_from_spec(r: &Value) -> api::LinuxResources {
    let (m, cpu) = (&r["memory"], &r["cpu"]);
    api::LinuxResources {
        memory: m.is_object().then(|| api::LinuxMemory {
            limit: opt_i64(&m["limit"]),
            reservation: opt_i64(&m["reservation"]),
            swap: opt_i64(&m["swap"]),
            kernel: opt_i64(&m["kernel"]),
            kernel_tcp: opt_i64(&m["kernelTCP"]),
            swappiness: opt_u64(&m["swappiness"]),
            disable_oom_killer: m["disableOOMKiller"]
                .as_bool()
                .map(|value| api::OptionalBool { value }),
            use_hierarchy: m["useHierarchy"]
                .as_bool()
                .map(|value| api::OptionalBool { value }),
        }),
        cpu: cpu.is_object().then(|| api::LinuxCpu {
            shares: opt_u64(&cpu["shares"]),
            quota: opt_i64(&cpu["quota"]),
            period: opt_u64(&cpu["period"]),
            realtime_runtime: opt_i64(&cpu["realtimeRuntime"]),
            realtime_period: opt_u64(&cpu["realtimePeriod"]),
            cpus: cpu["cpus"].as_str().unwrap_or_default().to_owned(),
            mems: cpu["mems"].as_str().unwrap_or_default().to_owned(),
        }),
        hugepage_limits: r["hugepageLimits"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|h| api::HugepageLimit {
                        page_size: h["pageSize"].as_str().unwrap_or_default().to_owned(),
                        limit: h["limit"].as_u64().unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        unified: r["unified"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default(),
        pids: r["pids"]["limit"]
            .as_i64()
            .map(|limit| api::LinuxPids { limit }),
        ..Default::default()
    }
}

/// CRI's container resources as NRI's.
pub fn resources_to_nri(r: &LinuxContainerResources) -> api::LinuxResources {
    let nonzero_i = |v: i64| (v != 0).then_some(api::OptionalInt64 { value: v });
    let nonzero_u = |v: i64| (v > 0).then_some(api::OptionalUInt64 { value: v as u64 });
    api::LinuxResources {
        memory: Some(api::LinuxMemory {
            limit: nonzero_i(r.memory_limit_in_bytes),
            swap: nonzero_i(r.memory_swap_limit_in_bytes),
            ..Default::default()
        }),
        cpu: Some(api::LinuxCpu {
            shares: nonzero_u(r.cpu_shares),
            quota: nonzero_i(r.cpu_quota),
            period: nonzero_u(r.cpu_period),
            cpus: r.cpuset_cpus.clone(),
            mems: r.cpuset_mems.clone(),
            ..Default::default()
        }),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|h| api::HugepageLimit {
                page_size: h.page_size.clone(),
                limit: h.limit,
            })
            .collect(),
        unified: r.unified.clone().into_iter().collect(),
        ..Default::default()
    }
}

/// NRI's resources over CRI's `base`: what NRI sets replaces `base`'s.
pub fn resources_to_cri(
    r: &api::LinuxResources,
    mut base: LinuxContainerResources,
) -> LinuxContainerResources {
    if let Some(m) = &r.memory {
        if let Some(v) = &m.limit {
            base.memory_limit_in_bytes = v.value;
        }
        if let Some(v) = &m.swap {
            base.memory_swap_limit_in_bytes = v.value;
        }
    }
    if let Some(c) = &r.cpu {
        if let Some(v) = &c.shares {
            base.cpu_shares = v.value as i64;
        }
        if let Some(v) = &c.quota {
            base.cpu_quota = v.value;
        }
        if let Some(v) = &c.period {
            base.cpu_period = v.value as i64;
        }
        if !c.cpus.is_empty() {
            base.cpuset_cpus = c.cpus.clone();
        }
        if !c.mems.is_empty() {
            base.cpuset_mems = c.mems.clone();
        }
    }
    for h in &r.hugepage_limits {
        match base
            .hugepage_limits
            .iter_mut()
            .find(|b| b.page_size == h.page_size)
        {
            Some(b) => b.limit = h.limit,
            None => base.hugepage_limits.push(crust_proto::cri::HugepageLimit {
                page_size: h.page_size.clone(),
                limit: h.limit,
            }),
        }
    }
    for (k, v) in &r.unified {
        base.unified.insert(k.clone(), v.clone());
    }
    base
}

/// `base` with what `over` sets.
pub fn merge_resources(
    mut base: api::LinuxResources,
    over: &api::LinuxResources,
) -> api::LinuxResources {
    if let Some(o) = &over.memory {
        let m = base.memory.get_or_insert_with(Default::default);
        macro_rules! take {
            ($($f:ident),*) => {$(if o.$f.is_some() { m.$f = o.$f.clone(); })*};
        }
        take!(
            limit,
            reservation,
            swap,
            kernel,
            kernel_tcp,
            swappiness,
            disable_oom_killer,
            use_hierarchy
        );
    }
    if let Some(o) = &over.cpu {
        let c = base.cpu.get_or_insert_with(Default::default);
        macro_rules! take {
            ($($f:ident),*) => {$(if o.$f.is_some() { c.$f = o.$f.clone(); })*};
        }
        take!(shares, quota, period, realtime_runtime, realtime_period);
        if !o.cpus.is_empty() {
            c.cpus = o.cpus.clone();
        }
        if !o.mems.is_empty() {
            c.mems = o.mems.clone();
        }
    }
    for h in &over.hugepage_limits {
        match base
            .hugepage_limits
            .iter_mut()
            .find(|b| b.page_size == h.page_size)
        {
            Some(b) => b.limit = h.limit,
            None => base.hugepage_limits.push(h.clone()),
        }
    }
    for (k, v) in &over.unified {
        base.unified.insert(k.clone(), v.clone());
    }
    if over.pids.is_some() {
        base.pids = over.pids;
    }
    if over.blockio_class.is_some() {
        base.blockio_class = over.blockio_class.clone();
    }
    if over.rdt_class.is_some() {
        base.rdt_class = over.rdt_class.clone();
    }
    base
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_spec_s_process_mounts_and_resources() {
        let spec = json!({
            "process": {"args": ["sh", "-c", "top"], "env": ["A=1"], "oomScoreAdj": 5,
                        "user": {"uid": 1, "gid": 2, "additionalGids": [3]}},
            "mounts": [{"destination": "/data", "type": "bind", "source": "/srv", "options": ["rbind"]}],
            "annotations": {"a": "b"},
            "linux": {"cgroupsPath": "/kubepods/x", "resources": {"memory": {"limit": 1048576},
                      "cpu": {"shares": 2, "cpus": "0"}, "pids": {"limit": 10}}}
        });
        let base = api::Container {
            id: "c".into(),
            name: "n".into(),
            ..Default::default()
        };
        let c = container_from_spec(&base, &spec);
        assert_eq!(c.args, ["sh", "-c", "top"]);
        assert_eq!(c.env, ["A=1"]);
        assert_eq!(c.mounts[0].destination, "/data");
        assert_eq!(c.annotations["a"], "b");
        let l = c.linux.unwrap();
        assert_eq!(l.oom_score_adj.unwrap().value, 5);
        assert_eq!(l.cgroups_path, "/kubepods/x");
        let r = l.resources.unwrap();
        assert_eq!(r.memory.unwrap().limit.unwrap().value, 1 << 20);
        assert_eq!(r.cpu.unwrap().cpus, "0");
        assert_eq!(r.pids.unwrap().limit, 10);
        assert_eq!(c.user.unwrap().additional_gids, [3]);
    }

    #[test]
    fn cri_resources_round_trip_through_nri() {
        let cri = LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0-1".into(),
            ..Default::default()
        };
        let back = resources_to_cri(&resources_to_nri(&cri), LinuxContainerResources::default());
        assert_eq!(back, cri);
    }

    #[test]
    fn merging_takes_what_is_set() {
        let base = resources_to_nri(&LinuxContainerResources {
            cpu_shares: 2,
            memory_limit_in_bytes: 100,
            ..Default::default()
        });
        let over = api::LinuxResources {
            memory: Some(api::LinuxMemory {
                limit: Some(api::OptionalInt64 { value: 200 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = merge_resources(base, &over);
        assert_eq!(m.memory.unwrap().limit.unwrap().value, 200);
        assert_eq!(m.cpu.unwrap().shares.unwrap().value, 2);
    }
}
