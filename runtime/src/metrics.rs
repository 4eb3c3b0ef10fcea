//! crustd's own Prometheus metrics (`[metrics] address`, off by default as
//! containerd's), in the OpenMetrics text format of the Prometheus project's client
//! (`prometheus-client`), served at `/metrics`:
//!
//! - `crust_grpc_requests_total{rpc, code}` and `crust_grpc_request_duration_seconds
//!   {rpc}`: every CRI call, by its gRPC code (`OK` and the error codes);
//! - `crust_image_pulls_in_flight`, `crust_image_pull_duration_seconds`,
//!   `crust_image_pull_failures_total`, `crust_image_pull_bytes_total`,
//!   `crust_image_pull_blobs_total`, `crust_image_layers_unpacked_total`;
//! - `crust_pods{state}`, `crust_containers{state}`, `crust_shims` (shims crustd waits
//!   on for their container's exit), read at each scrape;
//! - `crust_store_commit_duration_seconds`: each write transaction of crustd's store;
//! - `crust_build_info{version}`.
//!
//! The values are recorded whether or not the server runs (a few atomic adds per
//! call); the registry is process-wide, as the calls that record are everywhere.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The labels of one RPC (static: recording a call allocates nothing).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Rpc {
    /// The CRI method, e.g. `RunPodSandbox`.
    pub rpc: &'static str,
}

/// The labels of one RPC's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcCode {
    /// The CRI method.
    pub rpc: &'static str,
    /// The gRPC code it answered, `OK` for a success.
    pub code: &'static str,
}

/// A state label (of pods or containers).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct State {
    /// CRI's state name, e.g. `SANDBOX_READY`, `CONTAINER_RUNNING`.
    pub state: String,
}

/// The version label of `crust_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Version {
    /// crustd's version.
    pub version: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric crustd records.
pub struct Metrics {
    registry: Registry,
    requests: Family<RpcCode, Counter>,
    request_seconds: Histograms<Rpc>,
    pulls_in_flight: Gauge,
    pull_seconds: Histogram,
    pull_failures: Counter,
    pull_bytes: Counter,
    pull_blobs: Counter,
    layers_unpacked: Counter,
    pods: Family<State, Gauge>,
    containers: Family<State, Gauge>,
    shims: Gauge,
    commit_seconds: Histogram,
}

