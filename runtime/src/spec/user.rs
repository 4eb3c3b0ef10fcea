//! The container's user: uid, gid and supplemental groups, from the security context or
//! the image's `User`, with names resolved in the image's `/etc/passwd` and `/etc/group`
//! the way containerd's `WithUser` and `WithAdditionalGIDs` do.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crust_proto::cri::SupplementalGroupsPolicy;
use oci_spec::runtime::User;

use super::{ContainerSpecRequest, Error, Result};

/// A line of `/etc/passwd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswdEntry {
    /// The user name.
    pub name: String,
    /// The uid.
    pub uid: u32,
    /// The primary gid.
    pub gid: u32,
}

/// A line of `/etc/group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEntry {
    /// The group name.
    pub name: String,
    /// The gid.
    pub gid: u32,
    /// The user names listed as members.
    pub members: Vec<String>,
}

/// The users and groups of an image.
pub trait UserLookup {
    /// The entries of the image's `/etc/passwd`; empty when it has none.
    fn passwd(&self) -> io::Result<Vec<PasswdEntry>>;
    /// The entries of the image's `/etc/group`; empty when it has none.
    fn groups(&self) -> io::Result<Vec<GroupEntry>>;
}

/// [`UserLookup`] reading `/etc/passwd` and `/etc/group` under a container's rootfs,
/// resolving symlinks inside the rootfs so that a hostile image cannot make crustd read
/// host files.
pub struct RootfsUsers {
    rootfs: PathBuf,
}

impl RootfsUsers {
    /// Lookups in the rootfs mounted at `rootfs`.
    pub fn new(rootfs: impl Into<PathBuf>) -> RootfsUsers {
        RootfsUsers {
            rootfs: rootfs.into(),
        }
    }

    fn read(&self, file: &str) -> io::Result<String> {
        let path = resolve_in_root(&self.rootfs, Path::new(file))?;
        match fs::read(path) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e),
        }
    }
}

impl UserLookup for RootfsUsers {
    fn passwd(&self) -> io::Result<Vec<PasswdEntry>> {
        Ok(parse_passwd(&self.read("/etc/passwd")?))
    }

    fn groups(&self) -> io::Result<Vec<GroupEntry>> {
        Ok(parse_group(&self.read("/etc/group")?))
    }
}

/// `path` (absolute, inside the container) as a host path under `root`, with every
/// symlink resolved as if `root` were `/`.
fn resolve_in_root(root: &Path, path: &Path) -> io::Result<PathBuf> {
    let mut pending: VecDeque<OsString> = components(path);
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&name);
        let full = root.join(&candidate);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(io::Error::other(format!(
                        "too many symlinks resolving {}",
                        path.display()
                    )));
                }
                let target = fs::read_link(&full)?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                let mut next = components(&target);
                next.extend(pending);
                pending = next;
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The OCI user of the container.
pub(super) fn user(req: &ContainerSpecRequest) -> Result<User> {
    let sc = req.security();
    let run_as_name = sc.map(|s| s.run_as_username.as_str()).unwrap_or("");
    let run_as_uid = sc.and_then(|s| s.run_as_user.as_ref()).map(|v| v.value);
    let run_as_gid = sc.and_then(|s| s.run_as_group.as_ref()).map(|v| v.value);

    let mut from_context = if !run_as_name.is_empty() {
        Some(run_as_name.to_string())
    } else if let Some(uid) = run_as_uid {
        Some(id_from(req, "security_context.run_as_user", uid)?.to_string())
    } else {
        None
    };
    if let Some(gid) = run_as_gid {
        let gid = id_from(req, "security_context.run_as_group", gid)?;
        match from_context.as_mut() {
            Some(user) => *user = format!("{user}:{gid}"),
            None => {
                return Err(req.invalid(
                    "security_context.run_as_group",
                    "run_as_group is set without run_as_user or run_as_username",
                ));
            }
        }
    }
    let image_user = req
        .image
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .unwrap_or_default();
    let userstr = from_context.unwrap_or(image_user);

    let lookups = Lookups::new(req);
    let (uid, gid) = if userstr.is_empty() {
        (0, 0)
    } else {
        lookups.parse(&userstr)?
    };

    let mut gids = vec![gid];
    let policy = sc
        .map(|s| s.supplemental_groups_policy)
        .unwrap_or(SupplementalGroupsPolicy::Merge as i32);
    if policy == SupplementalGroupsPolicy::Merge as i32 {
        let name = userstr.split(':').next().unwrap_or("");
        gids.extend(lookups.memberships(if name.is_empty() { "0" } else { name })?);
    } else if policy != SupplementalGroupsPolicy::Strict as i32 {
        return Err(req.invalid(
            "security_context.supplemental_groups_policy",
            format!("unknown policy {policy}"),
        ));
    }
    for &g in sc.map(|s| s.supplemental_groups.as_slice()).unwrap_or(&[]) {
        gids.push(id_from(req, "security_context.supplemental_groups", g)?);
    }
    gids.sort_unstable();
    gids.dedup();

    let mut user = User::default();
    user.set_uid(uid)
        .set_gid(gid)
        .set_additional_gids(Some(gids))
        .set_umask(None)
        .set_username(None);
    Ok(user)
}

