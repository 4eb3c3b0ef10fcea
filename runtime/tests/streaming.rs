//! Exec, attach and port-forward end to end through a real crustd and crust-shim, with
//! crictl as the client over both transports (SPDY and WebSocket): stdin, output, exit
//! codes, a tty with its size from the start (crictl runs under `script`, which gives
//! it a pty), an attach whose stdin_once close ends the container, and port forwarding
//! to a listener of the test's own; WebSocket port forwarding in kubelet's own
//! protocol (fixed ports on channels) to busybox httpd, with a test client; exec over
//! WebSocket in the unversioned `channel.k8s.io` protocol, as the node e2e suite's
//! Conformance spec does it. Then a
//! leak check: crustd's and the shim's fds and threads, and the shim's children,
//! before and after many exec sessions (`CRUST_LEAK_SESSIONS`, default 1000). Runs as
//! root; host-network pods, so no CNI.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Crustd, mirror_config};
use crust_proto::cri::*;

const IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
const CRICTL: &str = "/var/cache/crust/cri-tools-v1.37.0/crictl";
const TRANSPORTS: [&str; 2] = ["spdy", "websocket"];

struct Node {
    crustd: Crustd,
    pod: String,
}

impl Node {
    async fn start() -> Node {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the streaming tests need root"
        );
        assert!(Path::new(CRICTL).is_file(), "no crictl at {CRICTL}");
        let crustd = Crustd::start(&mirror_config()).await;
        let mut images = crustd.images().await;
        images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: IMAGE.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("pull busybox");
        let pod = crustd
            .runtime()
            .await
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_config()),
                runtime_handler: String::new(),
            })
            .await
            .expect("run pod")
            .into_inner()
            .pod_sandbox_id;
        Node { crustd, pod }
    }

    /// Creates and starts a container running `cmd`; `stdin` keeps its stdin open
    /// (and closes it when the first attach's stdin ends).
    async fn container(&self, name: &str, cmd: &[&str], stdin: bool) -> String {
        let mut rt = self.crustd.runtime().await;
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            stdin,
            stdin_once: stdin,
            ..Default::default()
        };
        let id = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: self.pod.clone(),
                config: Some(config),
                sandbox_config: Some(pod_config()),
            })
            .await
            .expect("create")
            .into_inner()
            .container_id;
        rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("start");
        id
    }

    fn crictl(&self) -> Command {
        let mut c = Command::new(CRICTL);
        let ep = format!("unix://{}", self.crustd.socket.display());
        // A config of its own: without one (no /etc/crictl.yaml on a new machine)
        // crictl warns on stderr, which the tests compare.
        let config = self.crustd.dir.path().join("crictl.yaml");
        std::fs::write(
            &config,
            format!("runtime-endpoint: {ep}\nimage-endpoint: {ep}\n"),
        )
        .expect("write crictl.yaml");
        c.arg("--config").arg(&config);
        c.args([
            "--runtime-endpoint",
            &ep,
            "--image-endpoint",
            &ep,
            "--timeout",
            "30s",
        ]);
        c
    }

    /// Runs crictl with `args`, `input` on its stdin.
    fn run(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .crictl()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn crictl");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs crictl with `args` under `script`, so it has a terminal of 100x30.
    fn run_tty(&self, args: &[&str]) -> Output {
        let cmdline = self
            .crictl()
            .get_args()
            .chain(args.iter().map(|a| a.as_ref()))
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let shell = format!("stty cols 100 rows 30; {CRICTL} {cmdline}");
        // script's stdin stays open until crictl is done: at end of file script would
        // end the session early.
        let mut child = Command::new("script")
            .args(["-qec", &shell, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run script");
        let keep = child.stdin.take();
        let mut stdout = Vec::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut stdout)
            .unwrap();
        drop(keep);
        let mut out = child.wait_with_output().expect("wait for script");
        out.stdout = stdout;
        out
    }
}

impl Drop for Node {
    /// Shims outlive crustd by design: kill what this test started (found by its dir
    /// on their command line) and unmount what is left under it.
    fn drop(&mut self) {
        let dir = self.crustd.dir.path().to_string_lossy().into_owned();
        for p in std::fs::read_dir("/proc").unwrap().flatten() {
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            if text(&cmdline).contains(&dir)
                && let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>()
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = table
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&dir))
            .collect();
        mounts.reverse();
        for m in mounts {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn pod_config() -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "streaming".into(),
            uid: "uid-streaming".into(),
            namespace: "streaming".into(),
            attempt: 0,
        }),
        hostname: "streaming".into(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn count_dir(path: String) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

/// The pid of the shim serving `container`.
fn shim_pid(container: &str) -> u32 {
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmd = text(&cmdline).replace('\0', " ");
        if cmd.contains("crust-shim")
            && cmd.contains(&format!("--id {container}"))
            && let Ok(pid) = p.file_name().to_string_lossy().parse()
        {
            return pid;
        }
    }
    panic!("no shim for {container}");
}

/// Live child processes of `pid`, over all its threads.
fn children(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .count()
        })
        .sum()
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Usage {
    fds: usize,
    threads: usize,
    children: usize,
}

