//! crustd's TOML configuration. Every field has a default, so an empty file (or none)
//! is a complete configuration; `crustd config default` prints [`default_toml`], the
//! same defaults with a comment per field, and a test keeps the two in step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors reading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config {path}: line {line}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// What is wrong, on one line.
        message: String,
    },
    /// A field has a value crustd cannot use.
    #[error("config: {field}: {message}")]
    Invalid {
        /// The field, as a TOML path.
        field: String,
        /// What is wrong.
        message: String,
    },
}

type Result<T> = std::result::Result<T, Error>;

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Persistent data: image content, unpacked layers, metadata.
    pub root: PathBuf,
    /// Runtime state: sockets, bundles, netns pins; gone on reboot.
    pub state: PathBuf,
    /// Where the CRI server listens: `unix:///absolute/path`.
    pub listen: String,
    /// Log filter in tracing's env-filter syntax; `RUST_LOG` overrides it.
    pub log_level: String,
    /// Log lines as `text` (one human-readable line each) or `json` (one object each,
    /// for log collectors).
    pub log_format: String,
    /// The `[cgroup]` table.
    pub cgroup: CgroupConfig,
    /// The `[network]` table.
    pub network: NetworkConfig,
    /// The `[registry]` table.
    pub registry: RegistryConfig,
    /// The `[image]` table.
    pub image: ImageConfig,
    /// The `[streaming]` table.
    pub streaming: StreamingConfig,
    /// The `[runtime]` table.
    pub runtime: HandlerConfig,
    /// The `[cdi]` table.
    pub cdi: CdiConfig,
    /// The `[metrics]` table.
    pub metrics: MetricsConfig,
    /// The `[nri]` table.
    pub nri: NriConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/var/lib/crust"),
            state: PathBuf::from("/run/crust"),
            listen: "unix:///run/crust/crust.sock".into(),
            log_level: "info".into(),
            log_format: "text".into(),
            cgroup: CgroupConfig::default(),
            network: NetworkConfig::default(),
            registry: RegistryConfig::default(),
            image: ImageConfig::default(),
            streaming: StreamingConfig::default(),
            runtime: HandlerConfig::default(),
            cdi: CdiConfig::default(),
            metrics: MetricsConfig::default(),
            nri: NriConfig::default(),
        }
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses TOML text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        toml::from_str(text).map_err(|e| Error::Parse {
            path: path.to_owned(),
            line: e
                .span()
                .map_or(1, |s| text[..s.start].matches('\n').count() + 1),
            message: e.message().replace('\n', " "),
        })
    }

    /// The socket path of `listen`.
    pub fn socket_path(&self) -> Result<PathBuf> {
        let path = self.listen.strip_prefix("unix://").ok_or_else(|| {
            invalid(
                "listen",
                format!("{:?} is not a unix:// address", self.listen),
            )
        })?;
        if !path.starts_with('/') {
            return Err(invalid(
                "listen",
                format!("{:?} is not an absolute socket path", self.listen),
            ));
        }
        Ok(PathBuf::from(path))
    }

    /// Checks every table; the first problem found is the error.
    pub fn validate(&self) -> Result<()> {
        absolute("root", &self.root)?;
        absolute("state", &self.state)?;
        let longest = self.state.as_os_str().len() + SHIM_SOCKET_SUFFIX;
        if longest > MAX_SOCKET_PATH {
            return Err(invalid(
                "state",
                format!(
                    "{} is too long: shim sockets under it would be {longest} bytes, \
                     over the {MAX_SOCKET_PATH}-byte limit of a Unix socket path \
                     (use at most {} bytes)",
                    self.state.display(),
                    MAX_SOCKET_PATH - SHIM_SOCKET_SUFFIX
                ),
            ));
        }
        self.socket_path()?;
        if self.log_level.trim().is_empty() {
            return Err(invalid("log_level", "must not be empty"));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(invalid(
                "log_format",
                format!("{:?} is neither \"text\" nor \"json\"", self.log_format),
            ));
        }
        self.cgroup.validate()?;
        self.network.validate()?;
        self.registry.validate()?;
        self.image.validate()?;
        self.streaming.validate()?;
        self.runtime.validate()?;
        for d in &self.cdi.spec_dirs {
            absolute("cdi.spec_dirs", d)?;
        }
        if !self.metrics.address.is_empty()
            && self
                .metrics
                .address
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(invalid(
                "metrics.address",
                format!("{:?} is not an IP:port", self.metrics.address),
            ));
        }
        self.nri.validate()?;
        Ok(())
    }
}

