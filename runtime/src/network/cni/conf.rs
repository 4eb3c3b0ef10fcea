//! The network config list crust runs, and the config each plugin gets on stdin: the
//! plugin's own object with the list's `name` and `cniVersion`, the `runtimeConfig`
//! entries its `capabilities` ask for, and `prevResult`, as libcni builds it.

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::NetworkConfig;
use crate::network::{NotReady, find_network};

/// The `cniVersion`s crust speaks. 0.3.x and 0.4.0 results carry an IP's `version`;
/// 1.x ones don't; CHECK exists from 0.4.0 on.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A network config list: a `.conflist`, or a single `.conf` wrapped as a one-plugin
/// list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkList {
    /// The network's name.
    pub name: String,
    /// The CNI version every plugin is called with.
    pub cni_version: String,
    /// Skip CHECK.
    #[serde(default)]
    pub disable_check: bool,
    /// Each plugin's config object, in chain order.
    pub plugins: Vec<Map<String, Value>>,
}

impl NetworkList {
    /// Loads the pod network's config: the file [`find_network`] picks, which also
    /// checks every plugin binary exists.
    pub fn load(cfg: &NetworkConfig) -> Result<NetworkList, NotReady> {
        let spec = find_network(cfg)?;
        let text = std::fs::read(&spec.file).map_err(|e| NotReady::BadConfig {
            file: spec.file.clone(),
            message: e.to_string(),
        })?;
        NetworkList::parse(&text, &spec.file)
    }

    /// Parses a `.conflist` or `.conf`; `file` only names the source in errors.
    pub fn parse(text: &[u8], file: &Path) -> Result<NetworkList, NotReady> {
        let bad = |message: String| NotReady::BadConfig {
            file: file.to_owned(),
            message,
        };
        let raw: Map<String, Value> =
            serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
        let name = match raw.get("name") {
            Some(Value::String(n)) if !n.is_empty() => n.clone(),
            _ => return Err(bad("no \"name\"".into())),
        };
        let cni_version = pick_version(&raw).map_err(bad)?;
        let (plugins, disable_check) = match raw.get("plugins") {
            Some(Value::Array(list)) => {
                let plugins = list
                    .iter()
                    .map(|p| p.as_object().cloned())
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("a plugin is not an object".into()))?;
                (plugins, truthy(raw.get("disableCheck")))
            }
            Some(_) => return Err(bad("\"plugins\" is not a list".into())),
            None => (vec![raw.clone()], false),
        };
        if plugins.is_empty() {
            return Err(bad("empty \"plugins\" list".into()));
        }
        if let Some(i) = plugins.iter().position(|p| plugin_type(p).is_none()) {
            return Err(bad(format!("plugin {i} has no \"type\"")));
        }
        Ok(NetworkList {
            name,
            cni_version,
            disable_check,
            plugins,
        })
    }

    /// The type (binary name) of each plugin, in chain order.
    pub fn plugin_types(&self) -> Vec<&str> {
        self.plugins.iter().filter_map(plugin_type).collect()
    }

    /// The type of plugin `index`; empty if it has none (only a hand-edited cache can
    /// hold such a list: [`NetworkList::parse`] refuses it).
    pub fn plugin_type(&self, index: usize) -> &str {
        self.plugins.get(index).and_then(plugin_type).unwrap_or("")
    }

    /// Whether this version of the spec has CHECK and the list does not disable it.
    pub fn check_supported(&self) -> bool {
        !self.disable_check && version(&self.cni_version) >= version("0.4.0")
    }

    /// The stdin of plugin `index`: its config with `name`, `cniVersion`, the
    /// `runtimeConfig` entries its capabilities enable (from `capability_args`) and
    /// `prevResult` when given.
    pub fn plugin_config(
        &self,
        index: usize,
        capability_args: &Map<String, Value>,
        prev_result: Option<&Value>,
    ) -> Value {
        let mut conf = self.plugins[index].clone();
        conf.insert("name".into(), Value::String(self.name.clone()));
        conf.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        let runtime: Map<String, Value> = match conf.get("capabilities") {
            Some(Value::Object(caps)) => caps
                .iter()
                .filter(|(_, on)| **on == Value::Bool(true))
                .filter_map(|(cap, _)| Some((cap.clone(), capability_args.get(cap)?.clone())))
                .collect(),
            _ => Map::new(),
        };
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        if let Some(prev) = prev_result {
            conf.insert("prevResult".into(), prev.clone());
        }
        Value::Object(conf)
    }
}

