use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::sys::stat::makedev;
use tar::{Builder, EntryType, Header};

use super::*;

const MAX: u64 = 64 << 20;

fn opts() -> UnpackOptions {
    UnpackOptions {
        expected_diff_id: None,
        max_bytes: MAX,
        min_free_bytes: 0,
        cancel: None,
    }
}

/// A tar under construction; entries are written with raw header names, so hostile
/// paths that `Builder::append_path` would refuse can be built.
struct Layer(Builder<Vec<u8>>);

impl Layer {
    fn new() -> Self {
        Self(Builder::new(Vec::new()))
    }

    fn entry(mut self, path: &str, kind: EntryType, link: Option<&str>, data: &[u8]) -> Self {
        let mut h = Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(link) = link {
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn file(self, path: &str, data: &[u8]) -> Self {
        self.entry(path, EntryType::Regular, None, data)
    }

    fn dir(self, path: &str) -> Self {
        self.entry(path, EntryType::Directory, None, b"")
    }

    fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(path, EntryType::Symlink, Some(target), b"")
    }

    fn hardlink(self, path: &str, target: &str) -> Self {
        self.entry(path, EntryType::Link, Some(target), b"")
    }

    fn build(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// `<tmp>/root` is the layer root; `<tmp>/sentinel` must survive every hostile layer.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        fs::write(dir.path().join("sentinel"), b"original").unwrap();
        Self { dir }
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root")
    }

    fn unpack(&self, tar: &[u8]) -> Result<Unpacked> {
        unpack_layer(tar, &self.root(), &opts())
    }

    /// Nothing outside the root changed or appeared.
    fn assert_outside_untouched(&self) {
        assert_eq!(
            fs::read(self.dir.path().join("sentinel")).unwrap(),
            b"original"
        );
        let mut names: Vec<_> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["root", "sentinel"]);
        let meta = fs::symlink_metadata(self.dir.path().join("sentinel")).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.nlink(), 1, "sentinel gained a hard link");
    }

    fn refuse(&self, tar: &[u8], entry: &str) {
        let err = self.unpack(tar).unwrap_err();
        match &err {
            UnpackError::Unsafe { entry: e, .. } => assert_eq!(e, entry, "{err}"),
            other => panic!("expected a refusal of {entry}, got {other}"),
        }
        assert!(err.to_string().contains(entry));
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        self.assert_outside_untouched();
    }
}