/// The longest Unix socket path (`sun_path` less its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// What a shim socket adds to the state dir: `/c/<64 hex id>/shim.sock`.
const SHIM_SOCKET_SUFFIX: usize = "/c/".len() + 64 + "/shim.sock".len();

fn absolute(field: &str, path: &Path) -> Result<()> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{} is not an absolute path", path.display()),
        ))
    }
}

/// How crustd manages cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// Directories under the cgroup filesystem, managed by crust itself.
    Cgroupfs,
    /// Transient units through systemd's D-Bus API (each container a scope, in its
    /// pod's slice); only where systemd is PID 1, on cgroup v2.
    Systemd,
}

/// The `[cgroup]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CgroupConfig {
    /// `cgroupfs` or `systemd`.
    pub driver: CgroupDriver,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        CgroupConfig {
            driver: CgroupDriver::Cgroupfs,
        }
    }
}

impl CgroupConfig {
    /// The systemd driver needs systemd running as the init system, on the unified
    /// cgroup v2 hierarchy: libcgroups' systemd manager (which crust-shim uses) drives
    /// transient units on cgroup v2 only.
    pub fn validate(&self) -> Result<()> {
        if self.driver != CgroupDriver::Systemd {
            return Ok(());
        }
        if !Path::new("/run/systemd/system").is_dir() {
            return Err(invalid(
                "cgroup.driver",
                "systemd is not running on this host; use \"cgroupfs\"",
            ));
        }
        if !Path::new("/sys/fs/cgroup/cgroup.controllers").is_file() {
            return Err(invalid(
                "cgroup.driver",
                "the systemd driver needs the unified cgroup v2 hierarchy, and this host \
                 mounts cgroup v1; use \"cgroupfs\"",
            ));
        }
        Ok(())
    }
}

/// The `[network]` table: where CNI configs and plugins are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// The first config file by name in this directory is the pod network.
    pub conf_dir: PathBuf,
    /// Directories searched in order for CNI plugin binaries.
    pub bin_dirs: Vec<PathBuf>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
        }
    }
}

impl NetworkConfig {
    /// Paths must be absolute.
    pub fn validate(&self) -> Result<()> {
        absolute("network.conf_dir", &self.conf_dir)?;
        if self.bin_dirs.is_empty() {
            return Err(invalid(
                "network.bin_dirs",
                "must name at least one directory",
            ));
        }
        for dir in &self.bin_dirs {
            absolute("network.bin_dirs", dir)?;
        }
        Ok(())
    }
}

/// The `[registry]` table: how registries are reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Registry hosts (`host` or `host:port`) reached over plain HTTP; localhost and
    /// 127.0.0.1 always are.
    pub insecure: Vec<String>,
    /// Mirrors per upstream registry host, tried in order before the upstream.
    pub mirrors: BTreeMap<String, Mirror>,
}

/// The mirrors of one upstream registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mirror {
    /// Endpoints as `http://host[:port]` or `https://host[:port]`, tried in order.
    pub endpoints: Vec<String>,
}

