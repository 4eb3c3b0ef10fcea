//! `crust-shim userns`: a pod's user namespace, and the pod namespaces it owns.
//!
//! A user namespace can only be made by a single-threaded process, and the network,
//! UTS and IPC namespaces of a pod with a user namespace must be owned by it (or the
//! container's root could not mount sysfs, proc's mqueue or set the hostname inside).
//! crustd is multi-threaded, so this mode, dispatched before anything else of the shim
//! runs (no clap, no tokio, no threads), makes them:
//!
//! ```text
//! crust-shim userns --user <pin> --uid-map <c>:<h>:<len> --gid-map <c>:<h>:<len>
//!                   [--net <pin>] [--uts <pin> --hostname <name>] [--ipc <pin>]
//! ```
//!
//! It forks a child that unshares a user namespace and waits; the parent (root of the
//! host's user namespace) writes the child's uid and gid maps; the child then unshares
//! the network, UTS and IPC namespaces asked for (owned by its user namespace), sets
//! the hostname and reports; the parent bind-mounts each of the child's namespaces onto
//! its pin (pin dirs prepared by crustd as shared mounts) and lets the child exit. On
//! failure it unmounts and removes every pin it made, kills the child and exits 1 with
//! the error as one line on stderr.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MntFlags;
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};

use crate::nspin::{Error, Result, bind_ns, child_failed, create_pin, io_err};

/// The child's message once it is in its new user namespace.
const IN_USERNS: &[u8] = b"u";
/// The child's message once it has made the other namespaces.
const READY: &[u8] = b"ok";

const USAGE: &str = "usage: crust-shim userns --user <pin> --uid-map <c>:<h>:<len> \
                     --gid-map <c>:<h>:<len> [--net <pin>] [--uts <pin> --hostname <name>] \
                     [--ipc <pin>]";

fn usage(what: String) -> Error {
    Error::Usage(format!("{USAGE}: {what}"))
}

/// One `container:host:length` mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IdMap {
    container: u32,
    host: u32,
    length: u32,
}

impl IdMap {
    fn parse(s: &str) -> Result<IdMap> {
        let bad = || usage(format!("bad mapping {s:?}"));
        let mut parts = s.split(':').map(|p| p.parse::<u32>().map_err(|_| bad()));
        let (Some(c), Some(h), Some(l), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let map = IdMap {
            container: c?,
            host: h?,
            length: l?,
        };
        if map.length == 0 {
            return Err(bad());
        }
        Ok(map)
    }

    /// The line for `/proc/<pid>/{uid,gid}_map`.
    fn line(&self) -> String {
        format!("{} {} {}\n", self.container, self.host, self.length)
    }
}

/// What to make.
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    user: Option<PathBuf>,
    uid: Option<IdMap>,
    gid: Option<IdMap>,
    net: Option<PathBuf>,
    uts: Option<PathBuf>,
    hostname: Option<String>,
    ipc: Option<PathBuf>,
}

fn parse(mut args: impl Iterator<Item = OsString>) -> Result<Request> {
    let mut req = Request::default();
    while let Some(flag) = args.next() {
        let flag = flag
            .into_string()
            .map_err(|f| usage(format!("bad argument {f:?}")))?;
        let value = args
            .next()
            .ok_or_else(|| usage(format!("{flag} needs a value")))?;
        let text = || {
            value
                .to_str()
                .map(str::to_owned)
                .ok_or_else(|| usage(format!("{flag}: not UTF-8")))
        };
        let path = Some(PathBuf::from(&value));
        match flag.as_str() {
            "--user" => req.user = path,
            "--uid-map" => req.uid = Some(IdMap::parse(&text()?)?),
            "--gid-map" => req.gid = Some(IdMap::parse(&text()?)?),
            "--net" => req.net = path,
            "--uts" => req.uts = path,
            "--hostname" => req.hostname = Some(text()?),
            "--ipc" => req.ipc = path,
            other => return Err(usage(format!("unknown flag {other}"))),
        }
    }
    if req.user.is_none() || req.uid.is_none() || req.gid.is_none() {
        return Err(usage("--user, --uid-map and --gid-map are required".into()));
    }
    if req.uts.is_some() != req.hostname.is_some() {
        return Err(usage("--uts and --hostname go together".into()));
    }
    Ok(req)
}

