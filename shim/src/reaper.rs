//! Reaping: the shim is a child subreaper, so the container's init, exec processes
//! and anything orphaned below them end up as its children. One task waits on SIGCHLD
//! and reaps every exited child with `waitpid(-1, WNOHANG)`; whoever started a
//! process registers its pid first and gets the exit code through a oneshot channel.
//!
//! Registration must happen before the next `.await` after the process was created:
//! the runtime is single-threaded, so the reaper can't run in between and no exit is
//! missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::oneshot;

use crate::exit::exit_code;

/// Hands the exit codes of reaped children to those who registered them.
#[derive(Debug, Default)]
pub struct Reaper {
    waiters: Mutex<HashMap<i32, oneshot::Sender<i32>>>,
}

impl Reaper {
    /// Installs the SIGCHLD handler (before any child is created) and starts the
    /// reaping task on the current runtime.
    pub fn start() -> std::io::Result<Arc<Self>> {
        let sigchld = signal(SignalKind::child())?;
        let reaper = Arc::new(Self::default());
        tokio::spawn(Arc::clone(&reaper).run(sigchld));
        Ok(reaper)
    }

    /// Asks for the exit code of `pid` (128+signal when it was killed).
    pub fn register(&self, pid: Pid) -> oneshot::Receiver<i32> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(pid.as_raw(), tx);
        rx
    }

    async fn run(self: Arc<Self>, mut sigchld: Signal) {
        loop {
            self.reap_all();
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    }

    fn reap_all(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(status) => {
                    let Some(pid) = status.pid() else { return };
                    if let Some(code) = exit_code(status) {
                        self.deliver(pid, code);
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => return,
                Err(err) => {
                    tracing::warn!(%err, "waitpid");
                    return;
                }
            }
        }
    }

    fn deliver(&self, pid: Pid, code: i32) {
        match self.lock().remove(&pid.as_raw()) {
            Some(tx) => {
                let _ = tx.send(code);
            }
            None => tracing::debug!(%pid, code, "reaped an unregistered process"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, oneshot::Sender<i32>>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
