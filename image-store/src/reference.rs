//! Image references, normalised as Docker does: `busybox` is
//! `docker.io/library/busybox:latest`. The grammar is `oci_client::Reference`'s (a port
//! of the distribution/reference one); this module adds containerd's rules on top: a
//! reference with a digest drops its tag, and a bare 64-hex string is an image ID, not
//! a name.

use std::fmt;

use oci_client::Reference;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// A normalised image reference, valid by construction: a registry, a repository and
/// either a tag or a digest (never both: `name:tag@digest` keeps the digest only, as
/// containerd's `ParseDockerRef` does).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    inner: Reference,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parses and normalises `s`; a malformed reference is
    /// [`Error::InvalidReference`] naming it.
    pub fn parse(s: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidReference {
            reference: s.to_owned(),
            reason,
        };
        if s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(invalid(
                "a 64-character hexadecimal string is an image id, not a name".into(),
            ));
        }
        let parsed = Reference::try_from(s).map_err(|e| invalid(e.to_string()))?;
        // The grammar lets a first component with capitals through as a registry
        // host; when it is not one (no dot, colon or `localhost`), it is part of the
        // repository, which must be lower case, as in containerd's ParseDockerRef.
        // Else the normal form would be a name that does not parse.
        if parsed.repository().bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase".into()));
        }
        let digest = parsed
            .digest()
            .map(Digest::parse)
            .transpose()
            .map_err(|e| invalid(e.to_string()))?;
        let inner = match &digest {
            Some(d) => Reference::with_digest(
                parsed.registry().to_owned(),
                parsed.repository().to_owned(),
                d.to_string(),
            ),
            None => parsed,
        };
        Ok(Self { inner, digest })
    }

    /// The registry host (and port), `docker.io` for Docker Hub.
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository inside the registry, `library/busybox`.
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, absent when the reference names a digest.
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The digest, when the reference names one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// The same name with `digest` instead of a tag: a repo digest.
    pub fn with_digest(&self, digest: &Digest) -> Self {
        Self {
            inner: Reference::with_digest(
                self.registry().to_owned(),
                self.repository().to_owned(),
                digest.to_string(),
            ),
            digest: Some(digest.clone()),
        }
    }

    /// The registry client's view of this reference.
    pub(crate) fn oci(&self) -> &Reference {
        &self.inner
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.digest, self.tag()) {
            (Some(d), _) => write!(f, "{}@{d}", self.name()),
            (None, Some(t)) => write!(f, "{}:{t}", self.name()),
            (None, None) => f.write_str(&self.name()),
        }
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({self})")
    }
}

impl std::str::FromStr for ImageRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    #[test]
    fn normalises_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("user/app:v1", "docker.io/user/app:v1"),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("127.0.0.1:5111/pause:3.9", "127.0.0.1:5111/pause:3.9"),
            ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
            (
                "registry.k8s.io/e2e-test-images/busybox:1.29-2",
                "registry.k8s.io/e2e-test-images/busybox:1.29-2",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(ImageRef::parse(input).unwrap().to_string(), want, "{input}");
        }
    }

    #[test]
    fn digests_win_over_tags() {
        let r = ImageRef::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.digest().unwrap().as_str(), D);
        assert_eq!(r.tag(), None);
        let r = ImageRef::parse(&format!("gcr.io/a/b:tag@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("gcr.io/a/b@{D}"));
        assert_eq!(r.name(), "gcr.io/a/b");
        let tagged = ImageRef::parse("gcr.io/a/b:tag").unwrap();
        assert_eq!(tagged.with_digest(r.digest().unwrap()), r);
    }

    #[test]
    fn malformed_references_are_errors_naming_them() {
        for bad in [
            "",
            "Busybox",
            ":tag",
            "a//b",
            "busybox@sha256:abc",
            "busybox@md5:ffffffffffffffffffffffffffffffff",
            "-leading/dash",
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            // Not a registry host (no dot, colon or localhost): a repository, which
            // must be lower case.
            "User/app",
            "aaaaaaaaaaaBaa/afaaaaaaaaaaaaaaaaaa",
        ] {
            let err = ImageRef::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("\"{bad}\"")), "{err}");
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        }
    }
}