impl RegistryConfig {
    /// Hosts must be bare `host[:port]`; endpoints must be http(s) URLs.
    pub fn validate(&self) -> Result<()> {
        for host in &self.insecure {
            valid_host("registry.insecure", host)?;
        }
        for (host, mirror) in &self.mirrors {
            let field = format!("registry.mirrors.\"{host}\"");
            valid_host(&field, host)?;
            if mirror.endpoints.is_empty() {
                return Err(invalid(field, "has no endpoints"));
            }
            for ep in &mirror.endpoints {
                let rest = ep
                    .strip_prefix("http://")
                    .or_else(|| ep.strip_prefix("https://"))
                    .ok_or_else(|| {
                        invalid(
                            format!("{field}.endpoints"),
                            format!("{ep:?} is not an http:// or https:// URL"),
                        )
                    })?;
                valid_host(&format!("{field}.endpoints"), rest.trim_end_matches('/'))?;
            }
        }
        Ok(())
    }
}

/// The `[image]` table: bounds on pulls and unpacking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    /// Largest uncompressed size of one layer, in bytes.
    pub max_layer_size: u64,
    /// Bytes kept free on the root dir's filesystem while unpacking.
    pub min_free_disk: u64,
    /// A pull that receives nothing for this many seconds fails.
    pub stall_timeout: u64,
    /// Slowest acceptable download rate in bytes per second, over a minute; 0 is off.
    pub min_throughput: u64,
    /// Layers of one pull downloaded at the same time.
    pub max_concurrent_downloads: usize,
    /// Images reported as pinned, which kubelet never garbage collects.
    pub pinned_images: Vec<String>,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            max_layer_size: 32 << 30,
            min_free_disk: 512 << 20,
            stall_timeout: 300,
            min_throughput: 0,
            max_concurrent_downloads: 3,
            pinned_images: Vec::new(),
        }
    }
}

impl ImageConfig {
    /// Sizes and counts must be usable.
    pub fn validate(&self) -> Result<()> {
        if self.max_layer_size == 0 {
            return Err(invalid("image.max_layer_size", "must be above 0"));
        }
        if self.stall_timeout == 0 {
            return Err(invalid("image.stall_timeout", "must be above 0"));
        }
        if self.max_concurrent_downloads == 0 {
            return Err(invalid("image.max_concurrent_downloads", "must be above 0"));
        }
        Ok(())
    }
}

/// The `[streaming]` table: the HTTP server behind Exec, Attach and PortForward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    /// The IP address it listens on.
    pub address: String,
    /// Its TCP port; 0 picks a free one at each start.
    pub port: u16,
    /// Seconds a streaming URL stays usable (it is usable once).
    pub token_expiry: u64,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        // Loopback and a free port, as containerd's CRI plugin defaults to: kubelet
        // only follows the URL each call returns, so no fixed port is needed.
        StreamingConfig {
            address: "127.0.0.1".into(),
            port: 0,
            token_expiry: 60,
        }
    }
}

impl StreamingConfig {
    /// The address must be an IP; URLs must live a while.
    pub fn validate(&self) -> Result<()> {
        if self.address.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(
                "streaming.address",
                format!("{:?} is not an IP address", self.address),
            ));
        }
        if self.token_expiry == 0 {
            return Err(invalid("streaming.token_expiry", "must be above 0"));
        }
        Ok(())
    }
}

/// The `[metrics]` table: crustd's Prometheus metrics over HTTP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `IP:port` to serve `/metrics` on; empty (the default) serves none.
    pub address: String,
}

/// The `[nri]` table: NRI, the Node Resource Interface for node plugins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NriConfig {
    /// Serve NRI: plugins are called at each pod and container event. Off by default
    /// (containerd 2.x has it on): NRI's socket is one per node.
    pub enable: bool,
    /// The socket external plugins connect to.
    pub socket_path: PathBuf,
    /// Pre-installed plugins, each an executable `NN-name`, started by crustd.
    pub plugin_path: PathBuf,
    /// Pre-installed plugins' config files, `NN-name.conf` or `name.conf`.
    pub plugin_config_path: PathBuf,
    /// How long a plugin has to register once connected, in milliseconds.
    pub registration_timeout_ms: u64,
    /// How long a plugin has to answer a request (an event, Configure, Synchronize),
    /// in milliseconds; a later answer drops the plugin.
    pub request_timeout_ms: u64,
    /// Accept no external plugins: only the pre-installed ones run.
    pub disable_connections: bool,
}

