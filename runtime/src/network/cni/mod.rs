//! Attaching a pod sandbox to the pod network by running CNI plugins, as the CNI spec
//! and libcni do: ADD runs each plugin of the list in order, passing each one's result
//! to the next as `prevResult`; DEL runs them in reverse with the cached ADD result;
//! CHECK runs them in order with it, when the list's version has CHECK (0.4.0 on) and
//! does not disable it. A single `.conf` is a one-plugin list.
//!
//! Every attachment is recorded in a cache file before the first plugin runs (see
//! `cache`), so a DEL after a failed ADD, or after a crustd restart, runs with the
//! exact config and port mappings that ADD used. A failed ADD may leave parts set up:
//! the caller runs [`Cni::del`] to undo them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::config::NetworkConfig;
use crate::network::NotReady;
use crate::network::netns;
use crate::store::SandboxId;

mod cache;
mod conf;
mod error;
mod exec;
mod result;
#[cfg(test)]
mod tests;

pub use conf::{
    Bandwidth, Dns, IpRange, NetworkList, PortMapping, Protocol, RuntimeConfig, SUPPORTED_VERSIONS,
};
pub use error::{CODE_TRY_AGAIN_LATER, Command, Error, ErrorKind, Result};
pub use result::{CniResult, DnsInfo, Interface, IpConfig, PluginError, Route};

use cache::Entry;
use exec::{Env, Invocation};

/// How long one plugin may run before it is killed, unless [`Cni::with_timeout`] says
/// otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The pod's interface name, `CNI_IFNAME`.
pub const IFNAME: &str = "eth0";

/// Runs the pod network's CNI plugins.
#[derive(Debug, Clone)]
pub struct Cni {
    conf: NetworkConfig,
    cache_dir: PathBuf,
    timeout: Duration,
}

/// Who the pod is, for `CNI_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodIdentity {
    /// The pod's name.
    pub name: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's UID.
    pub uid: String,
}

/// One sandbox's attachment to the pod network.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    /// The sandbox, `CNI_CONTAINERID`.
    pub sandbox: &'a SandboxId,
    /// Its pinned network namespace.
    pub netns: &'a Path,
    /// The pod.
    pub pod: &'a PodIdentity,
    /// Port mappings, bandwidth and DNS settings for the plugins that ask for them.
    pub runtime: RuntimeConfig,
}

impl Attachment<'_> {
    /// `CNI_ARGS`, the way kubelet's runtimes pass the pod's identity.
    pub fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.pod.namespace, self.pod.name, self.sandbox, self.pod.uid
        )
    }
}

/// What ADD gave the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStatus {
    /// The network's name.
    pub network: String,
    /// The pod's addresses on [`IFNAME`]: the pod IP (the first IPv4) first, then the
    /// others.
    pub ips: Vec<IpAddr>,
    /// The last plugin's result.
    pub result: CniResult,
}

/// What CHECK did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Every plugin found the attachment as ADD left it.
    Passed,
    /// The list's version has no CHECK, or the list disables it.
    Skipped,
}

