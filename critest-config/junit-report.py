#!/usr/bin/env python3
"""Reads critest's junit report and compares it with known-failures.txt.

Prints `critest: N passed, N failed, N skipped`, where failed counts only the failures
known-failures.txt does not list: those it lists are counted apart, on a line of their
own before it. Exits 1 when a spec failed that is not listed, naming it with its failure
message. A listed spec that passed, or that did not
run at all, is reported so the list can shrink. With --suggest, prints list lines for
the unlisted failures, their reason taken from the failure message.

known-failures.txt: one spec per line, `<spec name> | <why it fails today>`; blank
lines and lines starting with # are ignored. skipped-specs.txt, beside it (or the file
given with --skipped-specs=FILE): one `<regular expression> | <why>` per line; every
spec critest skips must match one, or the run fails: nothing is skipped silently. With
--focused (a run with --ginkgo.focus), the specs outside the focus are skipped by
design and not checked. With --focus-only, they are not counted either (ginkgo marks
them skipped with no reason), and the specs in the focus are counted and checked as in
a full run. --label=TEXT starts the printed lines with `TEXT:` instead of `critest:`.
"""

import os
import re
import sys
import xml.etree.ElementTree as ET


def spec_name(testcase):
    name = testcase.get("name", "")
    return re.sub(r"^\[(It|BeforeSuite|AfterSuite|SynchronizedBeforeSuite)\]\s*", "", name)


def failure_text(testcase):
    for tag in ("failure", "error"):
        node = testcase.find(tag)
        if node is not None:
            return ((node.get("message") or "") + "\n" + (node.text or "")).strip()
    return ""


def skip_message(testcase):
    node = testcase.find("skipped")
    return (node.get("message") or "") if node is not None else ""


def reason_of(text):
    m = re.search(r"desc = ([^\"\n]+)", text)
    if m:
        return m.group(1).strip().rstrip("\\")
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[0] if lines else "failed"


def load_skips(path):
    skips = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            pattern, sep, reason = line.partition(" | ")
            if not sep or not reason.strip():
                sys.exit(f"{path}:{n}: expected '<regular expression> | <reason>'")
            skips.append((re.compile(pattern), reason.strip()))
    return skips


def load_known(path):
    known = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if " | " not in line:
                sys.exit(f"{path}:{n}: expected '<spec name> | <reason>'")
            name, reason = line.split(" | ", 1)
            if not reason.strip():
                sys.exit(f"{path}:{n}: {name.strip()}: no reason given")
            known[name.strip()] = reason.strip()
    return known


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    options = dict(a[2:].partition("=")[::2] for a in sys.argv[1:] if a.startswith("--"))
    unknown = set(options) - {"suggest", "focused", "focus-only", "label", "skipped-specs"}
    suggest = "suggest" in options
    # A focused run skips every spec outside its focus: only its failures count.
    focused = "focused" in options
    # --focus-only: the specs outside the focus (skipped with no reason) are not counted
    # at all; those in it that the suite skips are, and must be accounted for.
    focus_only = "focus-only" in options
    if len(args) != 2 or unknown:
        sys.exit("usage: junit-report.py [--suggest] [--focused | --focus-only] [--label=TEXT] "
                 "[--skipped-specs=FILE] JUNIT_XML KNOWN_FAILURES")
    junit, known_path = args
    label = options.get("label") or "critest"
    known = load_known(known_path)
    skips = load_skips(options.get("skipped-specs")
                       or os.path.join(os.path.dirname(known_path), "skipped-specs.txt"))
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    counts = {"passed": 0, "failed": 0, "known": 0, "skipped": 0}
    unexpected, now_passing, unaccounted, ran = [], [], [], set()
    for tc in cases:
        name = spec_name(tc)
        status = tc.get("status", "")
        is_suite_node = not tc.get("name", "").startswith("[It]")
        ran.add(name)
        if status in ("failed", "panicked", "interrupted", "timedout", "aborted"):
            if not is_suite_node:
                counts["known" if name in known else "failed"] += 1
            if name not in known:
                unexpected.append((name, failure_text(tc)))
        elif status == "passed":
            if not is_suite_node:
                counts["passed"] += 1
            if name in known:
                now_passing.append(name)
        elif focus_only and skip_message(tc) == "skipped":
            ran.discard(name)
        elif not is_suite_node:
            counts["skipped"] += 1
            if not any(p.search(name) for p, _ in skips):
                unaccounted.append(name)
    if counts["known"]:
        n = counts["known"]
        print(f"{label}: {n} known failure{'s' if n > 1 else ''}, each listed with its reason in known-failures.txt")
    print(f"{label}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    for name in now_passing:
        print(f"{label}: listed in known-failures.txt but passed now, remove it: {name}")
    for name in sorted(set(known) - ran):
        if not focused and not focus_only:
            print(f"{label}: listed in known-failures.txt but did not run: {name}")
    if focused:
        unaccounted = []
    if suggest:
        for name, text in unexpected:
            print(f"{name} | {reason_of(text)}")
        return 0
    if unaccounted:
        print(f"{label}: {len(unaccounted)} skipped specs not accounted for in skipped-specs.txt:", file=sys.stderr)
        for name in unaccounted:
            print(f"--- {name}", file=sys.stderr)
    if unexpected:
        print(f"{label}: {len(unexpected)} failures not listed in known-failures.txt:", file=sys.stderr)
        for name, text in unexpected:
            print(f"--- {name}\n{text[:2000]}\n", file=sys.stderr)
        return 1
    return 1 if unaccounted else 0


if __name__ == "__main__":
    sys.exit(main())