impl Default for NriConfig {
    fn default() -> Self {
        // NRI's own defaults.
        NriConfig {
            enable: false,
            socket_path: "/var/run/nri/nri.sock".into(),
            plugin_path: "/opt/nri/plugins".into(),
            plugin_config_path: "/etc/nri/conf.d".into(),
            registration_timeout_ms: 5000,
            request_timeout_ms: 2000,
            disable_connections: false,
        }
    }
}

impl NriConfig {
    /// Absolute paths, a socket path that fits, timeouts above 0.
    pub fn validate(&self) -> Result<()> {
        absolute("nri.socket_path", &self.socket_path)?;
        absolute("nri.plugin_path", &self.plugin_path)?;
        absolute("nri.plugin_config_path", &self.plugin_config_path)?;
        if self.socket_path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(invalid(
                "nri.socket_path",
                format!("longer than the {MAX_SOCKET_PATH}-byte limit of a Unix socket path"),
            ));
        }
        for (field, v) in [
            ("nri.registration_timeout_ms", self.registration_timeout_ms),
            ("nri.request_timeout_ms", self.request_timeout_ms),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be above 0"));
            }
        }
        Ok(())
    }
}

/// The `[cdi]` table: where CDI spec files are (Container Device Interface).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdiConfig {
    /// Dirs of CDI spec files; a later dir's device wins over an earlier one's.
    pub spec_dirs: Vec<PathBuf>,
}

impl Default for CdiConfig {
    fn default() -> Self {
        // CDI's own defaults, as containerd's and CRI-O's.
        CdiConfig {
            spec_dirs: vec!["/etc/cdi".into(), "/var/run/cdi".into()],
        }
    }
}

/// The `[runtime]` table: the runtime handlers served besides the default one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandlerConfig {
    /// More names of runtime handlers (a RuntimeClass's `handler`). Each runs pods as
    /// the default handler does, with crust-shim: crust has one way to run them.
    pub handlers: Vec<String>,
}

impl HandlerConfig {
    /// Each name a DNS label (as a RuntimeClass handler must be), named once, and
    /// none the default's.
    pub fn validate(&self) -> Result<()> {
        for (i, name) in self.handlers.iter().enumerate() {
            let label = !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            if !label {
                return Err(invalid(
                    "runtime.handlers",
                    format!("{name:?} is not a DNS label (a-z, 0-9 and -, at most 63)"),
                ));
            }
            if name == DEFAULT_HANDLER || self.handlers[..i].contains(name) {
                return Err(invalid(
                    "runtime.handlers",
                    format!("{name:?} is named twice (crust is the default handler's name)"),
                ));
            }
        }
        Ok(())
    }

    /// Whether `name` (from RunPodSandbox) is a handler crust serves: the default
    /// one (empty, or [`DEFAULT_HANDLER`]) or a configured one.
    pub fn serves(&self, name: &str) -> bool {
        name.is_empty() || name == DEFAULT_HANDLER || self.handlers.iter().any(|h| h == name)
    }
}

/// The default runtime handler's name, besides the empty one.
pub const DEFAULT_HANDLER: &str = "crust";

fn valid_host(field: &str, host: &str) -> Result<()> {
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{host:?} is not a registry host[:port]"),
        ))
    }
}

/// The config file crustd reads when not given one, as containerd reads
/// /etc/containerd/config.toml.
pub const DEFAULT_FILE: &str = "/etc/crust/config.toml";

