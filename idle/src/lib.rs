//! crust-idle gives a long-lived process's memory back to the OS once it has gone idle:
//! crustd after a pull or a burst of calls, and each crust-shim after its container was
//! created and started. It owns the trim (what is given back and how) and the tracking
//! of when a gRPC server is idle; it never frees or unmaps anything the process may
//! still need: what it gives back is free heap, or pages the kernel reads back from
//! their file when touched again.
//!
//! Two things are given back (`trim`):
//! - free heap: glibc keeps memory freed after a burst (a pull decompresses and hashes
//!   many buffers, on several threads with an arena each) until `malloc_trim` returns
//!   the free pages of every arena;
//! - clean file pages: code and read-only data of the binary and its libraries touched
//!   once (creating a container, a pull) stay mapped in the process and count in its
//!   RSS. `MADV_DONTNEED` on a private, read-only file mapping that holds no copied
//!   (anonymous) page unmaps them from this process only: they stay in the page cache,
//!   shared, and a later touch maps them back (a minor fault, or a read if the kernel
//!   evicted them meanwhile). It is what the kernel's reclaim does to these pages under
//!   memory pressure anyway, done early. Mappings holding anonymous pages (RELRO data
//!   relocated at start, breakpoints) are never touched: dropping them would lose the
//!   copies.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;

/// What one trim gave back, in KiB (resident before minus after, clean file pages).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Resident file pages unmapped from the process.
    pub file_kib: u64,
    /// Whether malloc_trim released memory.
    pub heap_released: bool,
}

/// Returns free heap to the OS and unmaps the clean file pages of read-only private
/// mappings (see the crate doc). Safe at any time: nothing in use is lost.
pub fn trim() -> Trimmed {
    let heap_released = malloc_trim();
    let file_kib = match std::fs::read_to_string("/proc/self/smaps") {
        Ok(smaps) => clean_file_mappings(&smaps)
            .into_iter()
            .filter(drop_pages)
            .map(|m| m.rss_kib)
            .sum(),
        Err(err) => {
            tracing::debug!(%err, "read /proc/self/smaps");
            0
        }
    };
    Trimmed {
        file_kib,
        heap_released,
    }
}

/// Makes every thread allocate from glibc's main heap. glibc gives each thread that
/// allocates concurrently an arena of its own (up to eight per core); `malloc_trim`
/// cannot return the free top of such an arena, so a short-lived blocking thread
/// (a pull's unpacking, a database read) leaves megabytes resident. For a daemon
/// whose work runs on one async thread and a few blocking ones, one heap costs little
/// contention. Call it first thing in `main`, before any thread starts. Returns
/// whether glibc accepted it.
pub fn use_one_heap() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only sets a glibc tunable; called before other threads run.
        unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

#[cfg(target_env = "gnu")]
fn malloc_trim() -> bool {
    // SAFETY: malloc_trim only walks glibc's own arenas, under their locks.
    unsafe { nix::libc::malloc_trim(0) == 1 }
}

#[cfg(not(target_env = "gnu"))]
fn malloc_trim() -> bool {
    false
}

/// A private, read-only file mapping with resident pages and no anonymous page.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    rss_kib: u64,
}

