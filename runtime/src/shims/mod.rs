//! Spawning crust-shim processes and talking to them. So far: finding the binary.

use std::path::PathBuf;

const SHIM_BINARY: &str = "crust-shim";

/// The crust-shim binary: beside the running crustd (how both are built and
/// installed), else the first in `PATH`.
pub fn locate() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(SHIM_BINARY)));
    let in_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(SHIM_BINARY));
    beside.into_iter().chain(in_path).find(|p| p.is_file())
}
