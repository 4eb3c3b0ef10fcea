//! `crust-shim pause --pin <path> [--userns <user namespace pin>]`: the holder of a
//! pod's shared PID namespace.
//!
//! crust has no pause image. This mode, dispatched before anything else of the shim
//! runs (no clap, no tokio, no threads), unshares a new PID namespace and forks its
//! PID 1, `crust-pause`: a process in its own session, stdio on `/dev/null`, no other
//! fd of its parent, that blocks signals and waits for them with `sigwait`, reaps every
//! child on SIGCHLD and exits 0 on SIGTERM or SIGINT. It never allocates in its loop.
//!
//! The parent bind-mounts the child's `/proc/<pid>/ns/pid` onto `<pin>` (whose dir
//! crustd prepared as a shared mount, as for network namespace pins), writes the
//! child's host pid to `<pin>.pid` by write-temp-fsync-rename, and exits 0; on failure
//! it kills the child, removes what it made and exits 1 with the error as one line on
//! stderr.
//!
//! With `--userns`, the PID namespace must be owned by the pod's user namespace (or the
//! containers could not mount proc in it), yet the pin's bind mount needs the host's
//! user namespace. So an intermediate child joins the user namespace, unshares the PID
//! namespace, forks the holder, sends the holder's host pid to the parent and exits;
//! the parent pins the holder's namespace as above.

use std::ffi::{CStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MntFlags;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use crate::nspin::{Error, Result, bind_ns, child_failed, create_pin, io_err};

/// The name of the holder process, as `ps` shows it.
const NAME: &CStr = c"crust-pause";

/// The child's readiness message on the status pipe.
const READY: &[u8] = b"ok";

const USAGE: &str = "usage: crust-shim pause --pin <path> [--userns <path>]";

fn usage() -> Error {
    Error::Usage(USAGE.into())
}

/// Runs the pause mode; `args` are the arguments after `pause`.
pub fn main(args: impl Iterator<Item = OsString>) -> ExitCode {
    let res = parse(args).and_then(|(pin, userns)| run(&pin, userns.as_deref()));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = e.to_string().replace('\n', " ");
            eprintln!("crust-shim: pause: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: impl Iterator<Item = OsString>) -> Result<(PathBuf, Option<PathBuf>)> {
    let (mut pin, mut userns) = (None, None);
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let arg = arg.into_string().map_err(|_| usage())?;
        let (flag, value) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), OsString::from(v)),
            None => (arg, args.next().ok_or_else(usage)?),
        };
        if value.is_empty() {
            return Err(usage());
        }
        let slot = match flag.as_str() {
            "--pin" => &mut pin,
            "--userns" => &mut userns,
            _ => return Err(usage()),
        };
        if slot.replace(PathBuf::from(value)).is_some() {
            return Err(usage());
        }
    }
    Ok((pin.ok_or_else(usage)?, userns))
}

/// The signals the holder waits for; blocked before the fork, so none is lost.
fn waited() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        set.add(s);
    }
    set
}

fn run(pin: &Path, userns: Option<&Path>) -> Result<()> {
    create_pin(pin)?;
    let res = match userns {
        None => start(pin),
        Some(userns) => start_in_userns(pin, userns),
    };
    if res.is_err() {
        let _ = fs::remove_file(pin);
    }
    res
}

/// Forks the holder and pins it; on failure kills it and leaves the pin unmounted.
fn start(pin: &Path) -> Result<()> {
    let (status_r, status_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io_err(pin, "pipe"))?;
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&waited()), None)
        .map_err(io_err(pin, "block signals"))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWPID).map_err(io_err(pin, "unshare pid namespace"))?;
    // SAFETY: single-threaded: nothing else of the shim has started.
    let child = match unsafe { fork() }.map_err(io_err(pin, "fork"))? {
        ForkResult::Child => {
            drop(status_r);
            holder(status_w)
        }
        ForkResult::Parent { child } => child,
    };
    drop(status_w);
    let res = wait_ready(pin, status_r).and_then(|()| pin_child(pin, child));
    if res.is_err() {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
    }
    res
}

/// As [`start`], with the PID namespace owned by the user namespace pinned at `userns`.
fn start_in_userns(pin: &Path, userns: &Path) -> Result<()> {
    let userns_file = File::open(userns).map_err(io_err(userns, "open user namespace"))?;
    let (status_r, status_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io_err(pin, "pipe"))?;
    let (pid_r, pid_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io_err(pin, "pipe"))?;
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&waited()), None)
        .map_err(io_err(pin, "block signals"))?;
    // SAFETY: single-threaded: nothing else of the shim has started.
    let middle = match unsafe { fork() }.map_err(io_err(pin, "fork"))? {
        ForkResult::Child => {
            drop(status_r);
            drop(pid_r);
            intermediate(&userns_file, status_w, pid_w)
        }
        ForkResult::Parent { child } => child,
    };
    drop(status_w);
    drop(pid_w);
    drop(userns_file);
    let mut msg = String::new();
    let read = File::from(pid_r).read_to_string(&mut msg);
    let _ = waitpid(middle, None);
    read.map_err(io_err(pin, "read holder pid"))?;
    let child = match msg.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => Pid::from_raw(pid),
        _ => return Err(child_failed(pin, "pause process", msg.as_bytes())),
    };
    let res = wait_ready(pin, status_r).and_then(|()| pin_child(pin, child));
    if res.is_err() {
        // Not our child: the kernel reaps it once it dies.
        let _ = kill(child, Signal::SIGKILL);
    }
    res
}