fn usage(pid: u32) -> Usage {
    Usage {
        fds: count_dir(format!("/proc/{pid}/fd")),
        threads: count_dir(format!("/proc/{pid}/task")),
        children: children(pid),
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, the CNI plugins, crictl and the local registry; scripts/test runs it"]
async fn exec_attach_and_port_forward_over_both_transports() {
    let node = Node::start().await;
    let sleeper = node.container("sleeper", &["sleep", "3600"], false).await;
    for transport in TRANSPORTS {
        let t = ["--transport", transport];
        // stdin in, stdout out, exit 0.
        let out = node.run(
            &[
                &["exec", "-i"][..],
                &t,
                &[&sleeper, "sh", "-c", "cat; echo done >&2"],
            ]
            .concat(),
            b"hello over stdin\n",
        );
        assert!(
            out.status.success(),
            "{transport}: {out:?}\n{}",
            node.crustd.log()
        );
        assert_eq!(text(&out.stdout), "hello over stdin\n", "{transport}");
        assert_eq!(text(&out.stderr), "done\n", "{transport}");
        // The exit code comes back (crictl reports it and exits 1).
        let out = node.run(
            &[&["exec"][..], &t, &[&sleeper, "sh", "-c", "exit 3"]].concat(),
            b"",
        );
        assert!(!out.status.success(), "{transport}: {out:?}");
        assert!(
            text(&out.stderr).contains("exit code 3"),
            "{transport}: {out:?}"
        );
        // A command that does not exist fails the session with a message.
        let out = node.run(
            &[&["exec"][..], &t, &[&sleeper, "/no/such/cmd"]].concat(),
            b"",
        );
        assert!(!out.status.success(), "{transport}: {out:?}");
        // A tty of the client's size from the program's first instant: stty reads it
        // as it starts, before any resize could arrive.
        for _ in 0..3 {
            let out =
                node.run_tty(&[&["exec", "-it"][..], &t, &[&sleeper, "stty", "size"]].concat());
            assert!(out.status.success(), "{transport}: {out:?}");
            assert!(
                text(&out.stdout).contains("30 100"),
                "{transport}: {}",
                text(&out.stdout),
            );
        }
        let out = node.run_tty(&[&["exec", "-it"][..], &t, &[&sleeper, "tty"]].concat());
        assert!(
            text(&out.stdout).contains("/dev/pts/"),
            "{transport}: {}",
            text(&out.stdout)
        );

        // Attach: stdin reaches the container's shell, its output comes back, and the
        // end of stdin (stdin_once) ends the container and with it the attach.
        let shell = node
            .container(&format!("shell-{transport}"), &["sh"], true)
            .await;
        let started = Instant::now();
        let out = node.run(
            &[&["attach", "-i"][..], &t, &[&shell]].concat(),
            b"echo attached $((6*7))\n",
        );
        assert!(
            out.status.success(),
            "{transport}: {out:?}\n{}",
            node.crustd.log()
        );
        assert_eq!(text(&out.stdout), "attached 42\n", "{transport}");
        assert!(started.elapsed() < Duration::from_secs(20));

        // Port forwarding to a listener on the host (a host-network pod).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let remote = listener.local_addr().unwrap().port();
        let local = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut pf = node
            .crictl()
            .args(["port-forward", "--transport", transport, &node.pod])
            .arg(format!("{local}:{remote}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).unwrap();
                s.write_all(&buf.map(|b| b.to_ascii_uppercase())).unwrap();
            }
        });
        for _ in 0..2 {
            let mut conn = connect_retry(local);
            conn.write_all(b"hello").unwrap();
            let mut back = [0u8; 5];
            conn.read_exact(&mut back).unwrap();
            assert_eq!(&back, b"HELLO", "{transport}");
        }
        server.join().unwrap();
        let _ = pf.kill();
        let _ = pf.wait();
    }
}

fn connect_retry(port: u16) -> std::net::TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "port-forward never listened: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A free port on the host's loopback (host-network pods share it).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Opens the PortForward URL of `pod` with `query` as a WebSocket client offering
/// `protocol`; the server's answer on error.
async fn open_port_forward(
    node: &Node,
    ports: Vec<i32>,
    query: &str,
    protocol: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = node
        .crustd
        .runtime()
        .await
        .port_forward(PortForwardRequest {
            pod_sandbox_id: node.pod.clone(),
            port: ports,
        })
        .await
        .expect("port forward")
        .into_inner()
        .url;
    let url = format!("{}{query}", url.replacen("http://", "ws://", 1));
    let mut request = url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        protocol.parse().expect("a header value"),
    );
    let host = request.uri().authority().unwrap().as_str().to_owned();
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    tokio_tungstenite::client_async(request, tcp)
        .await
        .map(|(ws, _)| ws)
}

