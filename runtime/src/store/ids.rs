//! Identities of sandboxes and containers: 64 lower-case hex characters (256 random
//! bits), as containerd and CRI-O make them, so crictl and kubelet see familiar ids.
//! A [`SandboxId`] or [`ContainerId`] can only hold a valid id.
//!
//! CRI clients may name an object by a unique prefix of its id (crictl does);
//! [`resolve`] finds the one id a prefix stands for, as containerd's truncindex does.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Length of an id in hex characters.
pub const ID_LEN: usize = 64;

/// Why a string is not an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string does not have [`ID_LEN`] characters.
    #[error("must be {ID_LEN} characters, got {0}")]
    Length(usize),
    /// A character is not a lower-case hex digit.
    #[error("must be lower-case hex")]
    NotHex,
}

/// Checks that `s` is a well-formed id.
fn validate(s: &str) -> Result<(), IdError> {
    if s.len() != ID_LEN {
        return Err(IdError::Length(s.len()));
    }
    if !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(IdError::NotHex);
    }
    Ok(())
}

/// 256 bits from the kernel's random source, as hex.
fn random_hex() -> String {
    let mut bytes = [0u8; ID_LEN / 2];
    // The getrandom(2) syscall only fails when the kernel has no entropy source at
    // all; crustd cannot make a safe id then, and nothing can recover from it.
    getrandom::fill(&mut bytes).expect("the kernel's random source is unavailable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// A new random id.
            pub fn generate() -> Self {
                Self(random_hex())
            }

            /// Parses a full id.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                validate(s)?;
                Ok(Self(s.to_owned()))
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The first 12 characters, for logs and messages (as `crictl ps` shows).
            pub fn short(&self) -> &str {
                &self.0[..12]
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(s: String) -> Result<Self, IdError> {
                validate(&s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// The id of a pod sandbox.
    SandboxId
);
id_type!(
    /// The id of a container.
    ContainerId
);

/// Why a prefix does not stand for exactly one id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The prefix is empty or holds a character no id has.
    #[error("invalid id prefix \"{0}\"")]
    Invalid(String),
    /// No id starts with the prefix.
    #[error("no id starts with \"{0}\"")]
    NotFound(String),
    /// More than one id starts with the prefix.
    #[error("id prefix \"{0}\" is ambiguous")]
    Ambiguous(String),
}

/// The one id among `ids` that starts with `prefix`; a full id is its own prefix.
/// A linear scan: a node holds hundreds of objects, not millions.
pub fn resolve<'a, I, T>(prefix: &str, ids: I) -> Result<T, ResolveError>
where
    I: IntoIterator<Item = &'a T>,
    T: AsRef<str> + Clone + 'a,
{
    let well_formed = !prefix.is_empty()
        && prefix.len() <= ID_LEN
        && prefix
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !well_formed {
        return Err(ResolveError::Invalid(prefix.to_owned()));
    }
    let mut found: Option<&T> = None;
    for id in ids {
        if !id.as_ref().starts_with(prefix) {
            continue;
        }
        if found.is_some() {
            return Err(ResolveError::Ambiguous(prefix.to_owned()));
        }
        found = Some(id);
    }
    found
        .cloned()
        .ok_or_else(|| ResolveError::NotFound(prefix.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let ids: HashSet<_> = (0..100).map(|_| ContainerId::generate()).collect();
        assert_eq!(ids.len(), 100);
        for id in &ids {
            assert_eq!(ContainerId::parse(id.as_str()).as_ref(), Ok(id));
            assert_eq!(id.short().len(), 12);
        }
    }

    #[test]
    fn parse_rejects_malformed_ids() {
        let good = "a".repeat(64);
        assert!(SandboxId::parse(&good).is_ok());
        assert_eq!(SandboxId::parse("abc"), Err(IdError::Length(3)));
        assert_eq!(SandboxId::parse(&"A".repeat(64)), Err(IdError::NotHex));
        assert_eq!(SandboxId::parse(&"g".repeat(64)), Err(IdError::NotHex));
        assert_eq!(SandboxId::parse(&"a".repeat(65)), Err(IdError::Length(65)));
    }

    #[test]
    fn serde_validates() {
        let id = SandboxId::generate();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<SandboxId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SandboxId>("\"nope\"").is_err());
    }

    fn id(prefix: &str) -> ContainerId {
        ContainerId::parse(&format!("{prefix}{}", "0".repeat(64 - prefix.len()))).unwrap()
    }

    #[test]
    fn resolve_prefixes() {
        let ids = [id("abc1"), id("abc2"), id("def")];
        assert_eq!(resolve("abc1", &ids), Ok(ids[0].clone()));
        assert_eq!(resolve("d", &ids), Ok(ids[2].clone()));
        assert_eq!(resolve(ids[1].as_str(), &ids), Ok(ids[1].clone()));
        assert_eq!(
            resolve("abc", &ids),
            Err(ResolveError::Ambiguous("abc".into()))
        );
        assert_eq!(
            resolve("ff", &ids),
            Err(ResolveError::NotFound("ff".into()))
        );
        assert_eq!(resolve("", &ids), Err(ResolveError::Invalid("".into())));
        assert_eq!(resolve("XY", &ids), Err(ResolveError::Invalid("XY".into())));
    }
}
