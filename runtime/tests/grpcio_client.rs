//! crustd called by a gRPC client that is not Go's: grpcio (Python) with its default
//! channel options, as monitoring agents and scripts call it. Over a Unix socket such
//! clients name the socket's path as `:authority` (grpcio percent-encodes it), which is
//! no host name; crustd must answer them all the same.

mod common;

use std::path::Path;

use common::Crustd;

/// The Python interpreter with grpcio that scripts/test installs and names in
/// `CRUST_TEST_GRPCIO_PYTHON`. A test that needs it is `#[ignore]`d in a plain
/// `cargo test`.
fn python() -> String {
    match std::env::var("CRUST_TEST_GRPCIO_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "CRUST_TEST_GRPCIO_PYTHON is unset: scripts/test installs grpcio (need_grpcio in \
             scripts/lib.sh) and sets it"
        ),
    }
}

/// Runs tests/grpcio_client.py with `python` against `socket` and returns what it
/// printed.
async fn grpcio_client(python: &str, socket: &Path) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpcio_client.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(socket)
        .output()
        .await
        .expect("run the grpcio client");
    assert!(
        out.status.success(),
        "grpcio client: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "grpcio client printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// grpcio releases before 1.57 sent "localhost" over a Unix socket, so they would
/// not call with a path as `:authority`.
fn names_the_socket_path(grpcio: &str) -> bool {
    let mut parts = grpcio.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 57)
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs Python with grpcio; scripts/test runs it"]
async fn grpcio_with_default_options_calls_both_services() {
    let python = python();
    let d = Crustd::start("").await;
    let answer = grpcio_client(&python, &d.socket).await;

    let grpcio = answer["grpcio"].as_str().unwrap();
    assert!(
        names_the_socket_path(grpcio),
        "grpcio {grpcio} sends \"localhost\" as :authority: this test needs 1.57 or later"
    );
    assert_eq!(answer["runtime_name"], "crust", "{answer}");
    assert_eq!(answer["runtime_api_version"], "v1", "{answer}");
    assert_eq!(
        answer["runtime_version"],
        env!("CARGO_PKG_VERSION"),
        "{answer}"
    );
    let root = d.root();
    assert_eq!(
        answer["image_mountpoints"],
        serde_json::json!([root.join("images")]),
        "{answer}"
    );
    assert_eq!(
        answer["container_mountpoints"],
        serde_json::json!([root.join("containers")]),
        "{answer}"
    );
}