impl Cni {
    /// Plugins from `conf`'s dirs, results cached in `cache_dir` (`<state>/cni-cache`).
    pub fn new(conf: NetworkConfig, cache_dir: PathBuf) -> Cni {
        Cni {
            conf,
            cache_dir,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same, with another per-plugin timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Cni {
        self.timeout = timeout;
        self
    }

    /// The cache file of `sandbox`, present from the start of ADD to the end of a
    /// successful DEL.
    pub fn cache_file(&self, sandbox: &SandboxId) -> PathBuf {
        cache::path(&self.cache_dir, sandbox.as_str())
    }

    /// Attaches the sandbox: runs ADD through the current pod network's plugins and
    /// caches the result before returning it.
    pub async fn add(&self, att: &Attachment<'_>) -> Result<NetworkStatus> {
        let sandbox = att.sandbox.as_str();
        let mut entry = Entry {
            if_name: IFNAME.to_owned(),
            cni_args: att.cni_args(),
            network: self.load(sandbox).await?,
            capability_args: att.runtime.capability_args(),
            result: None,
        };
        self.store(sandbox, &entry).await?;
        let env = self.env(sandbox, &entry, att.netns.display().to_string());
        let mut prev: Option<Value> = None;
        let mut parsed = CniResult::default();
        for i in 0..entry.network.plugins.len() {
            let plugin = entry.network.plugin_type(i);
            let out = self
                .run(Command::Add, &entry, i, &env, prev.as_ref())
                .await?;
            let bad = |message: String| Error::BadResult {
                sandbox: sandbox.to_owned(),
                plugin: plugin.to_owned(),
                message,
            };
            let value: Value = serde_json::from_slice(&out).map_err(|e| bad(e.to_string()))?;
            parsed = serde_json::from_value(value.clone()).map_err(|e| bad(e.to_string()))?;
            prev = Some(value);
        }
        entry.result = prev;
        self.store(sandbox, &entry).await?;
        let ips = parsed.pod_ips(IFNAME);
        tracing::info!(sandbox = %sandbox, network = %entry.network.name, ?ips, "cni ADD done");
        Ok(NetworkStatus {
            network: entry.network.name,
            ips,
            result: parsed,
        })
    }

    /// Verifies the attachment ADD made, with the config and result ADD cached.
    pub async fn check(&self, att: &Attachment<'_>) -> Result<CheckOutcome> {
        let sandbox = att.sandbox.as_str();
        let not_attached = || Error::NotAttached {
            sandbox: sandbox.to_owned(),
        };
        let entry = self
            .cached(sandbox)
            .await?
            .filter(|e| e.result.is_some())
            .ok_or_else(not_attached)?;
        if !entry.network.check_supported() {
            return Ok(CheckOutcome::Skipped);
        }
        let env = self.env(sandbox, &entry, att.netns.display().to_string());
        for i in 0..entry.network.plugins.len() {
            self.run(Command::Check, &entry, i, &env, entry.result.as_ref())
                .await?;
        }
        Ok(CheckOutcome::Passed)
    }

    /// Detaches the sandbox: runs DEL through the plugins in reverse, with the cached
    /// config and result when there are (else the current config and `att`'s runtime
    /// config, no `prevResult`), then drops the cache entry. A netns that is gone is
    /// passed as an empty `CNI_NETNS`, so the plugins still release addresses and
    /// rules. Safe to repeat.
    pub async fn del(&self, att: &Attachment<'_>) -> Result<()> {
        let sandbox = att.sandbox.as_str();
        let entry = match self.cached(sandbox).await {
            Ok(Some(entry)) => entry,
            Ok(None) => self.uncached_entry(att).await?,
            Err(e) => {
                tracing::warn!(sandbox = %sandbox, error = %e, "cni DEL without the cache");
                self.uncached_entry(att).await?
            }
        };
        let netns_path = att.netns.to_owned();
        let pinned = tokio::task::spawn_blocking(move || netns::is_pinned(&netns_path))
            .await
            .unwrap_or(false);
        let netns = if pinned {
            att.netns.display().to_string()
        } else {
            String::new()
        };
        let env = self.env(sandbox, &entry, netns);
        for i in (0..entry.network.plugins.len()).rev() {
            self.run(Command::Del, &entry, i, &env, entry.result.as_ref())
                .await?;
        }
        let dir = self.cache_dir.clone();
        let id = sandbox.to_owned();
        blocking(move || cache::remove(&dir, &id))
            .await
            .map_err(self.cache_err(sandbox, "remove"))?;
        tracing::info!(sandbox = %sandbox, network = %entry.network.name, "cni DEL done");
        Ok(())
    }

    async fn uncached_entry(&self, att: &Attachment<'_>) -> Result<Entry> {
        Ok(Entry {
            if_name: IFNAME.to_owned(),
            cni_args: att.cni_args(),
            network: self.load(att.sandbox.as_str()).await?,
            capability_args: att.runtime.capability_args(),
            result: None,
        })
    }

    async fn load(&self, sandbox: &str) -> Result<NetworkList> {
        let conf = self.conf.clone();
        tokio::task::spawn_blocking(move || NetworkList::load(&conf))
            .await
            .unwrap_or_else(|e| {
                Err(NotReady::BadConfig {
                    file: self.conf.conf_dir.clone(),
                    message: e.to_string(),
                })
            })
            .map_err(|source| Error::NoNetwork {
                sandbox: sandbox.to_owned(),
                source,
            })
    }

    fn env(&self, sandbox: &str, entry: &Entry, netns: String) -> Env {
        let dirs: Vec<String> = self
            .conf
            .bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        Env {
            container_id: sandbox.to_owned(),
            netns,
            ifname: entry.if_name.clone(),
            path: dirs.join(":"),
            args: entry.cni_args.clone(),
        }
    }

    async fn run(
        &self,
        command: Command,
        entry: &Entry,
        index: usize,
        env: &Env,
        prev: Option<&Value>,
    ) -> Result<Vec<u8>> {
        let plugin = entry.network.plugin_type(index);
        let binary =
            exec::find_plugin(&self.conf.bin_dirs, plugin).ok_or_else(|| Error::NoNetwork {
                sandbox: env.container_id.clone(),
                source: NotReady::MissingPlugin {
                    network: entry.network.name.clone(),
                    plugin: plugin.to_owned(),
                    dirs: env.path.replace(':', ", "),
                },
            })?;
        let stdin = entry
            .network
            .plugin_config(index, &entry.capability_args, prev);
        tracing::debug!(sandbox = %env.container_id, %command, plugin, "cni plugin");
        exec::invoke(Invocation {
            command,
            plugin,
            binary: &binary,
            env,
            stdin: stdin.to_string().into_bytes(),
            timeout: self.timeout,
        })
        .await
    }

    async fn cached(&self, sandbox: &str) -> Result<Option<Entry>> {
        let dir = self.cache_dir.clone();
        let id = sandbox.to_owned();
        blocking(move || cache::read(&dir, &id))
            .await
            .map_err(self.cache_err(sandbox, "read"))
    }

    async fn store(&self, sandbox: &str, entry: &Entry) -> Result<()> {
        let dir = self.cache_dir.clone();
        let id = sandbox.to_owned();
        let entry = entry.clone();
        blocking(move || cache::write(&dir, &id, &entry))
            .await
            .map_err(self.cache_err(sandbox, "write"))
    }

    fn cache_err(&self, sandbox: &str, op: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        let (sandbox, path) = (sandbox.to_owned(), cache::path(&self.cache_dir, sandbox));
        move |source| Error::Cache {
            sandbox,
            path,
            op,
            source,
        }
    }
}

/// Runs file work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}