#[test]
fn unpacks_files_dirs_links_and_metadata() {
    let sb = Sandbox::new();
    let mut b = Builder::new(Vec::new());
    let mut h = Header::new_ustar();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o4755);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_mtime(1_500_000_000);
    h.set_size(5);
    b.append_pax_extensions([("SCHILY.xattr.user.crust", &b"yes"[..])])
        .unwrap();
    b.append_data(&mut h, "usr/bin/tool", &b"hello"[..])
        .unwrap();
    let mut fifo = Header::new_ustar();
    fifo.set_entry_type(EntryType::Fifo);
    fifo.set_mode(0o644);
    fifo.set_size(0);
    b.append_data(&mut fifo, "run/fifo", &b""[..]).unwrap();
    let mut dev = Header::new_ustar();
    dev.set_entry_type(EntryType::Char);
    dev.set_mode(0o666);
    dev.set_device_major(1).unwrap();
    dev.set_device_minor(3).unwrap();
    dev.set_size(0);
    b.append_data(&mut dev, "dev/null", &b""[..]).unwrap();
    let tar = Layer(b)
        .dir("etc/")
        .symlink("usr/bin/alias", "tool")
        .symlink("abs", "/etc/passwd")
        .hardlink("usr/bin/tool2", "usr/bin/tool")
        .build();
    let got = sb.unpack(&tar).unwrap();
    assert_eq!(got.diff_id, Digest::sha256_of(&tar));
    assert_eq!(got.file_bytes, 5);

    let root = sb.root();
    let tool = fs::symlink_metadata(root.join("usr/bin/tool")).unwrap();
    assert_eq!(fs::read(root.join("usr/bin/tool")).unwrap(), b"hello");
    assert_eq!(tool.mode() & 0o7777, 0o4755);
    assert_eq!((tool.uid(), tool.gid()), (1234, 5678));
    assert_eq!(tool.mtime(), 1_500_000_000);
    assert_eq!(
        xattr::get(root.join("usr/bin/tool"), "user.crust")
            .ok()
            .flatten(),
        Some(b"yes".to_vec()),
        "user xattrs need a file system that supports them"
    );
    assert_eq!(
        fs::read_link(root.join("usr/bin/alias")).unwrap(),
        Path::new("tool")
    );
    assert_eq!(
        fs::read_link(root.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    let tool2 = fs::symlink_metadata(root.join("usr/bin/tool2")).unwrap();
    assert_eq!(tool2.ino(), tool.ino());
    assert!(
        fs::symlink_metadata(root.join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let null = fs::symlink_metadata(root.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), makedev(1, 3));
    assert_eq!(
        fs::symlink_metadata(root.join("etc")).unwrap().mtime(),
        1_600_000_000
    );
}

#[test]
fn whiteouts_and_opaque_dirs_become_overlayfs_markers() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .file("etc/.wh.removed", b"")
        .dir("var/cache/")
        .file("var/cache/.wh..wh..opq", b"")
        .file(".wh..wh.plnk", b"")
        .build();
    sb.unpack(&tar).unwrap();
    let root = sb.root();
    let wh = fs::symlink_metadata(root.join("etc/removed")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert_eq!(
        xattr::get(root.join("var/cache"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
    assert!(!root.join(".wh..wh..opq").exists());
    assert!(!root.join("var/cache/.wh..wh..opq").exists());
}

#[test]
fn overlay_xattrs_from_the_layer_are_ignored() {
    let sb = Sandbox::new();
    let mut b = Builder::new(Vec::new());
    let mut h = Header::new_ustar();
    h.set_entry_type(EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_pax_extensions([("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..])])
        .unwrap();
    b.append_data(&mut h, "d", &b""[..]).unwrap();
    sb.unpack(&b.into_inner().unwrap()).unwrap();
    assert_eq!(
        xattr::get(sb.root().join("d"), "trusted.overlay.redirect").unwrap(),
        None
    );
}

#[test]
fn later_entries_replace_earlier_ones_without_following_them() {
    let sb = Sandbox::new();
    let outside = sb.dir.path().join("sentinel");
    let tar = Layer::new()
        .symlink("s", outside.to_str().unwrap())
        .file("s", b"replaced")
        .dir("d/")
        .file("d/x", b"")
        .file("d", b"now a file")
        .build();
    sb.unpack(&tar).unwrap();
    let s = fs::symlink_metadata(sb.root().join("s")).unwrap();
    assert!(s.is_file());
    assert_eq!(fs::read(sb.root().join("s")).unwrap(), b"replaced");
    assert_eq!(fs::read(sb.root().join("d")).unwrap(), b"now a file");
    sb.assert_outside_untouched();
}

#[test]
fn leading_slash_and_dot_are_normalised_into_the_root() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .file("/abs-file", b"a")
        .file("./dot-file", b"b")
        .file("x/../inside", b"c")
        .build();
    sb.unpack(&tar).unwrap();
    assert_eq!(fs::read(sb.root().join("abs-file")).unwrap(), b"a");
    assert_eq!(fs::read(sb.root().join("dot-file")).unwrap(), b"b");
    assert_eq!(fs::read(sb.root().join("inside")).unwrap(), b"c");
    sb.assert_outside_untouched();
}

#[test]
fn path_traversal_is_refused() {
    let sb = Sandbox::new();
    sb.refuse(
        &Layer::new().file("../sentinel", b"evil").build(),
        "../sentinel",
    );
    sb.refuse(
        &Layer::new().file("a/../../escaped", b"evil").build(),
        "a/../../escaped",
    );
    sb.refuse(&Layer::new().dir("../newdir/").build(), "../newdir/");
    sb.refuse(&Layer::new().symlink("../link", "/").build(), "../link");
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let sb = Sandbox::new();
    let outside = sb.dir.path().to_str().unwrap().to_owned();
    let tar = Layer::new()
        .symlink("escape", &outside)
        .file("escape/sentinel", b"evil")
        .build();
    sb.refuse(&tar, "escape/sentinel");
    let tar = Layer::new()
        .symlink("up", "..")
        .file("up/new-file", b"evil")
        .build();
    sb.refuse(&tar, "up/new-file");
    let tar = Layer::new()
        .symlink("up", "../..")
        .dir("up/newdir/")
        .build();
    sb.refuse(&tar, "up/newdir/");
    // A symlink inside the root is refused as a parent too: entries never follow links.
    let tar = Layer::new()
        .dir("real/")
        .symlink("alias", "real")
        .file("alias/f", b"x")
        .build();
    sb.refuse(&tar, "alias/f");
}

#[test]
fn hardlink_escapes_are_refused() {
    let sb = Sandbox::new();
    sb.refuse(&Layer::new().hardlink("h", "../sentinel").build(), "h");
    // An absolute target is taken inside the root, where it does not exist.
    let outside = sb.dir.path().join("sentinel");
    sb.refuse(
        &Layer::new()
            .hardlink("h", outside.to_str().unwrap())
            .build(),
        "h",
    );
    // Through a symlinked parent.
    let tar = Layer::new()
        .symlink("out", sb.dir.path().to_str().unwrap())
        .hardlink("h", "out/sentinel")
        .build();
    sb.refuse(&tar, "h");
}

#[test]
fn whiteouts_outside_the_root_are_refused() {
    let sb = Sandbox::new();
    sb.refuse(
        &Layer::new().file("../.wh.sentinel", b"").build(),
        "../.wh.sentinel",
    );
    sb.refuse(&Layer::new().file(".wh..", b"").build(), ".wh..");
    sb.refuse(&Layer::new().file(".wh...", b"").build(), ".wh...");
    let tar = Layer::new()
        .symlink("out", sb.dir.path().to_str().unwrap())
        .file("out/.wh.sentinel", b"")
        .build();
    sb.refuse(&tar, "out/.wh.sentinel");
    let tar = Layer::new()
        .symlink("out", sb.dir.path().to_str().unwrap())
        .file("out/.wh..wh..opq", b"")
        .build();
    sb.refuse(&tar, "out/.wh..wh..opq");
    assert_eq!(
        xattr::get(sb.dir.path(), "trusted.overlay.opaque").unwrap(),
        None
    );
}

#[test]
fn a_tar_bomb_over_the_limit_is_refused() {
    let sb = Sandbox::new();
    let tar = Layer::new().file("big", &vec![0u8; 2 << 20]).build();
    let gz = gzip(&tar);
    assert!(
        gz.len() < 16 << 10,
        "the bomb compresses well: {}",
        gz.len()
    );
    let limited = UnpackOptions {
        max_bytes: 1 << 20,
        ..opts()
    };
    let err = unpack_layer(&gz[..], &sb.root(), &limited).unwrap_err();
    assert!(
        matches!(err, UnpackError::TooLarge { limit } if limit == 1 << 20),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
    sb.assert_outside_untouched();
    // Many small files count too: the stream itself is bounded.
    let mut many = Layer::new();
    for i in 0..4096 {
        many = many.file(&format!("f{i}"), b"");
    }
    let err = unpack_layer(&many.build()[..], &sb.root(), &limited).unwrap_err();
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
}

#[test]
fn the_free_disk_guard_stops_an_unpack() {
    let sb = Sandbox::new();
    let tar = Layer::new().file("f", b"data").build();
    let guarded = UnpackOptions {
        min_free_bytes: u64::MAX / 2,
        ..opts()
    };
    let err = unpack_layer(&tar[..], &sb.root(), &guarded).unwrap_err();
    assert!(matches!(err, UnpackError::DiskFull { .. }), "{err}");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn gzip_zstd_and_plain_give_the_same_layer_and_diff_id() {
    let tar = Layer::new().dir("a/").file("a/b", b"content").build();
    let diff_id = Digest::sha256_of(&tar);
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    for (what, blob) in [("plain", tar.clone()), ("gzip", gzip(&tar)), ("zstd", zst)] {
        let sb = Sandbox::new();
        let checked = UnpackOptions {
            expected_diff_id: Some(diff_id.clone()),
            ..opts()
        };
        let got = unpack_layer(&blob[..], &sb.root(), &checked).unwrap();
        assert_eq!(got.diff_id, diff_id, "{what}");
        assert_eq!(
            fs::read(sb.root().join("a/b")).unwrap(),
            b"content",
            "{what}"
        );
    }
}

#[test]
fn diff_id_covers_the_padding_and_a_mismatch_fails() {
    let tar = Layer::new().file("f", b"x").build();
    // Builder ends with two zero blocks; real tars often pad further to a record.
    let mut padded = tar.clone();
    padded.extend_from_slice(&[0u8; 8192]);
    let sb = Sandbox::new();
    assert_eq!(
        sb.unpack(&padded).unwrap().diff_id,
        Digest::sha256_of(&padded)
    );
    let wrong = UnpackOptions {
        expected_diff_id: Some(Digest::sha256_of(b"other")),
        ..opts()
    };
    let sb = Sandbox::new();
    let err = unpack_layer(&tar[..], &sb.root(), &wrong).unwrap_err();
    assert!(matches!(err, UnpackError::DiffIdMismatch { .. }), "{err}");
}

#[test]
fn a_cancelled_unpack_stops() {
    let sb = Sandbox::new();
    let cancel = Arc::new(AtomicBool::new(true));
    let o = UnpackOptions {
        cancel: Some(cancel),
        ..opts()
    };
    let tar = Layer::new().file("f", b"x").build();
    assert!(matches!(
        unpack_layer(&tar[..], &sb.root(), &o),
        Err(UnpackError::Cancelled)
    ));
}

#[test]
fn clean_normalises_and_refuses_climbing() {
    assert_eq!(clean(b"/a/./b//c").unwrap(), Path::new("a/b/c"));
    assert_eq!(clean(b"./").unwrap(), Path::new(""));
    assert_eq!(clean(b"a/../b").unwrap(), Path::new("b"));
    assert!(clean(b"..").is_none());
    assert!(clean(b"a/../..").is_none());
    assert!(clean(b"/../etc").is_none());
}