/// The intermediate child: joins the user namespace, unshares the PID namespace and
/// forks the holder, writes the holder's pid (or its own error) on `pid_w`, exits.
fn intermediate(userns: &File, status_w: OwnedFd, pid_w: OwnedFd) -> ! {
    let fail = |op: &str, e: Errno| -> ! {
        let _ = nix::unistd::write(&pid_w, format!("{op}: {e}").as_bytes());
        std::process::exit(1)
    };
    if let Err(e) = nix::sched::setns(userns, CloneFlags::CLONE_NEWUSER) {
        fail("join user namespace", e);
    }
    if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWPID) {
        fail("unshare pid namespace", e);
    }
    // SAFETY: single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(pid_w);
            holder(status_w)
        }
        Ok(ForkResult::Parent { child }) => {
            let _ = nix::unistd::write(&pid_w, child.to_string().as_bytes());
            std::process::exit(0)
        }
        Err(e) => fail("fork", e),
    }
}

/// Reads the child's one message: [`READY`] or its error.
fn wait_ready(pin: &Path, status: OwnedFd) -> Result<()> {
    let mut msg = Vec::new();
    File::from(status)
        .read_to_end(&mut msg)
        .map_err(io_err(pin, "read child status"))?;
    if msg == READY {
        return Ok(());
    }
    Err(child_failed(pin, "pause process", &msg))
}

/// Bind-mounts the child's PID namespace onto the pin and writes the pid file.
fn pin_child(pin: &Path, child: Pid) -> Result<()> {
    bind_ns(child, "pid", pin)?;
    let mut pid_file = pin.as_os_str().to_owned();
    pid_file.push(".pid");
    let pid_file = PathBuf::from(pid_file);
    if let Err(e) = write_atomic(&pid_file, &format!("{child}\n")) {
        let _ = nix::mount::umount2(pin, MntFlags::MNT_DETACH);
        return Err(io_err(&pid_file, "write pid file")(e));
    }
    Ok(())
}

fn write_atomic(path: &Path, content: &str) -> io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let res = (|| {
        let mut f = File::create(&temp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        fs::rename(&temp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&temp);
    }
    res
}

/// The holder, PID 1 of the new namespace: sets itself up, reports on `status`, then
/// waits for signals forever. Never returns.
fn holder(status: OwnedFd) -> ! {
    let fd = status.as_raw_fd();
    // The fd must outlive the fd closing below, which closes it for good at the end.
    std::mem::forget(status);
    if let Err((op, e)) = set_up(fd) {
        let msg = format!("{op}: {e}");
        let _ = nix::unistd::write(borrow(fd), msg.as_bytes());
        std::process::exit(1);
    }
    let _ = nix::unistd::write(borrow(fd), READY);
    let _ = nix::unistd::close(fd);
    let waited = waited();
    loop {
        match waited.wait() {
            Ok(Signal::SIGTERM | Signal::SIGINT) => std::process::exit(0),
            Ok(_) => reap(),
            Err(_) => {}
        }
    }
}

fn borrow(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: the holder owns `fd` until it closes it right after the last write.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// Own session, cwd `/`, a name, stdio on /dev/null, and no fd but `keep` beyond it.
fn set_up(keep: RawFd) -> std::result::Result<(), (&'static str, Errno)> {
    nix::unistd::setsid().map_err(|e| ("setsid", e))?;
    nix::unistd::chdir("/").map_err(|e| ("chdir /", e))?;
    nix::sys::prctl::set_name(NAME).map_err(|e| ("set name", e))?;
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR, Mode::empty())
        .map_err(|e| ("open /dev/null", e))?;
    for fd in 0..=2 {
        nix::unistd::dup2(null, fd).map_err(|e| ("redirect stdio", e))?;
    }
    if null > 2 {
        let _ = nix::unistd::close(null);
    }
    close_range(3, keep - 1).map_err(|e| ("close fds", e))?;
    close_range(keep + 1, RawFd::MAX).map_err(|e| ("close fds", e))
}

/// Closes the fds `first..=last` (an empty range is fine).
fn close_range(first: RawFd, last: RawFd) -> std::result::Result<(), Errno> {
    if first > last {
        return Ok(());
    }
    // SAFETY: a plain system call on integers; no fd in the range is used afterwards.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_close_range,
            first as nix::libc::c_uint,
            last as nix::libc::c_uint,
            0 as nix::libc::c_uint,
        )
    };
    match Errno::result(rc) {
        Ok(_) => Ok(()),
        // Kernels before 5.9: one by one, up to a bound fds of a fresh process stay in.
        Err(Errno::ENOSYS) => {
            for fd in first..=last.min(4095) {
                let _ = nix::unistd::close(fd);
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Reaps every exited child, without blocking.
fn reap() {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> impl Iterator<Item = OsString> {
        a.iter().map(OsString::from).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn parses_the_pin() {
        assert_eq!(
            parse(args(&["--pin", "/run/p"])).unwrap(),
            (PathBuf::from("/run/p"), None)
        );
        assert_eq!(
            parse(args(&["--pin=/run/p"])).unwrap(),
            (PathBuf::from("/run/p"), None)
        );
        assert_eq!(
            parse(args(&["--userns", "/run/u", "--pin", "/run/p"])).unwrap(),
            (PathBuf::from("/run/p"), Some(PathBuf::from("/run/u")))
        );
        for bad in [
            &[][..],
            &["--pin"],
            &["--pin="],
            &["--pin", "a", "b"],
            &["x"],
            &["--pin", "/a", "--pin", "/b"],
            &["--userns", "/u"],
            &["--pin", "/a", "--userns="],
        ] {
            assert!(matches!(parse(args(bad)), Err(Error::Usage(_))), "{bad:?}");
        }
    }
}
