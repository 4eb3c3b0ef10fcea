#!/usr/bin/env python3
"""Helper of bench-pull.sh (standard library only).

    bench-pull-report.py image REGISTRY REPO:TAG
        reads the image from the local registry and prints, one per line:
        "layers N", "bytes B" (compressed layer bytes), "blob DIGEST" for every
        blob (list, manifest, config, layers) and "chain CHAINID" for every
        layer's chain ID (the snapshot names of both runtimes)
    bench-pull-report.py table RESULTS IMAGE LAYERS BYTES NOTE
        prints the result table; RESULTS has one tab-separated line per pull:
        runtime, round, wall ms, RSS before (KiB), peak RSS (KiB), RSS after
        (KiB), time the daemon logged (ms, or "-")
"""

import hashlib
import json
import statistics
import sys
import urllib.request

ACCEPT = ", ".join([
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
])


def get(url, accept=None):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read(), resp.headers.get("Docker-Content-Digest")


def cmd_image(registry, ref):
    repo, tag = ref.rsplit(":", 1)
    base = "http://%s/v2/%s" % (registry, repo)
    body, digest = get("%s/manifests/%s" % (base, tag), ACCEPT)
    blobs = [digest or "sha256:" + hashlib.sha256(body).hexdigest()]
    doc = json.loads(body)
    if "manifests" in doc:
        amd64 = [m for m in doc["manifests"]
                 if m.get("platform", {}).get("architecture") == "amd64"] or doc["manifests"]
        body, _ = get("%s/manifests/%s" % (base, amd64[0]["digest"]), ACCEPT)
        blobs.append(amd64[0]["digest"])
        doc = json.loads(body)
    config, _ = get("%s/blobs/%s" % (base, doc["config"]["digest"]))
    blobs.append(doc["config"]["digest"])
    layers = doc["layers"]
    blobs += [l["digest"] for l in layers]
    print("layers %d" % len(layers))
    print("bytes %d" % sum(l["size"] for l in layers))
    for b in blobs:
        print("blob " + b)
    chain = None
    for diff_id in json.loads(config)["rootfs"]["diff_ids"]:
        chain = diff_id if chain is None else \
            "sha256:" + hashlib.sha256((chain + " " + diff_id).encode()).hexdigest()
        print("chain " + chain)


def mib(kib):
    return kib / 1024.0


def cmd_table(results, image, layers, size, note):
    rows = []
    with open(results) as f:
        for line in f:
            if line.strip():
                name, rnd, wall, before, peak, after, logged = line.rstrip("\n").split("\t")
                rows.append((name, int(rnd), int(wall), int(before), int(peak), int(after),
                             logged))
    names = []
    for r in rows:
        if r[0] not in names:
            names.append(r[0])
    size = int(size)
    print("image pull benchmark: %s" % image)
    print("  %s layers, %d bytes compressed (%.1f MiB); %s" % (layers, size, size / 2**20, note))
    print()
    w = max([len("runtime")] + [len(n) for n in names])
    head = "%-*s %6s %9s %13s %13s %13s %11s" % (
        w, "runtime", "round", "wall ms", "RSS before", "peak RSS", "RSS after", "logged ms")
    print(head)
    print("-" * len(head))
    summary = {}
    for name in names:
        mine = [r for r in rows if r[0] == name]
        for r in mine:
            print("%-*s %6d %9d %9.1f MiB %9.1f MiB %9.1f MiB %11s" % (
                w, name, r[1], r[2], mib(r[3]), mib(r[4]), mib(r[5]), r[6]))
        med = statistics.median(r[2] for r in mine)
        peak = max(r[4] for r in mine)
        summary[name] = (med, peak)
        print("%-*s %6s %9.0f %13s %9.1f MiB" % (w, name, "median", med, "", mib(peak)))
        print()
    print("wall ms: crictl pull, start to end; logged ms: the pull time the daemon logs")
    print("peak RSS: the daemon's VmHWM during the pull (reset just before it)")
    print("summary rows: median wall time and the highest peak RSS")
    if len(names) == 2:
        (a, (a_med, a_peak)), (b, (b_med, b_peak)) = [(n, summary[n]) for n in names]
        print()
        print("median wall time: %s %.0f ms, %s %.0f ms" % (a, a_med, b, b_med))
        if a_med > 0:
            ratio = b_med / a_med
            word = "faster" if ratio >= 1 else "slower"
            shown = ratio if ratio >= 1 else 1 / ratio
            print("ratio %s/%s of the median wall time: %.2f  =>  %s is %.1fx %s" % (
                b.split()[0], a.split()[0], ratio, a.split()[0], shown, word))
        if a_peak > 0:
            print("peak RSS: %s %.1f MiB, %s %.1f MiB; ratio %s/%s: %.2f" % (
                a, mib(a_peak), b, mib(b_peak), b.split()[0], a.split()[0], b_peak / a_peak))


def main():
    args = sys.argv[1:]
    if len(args) == 3 and args[0] == "image":
        cmd_image(args[1], args[2])
    elif len(args) == 6 and args[0] == "table":
        cmd_table(*args[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
