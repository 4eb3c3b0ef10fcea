//! Talking to registries through `oci-client`: which endpoints to try (mirrors first,
//! then the upstream), which credentials go where, resolving a tag or an index to this
//! node's platform manifest, and opening blob streams. Digests are checked here for
//! manifests; blobs are checked by the caller as they stream.

use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol, SizedStream};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{self as oci_manifest, OciDescriptor};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tracing::{debug, warn};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{self, TopLevel};
use crate::options::{Auth, Endpoint, StoreOptions, is_loopback};
use crate::reference::ImageRef;

const ACCEPT: &[&str] = &[
    oci_manifest::OCI_IMAGE_INDEX_MEDIA_TYPE,
    oci_manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    oci_manifest::OCI_IMAGE_MEDIA_TYPE,
    oci_manifest::IMAGE_MANIFEST_MEDIA_TYPE,
];

/// One place to ask for the image: a mirror or the upstream registry.
pub(crate) struct Source {
    /// The reference as sent to this endpoint (a mirror is set on it).
    pub(crate) oci: Reference,
    /// `http://127.0.0.1:5111` or the upstream host, for messages.
    pub(crate) label: String,
    mirror: bool,
}

/// The manifest chosen for this node, and where it came from.
pub(crate) struct Resolved {
    /// Index into [`Session::sources`] of the endpoint that answered.
    pub(crate) source: usize,
    /// The manifest blobs, as fetched and verified.
    pub(crate) manifests: manifest::Fetched,
}

/// The client, credentials and endpoints of one pull.
pub(crate) struct Session {
    client: Client,
    auth: RegistryAuth,
    pub(crate) sources: Vec<Source>,
    reference: String,
    stall: Duration,
}

