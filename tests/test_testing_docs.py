"""
docs/testing.md's examples of the connection records' helpers, run as
tests: the Python blocks of its section "What sockecho saw: connection
records" are written to test modules and run in child processes: the
pytest ones by pytest with four pytest-xdist workers (C{-n 4}), each with
its own session server, so that the examples cannot drift from the
fixtures and the session server's reset is checked under xdist; the trial
one (it imports C{twisted.trial}) by trial, its runner (under pytest,
pytest-twisted runs the reactor in a greenlet once a plain test function
has run, which a trial test in the same process cannot share).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "testing.md")
SECTION = "## What sockecho saw: connection records"
#: The pytest tests the section's examples hold (one parametrized twice).
EXAMPLE_TESTS = 6


def section_blocks(text: str, heading: str) -> list[str]:
    """
    @return: the C{```python} blocks of the section of C{text} under
        C{heading}, up to the next level-2 heading.
    """
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    body = text[start : end if end != -1 else len(text)]
    return re.findall(r"```python\n(.*?)```", body, re.S)


class RecordsDocExamplesTests(unittest.TestCase):
    def test_examples_pass_under_xdist(self) -> None:
        """
        Every example of the section passes, with C{pytest -n 4}.
        """
        try:
            import xdist  # noqa: F401
        except ImportError:
            self.skipTest("pytest-xdist is not installed (the test extra has it)")
        blocks = [b for b in self.blocks() if "twisted.trial" not in b]
        self.assertEqual(len(blocks), 5)
        output = self.run_examples(
            blocks, "-m", "pytest", "-q", "-n", "4", "-p", "no:cacheprovider"
        )
        self.assertIn(f"{EXAMPLE_TESTS} passed", output)

    def test_trial_example(self) -> None:
        """
        The trial helper's example passes under trial.
        """
        blocks = [b for b in self.blocks() if "twisted.trial" in b]
        self.assertEqual(len(blocks), 1)
        output = self.run_examples(blocks, "-m", "twisted.trial")
        self.assertIn("PASSED (successes=1)", output)

    def blocks(self) -> list[str]:
        with open(DOC, encoding="utf-8") as f:
            return section_blocks(f.read(), SECTION)

    def run_examples(self, blocks: list[str], *command: str) -> str:
        """
        Write C{blocks} as C{test_records_examples.py} in a new directory
        and run C{python COMMAND test_records_examples} there.

        @return: its output, once it has passed.
        """
        directory = tempfile.mkdtemp(prefix="sockecho-docs-")
        self.addCleanup(shutil.rmtree, directory, True)
        with open(
            os.path.join(directory, "test_records_examples.py"), "w", encoding="utf-8"
        ) as f:
            f.write("\n\n".join(blocks))
        target = "test_records_examples"
        if "pytest" in command:
            target += ".py"
        result = subprocess.run(
            [sys.executable, *command, target],
            cwd=directory, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        return output


FAULTS_SECTION = "## A fault for one test: `server.faults(listener, profile)`"


class FaultsDocExamplesTests(RecordsDocExamplesTests):
    """
    The examples of docs/testing.md's section on C{server.faults()}: the
    pytest one with the C{sockecho} fixture, the trial one under trial.
    """

    def blocks(self) -> list[str]:
        with open(DOC, encoding="utf-8") as f:
            return section_blocks(f.read(), FAULTS_SECTION)

    def test_examples_pass_under_xdist(self) -> None:
        """
        The pytest example passes (no xdist needed).
        """
        blocks = [b for b in self.blocks() if "twisted.trial" not in b]
        self.assertEqual(len(blocks), 1)
        output = self.run_examples(
            blocks, "-m", "pytest", "-q", "-p", "no:cacheprovider"
        )
        self.assertIn("1 passed", output)


HEALTH_SECTION = (
    "## A backend that fails its checks: `server.unready()`, `server.health(...)`"
)


class HealthDocExamplesTests(RecordsDocExamplesTests):
    """
    The examples of docs/testing.md's section on C{server.unready()} and
    C{server.health()}: the pytest ones with the C{sockecho} fixture, the
    trial one under trial.
    """

    def blocks(self) -> list[str]:
        with open(DOC, encoding="utf-8") as f:
            return section_blocks(f.read(), HEALTH_SECTION)

    def test_examples_pass_under_xdist(self) -> None:
        """
        The pytest examples pass (no xdist needed).
        """
        blocks = [b for b in self.blocks() if "twisted.trial" not in b]
        self.assertEqual(len(blocks), 1)
        output = self.run_examples(
            blocks, "-m", "pytest", "-q", "-p", "no:cacheprovider"
        )
        self.assertIn("2 passed", output)
