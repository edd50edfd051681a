"""
The examples in C{examples/} run as their readers would run them: the
example test file under pytest (with the installed C{sockecho} fixture),
the embedding script as a program that exits by itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import unittest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=EXAMPLES,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


class ExamplesTests(unittest.TestCase):
    def test_my_client(self) -> None:
        """
        C{pytest examples/test_my_client.py}: every test passes.
        """
        result = run(
            "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_client.py"
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertRegex(result.stdout, r"\b4 passed\b")

    def test_embed_echo(self) -> None:
        """
        C{python examples/embed_echo.py}: says where it listens, gets its
        message back and exits 0.
        """
        result = run("embed_echo.py")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertRegex(
            result.stdout,
            r"^echo listening on 127\.0\.0\.1:\d+\n"
            r"sent b'Hello, world', got back b'Hello, world'\n$",
        )
