//! Links crust-shim as a position-dependent executable. In a PIE, the dynamic loader
//! relocates every pointer in the binary's read-only data (vtables, string tables)
//! at start, which copies those pages into each shim's private memory: about 0.5 MiB
//! per container. Linked at a fixed address they stay shared, clean file pages. The
//! shim loses address randomisation of its own image (its libraries, heap and stack
//! keep theirs), as containerd's Go shims, which are not PIE either.

fn main() {
    println!("cargo:rustc-link-arg-bin=crust-shim=-no-pie");
}
