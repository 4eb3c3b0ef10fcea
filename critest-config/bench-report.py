#!/usr/bin/env python3
"""Helper of bench.sh (standard library only): prints the benchmark's tables.

    bench-report.py DIR A B [MORE_DIR...]
        A and B are runtime labels (crust containerd). Reads from DIR (and from
        each MORE_DIR: the runs of several bench.sh runs are merged):
        A.N.json and B.N.json, the crust-bench results of run N (A.json and
        B.json too, as older runs named them), pull.tsv (bench-pull.sh --tsv;
        optional) and, from DIR only, critest-A/, critest-B/ (critest -benchmark
        output dirs; optional). Prints one table with a column per runtime, each
        figure the median over the runs, and the ratio A/B of the medians (below
        1: A needs less time or memory; for rates such as pods per second, above
        1: A is faster), followed by each run's figures when there are several;
        then the critest figures the same way. Writes the table to
        DIR/table.txt too.
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


def runs_of(dirs, label):
    """the crust-bench results of label in dirs: label.json, then label.N.json by N"""
    found = []
    for d in dirs:
        names = [n for n in os.listdir(d) if n == label + ".json" or
                 (n.startswith(label + ".") and n.endswith(".json") and
                  n[len(label) + 1:-5].isdigit())]
        names.sort(key=lambda n: -1 if n == label + ".json" else int(n[len(label) + 1:-5]))
        found += [r for r in (load(os.path.join(d, n)) for n in names) if r]
    return found


def get(r, *path):
    v = r
    for p in path:
        if not isinstance(v, dict):
            return None
        v = v.get(p)
    return v


def lat(r, key, q):
    return get(r, "latency_ms", key, q)


def mib(kib):
    return None if kib is None else kib / 1024.0


def secs(ms):
    return None if ms is None else ms / 1000.0


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def pull_walls(dirs, labels):
    """wall ms of each runtime's pulls in the dirs' pull.tsv, by the first word of its
    name; and the rounds of one dir"""
    got = {label: [] for label in labels}
    rounds = 0
    for d in dirs:
        try:
            with open(os.path.join(d, "pull.tsv")) as f:
                rows = [l.rstrip("\n").split("\t") for l in f if l.strip()]
        except FileNotFoundError:
            continue
        for label in labels:
            got[label] += [int(r[2]) for r in rows if r[0].split()[0] == label]
        rounds = max([rounds] + [int(r[1]) for r in rows])
    return got, rounds


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "ms":
        return "%.2f" % v if v < 10 else "%.1f" % v if v < 1000 else "%.0f" % v
    if unit == "MiB":
        return "%.2f" % v
    if unit in ("s", "/s", "%"):
        return "%.1f" % v if v < 100 else "%.0f" % v
    return "%g" % v


def table(title, rows, a, b, per_run):
    w = max([len(title)] + [len(r[0]) + len(r[1]) + 3 for r in rows])
    rw = max(9, len(a) + len(b) + 1)
    head = "%-*s %12s %12s %*s" % (w, title, a, b, rw, "%s/%s" % (a, b))
    if per_run:
        head += "   runs: %s | %s" % (a, b)
    say(head)
    say("-" * (w + 27 + rw + (30 if per_run else 0)))
    for name, unit, xa, xb in rows:
        va, vb = median(xa), median(xb)
        ratio = "-" if va is None or vb is None or vb == 0 else "%.2f" % (va / vb)
        label = "%s (%s)" % (name, unit) if unit else name
        line = "%-*s %12s %12s %*s" % (w, label, fmt(va, unit), fmt(vb, unit), rw, ratio)
        if per_run:
            line += "   %s | %s" % (" ".join(fmt(x, unit) for x in xa),
                                   " ".join(fmt(x, unit) for x in xb))
        say(line.rstrip())


class Rows:
    def __init__(self, ra, rb):
        self.ra, self.rb, self.rows = ra, rb, []

    def both(self, name, unit, f):
        self.rows.append((name, unit, [f(r) for r in self.ra], [f(r) for r in self.rb]))

    def pct(self, key, text):
        for q in ("p50", "p99"):
            self.both("%s %s" % (text, q), "ms", lambda r, k=key, q=q: lat(r, k, q))

    def arg(self, name, default="?"):
        for r in self.ra + self.rb:
            v = get(r, "args", name)
            if v is not None:
                return v
        return default

    def first(self, *path):
        for r in self.ra + self.rb:
            v = get(r, *path)
            if v is not None:
                return v
        return None


def classic_rows(t):
    fleet = t.arg("fleet")
    par = t.arg("parallel")
    if t.first("memory", "daemon_rss_idle_kib") is None and t.first("latency_ms", "pod_start") is None:
        return
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
        ("list_containers", "ListContainers, %s pods/%s ctrs" % (
            fleet, 2 * fleet if isinstance(fleet, int) else "?")),
        ("list_pod_sandbox", "ListPodSandbox, %s pods" % fleet),
    ]:
        t.pct(key, text)
    t.both("daemon RSS at start, before the pull", "MiB",
           lambda r: mib(get(r, "memory", "daemon_rss_start_kib")))
    t.both("daemon RSS idle, image pulled", "MiB",
           lambda r: mib(get(r, "memory", "daemon_rss_idle_kib")))
    t.both("daemon RSS, %s containers" % fleet, "MiB",
           lambda r: mib(get(r, "memory", "daemon_rss_fleet_kib")))
    t.both("daemon RSS, %s containers" % (2 * fleet if isinstance(fleet, int) else "?"), "MiB",
           lambda r: mib(get(r, "memory", "daemon_rss_fleet_x2_kib")))
    t.both("daemon RSS, after removal", "MiB", lambda r: mib(get(r, "memory", "daemon_rss_end_kib")))
    t.both("per container: shim+pause RSS", "MiB",
           lambda r: mib(get(r, "memory", "per_container", "rss_kib")))
    t.both("per container: shim+pause PSS", "MiB",
           lambda r: mib(get(r, "memory", "per_container", "pss_kib")))
    t.both("  shim processes", "", lambda r: get(r, "memory", "overhead", "shims"))
    t.both("  pause processes", "", lambda r: get(r, "memory", "overhead", "pauses"))


def burst_rows(t):
    def bursts(r):
        return (r.get("bursts") or []) + ([r["exec_burst"]] if r.get("exec_burst") else [])

    names = []
    for r in t.ra + t.rb:
        for bst in bursts(r):
            if bst["name"] not in names:
                names.append(bst["name"])

    def burst(r, name):
        return next((bst for bst in bursts(r) if bst["name"] == name), None)

    for name in names:
        b0 = next(burst(r, name) for r in t.ra + t.rb if burst(r, name))
        what = "burst %d pods, up to %d at a time" % (b0["pods"], b0["in_flight"])
        if name == "exec_burst":
            what = "exec " + what
        t.both(what + ": wall", "s", lambda r, n=name: secs(get(burst(r, n), "wall_ms")))
        t.both("  pods per second (higher: faster)", "/s",
               lambda r, n=name: get(burst(r, n), "pods_per_s"))
        t.pct(name + ".pod_start", "  pod start")
        t.both("  teardown: wall", "s", lambda r, n=name: secs(get(burst(r, n), "teardown_wall_ms")))
        t.pct(name + ".pod_teardown", "  pod teardown")
        if name == "exec_burst":
            t.pct("exec_burst.exec_sync", "  ExecSync true during the starts")


def density_rows(t):
    pods = t.first("density", "pods")
    if pods is not None:
        poll = t.first("density", "poll_ms")
        poll_s = "%.0f s" % (poll / 1000.0) if poll else "?"
        t.both("density: %s pods started %s at a time: wall" % (pods, t.first("density", "in_flight")),
               "s", lambda r: secs(get(r, "density", "start_wall_ms")))
        t.pct("density.pod_start", "  pod start")
        t.both("  daemon RSS, %s pods" % pods, "MiB", lambda r: mib(get(r, "density", "daemon_rss_kib")))
        t.both("  daemon RSS, peak over %s of polling" % poll_s, "MiB",
               lambda r: mib(get(r, "density", "daemon_rss_peak_kib")))
        t.both("  daemon CPU time over %s of polling" % poll_s, "s",
               lambda r: secs(get(r, "density", "daemon_cpu_ms")))
        t.both("  daemon CPU, share of one core", "%",
               lambda r: None if get(r, "density", "daemon_cpu_ms") is None or not get(r, "density", "poll_ms")
               else 100.0 * get(r, "density", "daemon_cpu_ms") / get(r, "density", "poll_ms"))
        for key, text in [("status", "Status"), ("list_pod_sandbox", "ListPodSandbox"),
                          ("list_containers", "ListContainers"),
                          ("list_container_stats", "ListContainerStats"),
                          ("list_pod_sandbox_stats", "ListPodSandboxStats")]:
            t.pct("density." + key, "  " + text)
        t.both("  per pod: shim+pause+container RSS", "MiB",
               lambda r: mib(get(r, "density", "per_pod", "rss_kib")))
        t.both("  per pod: shim+pause+container PSS", "MiB",
               lambda r: mib(get(r, "density", "per_pod", "pss_kib")))
        t.both("    shim processes", "", lambda r: get(r, "density", "overhead", "shims"))
        t.both("    pause processes", "", lambda r: get(r, "density", "overhead", "pauses"))
        t.both("    container processes", "", lambda r: get(r, "density", "overhead", "others"))
        t.both("    shims' PSS, all", "MiB",
               lambda r: mib(get(r, "density", "overhead", "shim_mem", "pss_kib")))
        t.both("  teardown: wall", "s", lambda r: secs(get(r, "density", "teardown_wall_ms")))
    pods = t.first("recovery", "pods")
    if pods is not None:
        t.both("recovery, %s pods: first answer after restart" % pods, "ms",
               lambda r: get(r, "recovery", "first_answer_ms"))
        t.both("  Status ready", "ms", lambda r: get(r, "recovery", "status_ready_ms"))
        t.both("  ListContainers complete", "ms", lambda r: get(r, "recovery", "list_complete_ms"))
        t.both("  daemon RSS then", "MiB", lambda r: mib(get(r, "recovery", "daemon_rss_kib")))


def pull_rows(t, pulls, a, b):
    if pulls.get(a) or pulls.get(b):
        t.rows.append(("image pull ~100 MB (bench-pull.sh)", "ms", pulls.get(a, []),
                       pulls.get(b, [])))
    n = len(t.first("pulls", "parallel_images") or [])
    if n:
        t.both("pull %d images at once: wall" % n, "ms", lambda r: get(r, "pulls", "parallel_wall_ms"))
        t.both("  slowest of them", "ms",
               lambda r: max(get(r, "pulls", "parallel_each_ms") or [None],
                             key=lambda x: -1 if x is None else x))
        t.both("  daemon peak RSS", "MiB", lambda r: mib(get(r, "pulls", "parallel_peak_rss_kib")))
    if t.first("pulls", "layers_image"):
        t.both("pull an image of 30 small layers: wall", "ms",
               lambda r: get(r, "pulls", "layers_wall_ms"))
        t.both("  daemon peak RSS", "MiB", lambda r: mib(get(r, "pulls", "layers_peak_rss_kib")))


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
                rows.append(("%s x%s: %s p%d" % (what, par, op, p), "ms",
                             [q(da, i, p)], [q(db, i, p)]))
    return rows


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    d, a, b = sys.argv[1:4]
    dirs = [d] + sys.argv[4:]
    ra, rb = runs_of(dirs, a), runs_of(dirs, b)
    pulls, rounds = pull_walls(dirs, [a, b])
    for rs, label in ((ra, a), (rb, b)):
        for v in sorted({r["runtime"] for r in rs}):
            say("%s: %s" % (label, v))
    nruns = max(len(ra), len(rb))
    say("runs: %d of %s, %d of %s; each figure the median over the runs" % (len(ra), a, len(rb), b))
    say()
    t = Rows(ra, rb)
    classic_rows(t)
    burst_rows(t)
    density_rows(t)
    pull_rows(t, pulls, a, b)
    t.both("daemon CPU time, whole run", "s", lambda r: secs(r.get("daemon_cpu_ms")))
    t.both("wall time of the run", "s", lambda r: secs(r.get("wall_ms")))
    table("crust-bench", t.rows, a, b, nruns > 1)
    say()
    say("ratio %s/%s below 1: %s takes less time or memory (pods per second: above 1," % (a, b, a))
    say("%s is faster). per container: the runtime's shim and pause processes with one" % a)
    say("container per pod, divided by the containers; per pod: those and the containers'")
    say("own processes, divided by the pods; recovery: from the restart of the SIGKILLed")
    say("daemon; pulls: cold (images removed, page cache dropped)")
    if rounds:
        say("image pull ~100 MB: bench-pull.sh, %d cold pull(s) per runtime in each dir, the"
            % rounds)
        say("median of all")
    rows = critest_rows(os.path.join(d, "critest-" + a), os.path.join(d, "critest-" + b))
    if any(r[2][0] is not None or r[3][0] is not None for r in rows):
        say()
        table("critest -benchmark", rows, a, b, False)
    with open(os.path.join(d, "table.txt"), "w") as f:
        f.write("\n".join(out_lines) + "\n")


if __name__ == "__main__":
    main()