/// Sends `request` on each data channel and collects every channel's bytes (base64
/// decoded where the protocol says so) until the server closes; returns them and the
/// close code.
async fn forward_session(
    mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    ports: usize,
    base64: bool,
    request: &[u8],
) -> (Vec<Vec<u8>>, Option<u16>) {
    use base64::Engine;
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let b64 = base64::engine::general_purpose::STANDARD;
    for i in 0..ports {
        let ch = (2 * i) as u8;
        let msg = if base64 {
            Message::Text(format!("{}{}", char::from(b'0' + ch), b64.encode(request)).into())
        } else {
            Message::Binary([&[ch], request].concat().into())
        };
        ws.send(msg).await.unwrap();
    }
    let mut channels = vec![Vec::new(); 2 * ports];
    let deadline = Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout(deadline, ws.next())
            .await
            .expect("the server ends the session")
            .expect("the server closes before the connection ends")
            .unwrap();
        let (ch, data) = match msg {
            Message::Close(frame) => return (channels, frame.map(|f| u16::from(f.code))),
            Message::Binary(b) if !base64 => (b[0], b[1..].to_vec()),
            Message::Text(t) if base64 => (t.as_bytes()[0] - b'0', b64.decode(&t[1..]).unwrap()),
            other => panic!("unexpected message {other:?}"),
        };
        channels[usize::from(ch)].extend_from_slice(&data);
    }
}