fn id_from(req: &ContainerSpecRequest, field: &'static str, value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|_| req.invalid(field, format!("{value} is not a valid id")))
}

/// `/etc/passwd` and `/etc/group`, read once each on first use.
struct Lookups<'r, 'a> {
    req: &'r ContainerSpecRequest<'a>,
    passwd: std::cell::OnceCell<Vec<PasswdEntry>>,
    groups: std::cell::OnceCell<Vec<GroupEntry>>,
}

impl<'r, 'a> Lookups<'r, 'a> {
    fn new(req: &'r ContainerSpecRequest<'a>) -> Self {
        Lookups {
            req,
            passwd: Default::default(),
            groups: Default::default(),
        }
    }

    fn passwd(&self) -> Result<&[PasswdEntry]> {
        if let Some(p) = self.passwd.get() {
            return Ok(p);
        }
        let entries = self
            .req
            .users
            .passwd()
            .map_err(|e| self.io("/etc/passwd", e))?;
        Ok(self.passwd.get_or_init(|| entries))
    }

    fn groups(&self) -> Result<&[GroupEntry]> {
        if let Some(g) = self.groups.get() {
            return Ok(g);
        }
        let entries = self
            .req
            .users
            .groups()
            .map_err(|e| self.io("/etc/group", e))?;
        Ok(self.groups.get_or_init(|| entries))
    }

    fn io(&self, file: &str, source: io::Error) -> Error {
        Error::Lookup {
            id: self.req.id.to_string(),
            path: self.req.rootfs.join(file.trim_start_matches('/')),
            source,
        }
    }

