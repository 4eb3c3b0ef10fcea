//! What plugins print: the ADD result and the error object. The types accept the
//! 0.3.x/0.4.0 shapes (an IP's `version`) and the 1.x ones (1.1.0's extra route and
//! interface fields are ignored); unknown fields are ignored, missing lists are empty.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A CNI ADD result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// The result's version.
    #[serde(default)]
    pub cni_version: String,
    /// Interfaces the plugins created or set up.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes added.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// DNS information.
    #[serde(default)]
    pub dns: DnsInfo,
}

/// An interface of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its hardware address.
    #[serde(default)]
    pub mac: String,
    /// The netns path it is in; empty for a host interface.
    #[serde(default)]
    pub sandbox: String,
}

/// An address of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// The address with its prefix length, e.g. `10.86.0.5/24`.
    pub address: String,
    /// The gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into the result's `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

impl IpConfig {
    /// The address without its prefix length; `None` if it does not parse.
    pub fn addr(&self) -> Option<IpAddr> {
        self.address.split('/').next()?.parse().ok()
    }
}

/// A route of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The destination, in CIDR notation.
    pub dst: String,
    /// The next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS information of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsInfo {
    /// Name servers.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default)]
    pub domain: String,
    /// Search domains.
    #[serde(default)]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default)]
    pub options: Vec<String>,
}

impl CniResult {
    /// The addresses of the interface `ifname` inside the pod: the first IPv4 first
    /// (the pod IP), then the others in result order. An address whose interface index
    /// is missing counts (older plugins leave it out); one on a host-side interface
    /// does not.
    pub fn pod_ips(&self, ifname: &str) -> Vec<IpAddr> {
        let in_pod = |i: usize| {
            self.interfaces
                .get(i)
                .is_some_and(|iface| !iface.sandbox.is_empty() && iface.name == ifname)
        };
        let mut ips: Vec<IpAddr> = self
            .ips
            .iter()
            .filter(|ip| ip.interface.is_none_or(in_pod))
            .filter_map(IpConfig::addr)
            .collect();
        if let Some(first_v4) = ips.iter().position(IpAddr::is_ipv4) {
            let v4 = ips.remove(first_v4);
            ips.insert(0, v4);
        }
        ips
    }
}

/// The error object a failing plugin prints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PluginError {
    /// The error code: 1-99 are the spec's, 100+ the plugin's.
    #[serde(default)]
    pub code: Option<u32>,
    /// The message.
    #[serde(default)]
    pub msg: String,
    /// More detail.
    #[serde(default)]
    pub details: String,
}

impl PluginError {
    /// Reads a failing plugin's stdout: the error object if it is one, else the text
    /// itself as the message (or `fallback` when there is no text).
    pub fn from_output(stdout: &[u8], fallback: &str) -> PluginError {
        match serde_json::from_slice::<PluginError>(stdout) {
            Ok(err) if err.code.is_some() || !err.msg.is_empty() => return err,
            _ => {}
        }
        let text = String::from_utf8_lossy(stdout).trim().to_owned();
        PluginError {
            code: None,
            msg: if text.is_empty() {
                fallback.to_owned()
            } else {
                text
            },
            details: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Debian's bridge plugin (1.1.1) returned for a 0.4.0 list.
    const V040: &str = r#"{
        "cniVersion": "0.4.0",
        "interfaces": [
            {"name": "cni0", "mac": "aa:bb:cc:00:00:01"},
            {"name": "veth1234", "mac": "aa:bb:cc:00:00:02"},
            {"name": "eth0", "mac": "aa:bb:cc:00:00:03", "sandbox": "/run/crust/netns/x"}
        ],
        "ips": [{"version": "4", "interface": 2, "address": "10.86.0.7/24", "gateway": "10.86.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {}
    }"#;

    /// A 1.0.0 dual-stack result with IPv6 listed first and a host-side address.
    const V100: &str = r#"{
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "cni0", "mac": "aa:bb:cc:00:00:01"},
            {"name": "eth0", "mac": "aa:bb:cc:00:00:03", "sandbox": "/run/crust/netns/x", "mtu": 1500}
        ],
        "ips": [
            {"interface": 0, "address": "10.86.0.1/24"},
            {"interface": 1, "address": "fd00:86::5/64", "gateway": "fd00:86::1"},
            {"interface": 1, "address": "10.86.0.5/24", "gateway": "10.86.0.1"}
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.86.0.1", "mtu": 1400, "table": 5}],
        "dns": {"nameservers": ["10.86.0.1"], "search": ["local"]}
    }"#;

    #[test]
    fn parses_040() {
        let r: CniResult = serde_json::from_str(V040).unwrap();
        assert_eq!(r.cni_version, "0.4.0");
        assert_eq!(r.interfaces.len(), 3);
        assert_eq!(r.ips[0].gateway, Some("10.86.0.1".parse().unwrap()));
        assert_eq!(r.pod_ips("eth0"), ["10.86.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.routes[0].gw, None);
    }

    #[test]
    fn parses_100_dual_stack() {
        let r: CniResult = serde_json::from_str(V100).unwrap();
        let want: Vec<IpAddr> = ["10.86.0.5", "fd00:86::5"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(r.pod_ips("eth0"), want);
        assert_eq!(r.dns.nameservers, ["10.86.0.1"]);
        assert!(r.pod_ips("eth1").is_empty());
    }

    #[test]
    fn missing_lists_and_indexes() {
        let r: CniResult =
            serde_json::from_str(r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/8"}]}"#)
                .unwrap();
        assert_eq!(r.pod_ips("eth0"), ["10.0.0.2".parse::<IpAddr>().unwrap()]);
        let empty: CniResult = serde_json::from_str(r#"{"cniVersion":"1.0.0"}"#).unwrap();
        assert!(empty.pod_ips("eth0").is_empty());
    }

    #[test]
    fn error_object() {
        let e = PluginError::from_output(
            br#"{"cniVersion":"1.0.0","code":7,"msg":"failed to allocate","details":"range full"}"#,
            "exit status 1",
        );
        assert_eq!(
            e,
            PluginError {
                code: Some(7),
                msg: "failed to allocate".into(),
                details: "range full".into()
            }
        );
        let e = PluginError::from_output(b"  plain text\n", "exit status 1");
        assert_eq!((e.code, e.msg.as_str()), (None, "plain text"));
        let e = PluginError::from_output(b"", "exit status 2");
        assert_eq!(e.msg, "exit status 2");
        let e = PluginError::from_output(br#"{"other": 1}"#, "exit status 2");
        assert_eq!(e.msg, r#"{"other": 1}"#);
    }
}