/// Execs `cmd` in `container` over WebSocket offering `protocol` (none when empty), the
/// way the node e2e suite's Conformance spec does; returns the bytes of each channel
/// until the server closes, and the close code.
async fn ws_exec(
    node: &Node,
    container: &str,
    cmd: &[&str],
    protocol: &str,
) -> ([Vec<u8>; 5], Option<u16>) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = node
        .crustd
        .runtime()
        .await
        .exec(ExecRequest {
            container_id: container.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await
        .expect("exec")
        .into_inner()
        .url;
    let url = url.replacen("http://", "ws://", 1);
    let mut request = url.as_str().into_client_request().unwrap();
    if !protocol.is_empty() {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            protocol.parse().expect("a header value"),
        );
    }
    let host = request.uri().authority().unwrap().as_str().to_owned();
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let (mut ws, answer) = tokio_tungstenite::client_async(request, tcp)
        .await
        .unwrap_or_else(|e| panic!("upgrade: {e}\n{}", node.crustd.log()));
    let chosen = answer.headers().get("Sec-WebSocket-Protocol");
    assert_eq!(
        chosen.map(|v| v.to_str().unwrap()),
        Some(protocol).filter(|p| !p.is_empty())
    );
    let mut channels: [Vec<u8>; 5] = Default::default();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("the server ends the session")
            .expect("the server closes before the connection ends")
            .unwrap();
        match msg {
            Message::Close(frame) => return (channels, frame.map(|f| u16::from(f.code))),
            Message::Binary(b) => channels[usize::from(b[0])].extend_from_slice(&b[1..]),
            other => panic!("unexpected message {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, the CNI plugins, crictl and the local registry; scripts/test runs it"]
async fn websocket_exec_in_the_unversioned_channel_protocol() {
    let node = Node::start().await;
    let ctr = node.container("sleeper", &["sleep", "600"], false).await;
    for protocol in ["channel.k8s.io", ""] {
        // Success: output only, nothing on the error channel (no JSON status before v4).
        let (ch, close) = ws_exec(&node, &ctr, &["echo", "remote execution test"], protocol).await;
        assert_eq!(text(&ch[1]), "remote execution test\n", "{protocol:?}");
        assert!(ch[2].is_empty() && ch[3].is_empty(), "{protocol:?}: {ch:?}");
        assert_eq!(close, Some(1000));
        // Failure: its text on the error channel.
        let (ch, _) = ws_exec(&node, &ctr, &["sh", "-c", "exit 3"], protocol).await;
        assert_eq!(
            text(&ch[3]),
            "command terminated with non-zero exit code: exit status 3",
            "{protocol:?}"
        );
    }
    // v4 keeps its JSON status, on success too.
    let (ch, _) = ws_exec(&node, &ctr, &["true"], "v4.channel.k8s.io").await;
    assert!(text(&ch[3]).contains("\"Success\""), "{}", text(&ch[3]));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, the CNI plugins, crictl and the local registry; scripts/test runs it"]
async fn websocket_port_forward_in_kubelets_protocol() {
    let node = Node::start().await;
    let (one, two, refused) = (free_port(), free_port(), free_port());
    // Two busybox httpd in the pod, each serving its own page.
    let script = format!(
        "mkdir -p /one /two && echo page one > /one/index.html && echo page two > /two/index.html \
         && httpd -p 127.0.0.1:{one} -h /one && exec httpd -f -p 127.0.0.1:{two} -h /two"
    );
    node.container("httpd", &["sh", "-c", &script], false).await;
    drop(connect_retry(one));
    drop(connect_retry(two));
    let get = b"GET /index.html HTTP/1.0\r\n\r\n";
    let le = |p: u16| p.to_le_bytes().to_vec();

    // Binary channels: two ports and a refused one, named in the query.
    let query = format!("?port={one}&port={two},{refused}");
    let ws = open_port_forward(&node, vec![], &query, "v4.channel.k8s.io")
        .await
        .unwrap_or_else(|e| panic!("upgrade: {e}\n{}", node.crustd.log()));
    let (ch, close) = forward_session(ws, 3, false, get).await;
    for (i, (port, page)) in [(one, "page one\n"), (two, "page two\n")]
        .into_iter()
        .enumerate()
    {
        let data = &ch[2 * i];
        assert_eq!(data[..2], le(port), "data channel {}", 2 * i);
        let reply = text(&data[2..]);
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "port {port}: {reply}");
        assert!(reply.ends_with(page), "port {port}: {reply}");
        assert_eq!(
            ch[2 * i + 1],
            le(port),
            "error channel {}: no error",
            2 * i + 1
        );
    }
    assert_eq!(ch[4], le(refused), "the refused port's data channel");
    assert_eq!(ch[5][..2], le(refused));
    let report = text(&ch[5][2..]);
    println!("refused port {refused}: {report}");
    assert!(
        report.contains(&format!(
            "error forwarding port {refused} to pod {}",
            node.pod
        )) && report.contains("\"closeConnection\":true")
            && report.contains("refused"),
        "{report}"
    );
    assert_eq!(close, Some(1000));

    // Base64 channels, the port from the PortForward request.
    let ws = open_port_forward(&node, vec![i32::from(two)], "", "v4.base64.channel.k8s.io")
        .await
        .unwrap_or_else(|e| panic!("upgrade: {e}\n{}", node.crustd.log()));
    let (ch, close) = forward_session(ws, 1, true, get).await;
    assert_eq!(ch[0][..2], le(two));
    assert!(
        text(&ch[0][2..]).ends_with("page two\n"),
        "{}",
        text(&ch[0])
    );
    assert_eq!(ch[1], le(two));
    assert_eq!(close, Some(1000));

    // Sessions leave nothing open in crustd.
    let crustd = node.crustd.pid();
    let before = usage(crustd);
    let sessions = 20;
    for _ in 0..sessions {
        let query = format!("?port={one}");
        let ws = open_port_forward(&node, vec![], &query, "v4.channel.k8s.io")
            .await
            .unwrap();
        let (ch, _) = forward_session(ws, 1, false, get).await;
        assert!(text(&ch[0]).ends_with("page one\n"));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let now = usage(crustd);
        if now.fds <= before.fds || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("{sessions} port-forward sessions: crustd {before:?} -> {after:?}");
    assert!(
        after.fds <= before.fds,
        "crustd fds grew: {before:?} -> {after:?}"
    );

    // No port anywhere, or a bad one: 400 with kubelet's message, no session.
    for (query, want) in [
        ("", "query parameter \"port\" is required"),
        ("?port=http", "unable to parse \"http\" as a port"),
    ] {
        match open_port_forward(&node, vec![], query, "v4.channel.k8s.io").await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 400, "{query}");
                let body = text(resp.body().as_deref().unwrap_or_default());
                assert!(body.starts_with(want), "{query}: {body}");
            }
            other => panic!(
                "{query}: expected a 400, got {:?}",
                other.map(|_| "a session")
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, the CNI plugins, crictl and the local registry; scripts/test runs it"]
async fn many_exec_sessions_leave_nothing_behind() {
    let sessions: usize = std::env::var("CRUST_LEAK_SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let node = Node::start().await;
    let ctr = node.container("leak", &["sleep", "3600"], false).await;
    let shim = shim_pid(&ctr);
    // One of each kind first, so lazily made things (channels, pools) exist.
    for t in TRANSPORTS {
        let out = node.run(&["exec", "-i", "--transport", t, &ctr, "cat"], b"x");
        assert!(out.status.success(), "{out:?}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let crustd = node.crustd.pid();
    let (c0, s0) = (usage(crustd), usage(shim));
    let started = Instant::now();
    for i in 0..sessions {
        let t = TRANSPORTS[i % 2];
        let out = node.run(&["exec", "-i", "--transport", t, &ctr, "cat"], b"ping");
        assert!(out.status.success(), "session {i}: {out:?}");
        assert_eq!(out.stdout, b"ping");
    }
    let took = started.elapsed();
    // Sessions end asynchronously after the client has its status.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (c1, s1) = loop {
        let now = (usage(crustd), usage(shim));
        if (now.0.fds <= c0.fds && now.1 == s0) || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "{sessions} exec sessions (half SPDY, half WebSocket) in {:.1} s\n\
         crustd: fds {} -> {}, threads {} -> {}, children {} -> {}\n\
         shim:   fds {} -> {}, threads {} -> {}, children {} -> {}",
        took.as_secs_f64(),
        c0.fds,
        c1.fds,
        c0.threads,
        c1.threads,
        c0.children,
        c1.children,
        s0.fds,
        s1.fds,
        s0.threads,
        s1.threads,
        s0.children,
        s1.children,
    );
    assert!(c1.fds <= c0.fds, "crustd fds grew: {c0:?} -> {c1:?}");
    assert_eq!(s1, s0, "the shim kept something");
    let state = node.crustd.dir.path().join("state");
    let left: Vec<_> = walk(&state)
        .into_iter()
        .filter(|p| p.ends_with("tty.sock") || p.to_string_lossy().contains("exec-"))
        .collect();
    assert!(left.is_empty(), "files left: {left:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}