/// The default configuration as TOML, with a comment per field.
pub fn default_toml() -> String {
    let d = Config::default();
    let bin_dirs: Vec<String> = d
        .network
        .bin_dirs
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    format!(
        r#"# crustd configuration. Every field is optional: these are the defaults.

# Persistent data: image content, unpacked layers, the metadata database.
root = {root:?}
# Runtime state: the CRI socket, shim sockets, bundles, netns pins. Gone on reboot.
state = {state:?}
# Where the CRI gRPC server listens (unix:// with an absolute path).
listen = {listen:?}
# Log filter in tracing's env-filter syntax ("info", "crust=debug", ...); RUST_LOG wins.
# A reload (SIGHUP) applies a new one.
log_level = {log_level:?}
# "text", or "json" (one JSON object per line, for log collectors).
log_format = {log_format:?}

[cgroup]
# "cgroupfs" (crust manages cgroup directories itself), or "systemd" where systemd is PID 1
# on cgroup v2 (each container a transient scope crust-<id>.scope in its pod's slice).
driver = "cgroupfs"

[network]
# CNI: the first config file by name (.conflist, .conf, .json) in this directory.
conf_dir = {conf_dir:?}
# Directories searched, in order, for CNI plugin binaries.
bin_dirs = [{bin_dirs}]

[registry]
# This table is applied again on a reload (SIGHUP), for the pulls that start after it.
# Registry hosts (host or host:port) reached over plain HTTP. localhost and 127.0.0.1
# always are.
insecure = []

# Mirrors of an upstream registry, tried in order before it. For example:
# [registry.mirrors."registry.k8s.io"]
# endpoints = ["http://127.0.0.1:5000"]
[registry.mirrors]

[image]
# Largest uncompressed size of one layer, in bytes: a pull over it fails.
max_layer_size = {max_layer_size}
# Bytes kept free on the root dir's filesystem: unpacking stops before going below.
min_free_disk = {min_free_disk}
# A pull that receives nothing for this many seconds fails.
stall_timeout = {stall_timeout}
# Slowest acceptable download rate in bytes per second, over a minute; 0 turns it off.
min_throughput = {min_throughput}
# Layers of one pull downloaded at the same time.
max_concurrent_downloads = {max_concurrent_downloads}
# Images reported as pinned (kubelet never garbage collects them), e.g. ["registry.k8s.io/pause:3.9"].
pinned_images = []

[streaming]
# The IP address of the HTTP server behind Exec, Attach and PortForward (SPDY and
# WebSocket). Loopback by default: kubelet reaches it on the node.
address = {streaming_address:?}
# Its TCP port; 0 picks a free one at each start (kubelet follows the URL each call
# returns, so no fixed port is needed).
port = {streaming_port}
# Seconds a streaming URL stays usable; each URL is usable once.
token_expiry = {token_expiry}

[runtime]
# More runtime handler names a RuntimeClass may give (DNS labels), served as the
# default handler ("" or "crust") is, e.g. ["test-handler"].
handlers = []

[cdi]
# Dirs of CDI spec files (Container Device Interface), read at each CreateContainer
# that asks for a device; a later dir's device wins.
spec_dirs = [{cdi_dirs}]

[metrics]
# IP:port of crustd's Prometheus metrics (/metrics, OpenMetrics text), e.g.
# "127.0.0.1:1338"; empty serves none.
address = ""

[nri]
# NRI, the Node Resource Interface: node plugins called at each pod and container
# event, which may adjust containers. Off by default (NRI's socket is one per node).
enable = false
# The socket external plugins connect to.
socket_path = "/var/run/nri/nri.sock"
# Pre-installed plugins (executables NN-name), started by crustd.
plugin_path = "/opt/nri/plugins"
# Their config files, NN-name.conf or name.conf.
plugin_config_path = "/etc/nri/conf.d"
# How long a plugin has to register once connected, in milliseconds.
registration_timeout_ms = 5000
# How long a plugin has to answer a request; a later answer drops the plugin.
request_timeout_ms = 2000
# Accept no external plugins: only the pre-installed ones run.
disable_connections = false
"#,
        root = d.root.display().to_string(),
        state = d.state.display().to_string(),
        listen = d.listen,
        log_level = d.log_level,
        log_format = d.log_format,
        conf_dir = d.network.conf_dir.display().to_string(),
        bin_dirs = bin_dirs.join(", "),
        max_layer_size = d.image.max_layer_size,
        min_free_disk = d.image.min_free_disk,
        stall_timeout = d.image.stall_timeout,
        min_throughput = d.image.min_throughput,
        max_concurrent_downloads = d.image.max_concurrent_downloads,
        streaming_address = d.streaming.address,
        streaming_port = d.streaming.port,
        token_expiry = d.streaming.token_expiry,
        cdi_dirs = d
            .cdi
            .spec_dirs
            .iter()
            .map(|p| format!("{:?}", p.display().to_string()))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn default_toml_is_the_default_config() {
        let parsed = parse(&default_toml()).unwrap();
        assert_eq!(parsed, Config::default());
        parsed.validate().unwrap();
    }

    #[test]
    fn default_toml_documents_every_field() {
        let text = default_toml();
        let value = toml::Value::try_from(Config::default()).unwrap();
        let mut missing = Vec::new();
        for (key, v) in value.as_table().unwrap() {
            match v.as_table() {
                Some(table) => {
                    assert!(text.contains(&format!("[{key}]")), "table {key}");
                    for sub in table.keys() {
                        if !text.contains(&format!("\n{sub} ="))
                            && !text.contains(&format!("[{key}.{sub}]"))
                        {
                            missing.push(format!("{key}.{sub}"));
                        }
                    }
                }
                None if !text.contains(&format!("\n{key} =")) => missing.push(key.clone()),
                None => {}
            }
        }
        assert!(missing.is_empty(), "undocumented fields: {missing:?}");
    }

    #[test]
    fn a_state_dir_too_long_for_shim_sockets_is_refused() {
        let ok = format!("state = \"/{}\"\n", "s".repeat(29));
        parse(&ok).unwrap().validate().unwrap();
        let long = format!("state = \"/{}\"\n", "s".repeat(30));
        let err = parse(&long).unwrap().validate().unwrap_err().to_string();
        assert!(err.contains("state") && err.contains("too long"), "{err}");
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_field_names_the_line() {
        let err = parse("root = \"/x\"\n\n[cgroup]\ndrvier = \"systemd\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 4"), "{msg}");
        assert!(msg.contains("drvier"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn mirrors_parse_and_validate() {
        let c = parse(
            "[registry.mirrors.\"registry.k8s.io\"]\nendpoints = [\"http://127.0.0.1:5111\"]\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.registry.mirrors["registry.k8s.io"].endpoints,
            ["http://127.0.0.1:5111"]
        );
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let cases = [
            ("listen = \"tcp://1.2.3.4:5\"", "listen"),
            ("listen = \"unix://relative.sock\"", "listen"),
            ("root = \"relative\"", "root"),
            ("[network]\nbin_dirs = []", "network.bin_dirs"),
            (
                "[registry.mirrors.\"gcr.io\"]\nendpoints = [\"ftp://x\"]",
                "registry.mirrors.\"gcr.io\".endpoints",
            ),
            (
                "[registry.mirrors.\"gcr.io\"]\nendpoints = []",
                "registry.mirrors.\"gcr.io\"",
            ),
            ("[registry]\ninsecure = [\"a b\"]", "registry.insecure"),
            ("[image]\nstall_timeout = 0", "image.stall_timeout"),
            ("[streaming]\naddress = \"localhost\"", "streaming.address"),
            ("[streaming]\ntoken_expiry = 0", "streaming.token_expiry"),
            ("[runtime]\nhandlers = [\"Test\"]", "runtime.handlers"),
            ("[runtime]\nhandlers = [\"a\", \"a\"]", "runtime.handlers"),
            ("[runtime]\nhandlers = [\"crust\"]", "runtime.handlers"),
            ("log_format = \"xml\"", "log_format"),
            ("[metrics]\naddress = \"localhost:1\"", "metrics.address"),
            ("[cdi]\nspec_dirs = [\"etc/cdi\"]", "cdi.spec_dirs"),
        ];
        for (text, field) in cases {
            let err = parse(text).unwrap().validate().unwrap_err();
            match err {
                Error::Invalid { field: f, .. } => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: {other}"),
            }
        }
    }
}