fn plugin_type(plugin: &Map<String, Value>) -> Option<&str> {
    match plugin.get("type") {
        Some(Value::String(t)) if !t.is_empty() && !t.contains('/') => Some(t),
        _ => None,
    }
}

/// libcni accepts `true` and `"true"`.
fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn version(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    let v = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(v)
}

/// The list's version: the highest supported one of a 1.1.0 `cniVersions` list, else
/// `cniVersion`, which must be one crust speaks.
fn pick_version(raw: &Map<String, Value>) -> Result<String, String> {
    if let Some(Value::Array(versions)) = raw.get("cniVersions") {
        return versions
            .iter()
            .filter_map(Value::as_str)
            .filter(|v| SUPPORTED_VERSIONS.contains(v))
            .max_by_key(|v| version(v))
            .map(str::to_owned)
            .ok_or_else(|| {
                format!("none of \"cniVersions\" is supported ({SUPPORTED_VERSIONS:?})")
            });
    }
    match raw.get("cniVersion").and_then(Value::as_str) {
        Some(v) if SUPPORTED_VERSIONS.contains(&v) => Ok(v.to_owned()),
        Some(v) => Err(format!(
            "cniVersion {v:?} is not supported ({SUPPORTED_VERSIONS:?})"
        )),
        None => Err("no \"cniVersion\"".into()),
    }
}

/// What the runtime offers plugins through `runtimeConfig`; each plugin gets only the
/// entries its `capabilities` enable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConfig {
    /// Host ports to forward (capability `portMappings`, the portmap plugin).
    pub port_mappings: Vec<PortMapping>,
    /// Address ranges to allocate from (capability `ipRanges`, host-local), as a list of
    /// range sets.
    pub ip_ranges: Vec<Vec<IpRange>>,
    /// Traffic shaping (capability `bandwidth`, the bandwidth plugin).
    pub bandwidth: Option<Bandwidth>,
    /// DNS settings (capability `dns`).
    pub dns: Option<Dns>,
}

impl RuntimeConfig {
    /// The capability arguments, keyed by capability name; empty ones are left out.
    pub fn capability_args(&self) -> Map<String, Value> {
        let mut args = Map::new();
        let mut put = |key: &str, value: serde_json::Result<Value>| {
            // These types serialize to JSON infallibly (no maps with non-string keys).
            if let Ok(v) = value {
                args.insert(key.into(), v);
            }
        };
        if !self.port_mappings.is_empty() {
            put("portMappings", serde_json::to_value(&self.port_mappings));
        }
        if !self.ip_ranges.is_empty() {
            put("ipRanges", serde_json::to_value(&self.ip_ranges));
        }
        if let Some(b) = &self.bandwidth {
            put("bandwidth", serde_json::to_value(b));
        }
        if let Some(d) = &self.dns {
            put("dns", serde_json::to_value(d));
        }
        args
    }
}

/// A transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// A host port forwarded to a pod port, as the portmap plugin reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The port on the host.
    pub host_port: u16,
    /// The port in the pod.
    pub container_port: u16,
    /// The protocol.
    pub protocol: Protocol,
    /// The host address to listen on; empty for all.
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// One address range for host-local.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpRange {
    /// The subnet, in CIDR notation.
    pub subnet: String,
    /// The first address to hand out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<IpAddr>,
    /// The last address to hand out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<IpAddr>,
    /// The gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// Traffic shaping, in bits per second and bits, as the bandwidth plugin reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    /// Ingress rate.
    pub ingress_rate: u64,
    /// Ingress burst.
    pub ingress_burst: u64,
    /// Egress rate.
    pub egress_rate: u64,
    /// Egress burst.
    pub egress_burst: u64,
}

