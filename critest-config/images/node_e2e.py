#!/usr/bin/env python3
"""Builds the container images the [NodeConformance] specs of the Kubernetes node e2e
suite use (test/utils/image/manifest.go of k8s.io/kubernetes), from the same Debian
packages as build.py and from agnhost built from source (install-kubernetes.sh), and
pushes them to a local registry under their upstream repository paths.

    node_e2e.py build --cache DIR --agnhost-root DIR --busybox PATH
                      --sample-device-plugin PATH
                                    build (or reuse) the images in DIR/node-e2e-images;
                                    --agnhost-root holds agnhost and porter's key pair,
                                    --busybox is busybox with every applet
                                    (build-busybox.sh), --sample-device-plugin the
                                    suite's sample device plugin (install-kubernetes.sh)
    node_e2e.py push  --cache DIR --registry HOST:PORT
    node_e2e.py list  --cache DIR   print "upstream-name path:tag type digest" lines

The .deb files must already be in DIR/debs (registry.sh downloads them). The images
live in a store of their own, so that build.py's garbage collection and these never
remove each other's blobs. Standard library only. Quiet on success.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile

import build as b

E2E = "registry.k8s.io/e2e-test-images/"

# Upstream agnhost: alpine plus the agnhost binary at /agnhost, /agnhost-2 linking to
# it (entrypoint-tester specs), porter's certificate and key, /uploads (netexec), and
# a user and group for the SupplementalGroups specs, and the pause image its
# fake-registry-server serves (the image pull specs); of its packages, the specs here
# run curl and bash.
AGNHOST_TAGS = ("2.66.1", "2.55")
AGNHOST_PORTS = ("80", "8080", "8081", "9376", "5000")
CURL_LIBS = ("libcurl4", "libbrotli1", "libcom-err2", "libffi8", "libgmp10", "libgnutls30",
             "libgssapi-krb5-2", "libhogweed6", "libidn2-0", "libk5crypto3", "libkeyutils1",
             "libkrb5-3", "libkrb5support0", "libldap-2.5-0", "libnettle8", "libnghttp2-14",
             "libp11-kit0", "libpsl5", "librtmp1", "libsasl2-2", "libssh2-1", "libtasn1-6",
             "libunistring2", "libzstd1", "zlib1g")


def use_busybox(root, binary):
    """Replaces build.py's busybox (Debian's binary package) with binary, and links
    every applet it has that no other file provides, at its usual place and in /bin,
    where the upstream busybox image has all of them (specs run /bin/top)."""
    old = os.path.join(root, "bin/busybox")
    ino = os.lstat(old).st_ino
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.lstat(path).st_ino == ino:
                os.unlink(path)
    shutil.copyfile(binary, old)
    os.chmod(old, 0o755)
    applets = b.run([old, "--list-full"]).split()
    for applet in applets + ["bin/" + os.path.basename(a) for a in applets]:
        path = os.path.join(root, applet)
        if not os.path.lexists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.link(old, path)


def build_bash(pkgs, root):
    b.install(pkgs, root, "bash", ["bin/bash"])
    b.install_libs(pkgs, root, "libtinfo6")


def build_curl(pkgs, root):
    b.install(pkgs, root, "curl", ["usr/bin/curl"])
    for lib in CURL_LIBS:
        b.install_libs(pkgs, root, lib)
    b.install(pkgs, root, "libssl3", ["usr/lib/x86_64-linux-gnu/libssl.so.3",
                                      "usr/lib/x86_64-linux-gnu/libcrypto.so.3"])


def build_agnhost(src, root):
    for name, mode in (("agnhost", 0o755), ("localhost.crt", 0o644), ("localhost.key", 0o644)):
        with open(os.path.join(src, name), "rb") as f:
            b.write_file(root, name, f.read(), mode)
    os.symlink("agnhost", os.path.join(root, "agnhost-2"))
    b.make_dirs(root, [("uploads", 0o755), ("home/user-defined-in-image", 0o755)])
    os.chown(os.path.join(root, "home/user-defined-in-image"), 1000, 1000)
    passwd = b.read_here("base/passwd") + \
        b"user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n"
    group = b.read_here("base/group") + \
        b"user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n"
    b.write_file(root, "etc/passwd", passwd)
    b.write_file(root, "etc/group", group)


# agnhost's fake-registry-server serves the images under this dir, in the layout its
# image build makes (fakeregistryserver/prepare_registry.sh): per image,
# manifests/<tag> holding a digest, and manifests/ and blobs/ by digest.
FAKE_REGISTRY = "var/registry/"


def build_fake_registry(store, top, root):
    """Puts the image `top` (a list or index, as make_image returns) into root's
    FAKE_REGISTRY as pause:testing, as upstream's agnhost has it (the image pull
    specs pull localhost:5000/pause:testing from that server, with credentials)."""
    def by_digest(kind, digest):
        algo, hexa = digest.split(":", 1)
        return os.path.join(FAKE_REGISTRY, "pause", kind, algo, hexa[:2], hexa, "data")

    def copy(kind, digest):
        with open(store.blob_path(digest), "rb") as f:
            data = f.read()
        b.write_file(root, by_digest(kind, digest), data)
        return json.loads(data) if kind == "manifests" else None

    b.write_file(root, FAKE_REGISTRY + "pause/manifests/testing", top["digest"] + "\n")
    for m in copy("manifests", top["digest"])["manifests"]:
        manifest = copy("manifests", m["digest"])
        for blob in [manifest["config"]] + manifest["layers"]:
            copy("blobs", blob["digest"])
    for dirpath, dirs, _ in os.walk(root):
        for d in dirs:
            os.chmod(os.path.join(dirpath, d), 0o755)


def build_images(store, debdir, agnhost_root, busybox, device_plugin, scratch):
    pkgs = b.Packages(debdir, scratch)

    def tree(name):
        path = os.path.join(scratch, "tree", name)
        os.makedirs(path)
        return path

    base = tree("base")
    b.build_base(pkgs, base)
    use_busybox(base, busybox)
    b.check_libraries([base], scratch)
    nginx = tree("nginx")
    b.build_nginx(pkgs, nginx)
    b.check_libraries([base, nginx], scratch)
    nnp = tree("nonewprivs")
    b.build_nonewprivs(nnp, scratch)
    agnhost = tree("agnhost")
    build_agnhost(agnhost_root, agnhost)
    build_curl(pkgs, agnhost)
    build_bash(pkgs, agnhost)
    b.check_libraries([base, agnhost], scratch)
    sample_device_plugin = tree("sample-device-plugin")
    with open(device_plugin, "rb") as f:
        b.write_file(sample_device_plugin, "sampledeviceplugin", f.read(), 0o755)
    glibc_hostname = tree("glibc-hostname")
    b.install(pkgs, glibc_hostname, "hostname", ["bin/hostname"])
    b.check_libraries([base, glibc_hostname], scratch)
    pause = tree("pause")
    b.build_pause(pkgs, pause)
    b.run(["chroot", pause, "/pause", "--version"])

    L_base = b.make_layer(store, base)
    L_nginx = b.make_layer(store, nginx)
    L_nnp = b.make_layer(store, nnp)
    L_agnhost = b.make_layer(store, agnhost)
    L_pause = b.make_layer(store, pause)
    L_glibc_hostname = b.make_layer(store, glibc_hostname)
    L_sample_device_plugin = b.make_layer(store, sample_device_plugin)
    pause_cfg = {"Env": [b.PATH_ENV], "Entrypoint": ["/pause", "-P"], "User": "65535:65535",
                 "WorkingDir": "/", "Labels": {"org.opencontainers.image.ref.name": "pause:3.10.2"}}
    pause_image = b.make_image(store, [L_pause], pause_cfg, history=["/pause (Debian catatonit)"])
    fake_registry = tree("fake-registry")
    build_fake_registry(store, pause_image, fake_registry)
    L_fake_registry = b.make_layer(store, fake_registry)
    H_base = "busybox (Debian's source, every applet; libc6, pgrep from procps, ipcs from util-linux)"
    sh = {"Env": [b.PATH_ENV], "Cmd": ["sh"]}

    def image(name, extra_layers=(), config=None, history=()):
        cfg = dict(config or sh)
        cfg["Labels"] = {"org.opencontainers.image.ref.name": name}
        return b.make_image(store, [L_base] + list(extra_layers), cfg,
                            history=[H_base] + list(history))

    refs = []

    def add(name, desc):
        refs.append((name, desc))

    for name in ("busybox:1.37.0-2", "ipc-utils:1.4"):
        add(E2E + name, image(name))
    add(E2E + "nonroot:1.5", image("nonroot:1.5", [], dict(sh, User="1234"),
                                   [b.EMPTY + "USER 1234"]))
    add(E2E + "nonewprivs:1.4",
        image("nonewprivs:1.4", [L_nnp], {"Env": [b.PATH_ENV], "Cmd": ["nnp"]},
              ["/usr/local/bin/nnp (set-uid root)"]))
    nginx_cfg = {"Env": [b.PATH_ENV], "Cmd": ["nginx", "-g", "daemon off;"],
                 "ExposedPorts": {"80/tcp": {}}, "StopSignal": "SIGQUIT"}
    add(E2E + "nginx:1.27.0-2",
        image("nginx:1.27.0-2", [L_nginx], nginx_cfg,
              ["nginx (Debian nginx, nginx-common, libraries)"]))
    agnhost_cfg = {"Env": [b.PATH_ENV], "Entrypoint": ["/agnhost"], "Cmd": ["pause"],
                   "ExposedPorts": {p + "/tcp": {} for p in AGNHOST_PORTS}}
    # Upstream: Debian with dnsutils; the specs that use it run glibc's `hostname -f`.
    add(E2E + "glibc-dns-testing:2.1.1",
        image("glibc-dns-testing:2.1.1", [L_glibc_hostname], sh,
              ["/bin/hostname (Debian hostname, glibc's resolver)"]))
    for tag in AGNHOST_TAGS:
        add(E2E + "agnhost:" + tag,
            image("agnhost:" + tag, [L_agnhost, L_fake_registry], agnhost_cfg,
                  ["agnhost (built from k8s.io/kubernetes/test/images/agnhost), curl, bash",
                   FAKE_REGISTRY + "pause:testing (the pause image below)"]))
    add("registry.k8s.io/pause:3.10.2", pause_image)
    # Upstream: the plugin on a distroless base; the Device Plugin specs run it as a
    # privileged DaemonSet pod (test/e2e/testing-manifests/sample-device-plugin).
    add(E2E + "sample-device-plugin:1.8.0",
        image("sample-device-plugin:1.8.0", [L_sample_device_plugin],
              {"Env": [b.PATH_ENV], "Entrypoint": ["/sampledeviceplugin", "-alsologtostderr"]},
              ["/sampledeviceplugin (built from k8s.io/kubernetes/test/images/sample-device-plugin)"]))

    out = []
    for name, desc in refs:
        repo, tag = b.registry_path(name).rsplit(":", 1)
        out.append({"name": name, "repo": repo, "tag": tag, "mediaType": desc["mediaType"],
                    "digest": desc["digest"], "size": desc["size"]})
    return out


def store_dir(cache):
    return os.path.join(cache, "node-e2e-images")


def refs_path(cache):
    return os.path.join(store_dir(cache), "refs.json")


def load_refs(cache):
    return b.load_json(refs_path(cache))


def stamp(debdir, agnhost_root, busybox, device_plugin):
    h = hashlib.sha256(b.inputs_stamp(debdir).encode())
    for path in (busybox, device_plugin):
        with open(path, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    with open(os.path.abspath(__file__), "rb") as f:
        h.update(f.read())
    for name in sorted(os.listdir(agnhost_root)):
        with open(os.path.join(agnhost_root, name), "rb") as f:
            h.update(name.encode() + b"\0" + hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def cmd_build(args):
    debdir = os.path.join(args.cache, "debs")
    want = stamp(debdir, args.agnhost_root, args.busybox, args.sample_device_plugin)
    store = b.Store(store_dir(args.cache))
    cur = load_refs(args.cache)
    if cur and cur.get("stamp") == want and \
            all(os.path.exists(store.blob_path(r["digest"])) for r in cur["refs"]):
        return
    scratch = tempfile.mkdtemp(dir=args.cache, prefix="build-node-e2e-")
    try:
        refs = build_images(store, debdir, args.agnhost_root, args.busybox,
                            args.sample_device_plugin, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    tmp = refs_path(args.cache) + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"stamp": want, "refs": refs}, f, indent=1)
    os.rename(tmp, refs_path(args.cache))
    b.collect_garbage(store, refs)


def cmd_push(args):
    cur = load_refs(args.cache)
    if not cur:
        raise b.BuildError("no built images in %s; run build first" % store_dir(args.cache))
    pusher = b.Pusher(args.registry, b.Store(store_dir(args.cache)))
    for ref in cur["refs"]:
        pusher.push(ref)


def cmd_list(args):
    cur = load_refs(args.cache)
    if not cur:
        raise b.BuildError("no built images in %s" % store_dir(args.cache))
    for ref in cur["refs"]:
        print("%s %s:%s %s %s" % (ref["name"], ref["repo"], ref["tag"], ref["mediaType"],
                                  ref["digest"]))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["build", "push", "list"])
    p.add_argument("--cache", default=os.environ.get("CRUST_CACHE", "/var/cache/crust"))
    p.add_argument("--registry", default="127.0.0.1:5111")
    p.add_argument("--agnhost-root")
    p.add_argument("--busybox")
    p.add_argument("--sample-device-plugin")
    args = p.parse_args()
    if args.command == "build" and not (args.agnhost_root and args.busybox
                                        and args.sample_device_plugin):
        p.error("build needs --agnhost-root, --busybox and --sample-device-plugin")
    os.umask(0o022)
    try:
        {"build": cmd_build, "push": cmd_push, "list": cmd_list}[args.command](args)
    except b.BuildError as e:
        print("node_e2e.py %s: %s" % (args.command, e), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
