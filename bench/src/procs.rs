//! What the benchmark reads from /proc: a process's CPU time and memory, and the
//! per-container processes of a runtime (its shims, and pause processes under them).

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;

/// A process's command line, split at NULs (empty for kernel threads and gone pids).
fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The fields of /proc/PID/stat after the command name: state is [0], ppid [1],
/// utime [11], stime [12].
fn stat_fields(pid: u32) -> Result<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    let (_, rest) = text
        .rsplit_once(')')
        .with_context(|| format!("parse /proc/{pid}/stat"))?;
    Ok(rest.split_whitespace().map(String::from).collect())
}

fn stat_field(pid: u32, index: usize) -> Result<u64> {
    let fields = stat_fields(pid)?;
    fields
        .get(index)
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("/proc/{pid}/stat: field {index}"))
}

/// Clock ticks per second of /proc/PID/stat's times.
fn ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant and has no preconditions.
    let t = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// CPU time (user + system) the process has used, in milliseconds.
pub fn cpu_ms(pid: u32) -> Result<u64> {
    let ticks = stat_field(pid, 11)? + stat_field(pid, 12)?;
    Ok(ticks * 1000 / ticks_per_second())
}

/// The parent pid of `pid`.
fn ppid(pid: u32) -> Option<u32> {
    stat_field(pid, 1).ok().map(|p| p as u32)
}

/// The kernel's short name of the process.
fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Resident and proportional set size of a process, in KiB.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Mem {
    /// Resident set size.
    pub rss_kib: u64,
    /// Proportional set size: shared pages divided among their users.
    pub pss_kib: u64,
}

impl std::ops::AddAssign for Mem {
    fn add_assign(&mut self, o: Mem) {
        self.rss_kib += o.rss_kib;
        self.pss_kib += o.pss_kib;
    }
}

/// Rss and Pss of `pid` from /proc/PID/smaps_rollup.
pub fn mem(pid: u32) -> Result<Mem> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("read /proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("/proc/{pid}/smaps_rollup: no {name}"))
    };
    Ok(Mem {
        rss_kib: field("Rss:")?,
        pss_kib: field("Pss:")?,
    })
}

/// Every pid in /proc.
fn pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// How to recognise a runtime's per-container processes.
#[derive(Debug, Clone)]
pub struct ShimMatch {
    /// File name of the shim binary (argv[0]'s last component).
    pub name: String,
    /// A string the shim's command line must contain (the daemon's state dir or
    /// socket), so that shims of other daemons on the host are left out.
    pub arg: String,
    /// Short name (comm) of pause processes, counted when they are a shim's children.
    pub pause_comm: String,
}

/// The per-container processes found, and their memory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overhead {
    /// Shim processes.
    pub shims: usize,
    /// Pause processes (children of a shim).
    pub pauses: usize,
    /// Every other process under a shim: the containers' own processes.
    pub others: usize,
    /// Sum over the shims.
    pub shim_mem: Mem,
    /// Sum over the pause processes.
    pub pause_mem: Mem,
    /// Sum over the containers' processes.
    pub other_mem: Mem,
}

impl Overhead {
    /// Shims and pause processes together.
    pub fn runtime_mem(&self) -> Mem {
        let mut m = self.shim_mem;
        m += self.pause_mem;
        m
    }

    /// Shims, pause processes and the containers' processes together.
    pub fn all_mem(&self) -> Mem {
        let mut m = self.runtime_mem();
        m += self.other_mem;
        m
    }
}

/// Finds the shims, their pause children and every other process under them (the
/// containers' processes) and adds up their memory. A process that exits while it
/// is read is left out.
pub fn overhead(m: &ShimMatch) -> Result<Overhead> {
    let all = pids();
    let shims: Vec<u32> = all
        .iter()
        .copied()
        .filter(|&p| {
            let argv = cmdline(p);
            argv.first()
                .and_then(|a0| Path::new(a0).file_name())
                .is_some_and(|n| n.to_string_lossy() == m.name)
                && argv.iter().any(|a| a.contains(&m.arg))
        })
        .collect();
    if shims.is_empty() {
        bail!("no {} process whose command line names {}", m.name, m.arg);
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for &p in &all {
        if let Some(pp) = ppid(p) {
            children.entry(pp).or_default().push(p);
        }
    }
    let mut o = Overhead {
        shims: shims.len(),
        ..Default::default()
    };
    for &p in &shims {
        if let Ok(mem) = mem(p) {
            o.shim_mem += mem;
        }
    }
    // everything below the shims; a shim under a shim (a pid holder) counts as a shim
    let mut todo: Vec<(u32, bool)> = shims
        .iter()
        .flat_map(|s| children.get(s).into_iter().flatten().map(|&c| (c, true)))
        .collect();
    while let Some((p, direct)) = todo.pop() {
        todo.extend(children.get(&p).into_iter().flatten().map(|&c| (c, false)));
        if shims.contains(&p) {
            continue;
        }
        let Ok(mem) = mem(p) else { continue };
        if direct && comm(p) == m.pause_comm {
            o.pauses += 1;
            o.pause_mem += mem;
        } else {
            o.others += 1;
            o.other_mem += mem;
        }
    }
    Ok(o)
}

/// Whether `pid` still runs (a zombie does not).
pub fn alive(pid: u32) -> bool {
    // A killed process whose leader is already a zombie can still have threads
    // finishing (a thread in a system call that does not return at once): it holds its
    // files, locks included, until the last one is gone.
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|text| {
                let (_, rest) = text.rsplit_once(')')?;
                rest.split_whitespace().next().map(|s| s != "Z" && s != "X")
            })
            .unwrap_or(false)
    })
}

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
pub fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("/proc/{pid}/status: no {field}"))
}

/// Resets the process's peak RSS (VmHWM) to its current RSS.
pub fn reset_peak_rss(pid: u32) -> Result<()> {
    fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("write /proc/{pid}/clear_refs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let me = std::process::id();
        let m = mem(me).unwrap();
        assert!(m.rss_kib > 0 && m.pss_kib > 0 && m.pss_kib <= m.rss_kib);
        cpu_ms(me).unwrap();
        assert_eq!(ppid(me), Some(nix::unistd::getppid().as_raw() as u32));
        assert!(!cmdline(me).is_empty());
        assert!(alive(me));
        assert!(status_kib(me, "VmRSS").unwrap() > 0);
    }
}
