#!/usr/bin/env python3
"""Helper of bench.sh (standard library only): prints the benchmark's tables.

    bench-report.py DIR A B
        A and B are runtime labels (crust containerd). Reads from DIR:
        A.json and B.json (crust-bench results), pull.tsv (bench-pull.sh --tsv;
        optional) and critest-A/, critest-B/ (critest -benchmark output dirs;
        optional). Prints one table with a column per runtime and the ratio A/B
        (below 1: A needs less time or memory), then the critest figures the
        same way, and writes the table to DIR/table.txt too.
"""

import json
import os
import statistics
import sys

out_lines = []


def say(line=""):
    out_lines.append(line)
    print(line)


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def lat(r, key, q):
    s = (r or {}).get("latency_ms", {}).get(key)
    return None if s is None else s[q]


def mem(r, *path):
    v = (r or {}).get("memory")
    for p in path:
        v = None if v is None else v.get(p)
    return v


def mib(kib):
    return None if kib is None else kib / 1024.0


def pull_medians(path, labels):
    """median wall ms of the pulls of each runtime, by the first word of its name"""
    got = {}
    try:
        with open(path) as f:
            rows = [l.rstrip("\n").split("\t") for l in f if l.strip()]
    except FileNotFoundError:
        return got, 0
    for label in labels:
        walls = [int(r[2]) for r in rows if r[0].split()[0] == label]
        if walls:
            got[label] = statistics.median(walls)
    return got, max((int(r[1]) for r in rows), default=0)


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "ms":
        return "%.2f" % v if v < 10 else "%.1f" % v if v < 1000 else "%.0f" % v
    if unit == "MiB":
        return "%.2f" % v
    if unit == "s":
        return "%.1f" % v
    return "%g" % v


def table(title, rows, a, b):
    w = max([len(title)] + [len(r[0]) + len(r[1]) + 3 for r in rows])
    say("%-*s %12s %12s %9s" % (w, title, a, b, "%s/%s" % (a, b)))
    say("-" * (w + 36))
    for name, unit, va, vb in rows:
        ratio = "-" if va is None or vb is None or vb == 0 else "%.2f" % (va / vb)
        label = "%s (%s)" % (name, unit) if unit else name
        say("%-*s %12s %12s %9s" % (w, label, fmt(va, unit), fmt(vb, unit), ratio))


def main_rows(ra, rb, pulls, a, b):
    rows = []

    def both(name, unit, f):
        rows.append((name, unit, f(ra), f(rb)))

    pods = (ra or rb or {}).get("args", {}).get("pods", "?")
    fleet = (ra or rb or {}).get("args", {}).get("fleet", "?")
    par = (ra or rb or {}).get("args", {}).get("parallel", "?")
    for key, text in [
        ("pod_start", "pod start, serial"),
        ("pod_start_parallel", "pod start, %s in parallel" % par),
        ("pod_start.run_pod_sandbox", "  RunPodSandbox, serial"),
        ("pod_start.create_container", "  CreateContainer, serial"),
        ("pod_start.start_container", "  StartContainer, serial"),
        ("pod_teardown", "pod teardown, serial"),
        ("pod_teardown_parallel", "pod teardown, %s in parallel" % par),
        ("pod_teardown.stop_pod_sandbox", "  StopPodSandbox, serial"),
        ("pod_teardown.remove_pod_sandbox", "  RemovePodSandbox, serial"),
        ("exec_sync", "ExecSync true"),
        ("list_containers", "ListContainers, %s pods/%s ctrs" % (fleet, 2 * fleet
                                                                 if isinstance(fleet, int) else "?")),
        ("list_pod_sandbox", "ListPodSandbox, %s pods" % fleet),
    ]:
        for q in ("p50", "p99"):
            both("%s %s" % (text, q), "ms", lambda r, k=key, q=q: lat(r, k, q))
    rows.append(("image pull ~100 MB, median wall", "ms", pulls.get(a), pulls.get(b)))
    both("daemon RSS at start, before the pull", "MiB",
         lambda r: mib(mem(r, "daemon_rss_start_kib")))
    both("daemon RSS idle, image pulled", "MiB", lambda r: mib(mem(r, "daemon_rss_idle_kib")))
    both("daemon RSS, %s containers" % fleet, "MiB", lambda r: mib(mem(r, "daemon_rss_fleet_kib")))
    both("daemon RSS, %s containers" % (2 * fleet if isinstance(fleet, int) else "?"), "MiB",
         lambda r: mib(mem(r, "daemon_rss_fleet_x2_kib")))
    both("daemon RSS, after removal", "MiB", lambda r: mib(mem(r, "daemon_rss_end_kib")))
    both("per container: shim+pause RSS", "MiB", lambda r: mib(mem(r, "per_container", "rss_kib")))
    both("per container: shim+pause PSS", "MiB", lambda r: mib(mem(r, "per_container", "pss_kib")))
    both("  shim processes", "", lambda r: mem(r, "overhead", "shims"))
    both("  pause processes", "", lambda r: mem(r, "overhead", "pauses"))
    both("daemon CPU time, whole run", "s",
         lambda r: None if r is None or r.get("daemon_cpu_ms") is None else r["daemon_cpu_ms"] / 1000)
    both("wall time of the run", "s", lambda r: None if r is None else r["wall_ms"] / 1000)
    return rows


def critest_rows(dir_a, dir_b):
    files = [
        ("pod_benchmark_data.json", "pod lifecycle"),
        ("container_benchmark_data.json", "container lifecycle"),
        ("image_lifecycle_benchmark_data.json", "image lifecycle"),
        ("image_listing_benchmark_data.json", "image listing"),
    ]
    rows = []
    for name, what in files:
        da, db = load(os.path.join(dir_a, name)), load(os.path.join(dir_b, name))
        ops = (da or db or {}).get("operationsNames") or []
        par = (da or db or {}).get("numParallel", 1)

        def q(d, i, p):
            if not d or not d.get("datapoints"):
                return None
            xs = sorted(dp["operationsDurationsNs"][i] / 1e6 for dp in d["datapoints"]
                        if len(dp["operationsDurationsNs"]) > i)
            if not xs:
                return None
            rank = max(1, -(-len(xs) * p // 100))
            return xs[min(rank, len(xs)) - 1]

        for i, op in enumerate(ops):
            for p in (50, 99):
                rows.append(("%s x%s: %s p%d" % (what, par, op, p), "ms", q(da, i, p), q(db, i, p)))
    return rows


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    d, a, b = sys.argv[1:]
    ra, rb = load(os.path.join(d, a + ".json")), load(os.path.join(d, b + ".json"))
    pulls, rounds = pull_medians(os.path.join(d, "pull.tsv"), [a, b])
    for r, label in ((ra, a), (rb, b)):
        if r:
            say("%s: %s" % (label, r["runtime"]))
    say()
    table("crust-bench", main_rows(ra, rb, pulls, a, b), a, b)
    say()
    say("ratio %s/%s below 1: %s takes less time or memory" % (a, b, a))
    say("per container: the runtime's shim and pause processes with one container per pod,")
    say("divided by the containers; pull: median of %d cold pull(s) (bench-pull.sh)" % rounds)
    rows = critest_rows(os.path.join(d, "critest-" + a), os.path.join(d, "critest-" + b))
    if any(r[2] is not None or r[3] is not None for r in rows):
        say()
        table("critest -benchmark", rows, a, b)
    with open(os.path.join(d, "table.txt"), "w") as f:
        f.write("\n".join(out_lines) + "\n")


if __name__ == "__main__":
    main()
