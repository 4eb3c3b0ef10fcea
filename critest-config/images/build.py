#!/usr/bin/env python3
"""Builds the container images the CRI validation suite (critest) uses, and the
image of the pull benchmark (bench-pull.sh), from Debian packages only, and
pushes them to a local registry under their upstream repository paths.

    build.py build --cache DIR            build (or reuse) the images in DIR/images
    build.py push  --cache DIR --registry HOST:PORT
                                          push every image; a tag that already
                                          points at the same digest is skipped
    build.py list  --cache DIR            print "upstream-name path:tag type digest" lines
    build.py debs                         print the Debian packages the images use

The .deb files must already be in DIR/debs (registry.sh downloads them).
Standard library only. Quiet on success; errors go to stderr.
"""

import argparse
import glob
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))

# Bump when the layout of the built images changes in a way the inputs below
# do not capture.
BUILD_FORMAT = "3"

# Fixed timestamps so that a rebuild from the same inputs yields the same
# digests.
EPOCH = 1700000000
CREATED = "2023-11-14T22:13:20Z"

EMPTY = "#(nop) "

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Debian packages the images are made of (registry.sh downloads these).
DEBS = [
    "busybox", "libc6",
    # pgrep (the busybox build has no pgrep applet) and its libraries
    "procps", "libproc2-0", "libsystemd0", "libcap2", "libgcrypt20",
    "libgpg-error0", "liblz4-1", "liblzma5", "libzstd1",
    # ipcs/ipcrm/ipcmk (no ipcs applet either)
    "util-linux",
    # nginx and its libraries
    "nginx", "nginx-common", "libcrypt1", "libpcre2-8-0", "libssl3", "zlib1g",
    # pause
    "catatonit",
    # curl and its libraries (the node e2e suite's agnhost image, node_e2e.py)
    "curl", "libcurl4", "libbrotli1", "libcom-err2", "libffi8", "libgmp10", "libgnutls30",
    "libgssapi-krb5-2", "libhogweed6", "libidn2-0", "libk5crypto3", "libkeyutils1",
    "libkrb5-3", "libkrb5support0", "libldap-2.5-0", "libnettle8", "libnghttp2-14",
    "libp11-kit0", "libpsl5", "librtmp1", "libsasl2-2", "libssh2-1", "libtasn1-6",
    "libunistring2",
    # glibc's hostname (the node e2e suite's glibc-dns-testing image)
    "hostname",
    # bash (its agnhost image)
    "bash", "libtinfo6",
]

# The pull benchmark's image: busybox, then one layer per group of big Debian
# packages (their whole contents; not meant to run). About 108 MB of gzip'd
# layer data in 7 layers, about 320 MB unpacked.
BENCH_IMAGE = "registry.k8s.io/crust-bench/multilayer:100mb"
BENCH_LAYERS = [
    ["perl-modules-5.36", "libperl5.36"],
    ["python3.11-minimal", "libpython3.11-stdlib"],
    ["libicu72"],
    ["cpp-12"],
    ["gcc-12"],
    ["libllvm15"],
]
DEBS += [p for layer in BENCH_LAYERS for p in layer]

MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST_TYPES = [MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST]


class BuildError(Exception):
    pass


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run(cmd, **kw):
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    if res.returncode != 0:
        raise BuildError("command failed (%d): %s\n%s" % (
            res.returncode, " ".join(cmd), res.stdout.decode(errors="replace")))
    return res.stdout.decode(errors="replace")


# --------------------------------------------------------------------------
# Root file system assembly


class Packages:
    """Extracts .deb files on demand into a scratch directory."""

    def __init__(self, debdir, scratch):
        self.debdir = debdir
        self.scratch = scratch
        self.cache = {}

    def deb_file(self, name):
        found = sorted(glob.glob(os.path.join(self.debdir, name + "_*.deb")))
        if not found:
            raise BuildError("no .deb for package %s in %s" % (name, self.debdir))
        return found[-1]

    def dir(self, name):
        if name not in self.cache:
            dest = os.path.join(self.scratch, "pkg", name)
            os.makedirs(dest)
            run(["dpkg-deb", "-x", self.deb_file(name), dest])
            self.cache[name] = dest
        return self.cache[name]


