//! The one layer every RPC passes through: it refuses calls with `Unavailable` until
//! start-up recovery has finished, logs each call with its ids and outcome, and maps
//! domain errors to gRPC status codes. Nothing else builds a `tonic::Status`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crust_image_store::ErrorKind as ImageErrorKind;
use tonic::{Code, Response, Status};

use super::error::Error;
use crate::network::cni::ErrorKind as CniErrorKind;
use crate::spec::ErrorKind as SpecErrorKind;
use crate::store::ErrorKind as StoreErrorKind;

/// Whether crustd has finished recovering its state and may serve requests.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    /// Marks recovery as finished.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// True once recovery has finished.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// How loudly a call is logged: polling calls (Version, Status, List*) would drown the
/// log at `info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Calls that change state: logged at `info`.
    Change,
    /// Calls that only read: logged at `debug`.
    Read,
}

/// Runs one RPC body: refuses it while recovering, logs it, maps its error.
pub async fn call<T, F>(
    readiness: &Readiness,
    rpc: &'static str,
    id: &str,
    verbosity: Verbosity,
    body: F,
) -> Result<Response<T>, Status>
where
    F: Future<Output = Result<T, Error>>,
{
    if !readiness.is_ready() {
        return Err(Status::unavailable(format!(
            "{rpc}: crustd is still recovering its state, try again"
        )));
    }
    let start = Instant::now();
    let mut guard = CancelLog {
        rpc,
        id,
        start,
        finished: false,
    };
    let result = body.await;
    guard.finished = true;
    let took = start.elapsed();
    let micros = took.as_micros() as u64;
    let answered = result.as_ref().map_or_else(code, |_| Code::Ok);
    crate::metrics::rpc_done(rpc, answered, took);
    match result {
        Ok(resp) => {
            match verbosity {
                Verbosity::Change => tracing::info!(rpc, id, micros, "ok"),
                Verbosity::Read => tracing::debug!(rpc, id, micros, "ok"),
            }
            Ok(Response::new(resp))
        }
        Err(err) => {
            let code = code(&err);
            if code == Code::Internal {
                tracing::error!(rpc, id, micros, error = %err, "failed");
            } else {
                tracing::info!(rpc, id, micros, error = %err, ?code, "refused");
            }
            Err(Status::new(code, printable(&err.to_string())))
        }
    }
}

/// The status a domain error answers with, for an error found after a call has
/// answered (in the stream it returned).
pub fn status(err: &Error) -> Status {
    Status::new(code(err), printable(&err.to_string()))
}

/// `message` with control characters (a NUL a client put in a name, a newline) escaped
/// as Rust does (`\0`, `\n`), so a status message is one clean line.
fn printable(message: &str) -> String {
    if !message.chars().any(char::is_control) {
        return message.to_owned();
    }
    message
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Times the steps of one call, each logged at `debug` with its duration as it ends:
/// where a slow call's milliseconds go (`RUST_LOG=crust_runtime::server=debug`).
pub struct Steps {
    rpc: &'static str,
    id: String,
    last: Instant,
}

impl Steps {
    /// Starts timing the first step of `rpc` on `id`.
    pub fn new(rpc: &'static str, id: impl std::fmt::Display) -> Self {
        Steps {
            rpc,
            id: id.to_string(),
            last: Instant::now(),
        }
    }

    /// Logs the step that just ended and starts timing the next one.
    pub fn done(&mut self, step: &'static str) {
        let now = Instant::now();
        let micros = now.duration_since(self.last).as_micros() as u64;
        tracing::debug!(rpc = self.rpc, id = %self.id, step, micros, "step");
        self.last = now;
    }
}

/// Logs a call whose future was dropped before it finished: the client went away or
/// its deadline passed, and the work was cancelled with it.
struct CancelLog<'a> {
    rpc: &'static str,
    id: &'a str,
    start: Instant,
    finished: bool,
}

impl Drop for CancelLog<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let micros = self.start.elapsed().as_micros() as u64;
            tracing::info!(
                rpc = self.rpc,
                id = self.id,
                micros,
                "cancelled by the client"
            );
        }
    }
}