    /// `uid`, `name`, `uid:gid`, `name:group` (and mixes) to a uid and gid.
    fn parse(&self, userstr: &str) -> Result<(u32, u32)> {
        let (user, group) = match userstr.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (userstr, None),
        };
        if user.is_empty() || group.is_some_and(str::is_empty) {
            return Err(self
                .req
                .invalid("user", format!("invalid user {userstr:?}")));
        }
        let (uid, primary) = match user.parse::<u32>() {
            // A numeric uid needs no passwd entry; without one the gid is 0.
            Ok(uid) => {
                let gid = match group {
                    Some(_) => 0,
                    None => self
                        .passwd()?
                        .iter()
                        .find(|p| p.uid == uid)
                        .map_or(0, |p| p.gid),
                };
                (uid, gid)
            }
            Err(_) => {
                let entry = self
                    .passwd()?
                    .iter()
                    .find(|p| p.name == user)
                    .ok_or_else(|| Error::UserNotFound {
                        id: self.req.id.to_string(),
                        user: user.to_string(),
                    })?;
                (entry.uid, entry.gid)
            }
        };
        let gid = match group {
            None => primary,
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => self
                    .groups()?
                    .iter()
                    .find(|e| e.name == g)
                    .map(|e| e.gid)
                    .ok_or_else(|| Error::GroupNotFound {
                        id: self.req.id.to_string(),
                        group: g.to_string(),
                    })?,
            },
        };
        Ok((uid, gid))
    }

    /// The gids of the groups listing the user (a name, or a uid looked up in passwd)
    /// as a member. A user unknown to the image has none.
    fn memberships(&self, user: &str) -> Result<Vec<u32>> {
        let name = match user.parse::<u32>() {
            Ok(uid) => match self.passwd()?.iter().find(|p| p.uid == uid) {
                Some(p) => p.name.clone(),
                None => return Ok(Vec::new()),
            },
            Err(_) => user.to_string(),
        };
        Ok(self
            .groups()?
            .iter()
            .filter(|g| g.members.contains(&name))
            .map(|g| g.gid)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use crust_proto::cri::Int64Value;

    use super::super::ErrorKind;
    use super::super::testutil::Fixture;
    use super::*;

    fn user_of(f: &Fixture) -> (u32, u32, Vec<u32>) {
        let spec = f.spec().unwrap();
        let u = spec.process().as_ref().unwrap().user().clone();
        (u.uid(), u.gid(), u.additional_gids().clone().unwrap())
    }

    fn with_image_user(user: &str) -> Fixture {
        let mut f = Fixture::new();
        f.image_config(serde_json::json!({ "User": user, "Cmd": ["sh"] }));
        f
    }

    // The fake image: root 0:0, alice 1000:1000 in wheel(10) and users(100),
    // bob 1001:100 in users(100); groups root(0) wheel(10) users(100) alice(1000).

    #[test]
    fn image_user_forms() {
        type Case<'a> = (&'a str, (u32, u32, Vec<u32>));
        let cases: &[Case] = &[
            ("", (0, 0, vec![0])),
            ("1000", (1000, 1000, vec![10, 100, 1000])),
            ("alice", (1000, 1000, vec![10, 100, 1000])),
            ("1000:50", (1000, 50, vec![10, 50, 100])),
            ("alice:wheel", (1000, 10, vec![10, 100])),
            ("bob:1234", (1001, 1234, vec![100, 1234])),
            ("4242", (4242, 0, vec![0])),
            ("4242:4243", (4242, 4243, vec![4243])),
        ];
        for (image_user, want) in cases {
            assert_eq!(
                &user_of(&with_image_user(image_user)),
                want,
                "{image_user:?}"
            );
        }
    }

    #[test]
    fn unknown_names_are_refused() {
        let err = with_image_user("nobody-here").spec().unwrap_err();
        assert!(matches!(err, Error::UserNotFound { .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let err = with_image_user("alice:nogroup").spec().unwrap_err();
        assert!(matches!(err, Error::GroupNotFound { .. }), "{err}");
        assert!(with_image_user(":10").spec().is_err());
    }

    #[test]
    fn run_as_user_overrides_image_user_and_its_group() {
        let mut f = with_image_user("alice:wheel");
        f.security().run_as_user = Some(Int64Value { value: 1001 });
        assert_eq!(user_of(&f), (1001, 100, vec![100]));
        f.security().run_as_group = Some(Int64Value { value: 2000 });
        assert_eq!(user_of(&f), (1001, 2000, vec![100, 2000]));
    }

    #[test]
    fn run_as_username_wins_over_run_as_user() {
        let mut f = Fixture::new();
        f.security().run_as_user = Some(Int64Value { value: 1001 });
        f.security().run_as_username = "alice".into();
        assert_eq!(user_of(&f), (1000, 1000, vec![10, 100, 1000]));
    }

    #[test]
    fn run_as_group_alone_is_invalid() {
        let mut f = with_image_user("alice");
        f.security().run_as_group = Some(Int64Value { value: 10 });
        let err = f.spec().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("run_as_group"), "{err}");
    }

    #[test]
    fn negative_ids_are_invalid() {
        let mut f = Fixture::new();
        f.security().run_as_user = Some(Int64Value { value: -1 });
        assert_eq!(f.spec().unwrap_err().kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn supplemental_groups_merge_and_strict() {
        let mut f = with_image_user("alice");
        f.security().supplemental_groups = vec![5000, 10];
        assert_eq!(user_of(&f), (1000, 1000, vec![10, 100, 1000, 5000]));
        f.security().supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
        assert_eq!(user_of(&f), (1000, 1000, vec![10, 1000, 5000]));
    }

    #[test]
    fn lookup_failure_is_internal() {
        let mut f = with_image_user("alice");
        f.users.fail = true;
        assert_eq!(f.spec().unwrap_err().kind(), ErrorKind::Internal);
    }

    #[test]
    fn parses_passwd_and_group() {
        let p = parse_passwd("root:x:0:0:root:/root:/bin/sh\n# c\nbad\nweb:x:33:33::/:/x\n");
        assert_eq!(p.len(), 2);
        assert_eq!((p[1].name.as_str(), p[1].uid, p[1].gid), ("web", 33, 33));
        let g = parse_group("wheel:x:10:root,alice\nempty:x:5:\n");
        assert_eq!(g[0].members, vec!["root", "alice"]);
        assert!(g[1].members.is_empty());
    }

    #[test]
    fn rootfs_users_stay_inside_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("data")).unwrap();
        fs::write(root.join("data/passwd"), "inside:x:7:7::/:/bin/sh\n").unwrap();
        // An absolute symlink means the image's /data/passwd, never the host's.
        symlink("/data/passwd", root.join("etc/passwd")).unwrap();
        // A relative one climbing out stops at the rootfs.
        symlink("../../../../../data/passwd", root.join("etc/group")).unwrap();
        let users = RootfsUsers::new(&root);
        assert_eq!(users.passwd().unwrap()[0].name, "inside");
        assert_eq!(users.groups().unwrap()[0].name, "inside");
        let empty = RootfsUsers::new(dir.path().join("missing"));
        assert!(empty.passwd().unwrap().is_empty());
    }
}
