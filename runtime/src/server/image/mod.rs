//! ImageService RPCs, one file each, and the conversion of the image store's records
//! to CRI messages.

pub mod image_fs_info;
pub mod image_list;
pub mod image_pull;
pub mod image_remove;
pub mod image_status;

use crust_image_store::Image;
use crust_proto::cri::{self, ImageSpec, Int64Value};

/// The image as CRI reports it. The image config's `User` becomes a uid when its user
/// part is numeric and a username otherwise, as containerd reports it.
pub fn to_cri(image: &Image) -> cri::Image {
    let (uid, username) = match image.user().map(|u| u.split(':').next().unwrap_or(u)) {
        Some(user) => match user.parse::<i64>() {
            Ok(uid) => (Some(Int64Value { value: uid }), String::new()),
            Err(_) => (None, user.to_string()),
        },
        None => (None, String::new()),
    };
    cri::Image {
        id: image.id.to_string(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: image.repo_digests.clone(),
        size: image.size,
        uid,
        username,
        spec: Some(ImageSpec {
            image: image.id.to_string(),
            ..Default::default()
        }),
        pinned: image.pinned,
    }
}

/// The reference of an `ImageSpec`, which must not be empty.
pub fn reference<'a>(
    rpc: &'static str,
    spec: &'a Option<ImageSpec>,
) -> crate::server::error::Result<&'a str> {
    match spec.as_ref().map(|s| s.image.trim()) {
        Some(r) if !r.is_empty() => Ok(r),
        _ => Err(crate::server::error::Error::InvalidArgument {
            rpc,
            message: "no image reference given".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with_user(user: Option<&str>) -> Image {
        let mut config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {}
        });
        if let Some(u) = user {
            config["config"]["User"] = serde_json::json!(u);
        }
        Image {
            id: crust_image_store::Digest::parse(
                "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            )
            .unwrap(),
            repo_tags: vec!["registry.k8s.io/x:1".into()],
            repo_digests: vec![],
            size: 10,
            config: serde_json::from_value(config).unwrap(),
            layers: vec![],
            manifests: None,
            pinned: false,
        }
    }

    #[test]
    fn user_is_uid_or_username() {
        let cases = [
            (Some("1002"), Some(1002), ""),
            (Some("1003:1004"), Some(1003), ""),
            (Some("www-data"), None, "www-data"),
            (Some("www-data:group"), None, "www-data"),
            (None, None, ""),
        ];
        for (user, uid, name) in cases {
            let cri = to_cri(&image_with_user(user));
            assert_eq!(cri.uid.map(|u| u.value), uid, "{user:?}");
            assert_eq!(cri.username, name, "{user:?}");
        }
    }

    #[test]
    fn id_is_the_config_digest_and_spec() {
        let cri = to_cri(&image_with_user(None));
        assert!(cri.id.starts_with("sha256:"));
        assert_eq!(cri.spec.unwrap().image, cri.id);
    }
}
