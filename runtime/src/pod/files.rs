//! The files a pod's containers share, kept in the sandbox's state dir and mounted into
//! each container: `hostname`, `resolv.conf`, `hosts`, and the `shm` dir.
//!
//! The content functions are pure and follow containerd's CRI plugin, so a pod sees the
//! same files under crust as under containerd; [`write_state_file`] puts them in place
//! atomically.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crust_proto::cri::DnsConfig;

/// containerd's `/etc/hosts` for a pod with its own network namespace.
const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n\
    ::1\tlocalhost ip6-localhost ip6-loopback\n\
    fe00::0\tip6-localnet\n\
    ff00::0\tip6-mcastprefix\n\
    ff00::1\tip6-allnodes\n\
    ff00::2\tip6-allrouters\n";

/// Where a sandbox's shared files live in its state dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFiles {
    /// The pod's hostname, mounted at `/etc/hostname`.
    pub hostname: PathBuf,
    /// Mounted at `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// Mounted at `/etc/hosts`.
    pub hosts: PathBuf,
    /// The dir the pod's tmpfs `/dev/shm` is mounted on.
    pub shm: PathBuf,
}

impl PodFiles {
    /// The files of a sandbox whose state dir is `dir`.
    pub fn in_dir(dir: &Path) -> PodFiles {
        PodFiles {
            hostname: dir.join("hostname"),
            resolv_conf: dir.join("resolv.conf"),
            hosts: dir.join("hosts"),
            shm: dir.join("shm"),
        }
    }
}

/// The pod's `resolv.conf`. With a [`DnsConfig`] that says anything: a `search` line
/// (the domains joined by spaces), one `nameserver` line per server and an `options`
/// line, each only when there is something to put on it, as containerd writes it.
/// Without one, or with an empty one, the host's `resolv.conf` content as is
/// (containerd copies the host's file).
pub fn resolv_conf(dns: Option<&DnsConfig>, host_resolv: &str) -> String {
    let mut out = String::new();
    let Some(dns) = dns else {
        return host_resolv.to_owned();
    };
    if !dns.searches.is_empty() {
        out += &format!("search {}\n", dns.searches.join(" "));
    }
    for server in &dns.servers {
        out += &format!("nameserver {server}\n");
    }
    if !dns.options.is_empty() {
        out += &format!("options {}\n", dns.options.join(" "));
    }
    if out.is_empty() {
        return host_resolv.to_owned();
    }
    out
}

/// The pod's `/etc/hosts`: the host's own for a pod on the host network, containerd's
/// localhost entries otherwise (kubelet adds the pod's own names through a mount of
/// its own).
pub fn hosts(host_network: bool, host_hosts: &str) -> String {
    if host_network {
        host_hosts.to_owned()
    } else {
        DEFAULT_HOSTS.to_owned()
    }
}

/// `hosts` with a line naming the pod by its hostname at each of its IPs, written
/// once CNI has given the pod its addresses (CRI-O writes the same line).
pub fn hosts_with_pod(base: &str, hostname: &str, ips: &[String]) -> String {
    let mut out = base.to_owned();
    if hostname.is_empty() {
        return out;
    }
    for ip in ips {
        out.push_str(&format!("{ip}\t{hostname}\n"));
    }
    out
}

/// The content of the pod's `/etc/hostname`.
pub fn hostname(name: &str) -> String {
    format!("{name}\n")
}

