//! The container's process: arguments, environment, working directory, terminal, user,
//! capabilities, OOM score and no_new_privileges.

use std::path::PathBuf;

use oci_spec::runtime::Process;

use super::{ContainerSpecRequest, Error, Result, caps, lsm, user};

/// containerd's default `PATH` (oci.WithDefaultPathEnv), overridden by the image's.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The OCI process of the container. rlimits are left out: the container inherits the
/// shim's, which never exceed the hard limits.
pub(super) fn process(req: &ContainerSpecRequest) -> Result<Process> {
    let mut process = Process::default();
    process
        .set_terminal(Some(req.config.tty))
        .set_args(Some(args(req)?))
        .set_env(Some(env(req)))
        .set_cwd(cwd(req))
        .set_user(user::user(req)?)
        .set_capabilities(Some(caps::capabilities(req)?))
        .set_rlimits(None)
        .set_no_new_privileges(no_new_privileges(req))
        .set_oom_score_adj(oom_score_adj(req)?)
        .set_apparmor_profile(lsm::apparmor_profile(req)?)
        .set_selinux_label(lsm::selinux_label(req)?);
    Ok(process)
}

/// `Some(true)` when the security context asks for no_new_privs, else `None` (which
/// means false): libcontainer takes any `Some` as "no new privileges set" and then
/// loads the seccomp filter after dropping capabilities, where without the flag the
/// kernel refuses it.
fn no_new_privileges(req: &ContainerSpecRequest) -> Option<bool> {
    req.security()
        .is_some_and(|s| s.no_new_privs)
        .then_some(true)
}

/// Kubernetes' rules: a command replaces the image's Entrypoint and Cmd; without one,
/// the image's Entrypoint runs with the given args, or else with the image's Cmd.
fn args(req: &ContainerSpecRequest) -> Result<Vec<String>> {
    let image = req.image.config().as_ref();
    let mut command = req.config.command.clone();
    let mut args = req.config.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.and_then(|c| c.cmd().clone()).unwrap_or_default();
        }
        let entrypoint = image
            .and_then(|c| c.entrypoint().clone())
            .unwrap_or_default();
        // Docker's `ENTRYPOINT [""]` clears the entrypoint.
        if !(entrypoint.len() == 1 && entrypoint[0].is_empty()) {
            command = entrypoint;
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(Error::NoCommand {
            id: req.id.to_string(),
        });
    }
    Ok(command)
}

/// `PATH`, `TERM` (with a tty), `HOSTNAME`, then the image's variables, then the
/// request's: a later value of a key replaces the earlier one in place; a bare `KEY`
/// (no `=`) removes it. The order of first appearance is kept.
fn env(req: &ContainerSpecRequest) -> Vec<String> {
    let hostname = if req.sandbox.hostname.is_empty() {
        req.host.hostname.as_str()
    } else {
        req.sandbox.hostname.as_str()
    };
    let mut env = vec![DEFAULT_PATH.to_string()];
    if req.config.tty {
        env.push("TERM=xterm".to_string());
    }
    merge_env(&mut env, [format!("HOSTNAME={hostname}")]);
    let image = req.image.config().as_ref().and_then(|c| c.env().clone());
    merge_env(&mut env, image.unwrap_or_default());
    merge_env(
        &mut env,
        req.config
            .envs
            .iter()
            .map(|kv| format!("{}={}", kv.key, String::from_utf8_lossy(&kv.value))),
    );
    env
}

fn merge_env(env: &mut Vec<String>, overrides: impl IntoIterator<Item = String>) {
    for entry in overrides {
        let key = entry.split('=').next().unwrap_or("");
        let same_key = |e: &String| e.split('=').next() == Some(key);
        if !entry.contains('=') {
            env.retain(|e| !same_key(e));
        } else if let Some(existing) = env.iter_mut().find(|e| same_key(e)) {
            *existing = entry;
        } else {
            env.push(entry);
        }
    }
}

fn cwd(req: &ContainerSpecRequest) -> PathBuf {
    let image = req
        .image
        .config()
        .as_ref()
        .and_then(|c| c.working_dir().clone())
        .unwrap_or_default();
    if !req.config.working_dir.is_empty() {
        PathBuf::from(&req.config.working_dir)
    } else if !image.is_empty() {
        PathBuf::from(image)
    } else {
        PathBuf::from("/")
    }
}

/// The requested OOM score, raised to crustd's own when lower (lowering it needs
/// CAP_SYS_RESOURCE, which root may lack here).
fn oom_score_adj(req: &ContainerSpecRequest) -> Result<Option<i32>> {
    let Some(resources) = req.config.linux.as_ref().and_then(|l| l.resources.as_ref()) else {
        return Ok(None);
    };
    let adj = resources.oom_score_adj;
    if !(-1000..=1000).contains(&adj) {
        return Err(req.invalid(
            "resources.oom_score_adj",
            format!("{adj} is outside -1000..=1000"),
        ));
    }
    Ok(Some((adj as i32).max(req.host.oom_score_adj_floor)))
}

#[cfg(test)]
mod tests {
    use crust_proto::cri::KeyValue;
    use serde_json::json;

