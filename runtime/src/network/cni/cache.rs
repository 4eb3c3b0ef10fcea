//! The per-sandbox record of an attachment, `<cache dir>/<sandbox-id>.json`: the exact
//! config list and runtime config ADD ran with, and its result once it has one. DEL and
//! CHECK read it (also after a crustd restart) so they undo and verify what ADD did,
//! not what the conf dir says today. Written atomically: temp file, fsync, rename,
//! fsync of the dir.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::conf::NetworkList;

/// What ADD ran with, and what it returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Entry {
    /// `CNI_IFNAME`.
    pub if_name: String,
    /// `CNI_ARGS`.
    pub cni_args: String,
    /// The config list.
    pub network: NetworkList,
    /// The capability arguments offered.
    pub capability_args: Map<String, Value>,
    /// The last plugin's result; `None` while ADD runs or after it failed.
    #[serde(default)]
    pub result: Option<Value>,
}

/// The cache file of `sandbox`.
pub(super) fn path(dir: &Path, sandbox: &str) -> PathBuf {
    dir.join(format!("{sandbox}.json"))
}

/// Writes the entry of `sandbox`, replacing any.
pub(super) fn write(dir: &Path, sandbox: &str, entry: &Entry) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let target = path(dir, sandbox);
    let tmp = dir.join(format!(".{sandbox}.json.tmp"));
    let text = serde_json::to_vec_pretty(entry).map_err(io::Error::other)?;
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        fs::rename(&tmp, &target)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads the entry of `sandbox`; `None` if there is none. A file that does not parse is
/// an `InvalidData` error.
pub(super) fn read(dir: &Path, sandbox: &str) -> io::Result<Option<Entry>> {
    match fs::read(path(dir, sandbox)) {
        Ok(text) => serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the entry of `sandbox`; a missing one is fine.
pub(super) fn remove(dir: &Path, sandbox: &str) -> io::Result<()> {
    match fs::remove_file(path(dir, sandbox)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry() -> Entry {
        let network = NetworkList::parse(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}]}"#,
            Path::new("n.conflist"),
        )
        .unwrap();
        Entry {
            if_name: "eth0".into(),
            cni_args: "IgnoreUnknown=1".into(),
            network,
            capability_args: json!({"portMappings": []}).as_object().unwrap().clone(),
            result: None,
        }
    }

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cni-cache");
        assert_eq!(read(&cache, "abc").unwrap(), None);

        let mut e = entry();
        write(&cache, "abc", &e).unwrap();
        assert_eq!(read(&cache, "abc").unwrap(), Some(e.clone()));

        e.result = Some(json!({"cniVersion": "1.0.0", "ips": []}));
        write(&cache, "abc", &e).unwrap();
        assert_eq!(read(&cache, "abc").unwrap(), Some(e));
        // Only the entry is left: no temp files.
        let names: Vec<_> = fs::read_dir(&cache)
            .unwrap()
            .map(|d| d.unwrap().file_name())
            .collect();
        assert_eq!(names, ["abc.json"]);

        remove(&cache, "abc").unwrap();
        assert_eq!(read(&cache, "abc").unwrap(), None);
        remove(&cache, "abc").unwrap();
    }

    #[test]
    fn corrupt_entry_is_invalid_data() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(path(dir.path(), "abc"), "{").unwrap();
        let err = read(dir.path(), "abc").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
