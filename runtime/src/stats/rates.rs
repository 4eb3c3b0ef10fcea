//! CPU usage rates: CRI's `usage_nano_cores` is the CPU time used per second of wall
//! time between two samples of the same container or pod.
//!
//! The window is at least [`MIN_WINDOW_NANOS`] where it can be: kubelet and its clients ask
//! in bursts (a summary is a pod and a container listing; two summaries may come
//! milliseconds apart), and over a few milliseconds an idle-looking container shows no
//! CPU at all, so kubelet's summary would say 0 cores. containerd gets the same
//! effect from a collector that samples every container each second; here the
//! samples the requests take are kept as anchors instead, at least a window apart,
//! and nothing runs between requests.

use std::collections::HashMap;
use std::sync::Mutex;

use super::CgroupSample;

/// The shortest window a rate is taken over when an older sample allows it.
pub const MIN_WINDOW_NANOS: i64 = 1_000_000_000;

/// A sample's time (ns since the epoch) and cumulative CPU time (ns).
type Point = (i64, u64);

/// The samples rates are taken from: the latest one kept and the one before it, at
/// least [`MIN_WINDOW_NANOS`] apart.
#[derive(Debug, Clone, Copy)]
struct Anchors {
    older: Option<Point>,
    newer: Point,
}

/// The CPU samples of each container and pod, keyed by its id, to turn the cumulative
/// counter into a rate. Shared by all stats RPCs; forget an id when its container or
/// pod is removed.
#[derive(Debug, Default)]
pub struct CpuRates {
    previous: Mutex<HashMap<String, Anchors>>,
}

impl CpuRates {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The average usage, in nanoseconds of CPU per second (1e9 = one core), from a
    /// remembered sample of `key` to `sample`: the latest one kept when it is at least
    /// [`MIN_WINDOW_NANOS`] old, else the one before it. `sample` is kept when it is
    /// that far past the latest. `None` on the first sample of a key, when the counter
    /// went backwards (the cgroup was recreated) and when `sample` is not newer than
    /// the latest kept.
    pub fn usage_nano_cores(&self, key: &str, sample: &CgroupSample) -> Option<u64> {
        let now = (sample.timestamp, sample.cpu_usage_nanos);
        let mut previous = self.previous.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = Anchors {
            older: None,
            newer: now,
        };
        let Some(anchors) = previous.get_mut(key) else {
            previous.insert(key.to_owned(), fresh);
            return None;
        };
        if now.0 <= anchors.newer.0 {
            return None;
        }
        if now.1 < anchors.newer.1 {
            *anchors = fresh;
            return None;
        }
        let base = if now.0 - anchors.newer.0 >= MIN_WINDOW_NANOS {
            let base = anchors.newer;
            *anchors = Anchors {
                older: Some(base),
                newer: now,
            };
            base
        } else {
            anchors.older.unwrap_or(anchors.newer)
        };
        let used = now.1.checked_sub(base.1)?;
        let elapsed = u128::try_from(now.0 - base.0).ok()?;
        u64::try_from(u128::from(used) * 1_000_000_000 / elapsed).ok()
    }

    /// Drops what is remembered of `key`.
    pub fn forget(&self, key: &str) {
        self.previous
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::MemorySample;

    fn at(timestamp: i64, cpu_usage_nanos: u64) -> CgroupSample {
        CgroupSample {
            timestamp,
            cpu_usage_nanos,
            memory: MemorySample::default(),
            pids: None,
            pressure: Default::default(),
            detail: Default::default(),
        }
    }

    #[test]
    fn first_sample_has_no_rate() {
        let rates = CpuRates::new();
        assert_eq!(rates.usage_nano_cores("c1", &at(1_000, 5)), None);
    }

    #[test]
    fn rate_is_cpu_time_per_second() {
        let rates = CpuRates::new();
        rates.usage_nano_cores("c1", &at(1_000_000_000, 0));
        // Half a core for two seconds.
        assert_eq!(
            rates.usage_nano_cores("c1", &at(3_000_000_000, 1_000_000_000)),
            Some(500_000_000)
        );
        // The next rate is against the latest sample.
        assert_eq!(
            rates.usage_nano_cores("c1", &at(4_000_000_000, 3_000_000_000)),
            Some(2_000_000_000)
        );
    }

    #[test]
    fn keys_are_independent() {
        let rates = CpuRates::new();
        rates.usage_nano_cores("a", &at(1_000_000_000, 0));
        assert_eq!(rates.usage_nano_cores("b", &at(2_000_000_000, 10)), None);
        assert_eq!(
            rates.usage_nano_cores("a", &at(2_000_000_000, 10)),
            Some(10)
        );
    }

    #[test]
    fn stale_or_same_time_sample_is_ignored() {
        let rates = CpuRates::new();
        rates.usage_nano_cores("c1", &at(2_000_000_000, 100));
        assert_eq!(rates.usage_nano_cores("c1", &at(2_000_000_000, 200)), None);
        assert_eq!(rates.usage_nano_cores("c1", &at(1_000_000_000, 50)), None);
        assert_eq!(
            rates.usage_nano_cores("c1", &at(3_000_000_000, 1_100)),
            Some(1_000)
        );
    }

    #[test]
    fn counter_going_backwards_restarts() {
        let rates = CpuRates::new();
        rates.usage_nano_cores("c1", &at(1_000_000_000, 5_000));
        assert_eq!(rates.usage_nano_cores("c1", &at(2_000_000_000, 10)), None);
        assert_eq!(
            rates.usage_nano_cores("c1", &at(3_000_000_000, 20)),
            Some(10)
        );
    }

    #[test]
    fn requests_in_a_burst_take_the_rate_over_the_last_window() {
        let rates = CpuRates::new();
        rates.usage_nano_cores("c1", &at(0, 0));
        // A tenth of a core over 10 s.
        assert_eq!(
            rates.usage_nano_cores("c1", &at(10_000_000_000, 1_000_000_000)),
            Some(100_000_000)
        );
        // 5 ms later, no CPU used since: the rate is over the 10 s before, not 0.
        assert_eq!(
            rates.usage_nano_cores("c1", &at(10_005_000_000, 1_000_000_000)),
            Some(99_950_024)
        );
        // A second after the last kept sample, the window is that second.
        assert_eq!(
            rates.usage_nano_cores("c1", &at(11_000_000_000, 1_500_000_000)),
            Some(500_000_000)
        );
    }

    #[test]
    fn a_first_window_shorter_than_the_minimum_is_used_until_a_longer_one() {
        let rates = CpuRates::new();
        rates.usage_nano_cores("c1", &at(0, 0));
        assert_eq!(
            rates.usage_nano_cores("c1", &at(500_000_000, 500_000_000)),
            Some(1_000_000_000)
        );
        // The first sample is still the base: 0.6 s of CPU over 1.2 s.
        assert_eq!(
            rates.usage_nano_cores("c1", &at(1_200_000_000, 600_000_000)),
            Some(500_000_000)
        );
    }

    #[test]
    fn forget_drops_the_previous_sample() {
        let rates = CpuRates::new();
        rates.usage_nano_cores("c1", &at(1_000_000_000, 0));
        rates.forget("c1");
        assert_eq!(rates.usage_nano_cores("c1", &at(2_000_000_000, 10)), None);
    }
}