/// Runs the userns mode; `args` are the arguments after `userns`.
pub fn main(args: impl Iterator<Item = OsString>) -> ExitCode {
    let res = parse(args).and_then(|req| run(&req));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = e.to_string().replace('\n', " ");
            eprintln!("crust-shim: userns: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The pins asked for, user namespace first, with the name under `/proc/<pid>/ns/`.
fn pins(req: &Request) -> Vec<(&'static str, &Path)> {
    [
        ("user", &req.user),
        ("net", &req.net),
        ("uts", &req.uts),
        ("ipc", &req.ipc),
    ]
    .into_iter()
    .filter_map(|(name, p)| p.as_deref().map(|p| (name, p)))
    .collect()
}

fn run(req: &Request) -> Result<()> {
    let pins = pins(req);
    let mut made: Vec<&Path> = Vec::new();
    let res = (|| {
        for (_, pin) in &pins {
            create_pin(pin)?;
            made.push(pin);
        }
        let mut flags = CloneFlags::empty();
        for (flag, asked) in [
            (CloneFlags::CLONE_NEWNET, req.net.is_some()),
            (CloneFlags::CLONE_NEWUTS, req.uts.is_some()),
            (CloneFlags::CLONE_NEWIPC, req.ipc.is_some()),
        ] {
            if asked {
                flags |= flag;
            }
        }
        let user = req.user.as_deref().unwrap_or(Path::new(""));
        let (uid, gid) = (req.uid.unwrap_or(ZERO), req.gid.unwrap_or(ZERO));
        let child = Child::start(user, uid, gid, flags, req.hostname.as_deref())?;
        let res = pins
            .iter()
            .try_for_each(|(name, pin)| bind_ns(child.pid, name, pin));
        child.finish();
        res
    })();
    if res.is_err() {
        for pin in made {
            for _ in 0..4 {
                if nix::mount::umount2(pin, MntFlags::MNT_DETACH).is_err() {
                    break;
                }
            }
            let _ = fs::remove_file(pin);
        }
    }
    res
}

const ZERO: IdMap = IdMap {
    container: 0,
    host: 0,
    length: 0,
};

/// The child holding the new namespaces while the parent pins them.
struct Child {
    pid: Pid,
    /// Closing it tells the child to exit.
    go: Option<File>,
}

impl Child {
    /// Forks the child, writes its maps, and returns once it has made `flags`.
    fn start(
        path: &Path,
        uid: IdMap,
        gid: IdMap,
        flags: CloneFlags,
        hostname: Option<&str>,
    ) -> Result<Child> {
        let (status_r, status_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io_err(path, "pipe"))?;
        let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io_err(path, "pipe"))?;
        // SAFETY: single-threaded: nothing else of the shim has started.
        let pid = match unsafe { fork() }.map_err(io_err(path, "fork"))? {
            ForkResult::Child => {
                drop(status_r);
                drop(go_w);
                child(status_w, go_r, flags, hostname)
            }
            ForkResult::Parent { child } => child,
        };
        drop(status_w);
        drop(go_r);
        let mut child = Child {
            pid,
            go: Some(File::from(go_w)),
        };
        let mut status = File::from(status_r);
        let res = (|| {
            expect(path, &mut status, IN_USERNS)?;
            let proc = PathBuf::from(format!("/proc/{pid}"));
            for (file, map) in [("uid_map", uid), ("gid_map", gid)] {
                if map.length == 0 {
                    continue;
                }
                let p = proc.join(file);
                fs::write(&p, map.line()).map_err(io_err(&p, "write"))?;
            }
            child
                .go
                .as_mut()
                .map_or(Ok(()), |g| g.write_all(b"g"))
                .map_err(io_err(path, "tell the child to go on"))?;
            expect(path, &mut status, READY)
        })();
        match res {
            Ok(()) => Ok(child),
            Err(e) => {
                let _ = kill(pid, Signal::SIGKILL);
                child.finish();
                Err(e)
            }
        }
    }

    /// Lets the child exit and reaps it.
    fn finish(mut self) {
        self.go.take();
        let _ = waitpid(self.pid, None);
    }
}

/// Reads the child's next message, which must be `want`; anything else is its error.
fn expect(path: &Path, status: &mut File, want: &[u8]) -> Result<()> {
    let mut msg = vec![0u8; 512];
    let n = status
        .read(&mut msg)
        .map_err(io_err(path, "read child status"))?;
    msg.truncate(n);
    if msg == want {
        return Ok(());
    }
    Err(child_failed(path, "namespace process", &msg))
}

/// The child: a new user namespace, then (once mapped) the other namespaces. Reports
/// on `status`, exits when `go` closes. Never returns.
fn child(status: OwnedFd, go: OwnedFd, flags: CloneFlags, hostname: Option<&str>) -> ! {
    let fail = |op: &str, e: Errno| -> ! {
        let _ = nix::unistd::write(status.as_fd(), format!("{op}: {e}").as_bytes());
        std::process::exit(1)
    };
    if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWUSER) {
        fail("unshare user namespace", e);
    }
    let _ = nix::unistd::write(status.as_fd(), IN_USERNS);
    let mut byte = [0u8; 1];
    match nix::unistd::read(go.as_raw_fd(), &mut byte) {
        Ok(1) => {}
        // The parent gave up.
        _ => std::process::exit(1),
    }
    if !flags.is_empty()
        && let Err(e) = nix::sched::unshare(flags)
    {
        fail("unshare", e);
    }
    if let Some(name) = hostname
        && let Err(e) = nix::unistd::sethostname(name)
    {
        fail("sethostname", e);
    }
    let _ = nix::unistd::write(status.as_fd(), READY);
    // Wait until the parent has pinned the namespaces and closes its end.
    while let Ok(n) = nix::unistd::read(go.as_raw_fd(), &mut byte) {
        if n == 0 {
            break;
        }
    }
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> impl Iterator<Item = OsString> {
        a.iter().map(OsString::from).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn parses_a_full_request() {
        let req = parse(args(&[
            "--user",
            "/run/u",
            "--uid-map",
            "0:1000:100000",
            "--gid-map",
            "0:2000:65536",
            "--net",
            "/run/n",
            "--uts",
            "/run/h",
            "--hostname",
            "pod",
            "--ipc",
            "/run/i",
        ]))
        .unwrap();
        assert_eq!(req.user.as_deref(), Some(Path::new("/run/u")));
        assert_eq!(
            req.uid,
            Some(IdMap {
                container: 0,
                host: 1000,
                length: 100000
            })
        );
        assert_eq!(req.gid.unwrap().line(), "0 2000 65536\n");
        assert_eq!(req.hostname.as_deref(), Some("pod"));
        assert_eq!(
            pins(&req).iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            ["user", "net", "uts", "ipc"]
        );
    }

    #[test]
    fn refuses_bad_requests() {
        for bad in [
            &["--user", "/u", "--uid-map", "0:1:1"][..],
            &["--user", "/u", "--uid-map", "0:1", "--gid-map", "0:1:1"],
            &["--user", "/u", "--uid-map", "0:1:0", "--gid-map", "0:1:1"],
            &["--user", "/u", "--uid-map", "0:1:1:1", "--gid-map", "0:1:1"],
            &["--user", "/u", "--uid-map", "a:1:1", "--gid-map", "0:1:1"],
            &[
                "--user",
                "/u",
                "--uid-map",
                "0:1:1",
                "--gid-map",
                "0:1:1",
                "--uts",
                "/h",
            ],
            &["--bogus", "x"],
            &["--user"],
        ] {
            assert!(matches!(parse(args(bad)), Err(Error::Usage(_))), "{bad:?}");
        }
    }
}
