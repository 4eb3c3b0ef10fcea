#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets that read plain bytes into
fuzz/corpus/<target>/, one file per seed named by its content's sha1 (as libFuzzer
names inputs): SPDY frames as a client sends them, image references, registry
manifests, indexes and image configs, and layer tarballs, friendly and hostile.
The other targets take structured input and start from what the fuzzer finds.

    python3 fuzz/seeds.py
"""
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "corpus")


def write(target, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


# --- SPDY/3.1 frames -------------------------------------------------------------

def spdy_dictionary():
    src = open(os.path.join(TOP, "runtime/src/streaming/spdy/dict.rs")).read()
    body = src[src.index("&[") :]
    return bytes(int(x, 16) for x in re.findall(r"0x([0-9a-f]{2})", body))


class Client:
    """One connection's header compressor, as client-go's SPDY framer keeps it."""

    def __init__(self):
        self.z = zlib.compressobj(6, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY,
                                  zdict=spdy_dictionary())

    def block(self, headers):
        raw = struct.pack(">I", len(headers))
        for k, v in headers:
            raw += struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
        return self.z.compress(raw) + self.z.flush(zlib.Z_SYNC_FLUSH)


def control(kind, flags, body):
    return struct.pack(">HHI", 0x8003, kind, (flags << 24) | len(body)) + body


def data(stream, flags, payload):
    return struct.pack(">II", stream & 0x7FFFFFFF, (flags << 24) | len(payload)) + payload


def syn_stream(c, stream, headers, flags=0):
    return control(1, flags, struct.pack(">IIBB", stream, 0, 0, 0) + c.block(headers))


def spdy_seeds():
    exec_session = Client()
    wire = b"".join([
        syn_stream(exec_session, 1, [("streamtype", "error")]),
        syn_stream(exec_session, 3, [("streamtype", "stdin")]),
        syn_stream(exec_session, 5, [("streamtype", "stdout")]),
        syn_stream(exec_session, 7, [("streamtype", "resize")]),
        data(3, 0, b"echo hello\n"),
        data(7, 0, b'{"Width":80,"Height":24}'),
        control(6, 0, struct.pack(">I", 1)),
        control(9, 0, struct.pack(">II", 3, 65536)),
        data(3, 1, b""),
        control(3, 0, struct.pack(">II", 5, 5)),
        control(7, 0, struct.pack(">II", 7, 0)),
    ])
    pf = Client()
    portforward = b"".join([
        control(4, 0, struct.pack(">II", 1, 0x01000007) + struct.pack(">I", 65536)),
        syn_stream(pf, 1, [("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
        syn_stream(pf, 3, [("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
        data(3, 0, b"GET / HTTP/1.0\r\n\r\n"),
        control(8, 1, struct.pack(">I", 3) + pf.block([("x", "y")])),
        control(2, 0, struct.pack(">I", 1) + pf.block([])),
        control(0x7F, 0, b"unknown"),
    ])
    for chunk in (1, 7, 255):
        write("spdy_frame", bytes([chunk]) + wire)
    write("spdy_frame", bytes([3]) + portforward)
    # The frames of the codec's unit test: two SYN_STREAMs from C zlib.
    test = bytes.fromhex(
        "80030001000000280000000100000000000078bbe3c6a7c202a62346703a2b294a4dcc851625"
        "aca9a08006000000ffff"
        "80030001000000270000000300000000000002651c0c2960624ec90797d1c022bb0844b35a18"
        "30581802000000ffff")
    write("spdy_frame", bytes([16]) + test)


# --- image references ----------------------------------------------------------

REFS = [
    "busybox", "busybox:1.36", "library/busybox", "docker.io/busybox",
    "index.docker.io/library/busybox:latest", "user/app:v1", "localhost/x",
    "localhost:5000/x", "127.0.0.1:5111/pause:3.9", "registry.k8s.io/pause:3.9",
    "registry.k8s.io/e2e-test-images/busybox:1.29-2",
    "gcr.io/a/b:tag@sha256:" + "f" * 64,
    "busybox@sha256:" + "0123456789abcdef" * 4,
    "quay.io/org/repo@sha512:" + "ab" * 64,
    "[::1]:5000/x:y", "a.b.c:1234/d/e/f_g__h-i.j:K-l.M_n", "sha256:" + "a" * 64,
    "a" * 64, "Busybox", "a//b", ":tag", "x@md5:" + "f" * 32,
]


def reference_seeds():
    for r in REFS:
        write("image_reference", r)


# --- registry documents --------------------------------------------------------

def digest(s):
    return "sha256:" + hashlib.sha256(s.encode()).hexdigest()


OCI_MANIFEST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": digest("config"), "size": 1470},
    "layers": [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
         "digest": digest("l1"), "size": 2157195},
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
         "digest": digest("l2"), "size": 32},
    ],
    "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
}

DOCKER_MANIFEST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
               "digest": digest("config"), "size": 1470},
    "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "digest": digest("l1"), "size": 2157195}],
}

OCI_INDEX = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(a),
         "size": 527, "platform": p}
        for a, p in [
            ("amd64", {"architecture": "amd64", "os": "linux"}),
            ("arm", {"architecture": "arm", "os": "linux", "variant": "v7"}),
            ("arm64", {"architecture": "arm64", "os": "linux", "variant": "v8"}),
            ("win", {"architecture": "amd64", "os": "windows", "os.version": "10.0.17763.5329"}),
            ("att", {"architecture": "unknown", "os": "unknown"}),
        ]
    ],
}

DOCKER_LIST = dict(OCI_INDEX, mediaType="application/vnd.docker.distribution.manifest.list.v2+json")

CONFIG = {
    "created": "2023-05-19T20:04:35.417651219Z",
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "User": "65535:65535",
        "ExposedPorts": {"80/tcp": {}, "443/tcp": {}},
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Entrypoint": ["/pause"],
        "Cmd": ["-v"],
        "Volumes": {"/data": {}},
        "WorkingDir": "/",
        "Labels": {"maintainer": "x"},
        "StopSignal": "SIGQUIT",
        "OnBuild": None,
    },
    "rootfs": {"type": "layers", "diff_ids": [digest("d1"), digest("d2")]},
    "history": [
        {"created": "2023-05-19T20:04:35Z", "created_by": "ARG ARCH", "empty_layer": True},
        {"created": "2023-05-19T20:04:35Z", "created_by": "ADD bin/pause-linux /pause"},
    ],
}


def registry_seeds():
    def doc(kind, *parts):
        write("registry_json", bytes([kind]) + b"\0".join(json.dumps(p).encode() for p in parts))

    for top in (OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST,
                {"schemaVersion": 1, "name": "a", "tag": "b", "fsLayers": []}):
        doc(0, top)
    doc(1, OCI_MANIFEST, CONFIG)
    doc(1, DOCKER_MANIFEST, dict(CONFIG, rootfs={"type": "layers", "diff_ids": [digest("d1")]}))
    doc(2, CONFIG)
    doc(2, {"architecture": "arm64", "os": "linux", "variant": "v8",
            "rootfs": {"type": "layers", "diff_ids": []}})


# --- layer tarballs ------------------------------------------------------------

# No padding to a 10 KiB record: the two end blocks are enough for a reader.
tarfile.RECORDSIZE = 512


def tar_bytes(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for info, content in entries:
            info.mtime = 1600000000
            t.addfile(info, io.BytesIO(content) if content is not None else None)
    return buf.getvalue()


def entry(name, kind=tarfile.REGTYPE, content=b"", link="", mode=0o644, pax=None):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = mode
    if kind == tarfile.REGTYPE:
        info.size = len(content)
    if pax:
        info.pax_headers = pax
    return (info, content if kind == tarfile.REGTYPE else None)


def tar_seeds():
    friendly = tar_bytes([
        entry("etc/", tarfile.DIRTYPE, mode=0o755),
        entry("etc/passwd", content=b"root:x:0:0:root:/root:/bin/sh\n"),
        entry("bin/", tarfile.DIRTYPE, mode=0o755),
        entry("bin/busybox", content=b"\x7fELF", mode=0o755),
        entry("bin/sh", tarfile.SYMTYPE, link="busybox"),
        entry("bin/ls", tarfile.LNKTYPE, link="bin/busybox"),
        entry("dev/null", tarfile.CHRTYPE),
        entry("run/fifo", tarfile.FIFOTYPE),
        entry("usr/share/" + "long-name-" * 12, content=b"x"),
        entry("usr/bin/ping", content=b"", mode=0o4755,
              pax={"SCHILY.xattr.security.capability": "\x01\x00\x00\x02",
                   "SCHILY.xattr.user.note": "n", "uid": "1000", "gid": "1000"}),
    ])
    whiteouts = tar_bytes([
        entry("var/", tarfile.DIRTYPE),
        entry("var/.wh.cache"),
        entry("opt/.wh..wh..opq"),
        entry("./etc/.wh.passwd"),
        entry(".wh..wh.plnk/x"),
        entry("dir/.wh..wh..opq",
              pax={"SCHILY.xattr.trusted.overlay.opaque": "y"}),
    ])
    hostile = [
        [entry("../canary", content=b"owned")],
        [entry("a/../../canary", content=b"owned")],
        [entry("/../canary", content=b"owned")],
        [entry("a", tarfile.SYMTYPE, link="../"), entry("a/canary", content=b"owned")],
        [entry("a", tarfile.SYMTYPE, link="/"), entry("a/tmp/x", content=b"owned")],
        [entry("a", tarfile.SYMTYPE, link="../canary"), entry("a", content=b"owned")],
        [entry("l", tarfile.LNKTYPE, link="../canary")],
        [entry("s", tarfile.SYMTYPE, link="../canary"), entry("l", tarfile.LNKTYPE, link="s")],
        [entry("a/", tarfile.DIRTYPE), entry("a", tarfile.SYMTYPE, link=".."),
         entry("a/canary", content=b"owned")],
        [entry("a", tarfile.SYMTYPE, link=".."), entry("a/.wh.canary")],
        [entry("a", tarfile.SYMTYPE, link=".."), entry("a/.wh..wh..opq")],
        [entry(".wh...")],
        [entry(".", tarfile.DIRTYPE, mode=0o700)],
        [entry(".", tarfile.SYMTYPE, link="..")],
        [entry("big", content=b"\0" * 4096)],
    ]
    tars = [friendly, whiteouts] + [tar_bytes(h) for h in hostile]
    tars.append(tar_bytes([entry("gnu/file", content=b"g")], fmt=tarfile.GNU_FORMAT))
    for t in tars:
        write("tar_unpack", b"\0" + t)
    write("tar_unpack", b"\1" + friendly)
    write("tar_unpack", b"\0" + gzip.compress(friendly, mtime=0))
    if shutil.which("zstd"):
        z = subprocess.run(["zstd", "-q", "-c"], input=whiteouts, capture_output=True, check=True)
        write("tar_unpack", b"\0" + z.stdout)


if __name__ == "__main__":
    spdy_seeds()
    reference_seeds()
    registry_seeds()
    tar_seeds()
