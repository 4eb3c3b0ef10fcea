#!/usr/bin/env python3
"""Tests of junit-report.py on junit reports made here: the closing line counts a
listed known failure apart from the failures, so a green run reads `0 failed`."""

import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def case(name, status, failure=None, skipped=None):
    body = f'<failure message="{failure}">{failure}</failure>' if failure else ""
    if skipped:
        body += f'<skipped message="{skipped}"></skipped>'
    return f'<testcase name="[It] {name}" status="{status}">{body}</testcase>'


class JunitReport(unittest.TestCase):
    def run_report(self, cases, known, options=(), skips=None):
        with tempfile.TemporaryDirectory() as d:
            junit = os.path.join(d, "junit.xml")
            with open(junit, "w") as f:
                f.write("<testsuites><testsuite>" + "".join(cases) + "</testsuite></testsuites>")
            with open(os.path.join(d, "known-failures.txt"), "w") as f:
                f.write("# comment\n" + "".join(f"{n} | {why}\n" for n, why in known))
            with open(os.path.join(d, "skipped-specs.txt"), "w") as f:
                f.write("^NRI  | no NRI socket given\n")
            options = list(options)
            if skips is not None:
                with open(os.path.join(d, "other-skips.txt"), "w") as f:
                    f.write(skips)
                options.append("--skipped-specs=" + os.path.join(d, "other-skips.txt"))
            out = subprocess.run(
                [sys.executable, os.path.join(HERE, "junit-report.py"), *options, junit,
                 os.path.join(d, "known-failures.txt")],
                capture_output=True, text=True)
            return out.returncode, out.stdout.splitlines()

    def test_a_listed_failure_is_counted_apart(self):
        code, lines = self.run_report(
            [case("a passes", "passed"), case("b passes", "passed"),
             case("pinned digest", "failed", "no such digest"),
             case("NRI  spec", "skipped")],
            [("pinned digest", "needs an upstream image")])
        self.assertEqual(code, 0, lines)
        self.assertEqual(lines, [
            "critest: 1 known failure, each listed with its reason in known-failures.txt",
            "critest: 2 passed, 0 failed, 1 skipped",
        ])

    def test_an_unlisted_failure_fails_the_run(self):
        code, lines = self.run_report(
            [case("a passes", "passed"), case("c breaks", "failed", "boom")], [])
        self.assertEqual(code, 1, lines)
        self.assertIn("critest: 1 passed, 1 failed, 0 skipped", lines)

    def test_a_label_names_the_run(self):
        code, lines = self.run_report(
            [case("a passes", "passed"), case("pinned digest", "failed", "no such digest")],
            [("pinned digest", "needs an upstream image")], options=["--label=vm critest"])
        self.assertEqual(code, 0, lines)
        self.assertEqual(lines, [
            "vm critest: 1 known failure, each listed with its reason in known-failures.txt",
            "vm critest: 1 passed, 0 failed, 0 skipped",
        ])

    def test_skips_are_checked_against_the_given_file(self):
        skipped = [case("a passes", "passed"), case("AppArmor  spec", "skipped")]
        code, _ = self.run_report(skipped, [], skips="^AppArmor  | no AppArmor here\n")
        self.assertEqual(code, 0)
        # The default file beside known-failures.txt does not account for it.
        code, _ = self.run_report(skipped, [])
        self.assertEqual(code, 1)

    def test_focus_only_counts_the_specs_in_the_focus(self):
        code, lines = self.run_report(
            [case("a passes", "passed"), case("outside", "skipped", skipped="skipped"),
             case("NRI  spec", "skipped", skipped="skipped - no NRI socket")],
            [("elsewhere", "out of focus")], ["--focus-only", "--label=node-e2e"])
        self.assertEqual(code, 0, lines)
        self.assertEqual(lines, ["node-e2e: 1 passed, 0 failed, 1 skipped"])

    def test_focus_only_checks_the_skips_in_the_focus(self):
        code, lines = self.run_report(
            [case("a passes", "passed"), case("unexplained", "skipped", skipped="skipped - why")],
            [], ["--focus-only"])
        self.assertEqual(code, 1, lines)
        self.assertIn("critest: 1 passed, 0 failed, 1 skipped", lines)


if __name__ == "__main__":
    unittest.main()
