//! Layer blobs from a registry, unpacked by crust's unpacker. Besides not panicking,
//! an unpack must leave everything outside the layer root alone: the root is
//! `<sandbox>/d/root`, beside the canary files `<sandbox>/canary` and
//! `<sandbox>/d/canary`; after every input those files and the directories holding
//! them must be exactly as they were (contents, owners, modes, times, links, xattrs,
//! entries), and no file in the root may be a hard link to one outside it.
//!
//! The first byte picks how the rest is read: 0 as the layer's bytes (plain, gzip or
//! zstd: the unpacker tells them apart); 1 the same with each tar header's checksum
//! made right, so that mutations reach the entries instead of stopping at the
//! checksum; anything else as a list of entries built into a tar here from path
//! pieces that name the canaries, the sandbox and `..`, so that an escape is a few
//! mutations away.

#![no_main]

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arbitrary::{Arbitrary, Unstructured};
use crust_image_store::unpack::{UnpackOptions, unpack_layer};
use flate2::Compression;
use flate2::write::GzEncoder;
use libfuzzer_sys::fuzz_target;
use tar::{EntryType, Header};

const CANARY: &[u8] = b"canary\n";

/// The bound on a layer's unpacked bytes.
const MAX_BYTES: u64 = 1 << 20;

/// What is known of a path outside the root.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    meta: (u32, u32, u32, u64, u64, i64, i64, i64, i64, u64),
    xattrs: Vec<OsString>,
    entries: Vec<OsString>,
    content: Vec<u8>,
}

