//! `crust-shim restore ...`: the helper that restores a checkpointed container with
//! CRIU. The shim starts it, puts it in the container's cgroup, then tells it to go on
//! stdin; it runs CRIU's restore (the restored init becomes its child, as CRIU's
//! sibling), writes `pid N` (or `error MESSAGE`) on stdout, waits until the shim has
//! taken note of the pid (a line or the end of stdin) and exits, so that the init is
//! handed to the shim, the subreaper above it. It is a process of its own because
//! CRIU's restored tasks are born in the cgroup of the process restoring them.
//!
//! Usage: crust-shim restore --images DIR --root ROOTFS [--mount KEY=HOSTPATH]...
//!        [--inherit FD=KEY]...

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::process::ExitCode;

/// What the helper is told.
#[derive(Debug, Default, PartialEq)]
struct Request {
    images: String,
    root: String,
    mounts: Vec<(String, String)>,
    inherit: Vec<(i32, String)>,
}

fn parse(mut args: impl Iterator<Item = OsString>) -> Result<Request, String> {
    let mut req = Request::default();
    while let Some(flag) = args.next() {
        let flag = flag.to_string_lossy().into_owned();
        let value = args
            .next()
            .map(|v| v.to_string_lossy().into_owned())
            .ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--images" => req.images = value,
            "--root" => req.root = value,
            "--mount" => {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--mount {value:?} is not KEY=HOSTPATH"))?;
                req.mounts.push((k.to_owned(), v.to_owned()));
            }
            "--inherit" => {
                let (fd, key) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--inherit {value:?} is not FD=KEY"))?;
                let fd = fd
                    .parse()
                    .map_err(|_| format!("--inherit {value:?}: {fd:?} is not an fd"))?;
                req.inherit.push((fd, key.to_owned()));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if req.images.is_empty() || req.root.is_empty() {
        return Err("--images and --root are required".into());
    }
    Ok(req)
}

/// The log CRIU writes in the images dir.
pub const RESTORE_LOG: &str = "restore.log";

fn restore(req: &Request) -> Result<i32, String> {
    let images =
        std::fs::File::open(&req.images).map_err(|e| format!("open {}: {e}", req.images))?;
    let mut criu = rust_criu::Criu::new().map_err(|e| format!("criu: {e}"))?;
    criu.set_images_dir_fd(images.as_raw_fd());
    criu.set_work_dir_fd(images.as_raw_fd());
    criu.set_log_file(RESTORE_LOG.into());
    criu.set_log_level(4);
    criu.set_root(req.root.clone());
    criu.set_rst_sibling(true);
    criu.set_ext_unix_sk(true);
    criu.set_tcp_established(true);
    criu.set_file_locks(true);
    criu.set_orphan_pts_master(false);
    // The helper is in the container's cgroup already: CRIU leaves cgroups alone.
    criu.set_manage_cgroups(false);
    criu.cgroups_mode(rust_criu::CgMode::IGNORE);
    for (k, v) in &req.mounts {
        criu.set_external_mount(k.clone(), v.clone());
    }
    for (fd, key) in &req.inherit {
        criu.add_inherit_fd(*fd, key.clone())
            .map_err(|e| format!("inherit fd {fd} as {key}: {e}"))?;
    }
    criu.restore().map_err(|e| {
        let log = std::path::Path::new(&req.images).join(RESTORE_LOG);
        format!(
            "criu restore failed: {e}{}",
            crate::container::log_tail(&log)
        )
    })?;
    // The restored init is the only child left: CRIU's own process has been reaped.
    let me = std::process::id();
    let children = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .map_err(|e| format!("read the restored process: {e}"))?;
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| "CRIU restored no process".to_owned())
}

/// The helper's main: see the module's doc.
pub fn main(args: impl Iterator<Item = OsString>) -> ExitCode {
    let mut out = std::io::stdout();
    let req = match parse(args) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(out, "error {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    if stdin.read_line(&mut line).unwrap_or(0) == 0 {
        return ExitCode::FAILURE;
    }
    let answer = match restore(&req) {
        Ok(pid) => format!("pid {pid}"),
        Err(e) => format!("error {}", e.replace('\n', " ")),
    };
    let _ = writeln!(out, "{answer}");
    let _ = out.flush();
    line.clear();
    let _ = stdin.read_line(&mut line);
    if answer.starts_with("pid ") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> impl Iterator<Item = OsString> {
        a.iter().map(OsString::from).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn parses_a_request() {
        let req = parse(args(&[
            "--images",
            "/s/ckpt",
            "--root",
            "/s/rootfs",
            "--mount",
            "/etc/hosts=/p/hosts",
            "--inherit",
            "3=pipe:[12]",
            "--inherit",
            "4=extRootNetNS",
        ]))
        .unwrap();
        assert_eq!(req.images, "/s/ckpt");
        assert_eq!(
            req.mounts,
            [("/etc/hosts".to_owned(), "/p/hosts".to_owned())]
        );
        assert_eq!(
            req.inherit,
            [(3, "pipe:[12]".to_owned()), (4, "extRootNetNS".to_owned())]
        );
    }

    #[test]
    fn refuses_bad_requests() {
        assert!(parse(args(&["--images", "/x"])).is_err());
        assert!(
            parse(args(&[
                "--images",
                "/x",
                "--root",
                "/r",
                "--inherit",
                "x=y"
            ]))
            .is_err()
        );
        assert!(
            parse(args(&[
                "--images", "/x", "--root", "/r", "--mount", "novalue"
            ]))
            .is_err()
        );
        assert!(parse(args(&["--images"])).is_err());
    }
}