def copy_entry(src, dst):
    """Copies one file, symlink or directory (recursively), keeping symlinks."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        if os.path.lexists(dst):
            os.unlink(dst)
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISDIR(st.st_mode):
        shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
    else:
        if os.path.lexists(dst):
            os.unlink(dst)
        shutil.copy2(src, dst)


def install(pkgs, root, pkg, patterns, exclude=()):
    """Copies the files of package pkg matching the glob patterns into root."""
    pdir = pkgs.dir(pkg)
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.join(pdir, pattern)))
        if not matches:
            raise BuildError("package %s has no %s" % (pkg, pattern))
        for src in matches:
            rel = os.path.relpath(src, pdir)
            if any(x in rel for x in exclude):
                continue
            copy_entry(src, os.path.join(root, rel))


def install_libs(pkgs, root, pkg):
    """Copies the shared libraries of a library package."""
    patterns = [p for p in ("lib/x86_64-linux-gnu/*.so*", "usr/lib/x86_64-linux-gnu/*.so*")
                if glob.glob(os.path.join(pkgs.dir(pkg), p))]
    if not patterns:
        raise BuildError("package %s ships no shared libraries" % pkg)
    install(pkgs, root, pkg, patterns)


def write_file(root, rel, content, mode=0o644):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)
    with open(path, "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode())
    os.chmod(path, mode)


def read_here(rel):
    with open(os.path.join(HERE, rel), "rb") as f:
        return f.read()


def make_dirs(root, dirs):
    for d, mode in dirs:
        path = os.path.join(root, d)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)


def build_base(pkgs, root):
    """busybox (dynamically linked, applets as hard links) plus pgrep and ipcs."""
    make_dirs(root, [
        ("bin", 0o755), ("sbin", 0o755), ("dev", 0o755), ("etc", 0o755),
        ("home", 0o755), ("lib", 0o755), ("lib64", 0o755), ("proc", 0o555),
        ("root", 0o700), ("run", 0o755), ("sys", 0o555), ("tmp", 0o1777),
        ("usr/bin", 0o755), ("usr/sbin", 0o755), ("usr/lib", 0o755),
        ("usr/local/bin", 0o755), ("usr/local/sbin", 0o755),
        ("var/run", 0o755), ("var/spool/mail", 0o755), ("var/www", 0o755),
    ])
    install(pkgs, root, "libc6", ["lib/x86_64-linux-gnu", "lib64/*", "etc/ld.so.conf.d"])
    for lib in ("libproc2-0", "libsystemd0", "libcap2", "libgcrypt20", "libgpg-error0",
                "liblz4-1", "liblzma5", "libzstd1"):
        install_libs(pkgs, root, lib)
    install(pkgs, root, "busybox", ["bin/busybox"])
    busybox = os.path.join(root, "bin/busybox")
    applets = run([busybox, "--list-full"]).split()
    if len(applets) < 100:
        raise BuildError("busybox lists only %d applets" % len(applets))
    for applet in applets:
        path = os.path.join(root, applet)
        if os.path.lexists(path):
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.link(busybox, path)
    install(pkgs, root, "procps", ["usr/bin/pgrep", "usr/bin/pkill"])
    install(pkgs, root, "util-linux", ["usr/bin/ipcs", "usr/bin/ipcrm", "usr/bin/ipcmk"])
    write_file(root, "etc/passwd", read_here("base/passwd"))
    write_file(root, "etc/group", read_here("base/group"))
    write_file(root, "etc/nsswitch.conf", read_here("base/nsswitch.conf"))


def build_nginx(pkgs, root):
    """nginx from Debian, laid out like the upstream nginx images."""
    install(pkgs, root, "nginx", ["usr/sbin/nginx"])
    for lib in ("libcrypt1", "libpcre2-8-0", "zlib1g"):
        install_libs(pkgs, root, lib)
    install(pkgs, root, "libssl3", ["usr/lib/x86_64-linux-gnu/libssl.so.3",
                                    "usr/lib/x86_64-linux-gnu/libcrypto.so.3"])
    install(pkgs, root, "nginx-common", ["etc/nginx/mime.types", "etc/nginx/fastcgi_params",
                                         "etc/nginx/scgi_params", "etc/nginx/uwsgi_params"])
    write_file(root, "etc/nginx/nginx.conf", read_here("nginx/nginx.conf"))
    write_file(root, "etc/nginx/conf.d/default.conf", read_here("nginx/default.conf"))
    write_file(root, "usr/share/nginx/html/index.html", read_here("nginx/index.html"))
    write_file(root, "usr/share/nginx/html/50x.html", read_here("nginx/50x.html"))
    make_dirs(root, [("var/lib/nginx", 0o755), ("var/cache/nginx", 0o755),
                     ("var/log/nginx", 0o755), ("var/run", 0o755)])
    os.symlink("/dev/stdout", os.path.join(root, "var/log/nginx/access.log"))
    os.symlink("/dev/stderr", os.path.join(root, "var/log/nginx/error.log"))
    passwd = read_here("base/passwd") + b"nginx:x:101:101:nginx:/var/cache/nginx:/bin/false\n"
    group = read_here("base/group") + b"nginx:x:101:\n"
    write_file(root, "etc/passwd", passwd)
    write_file(root, "etc/group", group)


def build_hostnet_nginx(root):
    write_file(root, "etc/nginx/conf.d/default.conf", read_here("hostnet-nginx/default.conf"))


def build_httpd(root):
    write_file(root, "usr/local/apache2/htdocs/index.html", read_here("httpd/index.html"))
    write_file(root, "usr/local/apache2/bin/httpd-foreground",
               read_here("httpd/httpd-foreground"), 0o755)
    make_dirs(root, [("usr/local/apache2/logs", 0o755)])


def build_nonewprivs(root, scratch):
    out = os.path.join(root, "usr/local/bin/nnp")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    src = os.path.join(HERE, "nonewprivs/nnp.c")
    run(["gcc", "-O2", "-s", "-o", out, src], cwd=scratch, env=dict(os.environ, TMPDIR=scratch))
    os.chmod(out, 0o4755)


def build_predefined_group(root):
    passwd = read_here("base/passwd") + \
        b"default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n"
    group = read_here("base/group") + \
        b"default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"
    write_file(root, "etc/passwd", passwd)
    write_file(root, "etc/group", group)
    home = os.path.join(root, "home/default-user")
    os.makedirs(home, mode=0o755)
    os.chown(home, 1000, 1000)


def build_pause(pkgs, root):
    install(pkgs, root, "catatonit", ["usr/bin/catatonit"])
    os.rename(os.path.join(root, "usr/bin/catatonit"), os.path.join(root, "pause"))
    shutil.rmtree(os.path.join(root, "usr"))


def check_libraries(roots, scratch):
    """Merges the layer trees and checks, chrooted, that every ELF file in
    them finds all of its shared libraries."""
    merged = tempfile.mkdtemp(dir=scratch, prefix="check-")
    for r in roots:
        run(["cp", "-a", "--remove-destination", r + "/.", merged + "/"])
    seen = set()
    failures = []
    for dirpath, _, files in os.walk(merged):
        for name in files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with open(path, "rb") as f:
                if f.read(4) != b"\x7fELF":
                    continue
            rel = "/" + os.path.relpath(path, merged)
            res = subprocess.run(["chroot", merged, "/lib64/ld-linux-x86-64.so.2", "--list", rel],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            out = res.stdout.decode(errors="replace")
            if "not found" in out:
                failures.append("%s:\n%s" % (rel, out))
    shutil.rmtree(merged)
    if failures:
        raise BuildError("missing shared libraries:\n" + "\n".join(failures))


# --------------------------------------------------------------------------
# Layers, configs, manifests


class Store:
    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)

    def blob_path(self, digest):
        return os.path.join(self.path, "blobs", "sha256", digest.split(":", 1)[1])

    def put(self, data):
        digest = sha256(data)
        path = self.blob_path(digest)
        if not os.path.exists(path):
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.rename(tmp, path)
        return digest, len(data)

    def get(self, digest):
        with open(self.blob_path(digest), "rb") as f:
            return f.read()


def walk_sorted(top):
    out = []

    def rec(rel):
        full = os.path.join(top, rel) if rel else top
        # busybox first, so that the applets are hard links to bin/busybox
        for name in sorted(os.listdir(full), key=lambda n: (n != "busybox", n)):
            r = os.path.join(rel, name) if rel else name
            out.append(r)
            p = os.path.join(top, r)
            if os.path.isdir(p) and not os.path.islink(p):
                rec(r)
    rec("")
    return out


def make_layer(store, tree):
    """Tars (deterministically: sorted, fixed mtimes, numeric owners kept,
    hard links as hard links) and gzips a directory tree."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for rel in walk_sorted(tree):
            full = os.path.join(tree, rel)
            ti = tf.gettarinfo(full, arcname=rel)
            ti.mtime = EPOCH
            ti.uname = ""
            ti.gname = ""
            if ti.isreg():
                with open(full, "rb") as f:
                    tf.addfile(ti, f)
            else:
                tf.addfile(ti)
    tar = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz, mtime=0, compresslevel=6) as g:
        g.write(tar)
    digest, size = store.put(gz.getvalue())
    return {"digest": digest, "size": size, "diff_id": sha256(tar)}


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def make_image(store, layers, config, oci=False, history=None, wrap_list=True):
    """Writes config + manifest (+ a single-platform list/index like the
    upstream multi-arch images) and returns the top descriptor. History
    entries starting with EMPTY add no layer."""
    if len([h for h in history or [] if not h.startswith(EMPTY)]) != len(layers):
        raise BuildError("history does not match the layers: %r" % (history,))
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [l["diff_id"] for l in layers]},
        "history": [dict({"created": CREATED, "created_by": h}, **({"empty_layer": True} if h.startswith(EMPTY) else {}))
                    for h in (history or [])],
    }
    cfg_digest, cfg_size = store.put(canonical(cfg))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST if oci else MT_DOCKER_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG if oci else MT_DOCKER_CONFIG,
                   "digest": cfg_digest, "size": cfg_size},
        "layers": [{"mediaType": MT_OCI_LAYER if oci else MT_DOCKER_LAYER,
                    "digest": l["digest"], "size": l["size"]} for l in layers],
    }
    m_digest, m_size = store.put(canonical(manifest))
    top = {"mediaType": manifest["mediaType"], "digest": m_digest, "size": m_size,
           "config": cfg_digest}
    if not wrap_list:
        return top
    index = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_INDEX if oci else MT_DOCKER_LIST,
        "manifests": [{"mediaType": manifest["mediaType"], "digest": m_digest, "size": m_size,
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }
    i_digest, i_size = store.put(canonical(index))
    return {"mediaType": index["mediaType"], "digest": i_digest, "size": i_size,
            "config": cfg_digest}


# Upstream names -> registry path. registry.k8s.io, k8s.gcr.io, gcr.io (and,
# for the benchmarks only, public.ecr.aws) are all mirrored by the one local
# registry, so only the repository path matters; no two upstream images share
# a path.
GCR = "gcr.io/k8s-staging-cri-tools/"
E2E = "registry.k8s.io/e2e-test-images/"
ECR = "public.ecr.aws/docker/library/"


def registry_path(name):
    host, path = name.split("/", 1)
    return path


def build_all(cache, debdir):
    store_dir = os.path.join(cache, "images")
    store = Store(store_dir)
    for old in glob.glob(os.path.join(cache, "build-*")):
        shutil.rmtree(old, ignore_errors=True)  # left by an interrupted build
    scratch = tempfile.mkdtemp(dir=cache, prefix="build-")
    try:
        return _build_all(store, store_dir, debdir, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _build_all(store, store_dir, debdir, scratch):
    pkgs = Packages(debdir, scratch)

    def tree(name):
        path = os.path.join(scratch, "tree", name)
        os.makedirs(path)
        return path

    base = tree("base")
    build_base(pkgs, base)
    check_libraries([base], scratch)
    nginx = tree("nginx")
    build_nginx(pkgs, nginx)
    check_libraries([base, nginx], scratch)
    hostnet = tree("hostnet-nginx")
    build_hostnet_nginx(hostnet)
    httpd = tree("httpd")
    build_httpd(httpd)
    nnp = tree("nonewprivs")
    build_nonewprivs(nnp, scratch)
    check_libraries([base, nnp], scratch)
    group = tree("predefined-group")
    build_predefined_group(group)
    pause = tree("pause")
    build_pause(pkgs, pause)
    run(["chroot", pause, "/pause", "--version"])

    L_base = make_layer(store, base)
    L_nginx = make_layer(store, nginx)
    L_hostnet = make_layer(store, hostnet)
    L_httpd = make_layer(store, httpd)
    L_nnp = make_layer(store, nnp)
    L_group = make_layer(store, group)
    L_pause = make_layer(store, pause)

    def file_layer(fname):
        t = tree("file-" + fname)
        write_file(t, fname, b"")
        return make_layer(store, t)

    H_base = "busybox (Debian busybox, libc6, pgrep from procps, ipcs from util-linux)"
    sh = {"Env": [PATH_ENV], "Cmd": ["sh"]}

    def busybox_image(extra_layers=(), config=None, history=()):
        return make_image(store, [L_base] + list(extra_layers), dict(config or sh),
                          history=[H_base] + list(history))

    refs = []  # (upstream name, descriptor)

    def add(names, desc):
        for n in names:
            refs.append((n, desc))

    # Default test container image and the images the specs run commands in.
    add([E2E + "busybox:1.29-2"], busybox_image())

    nginx_cfg = {"Env": [PATH_ENV], "Cmd": ["nginx", "-g", "daemon off;"],
                 "ExposedPorts": {"80/tcp": {}}}
    add([E2E + "nginx:1.14-2"],
        busybox_image([L_nginx], nginx_cfg, ["nginx (Debian nginx, nginx-common, libraries)"]))
    hostnet_cfg = {"Env": [PATH_ENV], "Cmd": ["nginx", "-g", "daemon off;"],
                   "ExposedPorts": {"12003/tcp": {}}, "StopSignal": "SIGQUIT"}
    add([GCR + "hostnet-nginx-amd64:latest"],
        busybox_image([L_nginx, L_hostnet], hostnet_cfg,
                      ["nginx (Debian nginx, nginx-common, libraries)",
                       "conf.d/default.conf listening on 12003"]))
    httpd_cfg = {"Env": ["PATH=/usr/local/apache2/bin:/usr/local/sbin:/usr/local/bin:"
                         "/usr/sbin:/usr/bin:/sbin:/bin", "HTTPD_PREFIX=/usr/local/apache2"],
                 "Cmd": ["httpd-foreground"], "WorkingDir": "/usr/local/apache2",
                 "ExposedPorts": {"80/tcp": {}}}
    add([E2E + "httpd:2.4.39-4"],
        busybox_image([L_httpd], httpd_cfg, ["httpd-foreground (busybox httpd on port 80)"]))
    nnp_cfg = {"Env": [PATH_ENV], "Entrypoint": ["/usr/local/bin/nnp"], "User": "1000"}
    add([E2E + "nonewprivs:1.3"],
        busybox_image([L_nnp], nnp_cfg, ["/usr/local/bin/nnp (set-uid root)"]))

    # pause:3.9 as a plain image (the same image under both registries).
    pause_cfg = {"Env": [PATH_ENV], "Entrypoint": ["/pause", "-P"], "User": "65535:65535",
                 "WorkingDir": "/"}
    add(["registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"],
        make_image(store, [L_pause], pause_cfg, history=["/pause (Debian catatonit)"]))

    # Image-manager test images: busybox plus one empty file named after the
    # image (or tag), like the upstream ones.
    for img in ("test-image-1", "test-image-2", "test-image-3", "test-image-latest",
                "test-image-digest"):
        add([GCR + img + ":latest"], busybox_image([file_layer(img)], history=["ADD " + img]))
    add([GCR + "test-image-tags:1", GCR + "test-image-tags:2", GCR + "test-image-tags:3"],
        busybox_image([file_layer("same-image")], history=["ADD same-image"]))
    for tag in ("test", "all"):
        add([GCR + "test-image-tag:" + tag],
            busybox_image([file_layer(tag)], history=["ADD " + tag]))

    # Images whose config names a user.
    for img, user in (("test-image-user-uid", "1002"),
                      ("test-image-user-username", "www-data"),
                      ("test-image-user-uid-group", "1003:1004"),
                      ("test-image-user-username-group", "www-data:1004")):
        add([GCR + img + ":latest"],
            busybox_image([], {"Env": [PATH_ENV], "Cmd": ["sh"], "User": user},
                          [EMPTY + "USER " + user]))
    add([GCR + "test-image-predefined-group:latest"],
        busybox_image([L_group], {"Env": [PATH_ENV], "Cmd": ["sh"], "User": "1000"},
                      ["default-user (1000) in group-defined-in-image (50000)",
                       EMPTY + "USER 1000"]))

    # Only the benchmark mode (critest -benchmark) pulls these.
    for tag in ("1.35.0-glibc", "1-uclibc", "1", "1-glibc", "1-musl"):
        add([ECR + "busybox:" + tag],
            busybox_image([file_layer("busybox-" + tag)], history=["ADD busybox-" + tag]))

    # The pull benchmark's multi-layer image.
    bench_layers, bench_history = [L_base], [H_base]
    for group in BENCH_LAYERS:
        t = tree("bench-" + group[0])
        for pkg in group:
            install(pkgs, t, pkg, ["*"])
        bench_layers.append(make_layer(store, t))
        bench_history.append("contents of Debian " + ", ".join(group))
    add([BENCH_IMAGE], make_image(store, bench_layers, dict(sh), history=bench_history))

    # Our own sandbox image for a peer runtime: a different image than
    # pause:3.9 (plain OCI manifest, no list).
    sandbox_cfg = {"Env": [PATH_ENV], "Entrypoint": ["/pause", "-P"], "User": "65535:65535",
                   "WorkingDir": "/", "Labels": {"org.opencontainers.image.title": "sandbox pause"}}
    add(["crust/pause:peer"],
        make_image(store, [L_pause], sandbox_cfg, oci=True,
                   history=["/pause (Debian catatonit)"], wrap_list=False))

    # Images that must be distinct really are distinct.
    by_config = {}
    for name, desc in refs:
        by_config.setdefault(desc["config"], set()).add(desc["digest"])
    for cfg, digests in by_config.items():
        if len(digests) != 1:
            raise BuildError("two different images share the config %s" % cfg)
    alias_groups = {}
    for name, desc in refs:
        alias_groups.setdefault(desc["digest"], []).append(name)
    allowed = [{GCR + "test-image-tags:%d" % i for i in (1, 2, 3)},
               {"registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"}]
    for names in alias_groups.values():
        if len(names) > 1 and set(names) not in allowed:
            raise BuildError("unexpectedly identical images: %s" % ", ".join(names))

    out = []
    served = {}
    for name, desc in refs:
        path = registry_path(name) if "." in name.split("/", 1)[0] else name
        if served.setdefault(path, desc["digest"]) != desc["digest"]:
            raise BuildError("two different images would be served as %s" % path)
        repo, tag = path.rsplit(":", 1)
        out.append({"name": name, "repo": repo, "tag": tag, "mediaType": desc["mediaType"],
                    "digest": desc["digest"], "size": desc["size"]})
    return out


def inputs_stamp(debdir):
    h = hashlib.sha256()
    h.update(BUILD_FORMAT.encode())
    for dirpath, dirs, files in os.walk(HERE):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".pyc"):
                continue
            p = os.path.join(dirpath, name)
            h.update(os.path.relpath(p, HERE).encode() + b"\0")
            with open(p, "rb") as f:
                h.update(f.read())
            h.update(b"%o\0" % (os.stat(p).st_mode & 0o7777))
    for pkg in DEBS:
        found = sorted(glob.glob(os.path.join(debdir, pkg + "_*.deb")))
        h.update((os.path.basename(found[-1]) if found else pkg + ":missing").encode() + b"\0")
    try:
        h.update(run(["gcc", "-dumpfullversion"]).encode())
    except (BuildError, OSError):
        h.update(b"no-gcc")
    return h.hexdigest()


def refs_path(cache):
    return os.path.join(cache, "images", "refs.json")


def load_json(path):
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_refs(cache):
    return load_json(refs_path(cache))


def cmd_build(args):
    debdir = os.path.join(args.cache, "debs")
    stamp = inputs_stamp(debdir)
    cur = load_refs(args.cache)
    if cur and cur.get("stamp") == stamp:
        store = Store(os.path.join(args.cache, "images"))
        if all(os.path.exists(store.blob_path(r["digest"])) for r in cur["refs"]):
            return
    refs = build_all(args.cache, debdir)
    tmp = refs_path(args.cache) + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"stamp": stamp, "refs": refs}, f, indent=1)
    os.rename(tmp, refs_path(args.cache))
    collect_garbage(Store(os.path.join(args.cache, "images")), refs)