impl Session {
    pub(crate) fn new(opts: &StoreOptions, image: &ImageRef, auth: Option<&Auth>) -> Result<Self> {
        let reference = image.to_string();
        let auth = registry_auth(image, auth)?;
        let mut plain_http: Vec<String> = opts.insecure.clone();
        if is_loopback(image.registry()) {
            plain_http.push(image.registry().to_owned());
        }
        let mut sources = Vec::new();
        for endpoint in opts.mirrors.get(image.registry()).into_iter().flatten() {
            let endpoint = Endpoint::parse(endpoint)?;
            if endpoint.plain_http {
                plain_http.push(endpoint.host.clone());
            }
            let mut oci = image.oci().clone();
            oci.set_mirror_registry(endpoint.host.clone());
            let scheme = if endpoint.plain_http { "http" } else { "https" };
            sources.push(Source {
                oci,
                label: format!("{scheme}://{}", endpoint.host),
                mirror: true,
            });
        }
        sources.push(Source {
            oci: image.oci().clone(),
            label: image.oci().resolve_registry().to_owned(),
            mirror: false,
        });
        // One client per pull: oci-client keeps the first credentials it sees per
        // registry for its lifetime, and pulls may carry different ones. Stalls are
        // timed here and in the blob loop, not by the HTTP client.
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain_http),
            connect_timeout: Some(opts.stall_timeout.min(Duration::from_secs(30))),
            ..Default::default()
        };
        let client = Client::try_from(config).map_err(|e| Error::Registry {
            reference: reference.clone(),
            endpoint: image.registry().to_owned(),
            source: Box::new(e),
        })?;
        Ok(Self {
            client,
            auth,
            sources,
            reference,
            stall: opts.stall_timeout,
        })
    }

    fn registry_error(&self, source: usize) -> impl Fn(OciDistributionError) -> Error + '_ {
        move |e| Error::Registry {
            reference: self.reference.clone(),
            endpoint: self.sources[source].label.clone(),
            source: Box::new(e),
        }
    }

    /// Resolves the reference at each source in turn; a mirror's failure falls
    /// through to the next source, the upstream's is the answer.
    pub(crate) async fn resolve(&self, image: &ImageRef) -> Result<Resolved> {
        let mut last = None;
        for (i, source) in self.sources.iter().enumerate() {
            let attempt = tokio::time::timeout(self.stall, self.resolve_at(i, image)).await;
            let err = match attempt {
                Ok(Ok(resolved)) => {
                    debug!(reference = %self.reference, endpoint = %source.label, "resolved");
                    return Ok(resolved);
                }
                Ok(Err(e)) => e,
                Err(_) => Error::Stalled {
                    reference: self.reference.clone(),
                    what: format!("manifest from {}", source.label),
                    timeout: self.stall,
                },
            };
            if source.mirror {
                warn!(reference = %self.reference, mirror = %source.label, error = %err, "mirror failed, trying the next endpoint");
            }
            last = Some(err);
        }
        Err(last.expect("the upstream is always a source"))
    }

    async fn resolve_at(&self, source: usize, image: &ImageRef) -> Result<Resolved> {
        let src = &self.sources[source];
        let auth = if src.mirror {
            RegistryAuth::Anonymous
        } else {
            self.auth.clone()
        };
        let fetch = |oci: Reference| {
            let auth = auth.clone();
            async move {
                let (body, _) = self
                    .client
                    .pull_manifest_raw(&oci, &auth, ACCEPT)
                    .await
                    .map_err(self.registry_error(source))?;
                Ok::<_, Error>(body)
            }
        };
        let body = fetch(src.oci.clone()).await?;
        let top_digest = Digest::sha256_of(&body);
        if let Some(want) = image.digest()
            && want.algorithm() == "sha256"
        {
            manifest::check_digest(want, &body)?;
        }
        let platform = match manifest::parse_top(&self.reference, &top_digest, &body)? {
            TopLevel::Manifest(manifest) => manifest::Platform::Same(manifest),
            TopLevel::Index(index) => {
                let digest = manifest::platform_entry(&self.reference, &top_digest, &index)?;
                let inner = fetch(src.oci.clone_with_digest(digest.to_string())).await?;
                manifest::Platform::Separate {
                    digest,
                    body: inner.to_vec(),
                    index,
                }
            }
        };
        Ok(Resolved {
            source,
            manifests: manifest::Fetched::new(
                &self.reference,
                top_digest,
                body.to_vec(),
                platform,
            )?,
        })
    }

    /// Opens the stream of one blob at the source that resolved the manifest.
    pub(crate) async fn blob_stream(
        &self,
        source: usize,
        digest: &Digest,
        size: u64,
    ) -> Result<SizedStream> {
        let desc = OciDescriptor {
            digest: digest.to_string(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let open = self
            .client
            .pull_blob_stream(&self.sources[source].oci, &desc);
        match tokio::time::timeout(self.stall, open).await {
            Ok(res) => res.map_err(self.registry_error(source)),
            Err(_) => Err(Error::Stalled {
                reference: self.reference.clone(),
                what: format!("blob {digest}"),
                timeout: self.stall,
            }),
        }
    }
}

/// Maps CRI credentials to the client's, as containerd's `ParseAuth` does.
fn registry_auth(image: &ImageRef, auth: Option<&Auth>) -> Result<RegistryAuth> {
    let Some(auth) = auth else {
        return Ok(RegistryAuth::Anonymous);
    };
    if !auth.server_address.is_empty() && !same_registry(&auth.server_address, image.registry()) {
        debug!(reference = %image, server = %auth.server_address, "credentials are for another registry");
        return Ok(RegistryAuth::Anonymous);
    }
    let invalid = |reason| Error::InvalidAuth {
        reference: image.to_string(),
        reason,
    };
    if !auth.registry_token.is_empty() {
        return Ok(RegistryAuth::Bearer(auth.registry_token.clone()));
    }
    if !auth.username.is_empty() {
        return Ok(RegistryAuth::Basic(
            auth.username.clone(),
            auth.password.clone(),
        ));
    }
    if !auth.auth.is_empty() {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.auth.trim())
            .map_err(|_| invalid("auth is not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| invalid("auth is not UTF-8"))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| invalid("auth is not base64(user:password)"))?;
        return Ok(RegistryAuth::Basic(user.to_owned(), pass.to_owned()));
    }
    if !auth.identity_token.is_empty() {
        return Err(invalid(
            "identity tokens (OAuth2 refresh tokens) are not supported",
        ));
    }
    Ok(RegistryAuth::Anonymous)
}

fn same_registry(server_address: &str, registry: &str) -> bool {
    let host = server_address
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    host == registry || (hub(host) && hub(registry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn credentials_map_like_containerd() {
        let r = image("registry.example.com/app:1");
        let basic = |u: &str, p: &str| RegistryAuth::Basic(u.into(), p.into());
        let a = Auth {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        };
        assert_eq!(registry_auth(&r, Some(&a)).unwrap(), basic("u", "p"));
        let a = Auth {
            auth: "dTpwOng=".into(), // u:p:x
            ..Default::default()
        };
        assert_eq!(registry_auth(&r, Some(&a)).unwrap(), basic("u", "p:x"));
        let a = Auth {
            registry_token: "tok".into(),
            username: "ignored".into(),
            ..Default::default()
        };
        assert_eq!(
            registry_auth(&r, Some(&a)).unwrap(),
            RegistryAuth::Bearer("tok".into())
        );
        let a = Auth {
            username: "u".into(),
            server_address: "https://other.example.com".into(),
            ..Default::default()
        };
        assert_eq!(
            registry_auth(&r, Some(&a)).unwrap(),
            RegistryAuth::Anonymous
        );
        let a = Auth {
            auth: "not base64!".into(),
            ..Default::default()
        };
        let err = registry_auth(&r, Some(&a)).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        assert!(
            err.to_string().contains("registry.example.com/app:1"),
            "{err}"
        );
        let hub = image("busybox");
        let a = Auth {
            username: "u".into(),
            server_address: "https://index.docker.io/v1/".into(),
            ..Default::default()
        };
        assert_eq!(registry_auth(&hub, Some(&a)).unwrap(), basic("u", ""));
        assert_eq!(registry_auth(&hub, None).unwrap(), RegistryAuth::Anonymous);
    }

    #[test]
    fn mirrors_come_first_and_loopback_is_plain_http() {
        let mut opts = StoreOptions::new("/x");
        opts.mirrors.insert(
            "registry.k8s.io".into(),
            vec![
                "http://127.0.0.1:5111".into(),
                "https://m.example.com".into(),
            ],
        );
        let s = Session::new(&opts, &image("registry.k8s.io/pause:3.9"), None).unwrap();
        let labels: Vec<_> = s.sources.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "http://127.0.0.1:5111",
                "https://m.example.com",
                "registry.k8s.io"
            ]
        );
        assert_eq!(s.sources[0].oci.resolve_registry(), "127.0.0.1:5111");
        assert_eq!(s.sources[0].oci.registry(), "registry.k8s.io");
        let s = Session::new(&opts, &image("docker.io/library/busybox"), None).unwrap();
        assert_eq!(s.sources.len(), 1);
        assert_eq!(s.sources[0].label, "index.docker.io");
    }
}
