//! Image references and digests as CRI requests and image records carry them: a
//! reference that parses is normalised, and its normal form parses back to the same
//! reference; a digest that parses is exactly its text.

#![no_main]

use crust_image_store::{Digest, ImageRef};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(r) = ImageRef::parse(s) {
        let text = r.to_string();
        let again = ImageRef::parse(&text)
            .unwrap_or_else(|e| panic!("{s:?} normalised to {text:?}, which does not parse: {e}"));
        assert_eq!(again, r, "{s:?} -> {text:?}");
        assert_eq!(again.to_string(), text);
        assert!(text.starts_with(&r.name()));
        // A tag or a digest, never both, never neither.
        assert_ne!(r.tag().is_some(), r.digest().is_some(), "{text}");
        if let Some(d) = r.digest() {
            assert_eq!(r.with_digest(d), r);
        }
    }
    if let Ok(d) = Digest::parse(s) {
        assert_eq!(d.as_str(), s);
        assert_eq!(format!("{}:{}", d.algorithm(), d.hex()), s);
        let tagged = ImageRef::parse("example.com/a:1").expect("a valid reference");
        let pinned = tagged.with_digest(&d);
        assert_eq!(ImageRef::parse(&pinned.to_string()).ok(), Some(pinned));
    }
});
