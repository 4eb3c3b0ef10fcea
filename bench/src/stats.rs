//! Latency samples and their summary (nearest-rank percentiles).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Samples of each timed operation, by name.
#[derive(Default)]
pub struct Samples(BTreeMap<String, Vec<Duration>>);

impl Samples {
    /// Adds one sample of `name`.
    pub fn add(&mut self, name: impl Into<String>, d: Duration) {
        self.0.entry(name.into()).or_default().push(d);
    }

    /// Adds samples of `name`.
    pub fn extend(&mut self, name: impl Into<String>, ds: impl IntoIterator<Item = Duration>) {
        self.0.entry(name.into()).or_default().extend(ds);
    }

    /// The summary of each name's samples.
    pub fn summaries(&self) -> BTreeMap<String, Summary> {
        self.0
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), summarize(v)?)))
            .collect()
    }
}

/// The summary of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// How many samples.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile (nearest rank: with fewer than 100 samples, the largest).
    pub p99: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Fastest sample.
    pub min: f64,
    /// Slowest sample.
    pub max: f64,
}

/// Milliseconds of `d` as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The nearest-rank percentile `p` (0 < p <= 100) of sorted `xs`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises `samples`; `None` when there are none.
pub fn summarize(samples: &[Duration]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut xs: Vec<f64> = samples.iter().copied().map(ms).collect();
    xs.sort_by(f64::total_cmp);
    let sum: f64 = xs.iter().sum();
    Some(Summary {
        n: xs.len(),
        p50: percentile(&xs, 50.0),
        p99: percentile(&xs, 99.0),
        mean: sum / xs.len() as f64,
        min: xs[0],
        max: xs[xs.len() - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = summarize(&millis(&(1..=100).rev().collect::<Vec<_>>())).unwrap();
        assert_eq!(
            (s.n, s.p50, s.p99, s.min, s.max),
            (100, 50.0, 99.0, 1.0, 100.0)
        );
        let s = summarize(&millis(&[5, 1, 3])).unwrap();
        assert_eq!((s.p50, s.p99, s.mean), (3.0, 5.0, 3.0));
        let s = summarize(&millis(&[7])).unwrap();
        assert_eq!((s.p50, s.p99), (7.0, 7.0));
    }

    #[test]
    fn no_samples_no_summary() {
        assert!(summarize(&[]).is_none());
    }
}
