//! Pod networking through CNI: finding the pod network's config (which decides the
//! `NetworkReady` condition), pinning a pod's network namespace ([`netns`]) and running
//! the CNI plugins on it ([`cni`]). DNS files come with the sandbox lifecycle.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::NetworkConfig;

pub mod cni;
pub mod netns;

/// The pod network crust would use, as its config file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// The config file.
    pub file: PathBuf,
    /// The network's `name`.
    pub name: String,
    /// Plugin types, in chain order.
    pub plugins: Vec<String>,
}

/// Why no pod network is usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// The conf dir holds no config file.
    #[error("no network config found in {0}")]
    NoConfig(PathBuf),
    /// The first config file is not a valid CNI config.
    #[error("network config {file}: {message}")]
    BadConfig {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A plugin of the chain is in none of the bin dirs.
    #[error("network {network}: plugin {plugin:?} not found in {dirs}")]
    MissingPlugin {
        /// The network's name.
        network: String,
        /// The plugin type.
        plugin: String,
        /// The bin dirs searched, comma-separated.
        dirs: String,
    },
}

#[derive(Deserialize)]
struct RawConf {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    plugins: Option<Vec<RawPlugin>>,
}

#[derive(Deserialize)]
struct RawPlugin {
    #[serde(rename = "type")]
    kind: String,
}

/// Finds the pod network: the first `.conflist`, `.conf` or `.json` file by name in the
/// conf dir, as the CNI spec's reference loader does, and checks its plugins exist.
pub fn find_network(cfg: &NetworkConfig) -> Result<NetworkSpec, NotReady> {
    let file = first_config_file(&cfg.conf_dir)?;
    let bad = |message: String| NotReady::BadConfig {
        file: file.clone(),
        message,
    };
    let text = std::fs::read(&file).map_err(|e| bad(e.to_string()))?;
    let raw: RawConf = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let name = raw.name.ok_or_else(|| bad("no \"name\"".into()))?;
    let plugins: Vec<String> = match (raw.plugins, raw.kind) {
        (Some(list), _) => list.into_iter().map(|p| p.kind).collect(),
        (None, Some(kind)) => vec![kind],
        (None, None) => return Err(bad("neither \"plugins\" nor \"type\"".into())),
    };
    if plugins.is_empty() {
        return Err(bad("empty \"plugins\" list".into()));
    }
    for plugin in &plugins {
        if !cfg.bin_dirs.iter().any(|d| d.join(plugin).is_file()) {
            return Err(NotReady::MissingPlugin {
                network: name,
                plugin: plugin.clone(),
                dirs: cfg
                    .bin_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(NetworkSpec {
        file,
        name,
        plugins,
    })
}

fn first_config_file(dir: &Path) -> Result<PathBuf, NotReady> {
    let entries = std::fs::read_dir(dir).map_err(|_| NotReady::NoConfig(dir.to_owned()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .next()
        .ok_or_else(|| NotReady::NoConfig(dir.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(files: &[(&str, &str)], plugins: &[&str]) -> (tempfile::TempDir, NetworkConfig) {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("net.d");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        for (name, text) in files {
            std::fs::write(conf.join(name), text).unwrap();
        }
        for p in plugins {
            std::fs::write(bin.join(p), "").unwrap();
        }
        let cfg = NetworkConfig {
            conf_dir: conf,
            bin_dirs: vec![bin],
        };
        (dir, cfg)
    }

    #[test]
    fn no_config_is_not_ready() {
        let (_d, cfg) = setup(&[("README", "x")], &[]);
        assert!(matches!(find_network(&cfg), Err(NotReady::NoConfig(_))));
    }

    #[test]
    fn first_file_by_name_wins() {
        let (_d, cfg) = setup(
            &[
                ("20-b.conf", r#"{"name":"b","type":"bridge"}"#),
                (
                    "10-a.conflist",
                    r#"{"name":"a","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
                ),
            ],
            &["bridge", "portmap"],
        );
        let net = find_network(&cfg).unwrap();
        assert_eq!(net.name, "a");
        assert_eq!(net.plugins, ["bridge", "portmap"]);
    }

    #[test]
    fn missing_plugin_is_named() {
        let (_d, cfg) = setup(
            &[(
                "10-a.conflist",
                r#"{"name":"a","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
            )],
            &["bridge"],
        );
        let err = find_network(&cfg).unwrap_err();
        assert!(err.to_string().contains("\"portmap\""), "{err}");
    }

    #[test]
    fn bad_json_is_not_ready() {
        let (_d, cfg) = setup(&[("10-a.conf", "{")], &[]);
        assert!(matches!(
            find_network(&cfg),
            Err(NotReady::BadConfig { .. })
        ));
    }
}
