//! Compiles the CRI v1 API, crust's shim API and its admin API with the pure-Rust `protox` compiler
//! (Debian's protoc is too old for the `debug_redact` options of cri-api).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["cri/api.proto", "shim/shim.proto", "admin/admin.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["cri", "shim", "admin"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
