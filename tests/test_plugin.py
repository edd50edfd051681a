"""
The C{twistd sockecho} plugin is found by Twisted's plugin system, points at
L{twisted_echo.tap} (twistd's options and service maker, over
L{twisted_echo.app.options} and L{twisted_echo.app.runner}), and is cheap to
import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import unittest

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins

from twisted_echo import tap

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """
    Run C{code} in a fresh Python (this one's interpreter) in a temporary
    directory.
    """
    with tempfile.TemporaryDirectory(prefix="sockecho-test-") as cwd:
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )


class PluginTests(unittest.TestCase):
    def test_discoverable(self) -> None:
        """
        Exactly one L{IServiceMaker} plugin has the tapname C{sockecho}; its
        options are L{tap.Options} and it builds services with
        L{tap.makeService}.
        """
        makers = [m for m in getPlugins(IServiceMaker) if m.tapname == "sockecho"]
        self.assertEqual(len(makers), 1, makers)
        maker = makers[0]
        self.assertIs(maker.options, tap.Options)
        self.assertIs(maker.makeService, tap.makeService)
        self.assertTrue(maker.description)

    def test_import_does_not_install_reactor(self) -> None:
        """
        Importing the plugin module (what C{twistd --help} does for every
        plugin) neither imports nor installs a reactor.
        """
        result = run_python(
            "import sys\n"
            "import twisted.plugins.sockecho_plugin as p\n"
            "assert p.sockecho.tapname == 'sockecho', p.sockecho.tapname\n"
            "print('twisted.internet.reactor' in sys.modules)\n"
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "False", result.stderr)

    def test_listed_by_twistd(self) -> None:
        """
        C{twistd --help} lists the sockecho command with its description.
        """
        with tempfile.TemporaryDirectory(prefix="sockecho-test-") as cwd:
            result = subprocess.run(
                [TWISTD, "--help"],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=60,
            )
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = [line.split() for line in result.stdout.splitlines()]
        commands = [words for words in lines if words and words[0] == "sockecho"]
        self.assertEqual(len(commands), 1, result.stdout)
        self.assertIn("echo", " ".join(commands[0][1:]).lower())