/// Tells temp files of concurrent writers in one process apart.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes a file of the state dir, which lives no longer than the boot: `content`
/// goes to `path` with permission bits `mode` (umask does not apply), through a temp
/// file beside it renamed over `path`. A crash of crustd leaves either the old file or
/// the new one (the kernel keeps what was written), and perhaps a temp file named
/// `.<name>.tmp-<pid>-<n>` that start-up may remove. Nothing is fsynced: only a
/// crash of the machine could lose the write, and it ends the pods and containers
/// these files serve (hostname, resolv.conf, hosts, a bundle's config.json) with it.
pub fn write_state_file(path: &Path, content: &str, mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: no file name", path.display()),
        )
    })?;
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!(
        ".{}.tmp-{}-{seq}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(content.as_bytes())?;
        fs::rename(&temp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn dns(servers: &[&str], searches: &[&str], options: &[&str]) -> DnsConfig {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        DnsConfig {
            servers: v(servers),
            searches: v(searches),
            options: v(options),
        }
    }

    const HOST_RESOLV: &str = "# host\nnameserver 192.0.2.53\nsearch example.org\n";

    #[test]
    fn resolv_conf_from_cluster_dns() {
        let d = dns(
            &["10.96.0.10", "10.96.0.11"],
            &[
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
            ],
            &["ndots:5", "timeout:1"],
        );
        assert_eq!(
            resolv_conf(Some(&d), HOST_RESOLV),
            "search default.svc.cluster.local svc.cluster.local cluster.local\n\
             nameserver 10.96.0.10\n\
             nameserver 10.96.0.11\n\
             options ndots:5 timeout:1\n"
        );
    }

    #[test]
    fn resolv_conf_leaves_out_empty_lines() {
        let d = dns(&["10.96.0.10"], &[], &[]);
        assert_eq!(
            resolv_conf(Some(&d), HOST_RESOLV),
            "nameserver 10.96.0.10\n"
        );
        let d = dns(&[], &["a.example"], &["ndots:2"]);
        assert_eq!(
            resolv_conf(Some(&d), HOST_RESOLV),
            "search a.example\noptions ndots:2\n"
        );
    }

    #[test]
    fn resolv_conf_without_dns_is_the_hosts() {
        assert_eq!(resolv_conf(None, HOST_RESOLV), HOST_RESOLV);
        // An empty config says nothing either: containerd copies the host's file.
        assert_eq!(
            resolv_conf(Some(&dns(&[], &[], &[])), HOST_RESOLV),
            HOST_RESOLV
        );
    }

    #[test]
    fn hosts_by_network_mode() {
        let host = "127.0.0.1 localhost\n192.0.2.7 node-1\n";
        assert_eq!(hosts(true, host), host);
        let own = hosts(false, host);
        assert!(own.starts_with("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost"));
        assert!(own.ends_with("ff00::2\tip6-allrouters\n"));
        assert_eq!(own.lines().count(), 6);
    }

    #[test]
    fn hostname_ends_in_newline() {
        assert_eq!(hostname("web-0"), "web-0\n");
    }

    #[test]
    fn pod_files_names() {
        let f = PodFiles::in_dir(Path::new("/run/crust/sandboxes/abc"));
        assert_eq!(f.hostname, Path::new("/run/crust/sandboxes/abc/hostname"));
        assert_eq!(
            f.resolv_conf,
            Path::new("/run/crust/sandboxes/abc/resolv.conf")
        );
        assert_eq!(f.hosts, Path::new("/run/crust/sandboxes/abc/hosts"));
        assert_eq!(f.shm, Path::new("/run/crust/sandboxes/abc/shm"));
    }

    #[test]
    fn write_state_file_replaces_atomically_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        write_state_file(&path, "one\n", 0o644).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\n");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o644);
        write_state_file(&path, "two\n", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        // No temp file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["hosts"]);
    }

    #[test]
    fn write_file_into_a_missing_dir_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_state_file(&dir.path().join("nope/hosts"), "x", 0o644).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn hosts_name_the_pod_at_its_ips() {
        let h = hosts_with_pod(
            "127.0.0.1\tlocalhost\n",
            "web-0",
            &["10.88.0.5".into(), "fd00::5".into()],
        );
        assert_eq!(
            h,
            "127.0.0.1\tlocalhost\n10.88.0.5\tweb-0\nfd00::5\tweb-0\n"
        );
        assert_eq!(hosts_with_pod("x\n", "", &["10.88.0.5".into()]), "x\n");
    }
}
