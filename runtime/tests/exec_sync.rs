//! ExecSync at the size limits, through a real crustd and crust-shim: output larger
//! than one gRPC message allows by default, output over the cap, and commands at the
//! kernel's limit for a program's arguments. The client receives at most 16 MiB per
//! message, as kubelet does. Runs as root; the pod network is bridge `crustxs0`,
//! 10.97.0.0/24, kept in the test's temp dir.

mod common;

use common::pods::*;
use crust_proto::cri::runtime_service_client::RuntimeServiceClient;
use crust_proto::cri::*;
use crust_proto::shim::EXEC_SYNC_OUTPUT_BYTES;
use tokio::sync::Mutex;
use tonic::Code;
use tonic::transport::Channel;

const BRIDGE: &str = "crustxs0";
const SUBNET: &str = "10.97.0.0/24";

const MIB: usize = 1024 * 1024;

/// The tests share the bridge: one at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// A running `sleep` container in a new pod named `name`.
async fn running_container(
    node: &Node,
    rt: &mut RuntimeServiceClient<Channel>,
    name: &str,
) -> String {
    let config = pod_config(name, &node.logs());
    let pod = run_pod(rt, &config).await;
    let id = create(
        rt,
        &pod,
        &config,
        container_config(name, &["sleep", "3600"]),
    )
    .await;
    start(rt, &id).await;
    wait_state(rt, &id, ContainerState::ContainerRunning).await;
    id
}

/// `len` bytes of `yes word`'s output.
fn yes(word: &str, len: usize) -> Vec<u8> {
    format!("{word}\n").bytes().cycle().take(len).collect()
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn exec_sync_output_up_to_the_cap_whole_and_beyond_it_truncated() {
    let _serial = SERIAL.lock().await;
    let node = Node::start(BRIDGE, SUBNET).await;
    let mut rt = node.rt().await;
    let id = running_container(&node, &mut rt, "output").await;

    // Between the 4 MiB of a default gRPC message and the cap: all of it, both streams.
    let script = format!(
        "yes out | head -c {}; yes err | head -c {} >&2",
        10 * MIB,
        3 * MIB
    );
    let out = exec(&mut rt, &id, &["sh", "-c", &script], 60)
        .await
        .expect("10 MiB of stdout and 3 MiB of stderr");
    assert_eq!(out.exit_code, 0);
    assert!(out.stdout == yes("out", 10 * MIB), "stdout is not whole");
    assert!(out.stderr == yes("err", 3 * MIB), "stderr is not whole");

    // 20 MiB on stdout: its first EXEC_SYNC_OUTPUT_BYTES, and the exit code of a
    // process that was left to finish.
    let script = format!("head -c {} /dev/zero; exit 3", 20 * MIB);
    let out = exec(&mut rt, &id, &["sh", "-c", &script], 60)
        .await
        .expect("20 MiB of stdout");
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stdout.len(), EXEC_SYNC_OUTPUT_BYTES);
    assert!(out.stdout.iter().all(|&b| b == 0));
    assert!(out.stderr.is_empty());

    // 20 MiB on each: they share the cap half and half, from the start of each.
    let script = format!(
        "yes out | head -c {n}; yes err | head -c {n} >&2",
        n = 20 * MIB
    );
    let out = exec(&mut rt, &id, &["sh", "-c", &script], 60)
        .await
        .expect("20 MiB on each stream");
    assert_eq!(out.exit_code, 0);
    let half = EXEC_SYNC_OUTPUT_BYTES / 2;
    assert!(out.stdout == yes("out", EXEC_SYNC_OUTPUT_BYTES - half));
    assert!(out.stderr == yes("err", half));
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn exec_sync_takes_commands_up_to_the_kernels_argument_limit() {
    let _serial = SERIAL.lock().await;
    // The kernel gives a new program's arguments and environment a quarter of the
    // stack limit, at most 6 MiB: 2 MiB under the usual 8 MiB limit. crust leaves
    // rlimits to inheritance, so with no stack limit here, none for crustd, its
    // shims and their processes, the kernel takes the full 6 MiB.
    let unlimited = nix::sys::resource::RLIM_INFINITY;
    nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_STACK,
        unlimited,
        unlimited,
    )
    .expect("lift the stack limit");
    let node = Node::start(BRIDGE, SUBNET).await;
    let mut rt = node.rt().await;
    let id = running_container(&node, &mut rt, "args").await;

    // 5 MiB in 80 arguments of 64 KiB (the kernel takes at most 128 KiB each).
    let arg = "a".repeat(64 * 1024 - 1);
    let count = |n: usize| {
        let mut cmd = vec![
            "sh".to_string(),
            "-c".to_string(),
            "touch /tmp/ran; n=0; for a; do n=$((n+${#a})); done; echo $#:$n".to_string(),
            "sh".to_string(),
        ];
        cmd.extend(std::iter::repeat_n(arg.clone(), n));
        cmd
    };
    let out = rt
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: count(80),
            timeout: 60,
        })
        .await
        .expect("a command of 5 MiB")
        .into_inner();
    assert_eq!(
        (String::from_utf8_lossy(&out.stdout).as_ref(), out.exit_code),
        (format!("80:{}\n", 80 * arg.len()).as_str(), 0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Over 6 MiB no process could take: refused before anything runs.
    let rm = exec(&mut rt, &id, &["rm", "/tmp/ran"], 10).await.unwrap();
    assert_eq!(rm.exit_code, 0);
    let err = rt
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: count(97),
            timeout: 60,
        })
        .await
        .expect_err("a command over 6 MiB");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains(&id), "{err:?}");
    let ran = exec(&mut rt, &id, &["test", "-e", "/tmp/ran"], 10)
        .await
        .unwrap();
    assert_eq!(ran.exit_code, 1, "the refused command ran");
}