    use super::super::ErrorKind;
    use super::super::testutil::Fixture;
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn process_of(f: &Fixture) -> Process {
        f.spec().unwrap().process().clone().unwrap()
    }

    #[test]
    fn command_and_args_rules() {
        // (entrypoint, cmd, command, args, expected; None = error)
        type Case<'a> = (
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            Option<&'a [&'a str]>,
        );
        let cases: &[Case] = &[
            (&["/ep"], &["cmd"], &[], &[], Some(&["/ep", "cmd"])),
            (&["/ep"], &["cmd"], &[], &["a"], Some(&["/ep", "a"])),
            (&["/ep"], &["cmd"], &["/c"], &[], Some(&["/c"])),
            (
                &["/ep"],
                &["cmd"],
                &["/c"],
                &["a", "b"],
                Some(&["/c", "a", "b"]),
            ),
            (&[], &["cmd", "x"], &[], &[], Some(&["cmd", "x"])),
            (&[], &["cmd"], &[], &["a"], Some(&["a"])),
            (&["/ep"], &[], &[], &[], Some(&["/ep"])),
            (&[""], &["cmd"], &[], &[], Some(&["cmd"])),
            (&[], &[], &["/c"], &[], Some(&["/c"])),
            (&[], &[], &[], &[], None),
            (&[""], &[], &[], &[], None),
        ];
        for (entrypoint, cmd, command, args, want) in cases {
            let mut f = Fixture::new();
            f.image_config(json!({ "Entrypoint": entrypoint, "Cmd": cmd }));
            f.config.command = strings(command);
            f.config.args = strings(args);
            let label = format!("{entrypoint:?} {cmd:?} {command:?} {args:?}");
            match want {
                Some(want) => {
                    assert_eq!(
                        process_of(&f).args().clone().unwrap(),
                        strings(want),
                        "{label}"
                    )
                }
                None => {
                    let err = f.spec().unwrap_err();
                    assert!(matches!(err, Error::NoCommand { .. }), "{label}: {err}");
                    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
                }
            }
        }
    }

    #[test]
    fn env_overrides_keep_order() {
        let mut f = Fixture::new();
        f.sandbox.hostname = "pod-a".into();
        f.image_config(json!({
            "Cmd": ["sh"],
            "Env": ["PATH=/image/bin", "A=image", "B=image", "HOSTNAME=img"]
        }));
        f.config.envs = vec![
            KeyValue {
                key: "B".into(),
                value: b"cri".to_vec(),
            },
            KeyValue {
                key: "C".into(),
                value: b"cri=with=equals".to_vec(),
            },
            KeyValue {
                key: "A".into(),
                value: b"".to_vec(),
            },
        ];
        assert_eq!(
            process_of(&f).env().clone().unwrap(),
            strings(&[
                "PATH=/image/bin",
                "HOSTNAME=img",
                "A=",
                "B=cri",
                "C=cri=with=equals"
            ])
        );
    }

    #[test]
    fn env_defaults_path_term_and_hostname() {
        let mut f = Fixture::new();
        f.config.tty = true;
        let process = process_of(&f);
        assert_eq!(process.terminal(), Some(true));
        assert_eq!(
            process.env().clone().unwrap(),
            strings(&[DEFAULT_PATH, "TERM=xterm", "HOSTNAME=node-1"])
        );
        f.sandbox.hostname = "pod-a".into();
        assert!(
            process_of(&f)
                .env()
                .clone()
                .unwrap()
                .contains(&"HOSTNAME=pod-a".to_string())
        );
    }

    #[test]
    fn bare_key_removes_variable() {
        let mut env = strings(&["A=1", "B=2"]);
        merge_env(&mut env, strings(&["A", "C=3"]));
        assert_eq!(env, strings(&["B=2", "C=3"]));
    }

    #[test]
    fn working_dir_precedence() {
        let mut f = Fixture::new();
        assert_eq!(process_of(&f).cwd(), &PathBuf::from("/"));
        f.image_config(json!({ "Cmd": ["sh"], "WorkingDir": "/image" }));
        assert_eq!(process_of(&f).cwd(), &PathBuf::from("/image"));
        f.config.working_dir = "/cri".into();
        assert_eq!(process_of(&f).cwd(), &PathBuf::from("/cri"));
    }

    #[test]
    fn oom_score_adj_is_clamped_to_the_floor() {
        let mut f = Fixture::new();
        assert_eq!(process_of(&f).oom_score_adj(), None);
        f.host.oom_score_adj_floor = -500;
        for (asked, want) in [
            (-999, -500),
            (-500, -500),
            (-100, -100),
            (0, 0),
            (1000, 1000),
        ] {
            f.resources().oom_score_adj = asked;
            assert_eq!(process_of(&f).oom_score_adj(), Some(want), "{asked}");
        }
        f.resources().oom_score_adj = 1001;
        assert_eq!(f.spec().unwrap_err().kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn no_new_privileges_and_no_rlimits() {
        let mut f = Fixture::new();
        let process = process_of(&f);
        assert_eq!(process.no_new_privileges(), None);
        assert!(process.rlimits().is_none());
        f.security().no_new_privs = true;
        assert_eq!(process_of(&f).no_new_privileges(), Some(true));
    }
}
