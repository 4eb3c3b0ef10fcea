//! CPU usage rates: CRI's `usage_nano_cores` is the CPU time used per second of wall
//! time between two samples of the same container or pod.

use std::collections::HashMap;
use std::sync::Mutex;

use super::CgroupSample;

/// The previous CPU sample of each container and pod, keyed by its id, to turn the
/// cumulative counter into a rate. Shared by all stats RPCs; forget an id when its
/// container or pod is removed.
#[derive(Debug, Default)]
pub struct CpuRates {
    previous: Mutex<HashMap<String, (i64, u64)>>,
}

impl CpuRates {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The average usage, in nanoseconds of CPU per second (1e9 = one core), since the
    /// previous sample of `key`, and remembers `sample` for the next call. `None` on the
    /// first sample of a key, when the counter went backwards (the cgroup was
    /// recreated) and when `sample` is not newer than the one remembered.
    pub fn usage_nano_cores(&self, key: &str, sample: &CgroupSample) -> Option<u64> {
        let now = (sample.timestamp, sample.cpu_usage_nanos);
        let mut previous = self.previous.lock().unwrap_or_else(|e| e.into_inner());
        let Some(&(then_ts, then_usage)) = previous.get(key) else {
            previous.insert(key.to_owned(), now);
            return None;
        };
        if now.0 <= then_ts {
            return None;
        }
        previous.insert(key.to_owned(), now);
        let used = now.1.checked_sub(then_usage)?;
        let elapsed = u128::try_from(now.0 - then_ts).ok()?;
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
    fn forget_drops_the_previous_sample() {
        let rates = CpuRates::new();
        rates.usage_nano_cores("c1", &at(1_000_000_000, 0));
        rates.forget("c1");
        assert_eq!(rates.usage_nano_cores("c1", &at(2_000_000_000, 10)), None);
    }
}
