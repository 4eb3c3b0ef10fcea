//! The daemon under test as a process: its pid, which changes when the recovery
//! phase kills and starts it again, and its CPU time summed over those processes.

use anyhow::Result;

use crate::procs;

/// The runtime's daemon, when its pid was given.
#[derive(Debug)]
pub struct Daemon {
    pid: Option<u32>,
    /// CPU time of the processes that were replaced, from `new` until they died.
    earlier_cpu_ms: u64,
    /// CPU time the current process had used when it was first seen.
    base_cpu_ms: u64,
}

impl Daemon {
    /// The daemon `pid`; its CPU time counts from now.
    pub fn new(pid: Option<u32>) -> Result<Daemon> {
        let base_cpu_ms = pid.map(procs::cpu_ms).transpose()?.unwrap_or(0);
        Ok(Daemon {
            pid,
            earlier_cpu_ms: 0,
            base_cpu_ms,
        })
    }

    /// Its current pid.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Its resident set size now.
    pub fn rss_kib(&self) -> Result<Option<u64>> {
        self.pid
            .map(|p| procs::mem(p).map(|m| m.rss_kib))
            .transpose()
    }

    /// CPU time (user + system) used since `new`, by this process and those it
    /// replaced.
    pub fn cpu_ms(&self) -> Result<Option<u64>> {
        let Some(pid) = self.pid else { return Ok(None) };
        let now = procs::cpu_ms(pid)?.saturating_sub(self.base_cpu_ms);
        Ok(Some(self.earlier_cpu_ms + now))
    }

    /// The process was replaced by `pid`, started anew; `last_cpu_ms` is the CPU
    /// time the old one had used when it was killed.
    pub fn replaced(&mut self, pid: u32, last_cpu_ms: u64) {
        self.earlier_cpu_ms += last_cpu_ms.saturating_sub(self.base_cpu_ms);
        self.base_cpu_ms = 0;
        self.pid = Some(pid);
    }
}
