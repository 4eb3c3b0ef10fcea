use oci_client::manifest::ImageIndexEntry;

use super::*;
use crate::ErrorKind;

const A: &str = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";
const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

fn top_digest() -> Digest {
    Digest::sha256_of(b"top")
}

fn manifest_json(layers: &[(&str, i64)]) -> String {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, size)| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{size}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{C}","size":7}},
            "layers":[{}]}}"#,
        layers.join(",")
    )
}

fn config_json(diff_ids: &[&str]) -> String {
    let ids: Vec<String> = diff_ids.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"],"Cmd":["sh"]}},
            "rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        ids.join(",")
    )
}

#[test]
fn a_manifest_and_its_config_make_the_layers() {
    let body = manifest_json(&[(A, 10), (B, -1)]);
    let TopLevel::Manifest(m) = parse_top("r", &top_digest(), body.as_bytes()).unwrap() else {
        panic!("a manifest")
    };
    let blobs = blobs(&m).unwrap();
    assert_eq!(blobs.config, (Digest::parse(C).unwrap(), 7));
    // A negative size is no size: the download is checked by digest only.
    assert_eq!(
        blobs.layers,
        [
            (Digest::parse(A).unwrap(), 10),
            (Digest::parse(B).unwrap(), 0)
        ]
    );
    assert_eq!(blobs.size(), 17);
    let config = parse_config(&blobs.config.0, config_json(&[B, A]).as_bytes()).unwrap();
    let layers = layers("r", &top_digest(), &blobs.layers, &config).unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0].diff_id.as_str(), B);
    assert_eq!(layers[0].chain_id.as_str(), B);
    assert_eq!(layers[1].diff_id.as_str(), A);
    assert_eq!(
        layers[1].chain_id,
        chain_ids(&layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())[1]
    );
}

#[test]
fn an_index_is_told_from_a_manifest() {
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{A}","size":1,
              "platform":{{"os":"linux","architecture":"{}"}}}}]}}"#,
        oci_arch()
    );
    let TopLevel::Index(index) = parse_top("r", &top_digest(), body.as_bytes()).unwrap() else {
        panic!("an index")
    };
    assert_eq!(choose_platform(&index.manifests).unwrap().digest, A);
}

#[test]
fn malformed_documents_are_refused_naming_them() {
    for bad in [
        "",
        "[]",
        "{}",
        r#"{"schemaVersion":1}"#,
        r#"{"schemaVersion":2}"#,
        r#"{"schemaVersion":2,"manifests":{}}"#,
    ] {
        let err = parse_top("img:1", &top_digest(), bad.as_bytes()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}: {err}");
        assert!(err.to_string().contains("img:1"), "{err}");
    }
    let err = parse_manifest("img:1", &top_digest(), b"{\"schemaVersion\":2}").unwrap_err();
    assert!(matches!(err, Error::BadManifest { .. }), "{err}");
    let err = parse_config(&top_digest(), b"{\"rootfs\":1}").unwrap_err();
    assert!(matches!(err, Error::BadConfig { .. }), "{err}");
    let body = manifest_json(&[("sha256:abc", 1)]);
    let TopLevel::Manifest(m) = parse_top("r", &top_digest(), body.as_bytes()).unwrap() else {
        panic!("a manifest")
    };
    assert!(matches!(blobs(&m), Err(Error::InvalidDigest { .. })));
}

#[test]
fn layers_and_diff_ids_must_pair_up() {
    let blobs = [(Digest::parse(A).unwrap(), 1)];
    let config = parse_config(&top_digest(), config_json(&[A, B]).as_bytes()).unwrap();
    let err = layers("img:1", &top_digest(), &blobs, &config).unwrap_err();
    assert!(
        err.to_string()
            .contains("1 layers but the config lists 2 diff ids"),
        "{err}"
    );
    let config = parse_config(&top_digest(), config_json(&["sha256:x"]).as_bytes()).unwrap();
    let err = layers("img:1", &top_digest(), &blobs, &config).unwrap_err();
    assert!(matches!(err, Error::InvalidDigest { .. }), "{err}");
}

#[test]
fn platform_choice() {
    let entries: Vec<ImageIndexEntry> = serde_json::from_str(&format!(
        r#"[
          {{"mediaType":"m","digest":"sha256:1","size":1,"platform":{{"os":"windows","architecture":"{a}"}}}},
          {{"mediaType":"m","digest":"sha256:2","size":1,"platform":{{"os":"linux","architecture":"s390x"}}}},
          {{"mediaType":"m","digest":"sha256:3","size":1,"platform":{{"os":"linux","architecture":"{a}"}}}}
        ]"#,
        a = oci_arch()
    ))
    .unwrap();
    assert_eq!(choose_platform(&entries).unwrap().digest, "sha256:3");
    assert!(choose_platform(&entries[..2]).is_none());
}

/// Sizes are the registry's to state: three near i64::MAX overflow a u64 sum.
#[test]
fn huge_sizes_do_not_overflow_the_image_size() {
    let body = manifest_json(&[(A, i64::MAX), (B, i64::MAX)])
        .replace("\"size\":7", &format!("\"size\":{}", i64::MAX));
    let TopLevel::Manifest(m) = parse_top("r", &top_digest(), body.as_bytes()).unwrap() else {
        panic!("a manifest")
    };
    assert_eq!(blobs(&m).unwrap().size(), u64::MAX);
}
