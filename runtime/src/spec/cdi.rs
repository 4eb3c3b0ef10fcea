//! CDI devices (Container Device Interface): a container asks for devices by their
//! fully qualified names (`vendor.com/class=name`), in CRI's `cdi_devices` or in
//! `cdi.k8s.io/...` annotations (device plugins that predate the field use them); the
//! CDI spec files of `[cdi] spec_dirs` define what each one adds to the OCI spec:
//! device nodes (with their cgroup rule), mounts, environment variables and hooks.
//! The spec files are read again at each create, so a driver that rewrites its
//! spec between two containers is seen by the second one. Resolution and the edits
//! are the CDI project's own crate's (`container-device-interface`).

use std::collections::HashMap;
use std::path::PathBuf;

use cdi::cache::Cache;
use container_device_interface as cdi;
use crust_proto::cri::ContainerConfig;

/// The CDI devices `config` asks for: `cdi_devices` first, then those of its
/// `cdi.k8s.io/` annotations, each once. An annotation naming something that is not a
/// qualified device name is an error.
pub fn requested(config: &ContainerConfig) -> Result<Vec<String>, String> {
    let mut devices: Vec<String> = config.cdi_devices.iter().map(|d| d.name.clone()).collect();
    let (_, annotated) = cdi::annotations::parse_annotations(&config.annotations)
        .map_err(|e| format!("annotations cdi.k8s.io/: {e}"))?;
    devices.extend(annotated);
    let mut seen = std::collections::HashSet::new();
    devices.retain(|d| seen.insert(d.clone()));
    Ok(devices)
}

/// Applies the edits of `devices` to `spec`, with the CDI spec files of `dirs` read
/// now. A device that no valid spec file defines is an error naming it, with the
/// problems of the spec files that could not be read.
pub fn inject(
    dirs: &[PathBuf],
    spec: &mut oci_spec::runtime::Spec,
    devices: Vec<String>,
) -> Result<(), String> {
    if devices.is_empty() {
        return Ok(());
    }
    let (mut cache, bad_files) = load(dirs);
    let missing: Vec<&str> = devices
        .iter()
        .filter(|d| !cache.devices.contains_key(d.as_str()))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let mut msg = format!("unknown CDI device {}", missing.join(", "));
        if !bad_files.is_empty() {
            msg.push_str(&format!(" (spec files left out: {})", bad_files.join("; ")));
        }
        return Err(msg);
    }
    cache
        .inject_devices(Some(spec), devices)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The devices of the spec files (`.json`, `.yaml`) of `dirs`, and the files that
/// could not be read, each with why. The crate's own scan stops at the first bad file
/// and names none: crust reads each file with the crate's reader itself, so one bad
/// file only loses its own devices. A device defined again in a later dir (or a later
/// file by name) wins.
fn load(dirs: &[PathBuf]) -> (Cache, Vec<String>) {
    let mut specs: HashMap<String, Vec<cdi::spec::Spec>> = HashMap::new();
    let mut devices = HashMap::new();
    let mut bad = Vec::new();
    for (priority, dir) in dirs.iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.is_file() && p.extension().is_some_and(|e| e == "json" || e == "yaml"));
        files.sort();
        for file in files {
            match cdi::spec::read_spec(&file, priority as i32) {
                Ok(spec) => {
                    for device in spec.get_devices().into_values() {
                        devices.insert(device.get_qualified_name(), device);
                    }
                    specs.entry(spec.get_vendor()).or_default().push(spec);
                }
                Err(e) => bad.push(format!("{}: {e:#}", file.display())),
            }
        }
    }
    (Cache::new(Vec::new(), specs, devices), bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_proto::cri::CdiDevice;

    #[test]
    fn devices_come_from_the_field_and_the_annotations() {
        let mut config = ContainerConfig {
            cdi_devices: vec![CdiDevice {
                name: "vendor.example/dev=a".into(),
            }],
            ..Default::default()
        };
        config.annotations.insert(
            "cdi.k8s.io/plugin_x".into(),
            "vendor.example/dev=b,vendor.example/dev=a".into(),
        );
        config
            .annotations
            .insert("other.io/x".into(), "not a device".into());
        assert_eq!(
            requested(&config).unwrap(),
            ["vendor.example/dev=a", "vendor.example/dev=b"]
        );
        config
            .annotations
            .insert("cdi.k8s.io/bad".into(), "no-vendor".into());
        assert!(requested(&config).unwrap_err().contains("no-vendor"));
    }

    #[test]
    fn edits_of_a_spec_file_reach_the_oci_spec() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("vendor.json"),
            r#"{"cdiVersion": "0.6.0", "kind": "vendor.example/dev",
                "containerEdits": {"env": ["ALL=1"]},
                "devices": [{"name": "a", "containerEdits": {
                    "env": ["A=1"],
                    "mounts": [{"hostPath": "/srv/a", "containerPath": "/a", "options": ["ro", "bind"]}]
                }}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("broken.json"), "{ not json").unwrap();
        let dirs = [dir.path().to_path_buf()];
        let mut spec = oci_spec::runtime::Spec::default();
        inject(&dirs, &mut spec, vec!["vendor.example/dev=a".into()]).unwrap();
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert!(env.contains(&"A=1".to_string()), "{env:?}");
        assert!(env.contains(&"ALL=1".to_string()), "{env:?}");
        let mounts = spec.mounts().clone().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.destination() == &PathBuf::from("/a")),
            "{mounts:?}"
        );

        let err = inject(&dirs, &mut spec, vec!["vendor.example/dev=zz".into()]).unwrap_err();
        assert!(err.contains("vendor.example/dev=zz"), "{err}");
        assert!(err.contains("broken.json"), "the bad file is named: {err}");
        assert!(!err.contains("vendor.json"), "{err}");
    }
}
