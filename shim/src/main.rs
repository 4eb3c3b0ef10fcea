//! crust-shim runs one container for crustd and outlives crustd's restarts. It owns the
//! container's init process, its stdio and log file, exec processes and the exit
//! status, and serves `shim.v1.Shim` on a Unix socket in the container's state dir. It
//! is single-threaded by design (libcontainer clones processes that run Rust code
//! without exec) and must stay small: its memory is paid once per container.
//!
//! The container lifecycle is not built yet; until it is, the shim only reports its
//! version and refuses to run.

use std::process::ExitCode;

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version") | Some("-V") => {
            println!("crust-shim {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("crust-shim: running containers is not implemented yet");
            ExitCode::from(2)
        }
    }
}
