//! A pod's network counters: `/proc/<pid>/net/dev` of one of its processes when one is
//! in the pod's network namespace (no thread, no setns), else `/proc/thread-self/net/dev`
//! on a thread that joined the pod's pinned namespace.

use std::path::Path;

use super::{Error, Result, now_nanos};
use crate::network::netns;

/// One interface's counters since it was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceSample {
    /// The interface name, e.g. `eth0`.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Packets dropped while transmitting.
    pub tx_dropped: u64,
}

/// The interfaces of one network namespace at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkSample {
    /// When they were read, in nanoseconds since the Unix epoch.
    pub timestamp: i64,
    /// Every interface but `lo`, in the kernel's order.
    pub interfaces: Vec<InterfaceSample>,
}

/// The interface counters inside the network namespace pinned at `netns`, read through
/// the first of `pids` that is in it (its `/proc/<pid>/ns/net` is the pin's namespace),
/// else by joining it as [`network`] does.
pub fn network_via(netns: &Path, pids: impl IntoIterator<Item = u32>) -> Result<NetworkSample> {
    use std::os::unix::fs::MetadataExt;
    let Ok(pin) = std::fs::metadata(netns) else {
        return network(netns);
    };
    for pid in pids {
        let same = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .is_ok_and(|m| m.ino() == pin.ino() && m.dev() == pin.dev());
        if !same {
            continue;
        }
        // The process may have exited since: then the next, or the thread.
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/dev")) {
            return Ok(NetworkSample {
                timestamp: now_nanos(),
                interfaces: parse_net_dev(&text),
            });
        }
    }
    network(netns)
}

/// The interface counters inside the network namespace pinned at `netns` (the
/// sandbox's pin file). Fails with [`Error::Netns`] if it is not pinned any more.
pub fn network(netns: &Path) -> Result<NetworkSample> {
    let text = netns::run_in(netns, || {
        std::fs::read_to_string("/proc/thread-self/net/dev")
    })?
    .map_err(|source| Error::NetDev {
        path: netns.to_owned(),
        source,
    })?;
    Ok(NetworkSample {
        timestamp: now_nanos(),
        interfaces: parse_net_dev(&text),
    })
}

/// Parses `/proc/net/dev`: two header lines, then `name: ` and 16 numbers per
/// interface (8 receive, 8 transmit). Malformed lines and `lo` are skipped.
fn parse_net_dev(text: &str) -> Vec<InterfaceSample> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            if name == "lo" || name.is_empty() {
                return None;
            }
            let n: Vec<u64> = counters
                .split_whitespace()
                .map(str::parse)
                .collect::<std::result::Result<_, _>>()
                .ok()?;
            if n.len() < 16 {
                return None;
            }
            Some(InterfaceSample {
                name: name.to_owned(),
                rx_bytes: n[0],
                rx_packets: n[1],
                rx_errors: n[2],
                rx_dropped: n[3],
                tx_bytes: n[8],
                tx_packets: n[9],
                tx_errors: n[10],
                tx_dropped: n[11],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn through_a_process_in_the_namespace_or_not_at_all() {
        // This process is in the host's namespace: /proc/self/ns/net stands for a pin
        // of it, and a pid in another namespace (none here) would be passed over.
        let me = std::process::id();
        let via = network_via(Path::new("/proc/self/ns/net"), [u32::MAX, me]).unwrap();
        let direct = parse_net_dev(&std::fs::read_to_string("/proc/self/net/dev").unwrap());
        let names = |v: &[InterfaceSample]| v.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&via.interfaces), names(&direct));
    }

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0
  eth0: 1234567    890    1    2    0     0          0         0   765432     321    3    4    0     0       0          0
 net1:5 6 7 8 0 0 0 0 9 10 11 12 0 0 0 0
 bad: 1 2 3
";

    #[test]
    fn parses_counters_and_skips_lo() {
        let ifaces = parse_net_dev(NET_DEV);
        assert_eq!(
            ifaces,
            vec![
                InterfaceSample {
                    name: "eth0".into(),
                    rx_bytes: 1_234_567,
                    rx_packets: 890,
                    rx_errors: 1,
                    rx_dropped: 2,
                    tx_bytes: 765_432,
                    tx_packets: 321,
                    tx_errors: 3,
                    tx_dropped: 4,
                },
                InterfaceSample {
                    name: "net1".into(),
                    rx_bytes: 5,
                    rx_packets: 6,
                    rx_errors: 7,
                    rx_dropped: 8,
                    tx_bytes: 9,
                    tx_packets: 10,
                    tx_errors: 11,
                    tx_dropped: 12,
                },
            ]
        );
    }

    #[test]
    fn headers_only_is_empty() {
        let headers: String = NET_DEV.lines().take(3).collect::<Vec<_>>().join("\n");
        assert!(parse_net_dev(&headers).is_empty());
    }

    #[test]
    fn unpinned_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = network(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(err, Error::Netns(_)), "{err}");
    }

    #[test]
    fn reads_inside_the_pinned_namespace() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED reads_inside_the_pinned_namespace: needs root to pin a netns");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let id = crate::store::SandboxId::generate();
        let pin = netns::create(dir.path(), &id).unwrap();
        let sample = network(&pin);
        netns::remove(&pin).unwrap();
        let _ = nix::mount::umount2(dir.path(), nix::mount::MntFlags::MNT_DETACH);
        // A new namespace holds only lo, which is skipped; the host's interfaces must
        // not show through.
        let sample = sample.unwrap();
        assert!(sample.timestamp > 0);
        assert_eq!(sample.interfaces, []);
    }
}
