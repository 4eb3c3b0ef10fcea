//! Options of the image store and the credentials of one pull.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// How the image store behaves. Every field has a default ([`StoreOptions::new`]).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Directory holding blobs, snapshots and the metadata database.
    pub root: PathBuf,
    /// Mirror endpoints per upstream registry host (`docker.io`, `registry.k8s.io`),
    /// tried in order before the upstream itself: `http://127.0.0.1:5111` or
    /// `https://mirror.example.com` (a bare `host:port` means https). The pull's
    /// credentials are never sent to a mirror.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Registry hosts (`host[:port]`) reached over plain HTTP. Loopback registries
    /// (`localhost`, `127.0.0.0/8`, `[::1]`) always are.
    pub insecure: Vec<String>,
    /// Bound on one layer's uncompressed size (stream and files written).
    pub max_layer_bytes: u64,
    /// Bytes kept free on the root's file system while unpacking.
    pub min_free_bytes: u64,
    /// A download that receives nothing for this long fails.
    pub stall_timeout: Duration,
    /// Minimum download rate in bytes/s, measured over `throughput_window`; 0 turns
    /// the check off.
    pub min_throughput: u64,
    /// The window over which `min_throughput` is measured.
    pub throughput_window: Duration,
    /// Layers of one pull downloaded at the same time.
    pub max_concurrent_downloads: usize,
    /// How often a long pull logs its progress.
    pub progress_interval: Duration,
    /// References of images reported as pinned (never garbage collected by kubelet).
    pub pinned: Vec<String>,
}

impl StoreOptions {
    /// Defaults, rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            mirrors: BTreeMap::new(),
            insecure: Vec::new(),
            max_layer_bytes: 32 << 30,
            min_free_bytes: 512 << 20,
            stall_timeout: Duration::from_secs(5 * 60),
            min_throughput: 0,
            throughput_window: Duration::from_secs(60),
            max_concurrent_downloads: 3,
            progress_interval: Duration::from_secs(10),
            pinned: Vec::new(),
        }
    }

    /// Checks the options; the error names the field at fault.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, reason: String| Err(Error::InvalidOptions { field, reason });
        if !self.root.is_absolute() {
            return invalid("root", format!("{} is not absolute", self.root.display()));
        }
        for (host, endpoints) in &self.mirrors {
            if host.is_empty() || host.contains('/') {
                return invalid("mirrors", format!("{host:?} is not a registry host"));
            }
            for endpoint in endpoints {
                Endpoint::parse(endpoint)?;
            }
        }
        if self.max_layer_bytes == 0 {
            return invalid("max_layer_bytes", "must be above 0".into());
        }
        if self.stall_timeout.is_zero() {
            return invalid("stall_timeout", "must be above 0".into());
        }
        if self.min_throughput > 0 && self.throughput_window.is_zero() {
            return invalid("throughput_window", "must be above 0".into());
        }
        if self.max_concurrent_downloads == 0 {
            return invalid("max_concurrent_downloads", "must be above 0".into());
        }
        if self.progress_interval.is_zero() {
            return invalid("progress_interval", "must be above 0".into());
        }
        Ok(())
    }
}

/// A mirror endpoint: a registry host and whether it speaks plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) plain_http: bool,
}

impl Endpoint {
    pub(crate) fn parse(s: &str) -> Result<Self> {
        let (plain_http, rest) = if let Some(rest) = s.strip_prefix("http://") {
            (true, rest)
        } else if let Some(rest) = s.strip_prefix("https://") {
            (false, rest)
        } else {
            (false, s)
        };
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') || host.contains('@') {
            return Err(Error::InvalidOptions {
                field: "mirrors",
                reason: format!("endpoint {s:?} is not http(s)://host[:port]"),
            });
        }
        Ok(Self {
            host: host.to_owned(),
            plain_http,
        })
    }
}

/// Whether `host` (with an optional port) is this machine.
pub(crate) fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Registry credentials as the CRI `AuthConfig` carries them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// User name for basic auth.
    pub username: String,
    /// Password for basic auth.
    pub password: String,
    /// `base64(username:password)`, used when `username` is empty.
    pub auth: String,
    /// The registry these credentials are for; when set and not the image's
    /// registry, they are not used (as containerd does).
    pub server_address: String,
    /// An OAuth2 refresh token: not supported by the registry client (an error).
    pub identity_token: String,
    /// A bearer token sent to the registry as is.
    pub registry_token: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username)
            .field("server_address", &self.server_address)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("http://127.0.0.1:5111").unwrap();
        assert_eq!((e.host.as_str(), e.plain_http), ("127.0.0.1:5111", true));
        let e = Endpoint::parse("https://mirror.gcr.io/").unwrap();
        assert_eq!((e.host.as_str(), e.plain_http), ("mirror.gcr.io", false));
        let e = Endpoint::parse("mirror:5000").unwrap();
        assert!(!e.plain_http);
        assert!(Endpoint::parse("http://host/v2/prefix").is_err());
        assert!(Endpoint::parse("").is_err());
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5111",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "docker.io",
            "registry.k8s.io",
            "10.0.0.1:5000",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn validate_names_the_field() {
        let mut o = StoreOptions::new("/var/lib/crust");
        o.validate().unwrap();
        o.mirrors
            .insert("docker.io".into(), vec!["ftp://x/y".into()]);
        let err = o.validate().unwrap_err();
        assert!(err.to_string().contains("mirrors"), "{err}");
        let mut o = StoreOptions::new("relative");
        assert!(o.validate().unwrap_err().to_string().contains("root"));
        o.root = "/x".into();
        o.max_concurrent_downloads = 0;
        assert!(o.validate().is_err());
    }
}
