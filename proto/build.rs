//! Compiles the CRI v1 API, crust's shim API and its admin API with the pure-Rust `protox` compiler
//! (Debian's protoc is too old for the `debug_redact` options of cri-api), and NRI's API: its
//! messages only, since NRI's services run over ttrpc, not gRPC.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["cri/api.proto", "shim/shim.proto", "admin/admin.proto"];
    for p in protos.iter().chain(&["nri/api.proto"]) {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["cri", "shim", "admin"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    let nri = protox::compile(["api.proto"], ["nri"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_fds(nri)?;
    Ok(())
}