fn latency() -> Histogram {
    // 100 µs to ~3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("crust");
        let requests = Family::<RpcCode, Counter>::default();
        registry.register(
            "grpc_requests",
            "CRI calls answered, by method and gRPC code",
            requests.clone(),
        );
        let request_seconds: Histograms<Rpc> = Family::new_with_constructor(latency);
        registry.register(
            "grpc_request_duration_seconds",
            "Time to answer a CRI call",
            request_seconds.clone(),
        );
        let pulls_in_flight = Gauge::default();
        registry.register(
            "image_pulls_in_flight",
            "Image pulls under way",
            pulls_in_flight.clone(),
        );
        // 10 ms to ~10 min.
        let pull_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register(
            "image_pull_duration_seconds",
            "Time of a PullImage call",
            pull_seconds.clone(),
        );
        let pull_failures = Counter::default();
        registry.register(
            "image_pull_failures",
            "PullImage calls that failed",
            pull_failures.clone(),
        );
        let pull_bytes = Counter::default();
        registry.register(
            "image_pull_bytes",
            "Blob bytes received from registries",
            pull_bytes.clone(),
        );
        let pull_blobs = Counter::default();
        registry.register(
            "image_pull_blobs",
            "Blobs downloaded and verified",
            pull_blobs.clone(),
        );
        let layers_unpacked = Counter::default();
        registry.register(
            "image_layers_unpacked",
            "Layers unpacked into snapshots",
            layers_unpacked.clone(),
        );
        let pods = Family::<State, Gauge>::default();
        registry.register("pods", "Pods by state", pods.clone());
        let containers = Family::<State, Gauge>::default();
        registry.register("containers", "Containers by state", containers.clone());
        let shims = Gauge::default();
        registry.register(
            "shims",
            "Shims crustd waits on for their container's exit",
            shims.clone(),
        );
        let commit_seconds = latency();
        registry.register(
            "store_commit_duration_seconds",
            "Time of a write transaction of crustd's store (fsynced)",
            commit_seconds.clone(),
        );
        // A gauge of 1, not OpenMetrics' info type: Prometheus' text parsers (promtool's
        // too) know no info type.
        let build = Family::<Version, Gauge>::default();
        build
            .get_or_create(&Version {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register("build_info", "crustd's version", build);
        Metrics {
            registry,
            requests,
            request_seconds,
            pulls_in_flight,
            pull_seconds,
            pull_failures,
            pull_bytes,
            pull_blobs,
            layers_unpacked,
            pods,
            containers,
            shims,
            commit_seconds,
        }
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Records a CRI call that answered `code` after `took`.
pub fn rpc_done(rpc: &'static str, code: tonic::Code, took: Duration) {
    let m = get();
    m.requests
        .get_or_create(&RpcCode {
            rpc,
            code: code_name(code),
        })
        .inc();
    m.request_seconds
        .get_or_create(&Rpc { rpc })
        .observe(took.as_secs_f64());
}

/// The name of a gRPC code as tonic spells it (`OK`, `NotFound`, ...).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Records a write transaction of the store.
pub fn store_commit(took: Duration) {
    get().commit_seconds.observe(took.as_secs_f64());
}

/// A pull under way, counted until dropped; [`Pull::failed`] counts it as failed.
pub struct Pull {
    start: std::time::Instant,
}

impl Pull {
    /// A pull starts.
    pub fn start() -> Pull {
        get().pulls_in_flight.inc();
        Pull {
            start: std::time::Instant::now(),
        }
    }

    /// The pull failed.
    pub fn failed(&self) {
        get().pull_failures.inc();
    }
}

impl Drop for Pull {
    fn drop(&mut self) {
        let m = get();
        m.pulls_in_flight.dec();
        m.pull_seconds.observe(self.start.elapsed().as_secs_f64());
    }
}

/// What a scrape reads from the runtime at that moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Pods per CRI state name.
    pub pods: Vec<(String, i64)>,
    /// Containers per CRI state name.
    pub containers: Vec<(String, i64)>,
    /// Shim connections held.
    pub shims: i64,
    /// The image store's pull counters.
    pub pull_bytes: u64,
    /// Blobs downloaded.
    pub pull_blobs: u64,
    /// Layers unpacked.
    pub layers_unpacked: u64,
}

/// The metrics as OpenMetrics text, with `now`'s values set first.
pub fn encode(now: &Snapshot) -> String {
    let m = get();
    for (family, values) in [(&m.pods, &now.pods), (&m.containers, &now.containers)] {
        family.clear();
        for (state, n) in values {
            family
                .get_or_create(&State {
                    state: state.clone(),
                })
                .set(*n);
        }
    }
    m.shims.set(now.shims);
    m.pull_bytes
        .inner()
        .store(now.pull_bytes, std::sync::atomic::Ordering::Relaxed);
    m.pull_blobs
        .inner()
        .store(now.pull_blobs, std::sync::atomic::Ordering::Relaxed);
    m.layers_unpacked
        .inner()
        .store(now.layers_unpacked, std::sync::atomic::Ordering::Relaxed);
    let mut out = String::new();
    // Writing into a String does not fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &m.registry);
    out
}

/// Serves `/metrics` on `listener` until the task is dropped; `snapshot` reads the
/// runtime's state at each scrape.
pub async fn serve(
    listener: tokio::net::TcpListener,
    snapshot: Arc<dyn Fn() -> Snapshot + Send + Sync>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let snapshot = Arc::clone(&snapshot);
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let snapshot = Arc::clone(&snapshot);
                    async move {
                        if req.uri().path() == "/metrics" {
                            hyper::Response::builder()
                                .header(
                                    hyper::header::CONTENT_TYPE,
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(encode(&snapshot()))
                        } else {
                            hyper::Response::builder()
                                .status(hyper::StatusCode::NOT_FOUND)
                                .body("not found; try /metrics\n".to_owned())
                        }
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
