//! The JSON a registry serves: the manifest or index a reference names, a platform
//! manifest and its image config. Whatever the bytes, reading them fails cleanly or
//! gives documents that write back and read again the same; a manifest and config that
//! read make an image record that survives the metadata database's round trip.
//!
//! The first byte picks the document: 0 the top level, 1 a platform manifest and its
//! config (split at the first NUL byte), anything else a config alone.

#![no_main]

use crust_image_store::manifest::{self, TopLevel};
use crust_image_store::{Digest, Image};
use libfuzzer_sys::fuzz_target;
use oci_spec::image::ImageConfiguration;

const REFERENCE: &str = "registry.example/app:1";

fn digest() -> Digest {
    Digest::sha256_of(b"document")
}

fn top(body: &[u8]) {
    let Ok(top) = manifest::parse_top(REFERENCE, &digest(), body) else {
        return;
    };
    let written = match &top {
        TopLevel::Manifest(m) => {
            if let Ok(blobs) = manifest::blobs(m) {
                blobs.size();
            }
            serde_json::to_vec(m)
        }
        TopLevel::Index(index) => {
            if let Some(entry) = manifest::choose_platform(&index.manifests) {
                let _ = Digest::parse(&entry.digest);
            }
            serde_json::to_vec(index)
        }
    }
    .expect("a document read writes back");
    let again = manifest::parse_top(REFERENCE, &digest(), &written).expect("it reads again");
    let value = |t: &TopLevel| match t {
        TopLevel::Manifest(m) => serde_json::to_value(m),
        TopLevel::Index(i) => serde_json::to_value(i),
    };
    assert_eq!(value(&again).unwrap(), value(&top).unwrap());
}

/// The image record a pull writes, read back as the database would.
fn record(config: ImageConfiguration, layers: Vec<crust_image_store::Layer>, size: u64) {
    let image = Image {
        id: digest(),
        repo_tags: vec![REFERENCE.into()],
        repo_digests: vec![],
        size,
        config,
        layers,
        pinned: false,
        manifests: None,
    };
    let bytes = image.to_record();
    let back = Image::from_record("id", &bytes).expect("a written record reads back");
    // JSON values: the config keeps some of its sets in hash maps, in no fixed order.
    assert_eq!(
        serde_json::to_value(&back).unwrap(),
        serde_json::to_value(&image).unwrap()
    );
}

fn manifest_and_config(body: &[u8]) {
    let (m, config) = match body.iter().position(|&b| b == 0) {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &b""[..]),
    };
    let Ok(m) = manifest::parse_manifest(REFERENCE, &digest(), m) else {
        return;
    };
    let Ok(blobs) = manifest::blobs(&m) else {
        return;
    };
    let Ok(config) = manifest::parse_config(&blobs.config.0, config) else {
        return;
    };
    let Ok(layers) = manifest::layers(REFERENCE, &digest(), &blobs.layers, &config) else {
        return;
    };
    assert_eq!(layers.len(), blobs.layers.len());
    record(config, layers, blobs.size());
}

fn config_alone(body: &[u8]) {
    let Ok(config) = manifest::parse_config(&digest(), body) else {
        return;
    };
    // As many layer blobs as the config has diff ids.
    let n = config.rootfs().diff_ids().len();
    let blobs: Vec<(Digest, u64)> = (0..n)
        .map(|i| (Digest::sha256_of(&i.to_le_bytes()), i as u64))
        .collect();
    let Ok(layers) = manifest::layers(REFERENCE, &digest(), &blobs, &config) else {
        return;
    };
    record(config, layers, 0);
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind {
        0 => top(body),
        1 => manifest_and_config(body),
        _ => config_alone(body),
    }
});