/// The mappings of `/proc/PID/smaps` text whose pages can be dropped: private, not
/// writable, backed by a file (path starting with `/`), resident, no anonymous page.
fn clean_file_mappings(smaps: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    let mut cur: Option<(Mapping, Option<u64>)> = None;
    let flush = |cur: &mut Option<(Mapping, Option<u64>)>, out: &mut Vec<Mapping>| {
        if let Some((m, Some(0))) = cur.take()
            && m.rss_kib > 0
        {
            out.push(m);
        }
    };
    for line in smaps.lines() {
        if let Some(m) = mapping_header(line) {
            flush(&mut cur, &mut out);
            cur = m.map(|m| (m, None));
            continue;
        }
        let Some((m, anon)) = cur.as_mut() else {
            continue;
        };
        if let Some(v) = field_kib(line, "Rss:") {
            m.rss_kib = v;
        } else if let Some(v) = field_kib(line, "Anonymous:") {
            *anon = Some(v);
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// Parses a mapping's header line: `None` if `line` is not one, `Some(None)` if it is
/// one of a mapping that must be kept.
fn mapping_header(line: &str) -> Option<Option<Mapping>> {
    let mut fields = line.split_whitespace();
    let range = fields.next()?;
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?.as_bytes();
    if perms.len() != 4 {
        return None;
    }
    let path = fields.nth(3);
    let keep = perms[1] == b'w' || perms[3] != b'p' || !path.is_some_and(|p| p.starts_with('/'));
    Some((!keep).then_some(Mapping {
        start,
        end,
        rss_kib: 0,
    }))
}

fn field_kib(line: &str, name: &str) -> Option<u64> {
    line.strip_prefix(name)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn drop_pages(m: &Mapping) -> bool {
    // SAFETY: the range is a whole private, read-only file mapping of this process
    // without anonymous pages (checked in smaps just before): MADV_DONTNEED only
    // unmaps pages that the kernel maps back, with the same content, from the file.
    let rc = unsafe {
        nix::libc::madvise(
            m.start as *mut nix::libc::c_void,
            m.end - m.start,
            nix::libc::MADV_DONTNEED,
        )
    };
    rc == 0
}

/// Tracks the calls of a server and trims (`trim`) once none has started or ended for
/// a while. A call that lasts (a Wait until the container exits, a long ExecSync) does
/// not hold the trim back: trimming is safe at any time, it only costs page faults.
#[derive(Debug, Clone, Default)]
pub struct Idle {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    work: Notify,
    trims: AtomicUsize,
}

impl Idle {
    /// A tracker that waits for the first work.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks a moment of work (a call starting or ending, creating the container): a
    /// trim follows once no other work came for the quiet time.
    pub fn touch(&self) {
        self.inner.work.notify_one();
    }

    /// A layer for `tonic::transport::Server::builder().layer(..)`: touches when a call
    /// starts and when its response (for a streaming call, its headers) is ready.
    pub fn layer(&self) -> IdleLayer {
        IdleLayer(self.clone())
    }

    /// Runs forever: after each burst of work, once no work has come for `quiet`,
    /// trims. Spawn it on the runtime.
    pub async fn run(self, quiet: Duration) {
        let inner = &self.inner;
        loop {
            inner.work.notified().await;
            while tokio::time::timeout(quiet, inner.work.notified())
                .await
                .is_ok()
            {}
            let t = trim();
            inner.trims.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(
                file_kib = t.file_kib,
                heap_released = t.heap_released,
                "idle: memory trimmed"
            );
        }
    }
}

/// See [`Idle::layer`].
#[derive(Debug, Clone)]
pub struct IdleLayer(Idle);

impl<S> tower::Layer<S> for IdleLayer {
    type Service = IdleService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdleService {
            inner,
            idle: self.0.clone(),
        }
    }
}

/// See [`Idle::layer`].
#[derive(Debug, Clone)]
pub struct IdleService<S> {
    inner: S,
    idle: Idle,
}

impl<S, R> tower::Service<R> for IdleService<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.idle.touch();
        let fut = self.inner.call(req);
        let idle = self.idle.clone();
        Box::pin(async move {
            let res = fut.await;
            idle.touch();
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d8a9f23000-55d8aa138000 r--p 00000000 fe:01 123 /usr/bin/crust-shim
Size:               2132 kB
Rss:                 704 kB
Anonymous:             0 kB
VmFlags: rd mr mw me sd
55d8aa138000-55d8aa607000 r-xp 00215000 fe:01 123 /usr/bin/crust-shim
Rss:                3676 kB
Anonymous:             0 kB
55d8aa607000-55d8aa68a000 r--p 006e4000 fe:01 123 /usr/bin/crust-shim
Rss:                 524 kB
Anonymous:           524 kB
55d8aa68a000-55d8aa690000 rw-p 00767000 fe:01 123 /usr/bin/crust-shim
Rss:                  24 kB
Anonymous:            24 kB
55d8dce9e000-55d8dcebf000 rw-p 00000000 00:00 0 [heap]
Rss:                 120 kB
Anonymous:           120 kB
7f39434cb000-7f3943621000 r-xp 00026000 fe:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 640 kB
Anonymous:             0 kB
7f3943600000-7f3943610000 r--s 00000000 fe:01 78 /dev/shm/x
Rss:                  64 kB
Anonymous:             0 kB
7f3943621000-7f3943630000 r--p 00000000 fe:01 79 /usr/lib/cold.so
Rss:                   0 kB
Anonymous:             0 kB
7f3943698000-7f394369a000 r-xp 00000000 00:00 0 [vdso]
Rss:                   4 kB
Anonymous:             0 kB
7f39436cd000-7f39436cf000 r--p 00000000 fe:01 80 /usr/lib/x86_64-linux-gnu/ld.so
Rss:                   8 kB
";

    #[test]
    fn picks_only_clean_private_read_only_file_mappings() {
        let got = clean_file_mappings(SMAPS);
        assert_eq!(
            got,
            vec![
                Mapping {
                    start: 0x55d8a9f23000,
                    end: 0x55d8aa138000,
                    rss_kib: 704
                },
                Mapping {
                    start: 0x55d8aa138000,
                    end: 0x55d8aa607000,
                    rss_kib: 3676
                },
                Mapping {
                    start: 0x7f39434cb000,
                    end: 0x7f3943621000,
                    rss_kib: 640
                },
            ],
            "relocated, writable, shared, anonymous, special, cold mappings and one \
             without an Anonymous line are kept"
        );
    }

    #[test]
    fn trims_its_own_process_and_keeps_working() {
        // code and data of this test binary and its libraries are resident now
        let before = clean_file_mappings(&std::fs::read_to_string("/proc/self/smaps").unwrap());
        assert!(!before.is_empty());
        let t = trim();
        assert!(t.file_kib > 0);
        // everything dropped faults back in: formatting, allocation, I/O still work
        let again = clean_file_mappings(&std::fs::read_to_string("/proc/self/smaps").unwrap());
        assert!(!format!("{again:?}").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn trims_once_quiet_after_calls() {
        let idle = Idle::new();
        let runner = tokio::spawn(idle.clone().run(Duration::from_secs(2)));
        let trims = || idle.inner.trims.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(trims(), 0, "no trim before any work");
        idle.touch();
        tokio::time::sleep(Duration::from_secs(1)).await;
        idle.touch();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(trims(), 0, "a new call restarts the quiet time");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(trims(), 1, "one trim once quiet");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(trims(), 1, "no trim without new work");
        assert!(!runner.is_finished());
        runner.abort();
    }
}
