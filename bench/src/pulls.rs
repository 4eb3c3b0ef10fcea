//! Pulls: several different images pulled at once (a node starting pods of several
//! workloads), and one image of many small layers. Each pull is cold: the images
//! are removed first, the runtime is given time to collect their blobs and layers,
//! and the page cache is dropped.

use std::time::{Duration, Instant};

use anyhow::Result;
use futures::future::try_join_all;
use serde::Serialize;

use crate::cri::Cri;
use crate::daemon::Daemon;
use crate::procs;
use crate::stats::ms;

/// Time given to a runtime to collect the blobs and layers of removed images
/// (crustd does it right after RemoveImage, in the background).
const GC_WAIT: Duration = Duration::from_secs(3);

/// The figures of the pull phase.
#[derive(Debug, Default, Serialize)]
pub struct Pulls {
    /// The images pulled at once.
    pub parallel_images: Vec<String>,
    /// From the first PullImage to the last answer.
    pub parallel_wall_ms: Option<f64>,
    /// Each pull of them, in the order of `parallel_images`.
    pub parallel_each_ms: Vec<f64>,
    /// The daemon's peak RSS during those pulls.
    pub parallel_peak_rss_kib: Option<u64>,
    /// The image of many layers.
    pub layers_image: Option<String>,
    /// Its pull.
    pub layers_wall_ms: Option<f64>,
    /// The daemon's peak RSS during it.
    pub layers_peak_rss_kib: Option<u64>,
    /// Whether the page cache could be dropped before each pull.
    pub page_cache_dropped: bool,
}

/// Removes `images` from the runtime, waits for its garbage collection and drops
/// the page cache; returns whether it could.
async fn make_cold(cri: &mut Cri, images: &[String]) -> Result<bool> {
    for i in images {
        cri.remove_image(i).await?;
    }
    tokio::time::sleep(GC_WAIT).await;
    // SAFETY: sync has no preconditions.
    unsafe { nix::libc::sync() };
    Ok(std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok())
}

/// The daemon's peak RSS is counted from now.
fn reset_peak(daemon: &Daemon) {
    if let Some(pid) = daemon.pid() {
        // without it the peak is the process's lifetime peak: kept, and reported
        let _ = procs::reset_peak_rss(pid);
    }
}

fn peak(daemon: &Daemon) -> Result<Option<u64>> {
    daemon
        .pid()
        .map(|p| procs::status_kib(p, "VmHWM"))
        .transpose()
}

/// Pulls `parallel` all at once, then `layers` alone, each cold; removes them all
/// at the end.
pub async fn pulls(
    cri: &mut Cri,
    daemon: &Daemon,
    parallel: &[String],
    layers: Option<&str>,
) -> Result<Pulls> {
    let mut p = Pulls {
        parallel_images: parallel.to_vec(),
        layers_image: layers.map(str::to_owned),
        page_cache_dropped: true,
        ..Default::default()
    };
    let mut all = parallel.to_vec();
    all.extend(layers.map(str::to_owned));
    if !parallel.is_empty() {
        p.page_cache_dropped &= make_cold(cri, &all).await?;
        reset_peak(daemon);
        let t = Instant::now();
        let each = try_join_all(parallel.iter().map(|image| {
            let mut c = cri.clone();
            async move { c.pull_image(image).await }
        }))
        .await?;
        p.parallel_wall_ms = Some(ms(t.elapsed()));
        p.parallel_each_ms = each.into_iter().map(ms).collect();
        p.parallel_peak_rss_kib = peak(daemon)?;
    }
    if let Some(image) = layers {
        p.page_cache_dropped &= make_cold(cri, &all).await?;
        reset_peak(daemon);
        p.layers_wall_ms = Some(ms(cri.pull_image(image).await?));
        p.layers_peak_rss_kib = peak(daemon)?;
    }
    for i in &all {
        cri.remove_image(i).await?;
    }
    Ok(p)
}