def collect_garbage(store, refs):
    """Removes the blobs of earlier builds that no image refers to any more."""
    keep = set()

    def mark(digest):
        keep.add(digest)
        doc = json.loads(store.get(digest))
        for m in doc.get("manifests", []):
            mark(m["digest"])
        if "config" in doc:
            keep.add(doc["config"]["digest"])
            keep.update(l["digest"] for l in doc["layers"])
    for r in refs:
        mark(r["digest"])
    blobdir = os.path.join(store.path, "blobs", "sha256")
    for name in os.listdir(blobdir):
        if "sha256:" + name not in keep:
            os.unlink(os.path.join(blobdir, name))


# --------------------------------------------------------------------------
# Registry client (plain HTTP, no auth)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def http(method, url, data=None, headers=None, ok=(200,)):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with OPENER.open(req, timeout=60) as resp:
            body = resp.read()
            status, hdrs = resp.status, resp.headers
    except urllib.error.HTTPError as e:
        body, status, hdrs = e.read(), e.code, e.headers
    if status not in ok:
        raise BuildError("%s %s -> %d %s" % (method, url, status, body[:500].decode(errors="replace")))
    return status, hdrs, body


class Pusher:
    def __init__(self, registry, store):
        self.base = "http://" + registry
        self.store = store
        self.known = {}  # blob digest -> a repo that has it

    def has_blob(self, repo, digest):
        st, _, _ = http("HEAD", "%s/v2/%s/blobs/%s" % (self.base, repo, digest), ok=(200, 404))
        return st == 200

    def push_blob(self, repo, digest):
        if self.has_blob(repo, digest):
            self.known.setdefault(digest, repo)
            return
        url = "%s/v2/%s/blobs/uploads/" % (self.base, repo)
        src = self.known.get(digest)
        if src:
            url += "?" + urllib.parse.urlencode({"mount": digest, "from": src})
        st, hdrs, _ = http("POST", url, data=b"", ok=(201, 202))
        if st == 202:
            loc = urllib.parse.urljoin(self.base + "/", hdrs["Location"])
            loc += ("&" if "?" in loc else "?") + urllib.parse.urlencode({"digest": digest})
            data = self.store.get(digest)
            http("PUT", loc, data=data, ok=(201,),
                 headers={"Content-Type": "application/octet-stream",
                          "Content-Length": str(len(data))})
        self.known.setdefault(digest, repo)

    def push_manifest(self, repo, digest, media_type, ref):
        body = self.store.get(digest)
        doc = json.loads(body)
        if "manifests" in doc:
            for m in doc["manifests"]:
                self.push_manifest(repo, m["digest"], m["mediaType"], m["digest"])
        else:
            for d in [doc["config"]] + doc["layers"]:
                self.push_blob(repo, d["digest"])
        _, hdrs, _ = http("PUT", "%s/v2/%s/manifests/%s" % (self.base, repo, ref), data=body,
                          ok=(201,), headers={"Content-Type": media_type})
        got = hdrs.get("Docker-Content-Digest")
        if got and got != digest:
            raise BuildError("registry stored %s:%s as %s, expected %s" % (repo, ref, got, digest))

    def tag_digest(self, repo, tag):
        st, hdrs, _ = http("HEAD", "%s/v2/%s/manifests/%s" % (self.base, repo, tag),
                           headers={"Accept": ", ".join(MANIFEST_TYPES)}, ok=(200, 404))
        return hdrs.get("Docker-Content-Digest") if st == 200 else None

    def push(self, ref):
        if self.tag_digest(ref["repo"], ref["tag"]) == ref["digest"]:
            return
        self.push_manifest(ref["repo"], ref["digest"], ref["mediaType"], ref["tag"])


def cmd_push(args):
    cur = load_refs(args.cache)
    if not cur:
        raise BuildError("no built images in %s; run build first" % args.cache)
    pusher = Pusher(args.registry, Store(os.path.join(args.cache, "images")))
    for ref in cur["refs"]:
        pusher.push(ref)


def cmd_debs(args):
    print(" ".join(DEBS))


def cmd_list(args):
    cur = load_refs(args.cache)
    if not cur:
        raise BuildError("no built images in %s" % args.cache)
    for ref in cur["refs"]:
        print("%s %s:%s %s %s" % (ref["name"], ref["repo"], ref["tag"], ref["mediaType"],
                                  ref["digest"]))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["build", "push", "list", "debs"])
    p.add_argument("--cache", default=os.environ.get("CRUST_CACHE", "/var/cache/crust"))
    p.add_argument("--registry", default="127.0.0.1:5111")
    args = p.parse_args()
    os.umask(0o022)
    try:
        {"build": cmd_build, "push": cmd_push, "list": cmd_list,
         "debs": cmd_debs}[args.command](args)
    except BuildError as e:
        print("build.py %s: %s" % (args.command, e), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