/// DNS settings for the `dns` capability.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub searches: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<NetworkList, NotReady> {
        NetworkList::parse(v.to_string().as_bytes(), Path::new("/x/10-a.conflist"))
    }

    fn list() -> NetworkList {
        parse(json!({
            "cniVersion": "1.0.0", "name": "pods",
            "plugins": [
                {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}},
                {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}},
                {"type": "bandwidth", "capabilities": {"bandwidth": true}, "runtimeConfig": {"x": 1}},
            ]
        }))
        .unwrap()
    }

    #[test]
    fn conflist_loads() {
        let l = list();
        assert_eq!(l.name, "pods");
        assert_eq!(l.cni_version, "1.0.0");
        assert_eq!(l.plugin_types(), ["bridge", "portmap", "bandwidth"]);
        assert!(l.check_supported());
    }

    #[test]
    fn single_conf_is_wrapped() {
        let l = parse(json!({"cniVersion": "0.4.0", "name": "n", "type": "ptp"})).unwrap();
        assert_eq!(l.plugin_types(), ["ptp"]);
        assert_eq!(l.plugins[0]["name"], "n");
        assert!(l.check_supported());
    }

    #[test]
    fn versions() {
        let v = |raw: Value| parse(raw).map(|l| l.cni_version);
        let plugins = json!([{"type": "bridge"}]);
        assert_eq!(
            v(json!({"name": "n", "cniVersion": "1.1.0", "plugins": plugins})).unwrap(),
            "1.1.0"
        );
        assert_eq!(
            v(json!({"name": "n", "cniVersions": ["0.4.0", "1.1.0", "9.0.0"], "plugins": plugins}))
                .unwrap(),
            "1.1.0"
        );
        assert!(v(json!({"name": "n", "cniVersion": "0.2.0", "plugins": plugins})).is_err());
        assert!(v(json!({"name": "n", "plugins": plugins})).is_err());
        let old = parse(json!({"name": "n", "cniVersion": "0.3.1", "plugins": plugins})).unwrap();
        assert!(!old.check_supported());
        let off = parse(
            json!({"name": "n", "cniVersion": "1.0.0", "disableCheck": "true",
            "plugins": plugins}),
        )
        .unwrap();
        assert!(!off.check_supported());
    }

    #[test]
    fn bad_configs() {
        for raw in [
            json!({"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}),
            json!({"cniVersion": "1.0.0", "name": "n", "plugins": []}),
            json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"bridge": "x"}]}),
            json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../bin/sh"}]}),
            json!({"cniVersion": "1.0.0", "name": "n", "plugins": [1]}),
        ] {
            assert!(
                matches!(parse(raw.clone()), Err(NotReady::BadConfig { .. })),
                "{raw}"
            );
        }
    }

    #[test]
    fn name_version_and_capabilities_are_injected() {
        let l = list();
        let rt = RuntimeConfig {
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: String::new(),
            }],
            bandwidth: Some(Bandwidth {
                ingress_rate: 1000,
                ingress_burst: 10,
                egress_rate: 2000,
                egress_burst: 20,
            }),
            ..Default::default()
        };
        let args = rt.capability_args();
        assert_eq!(args.len(), 2);

        let bridge = l.plugin_config(0, &args, None);
        assert_eq!(bridge["name"], "pods");
        assert_eq!(bridge["cniVersion"], "1.0.0");
        assert_eq!(bridge["bridge"], "cni0");
        assert!(bridge.get("runtimeConfig").is_none());
        assert!(bridge.get("prevResult").is_none());

        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let portmap = l.plugin_config(1, &args, Some(&prev));
        assert_eq!(
            portmap["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
        );
        assert_eq!(portmap["prevResult"], prev);

        // Enabled capabilities replace what the file had under runtimeConfig.
        let bw = l.plugin_config(2, &args, None);
        assert_eq!(
            bw["runtimeConfig"],
            json!({"bandwidth": {"ingressRate": 1000, "ingressBurst": 10,
                "egressRate": 2000, "egressBurst": 20}})
        );
        // Nothing offered: the file's runtimeConfig stays.
        let bw = l.plugin_config(2, &Map::new(), None);
        assert_eq!(bw["runtimeConfig"], json!({"x": 1}));
    }

    #[test]
    fn capability_args_shapes() {
        let rt = RuntimeConfig {
            port_mappings: vec![PortMapping {
                host_port: 53,
                container_port: 5353,
                protocol: Protocol::Udp,
                host_ip: "127.0.0.1".into(),
            }],
            ip_ranges: vec![vec![IpRange {
                subnet: "10.1.0.0/24".into(),
                range_start: None,
                range_end: None,
                gateway: Some("10.1.0.1".parse().unwrap()),
            }]],
            dns: Some(Dns {
                servers: vec!["10.0.0.10".into()],
                searches: vec!["svc.cluster.local".into()],
                options: vec![],
            }),
            bandwidth: None,
        };
        assert_eq!(
            Value::Object(rt.capability_args()),
            json!({
                "portMappings": [{"hostPort": 53, "containerPort": 5353, "protocol": "udp",
                    "hostIP": "127.0.0.1"}],
                "ipRanges": [[{"subnet": "10.1.0.0/24", "gateway": "10.1.0.1"}]],
                "dns": {"servers": ["10.0.0.10"], "searches": ["svc.cluster.local"]},
            })
        );
        assert!(RuntimeConfig::default().capability_args().is_empty());
    }
}