fn snapshot(path: &Path) -> Snapshot {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut entries: Vec<OsString> = if m.is_dir() {
        fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    } else {
        Vec::new()
    };
    entries.sort();
    let mut xattrs: Vec<OsString> = xattr::list(path).unwrap().collect();
    xattrs.sort();
    Snapshot {
        meta: (
            m.mode(),
            m.uid(),
            m.gid(),
            m.nlink(),
            m.ino(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.size(),
        ),
        xattrs,
        entries,
        content: if m.is_file() {
            fs::read(path).unwrap()
        } else {
            Vec::new()
        },
    }
}

/// The layer root and what surrounds it, made once per process.
struct Sandbox {
    base: PathBuf,
    root: PathBuf,
    watched: Vec<(PathBuf, Snapshot)>,
}

impl Sandbox {
    fn new() -> Self {
        let base = std::env::temp_dir().join(format!("crust-fuzz-tar-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let d = base.join("d");
        let root = d.join("root");
        fs::create_dir_all(&root).unwrap();
        for dir in [&base, &d] {
            fs::write(dir.join("canary"), CANARY).unwrap();
        }
        let watched = [
            base.clone(),
            base.join("canary"),
            d.clone(),
            d.join("canary"),
        ]
        .into_iter()
        .map(|p| {
            let s = snapshot(&p);
            (p, s)
        })
        .collect();
        Sandbox {
            base,
            root,
            watched,
        }
    }

    /// Asserts that nothing outside the root changed and that the root's hard links
    /// stay inside it, then empties the root for the next input.
    fn check_and_reset(&self) {
        for (path, before) in &self.watched {
            assert_eq!(&snapshot(path), before, "{} changed", path.display());
        }
        let root = fs::symlink_metadata(&self.root).unwrap();
        assert!(root.is_dir(), "the layer root was replaced");
        let mut links: HashMap<u64, (u64, u64)> = HashMap::new();
        count_links(&self.root, &mut links);
        for (ino, (nlink, seen)) in links {
            assert_eq!(nlink, seen, "inode {ino} has links outside the root");
        }
        for entry in fs::read_dir(&self.root).unwrap() {
            let path = entry.unwrap().path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                fs::remove_dir_all(&path).unwrap();
            } else {
                fs::remove_file(&path).unwrap();
            }
        }
        for name in xattr::list(&self.root).unwrap() {
            xattr::remove(&self.root, name).unwrap();
        }
        std::os::unix::fs::lchown(&self.root, Some(0), Some(0)).unwrap();
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn count_links(dir: &Path, links: &mut HashMap<u64, (u64, u64)>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let m = fs::symlink_metadata(&path).unwrap();
        if m.is_dir() {
            count_links(&path, links);
        } else if m.nlink() > 1 {
            links.entry(m.ino()).or_insert((m.nlink(), 0)).1 += 1;
        }
    }
}

/// A piece of a path in a built entry.
#[derive(Arbitrary, Debug)]
enum Piece {
    Dot,
    Up,
    Empty,
    A,
    B,
    Canary,
    D,
    Root,
    /// The sandbox's absolute path.
    Sandbox,
    Whiteout(Name),
    Opaque,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Name {
    A,
    B,
    Canary,
    D,
    Root,
    Dot,
    Up,
}

#[derive(Arbitrary, Debug)]
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
    Other(u8),
}

#[derive(Arbitrary, Debug)]
enum Pax {
    Xattr(XattrName, Vec<u8>),
    Uid(String),
    Gid(String),
    Path(Vec<Piece>),
    LinkPath(Vec<Piece>),
}

#[derive(Arbitrary, Debug)]
enum XattrName {
    User,
    TrustedOpaque,
    Capability,
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct Entry {
    kind: Kind,
    absolute: bool,
    path: Vec<Piece>,
    link: Vec<Piece>,
    data: Vec<u8>,
    mode: u16,
    owner: (u8, u8),
    device: (u8, u8),
    pax: Vec<Pax>,
}

#[derive(Arbitrary, Debug)]
struct Layer {
    gzip: bool,
    entries: Vec<Entry>,
}

fn path(sandbox: &Path, absolute: bool, pieces: &[Piece]) -> Vec<u8> {
    let name = |n: &Name| match n {
        Name::A => "a",
        Name::B => "b",
        Name::Canary => "canary",
        Name::D => "d",
        Name::Root => "root",
        Name::Dot => ".",
        Name::Up => "..",
    };
    let parts: Vec<String> = pieces
        .iter()
        .map(|p| match p {
            Piece::Dot => ".".into(),
            Piece::Up => "..".into(),
            Piece::Empty => String::new(),
            Piece::A => "a".into(),
            Piece::B => "b".into(),
            Piece::Canary => "canary".into(),
            Piece::D => "d".into(),
            Piece::Root => "root".into(),
            Piece::Sandbox => sandbox.display().to_string(),
            Piece::Whiteout(n) => format!(".wh.{}", name(n)),
            Piece::Opaque => ".wh..wh..opq".into(),
            Piece::Other(s) => s.clone(),
        })
        .collect();
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}").into_bytes()
    } else {
        joined.into_bytes()
    }
}

fn build(sandbox: &Path, layer: &Layer) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in &layer.entries {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        for p in &e.pax {
            let (k, v) = match p {
                Pax::Xattr(n, v) => {
                    let n = match n {
                        XattrName::User => "user.fuzz".into(),
                        XattrName::TrustedOpaque => "trusted.overlay.opaque".into(),
                        XattrName::Capability => "security.capability".into(),
                        XattrName::Other(s) => s.clone(),
                    };
                    (format!("SCHILY.xattr.{n}"), v.clone())
                }
                Pax::Uid(s) => ("uid".into(), s.clone().into_bytes()),
                Pax::Gid(s) => ("gid".into(), s.clone().into_bytes()),
                Pax::Path(p) => ("path".into(), path(sandbox, false, p)),
                Pax::LinkPath(p) => ("linkpath".into(), path(sandbox, false, p)),
            };
            pax.push((k, v));
        }
        let name = path(sandbox, e.absolute, &e.path);
        let link = path(sandbox, false, &e.link);
        let mut h = Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().expect("a GNU header");
            if name.len() <= gnu.name.len() {
                gnu.name[..name.len()].copy_from_slice(&name);
            } else {
                pax.push(("path".into(), name));
            }
            if link.len() <= gnu.linkname.len() {
                gnu.linkname[..link.len()].copy_from_slice(&link);
            } else {
                pax.push(("linkpath".into(), link));
            }
        }
        h.set_entry_type(match e.kind {
            Kind::File => EntryType::Regular,
            Kind::Dir => EntryType::Directory,
            Kind::Symlink => EntryType::Symlink,
            Kind::Hardlink => EntryType::Link,
            Kind::Char => EntryType::Char,
            Kind::Block => EntryType::Block,
            Kind::Fifo => EntryType::Fifo,
            Kind::Other(b) => EntryType::new(b),
        });
        h.set_size(e.data.len() as u64);
        h.set_mode(u32::from(e.mode));
        h.set_uid(u64::from(e.owner.0));
        h.set_gid(u64::from(e.owner.1));
        let _ = h.set_device_major(u32::from(e.device.0));
        let _ = h.set_device_minor(u32::from(e.device.1));
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        if !pax.is_empty() {
            let items = pax.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
            b.append_pax_extensions(items).expect("write to memory");
        }
        b.append(&h, &e.data[..]).expect("write to memory");
    }
    let tar = b.into_inner().expect("write to memory");
    if !layer.gzip {
        return tar;
    }
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&tar).expect("write to memory");
    gz.finish().expect("write to memory")
}

/// Makes each tar header's checksum right, walking the blocks as a reader would.
fn fix_checksums(tar: &mut [u8]) {
    let mut off = 0usize;
    while off + 512 <= tar.len() {
        let block = &mut tar[off..off + 512];
        if block.iter().all(|&b| b == 0) {
            return;
        }
        let mut h = Header::new_old();
        h.as_mut_bytes().copy_from_slice(block);
        h.set_cksum();
        block.copy_from_slice(h.as_bytes());
        let size = h.entry_size().unwrap_or(0).min(tar.len() as u64) as usize;
        off += 512 + size.div_ceil(512) * 512;
    }
}

static SANDBOX: Mutex<Option<Sandbox>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut guard = SANDBOX.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = guard.get_or_insert_with(Sandbox::new);
    let layer = match mode {
        0 => rest.to_vec(),
        1 => {
            let mut tar = rest.to_vec();
            fix_checksums(&mut tar);
            tar
        }
        _ => match Layer::arbitrary_take_rest(Unstructured::new(rest)) {
            Ok(layer) => build(&sandbox.base, &layer),
            Err(_) => return,
        },
    };
    let opts = UnpackOptions {
        expected_diff_id: None,
        max_bytes: MAX_BYTES,
        min_free_bytes: 0,
        cancel: None,
    };
    let _ = unpack_layer(&layer[..], &sandbox.root, &opts);
    sandbox.check_and_reset();
});
