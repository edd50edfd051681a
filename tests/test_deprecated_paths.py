"""
The deprecated paths issue 20's layout keeps for one release: each old
module still gives the same objects as the new one, and
C{python -m twisted_echo.worker} still runs a worker's main.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import unittest

#: Old path -> (new path, names it re-exports).
SHIMS: dict[str, tuple[str, tuple[str, ...]]] = {
    # Options and makeService moved on from app.runner to tap (issue 20).
    "twisted_echo.runner": (
        "twisted_echo.tap",
        ("Options", "makeService",),
    ),
    "twisted_echo.worker": (
        "twisted_echo.app.worker",
        ("main",),
    ),
    "twisted_echo.reactor": (
        "twisted_echo._twisted.reactor",
        ("EventReactor", "REACTOR_NAME",),
    ),
    "twisted_echo.pytest_plugin": (
        "twisted_echo.testing.pytest_plugin",
        (
            "pytest_addoption",
            "sockecho",
            "sockecho_factory",
            "sockecho_session",
            "sockecho_session_factory",
        ),
    ),
    "twisted_echo.spawn": (
        "twisted_echo.testing.spawn",
        ("start_sockecho", "SockechoProcess", "StartError",),
    ),
    "twisted_echo.portsfile": (
        "twisted_echo.testing.addresses",
        ("Addresses", "read_ports_file",),
    ),
    "twisted_echo.logformat": (
        "twisted_echo.log.setup",
        ("text_observer", "json_observer",),
    ),
}


class DeprecatedPathTests(unittest.TestCase):
    def test_same_objects(self) -> None:
        """
        Every name of every old path is the very object of its new path.
        """
        for old, (new, names) in SHIMS.items():
            old_module = importlib.import_module(old)
            new_module = importlib.import_module(new)
            self.assertIn("Deprecated path", old_module.__doc__ or "", old)
            for name in names:
                with self.subTest(old=old, name=name):
                    self.assertIs(getattr(old_module, name), getattr(new_module, name))

    def test_worker_runs_as_main(self) -> None:
        """
        C{python -m twisted_echo.worker} runs the worker's main as
        C{python -m twisted_echo.app.worker} does: without a supervisor's
        orders both stop on the same missing variable.
        """
        from twisted_echo.app.supervisor import WORKER_ENV

        env = {k: v for k, v in os.environ.items() if k != WORKER_ENV}
        results = [
            subprocess.run(
                [sys.executable, "-m", module],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            for module in ("twisted_echo.worker", "twisted_echo.app.worker")
        ]
        for result in results:
            self.assertNotEqual(result.returncode, 0)
            self.assertIn(f"KeyError: '{WORKER_ENV}'", result.stderr)

    def test_tap_is_the_plugin_face(self) -> None:
        """
        C{twisted_echo.tap} (where the twistd plugin points) gives twistd's
        options and service maker, as the old C{twisted_echo.runner} did.
        """
        from twisted_echo import runner, tap

        self.assertIs(tap.Options, runner.Options)
        self.assertIs(tap.makeService, runner.makeService)