/// The gRPC code for a domain error.
pub fn code(err: &Error) -> Code {
    match err {
        Error::NotBuilt { .. } => Code::Unimplemented,
        Error::InvalidArgument { .. } => Code::InvalidArgument,
        Error::Image(e) => match e.kind() {
            ImageErrorKind::NotFound => Code::NotFound,
            ImageErrorKind::InvalidArgument => Code::InvalidArgument,
            ImageErrorKind::PermissionDenied => Code::PermissionDenied,
            ImageErrorKind::ResourceExhausted => Code::ResourceExhausted,
            ImageErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
            ImageErrorKind::Unavailable => Code::Unavailable,
            ImageErrorKind::Cancelled => Code::Cancelled,
            ImageErrorKind::Internal => Code::Internal,
        },
        Error::Unsupported { .. } => Code::Unimplemented,
        Error::FailedPrecondition { .. } => Code::FailedPrecondition,
        Error::NotFound { .. } => Code::NotFound,
        Error::DeadlineExceeded { .. } => Code::DeadlineExceeded,
        Error::Store(e) => match e.kind() {
            StoreErrorKind::NotFound => Code::NotFound,
            StoreErrorKind::AlreadyExists => Code::AlreadyExists,
            StoreErrorKind::InvalidArgument => Code::InvalidArgument,
            StoreErrorKind::FailedPrecondition => Code::FailedPrecondition,
            StoreErrorKind::Internal => Code::Internal,
        },
        Error::Spec(e) => match e.kind() {
            SpecErrorKind::InvalidArgument => Code::InvalidArgument,
            SpecErrorKind::Unsupported => Code::Unimplemented,
            SpecErrorKind::Internal => Code::Internal,
        },
        Error::Shim(e) => match e.code() {
            Some(
                c @ (Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::DeadlineExceeded
                | Code::NotFound),
            ) => c,
            _ => Code::Internal,
        },
        Error::Cni(e) => match e.kind() {
            CniErrorKind::FailedPrecondition => Code::FailedPrecondition,
            CniErrorKind::Unavailable => Code::Unavailable,
            CniErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
            CniErrorKind::Internal => Code::Internal,
        },
        // containerd answers a plugin's refusal as Unknown, the code of an error
        // status without one.
        Error::Nri(crate::nri::Error::Adjustment { .. }) => Code::FailedPrecondition,
        Error::Nri(_) => Code::Unknown,
        Error::FsUsage(_)
        | Error::PodNamespace(_)
        | Error::Shm(_)
        | Error::PidHolder(_)
        | Error::Userns(_)
        | Error::Io { .. }
        | Error::Internal { .. }
        | Error::Task { .. } => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unavailable_until_ready() {
        let r = Readiness::default();
        let body = async { Ok::<_, Error>(1) };
        let status = call(&r, "Version", "", Verbosity::Read, body)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("Version"));
        r.set_ready();
        let resp = call(&r, "Version", "", Verbosity::Read, async {
            Ok::<_, Error>(1)
        })
        .await
        .unwrap();
        assert_eq!(resp.into_inner(), 1);
    }

    #[tokio::test]
    async fn a_dropped_call_stops_its_body() {
        let r = Readiness::default();
        r.set_ready();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let body = async move {
            let _tx = tx;
            std::future::pending::<()>().await;
            Ok::<_, Error>(())
        };
        let call = call(&r, "PullImage", "x", Verbosity::Change, body);
        // The client gives up: the call's future is dropped, and the body with it.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(10), call).await;
        assert!(rx.await.is_err(), "the body must be dropped with the call");
    }

    #[tokio::test]
    async fn not_built_is_unimplemented_and_named() {
        let r = Readiness::default();
        r.set_ready();
        let body = async {
            Err::<(), _>(Error::NotBuilt {
                rpc: "RunPodSandbox",
            })
        };
        let status = call(&r, "RunPodSandbox", "", Verbosity::Change, body)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented);
        assert_eq!(
            status.message(),
            "RunPodSandbox: not implemented by crust yet"
        );
    }

    #[tokio::test]
    async fn messages_hold_no_control_characters() {
        let r = Readiness::default();
        r.set_ready();
        let body = async {
            Err::<(), _>(Error::NotFound {
                what: "container \"a\0b\nc\"".into(),
            })
        };
        let status = call(&r, "ContainerStatus", "", Verbosity::Read, body)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), r#"container "a\0b\nc": not found"#);
    }
}
