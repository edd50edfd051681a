"""
The C{twisted_echo} package: its public names (C{__all__}) all import, and
lazily: C{import twisted_echo} imports no networking module and installs no
reactor; C{__version__} is the installed distribution's, which is
C{setup.cfg}'s; a real (non-editable) install ships C{py.typed}.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import twisted_echo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code: str, *path: str) -> str:
    """
    Run C{code} in a fresh Python (this one's interpreter), with C{path}
    first on its C{sys.path}.

    @return: what it printed.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(path)
    with tempfile.TemporaryDirectory(prefix="sockecho-test-") as cwd:
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    if done.returncode != 0:
        raise AssertionError(f"python -c {code!r} failed:\n{done.stderr}")
    return done.stdout


def setup_cfg_version() -> str:
    """
    @return: the C{version} in this checkout's C{setup.cfg}.
    """
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "setup.cfg"))
    return config["metadata"]["version"]


_MODULES_AFTER = """
import json, sys
before = set(sys.modules)
{code}
print(json.dumps(sorted(set(sys.modules) - before)))
"""


class PublicNamesTests(unittest.TestCase):
    def test_all_is_what_is_exported(self) -> None:
        """
        C{__all__} names C{__version__} and exactly the names the package
        imports on demand, none twice.
        """
        self.assertEqual(len(twisted_echo.__all__), len(set(twisted_echo.__all__)))
        self.assertEqual(
            set(twisted_echo.__all__),
            {"__version__", *twisted_echo._PUBLIC},
        )

    def test_every_name_imports(self) -> None:
        """
        In a fresh Python, C{from twisted_echo import *} gives every name in
        C{__all__}, each the object its module defines, and still installs
        no reactor.
        """
        out = run_python(
            "import sys, json, importlib\n"
            "from twisted_echo import *\n"
            "import twisted_echo\n"
            "names = {}\n"
            "for name in twisted_echo.__all__:\n"
            "    value = globals()[name]\n"
            "    where = twisted_echo._PUBLIC.get(name)\n"
            "    if where is not None:\n"
            "        module, there = (where, name) if isinstance(where, str) "
            "else where\n"
            "        home = importlib.import_module('twisted_echo.' + module)\n"
            "        assert getattr(home, there) is value, name\n"
            "    names[name] = type(value).__name__\n"
            "print(json.dumps([names, 'twisted.internet.reactor' in sys.modules]))\n"
        )
        names, reactor_installed = json.loads(out)
        self.assertEqual(sorted(names), sorted(twisted_echo.__all__))
        self.assertEqual(names["__version__"], "str")
        self.assertEqual(names["EchoFactory"], "type")
        self.assertEqual(names["makeService"], "function")
        self.assertFalse(reactor_installed)

    def test_unknown_name(self) -> None:
        """
        A name that is not public is an L{AttributeError}; submodules still
        import as usual.
        """
        with self.assertRaises(AttributeError):
            twisted_echo.no_such_name  # noqa: B018
        out = run_python("from twisted_echo.policies import limits; print(limits."
            "__name__)")
        self.assertEqual(out.strip(), "twisted_echo.policies.limits")

    def test_import_is_cheap(self) -> None:
        """
        C{import twisted_echo} imports nothing of Twisted or the network, nor
        any of the package's modules (so a pytest plugin importing it costs
        nothing), nor C{typing}.
        """
        new = json.loads(run_python(_MODULES_AFTER.format(code="import twisted_echo")))
        self.assertIn("twisted_echo", new)
        heavy = [
            name
            for name in new
            if name.startswith(("twisted.", "twisted_echo.", "OpenSSL"))
            or name in ("twisted", "socket", "ssl", "asyncio", "typing")
        ]
        self.assertEqual(heavy, [])

    def test_version_is_cheap(self) -> None:
        """
        Reading C{__version__} imports no Twisted module either.
        """
        code = "import twisted_echo; twisted_echo.__version__"
        new = json.loads(run_python(_MODULES_AFTER.format(code=code)))
        self.assertEqual([n for n in new if n.startswith("twisted.")], [])


class VersionTests(unittest.TestCase):
    def test_version_is_setup_cfg_s(self) -> None:
        """
        C{twisted_echo.__version__} is the installed distribution's version,
        which is C{setup.cfg}'s (else the install is stale: C{pip install
        -e .} again).
        """
        self.assertEqual(
            twisted_echo.__version__,
            setup_cfg_version(),
            "the installed metadata is not this checkout's: pip install -e .",
        )

    def test_whoami_says_the_same(self) -> None:
        """
        The whoami service reports that version.
        """
        from twisted_echo.services.whoami import WhoamiInfo

        self.assertEqual(WhoamiInfo().version, twisted_echo.__version__)


class InstallTests(unittest.TestCase):
    def test_real_install_ships_py_typed(self) -> None:
        """
        A wheel built from this checkout and installed for real (not
        editable) has C{twisted_echo/py.typed}, and there C{__version__} is
        C{setup.cfg}'s.
        """
        with tempfile.TemporaryDirectory(prefix="sockecho-test-") as tmp:
            source = os.path.join(tmp, "src")
            # A copy, so that building leaves no build/ in the checkout.
            shutil.copytree(
                REPO,
                source,
                ignore=shutil.ignore_patterns(
                    ".git", ".venv", "build", "*.egg-info", "__pycache__",
                    "_trial_temp*", ".*_cache", "benchmarks", "docs",
                ),
            )  # fmt: skip
            target = os.path.join(tmp, "site")
            done = subprocess.run(
                [
                    sys.executable, "-m", "pip", "install", "--quiet",
                    "--no-deps", "--no-compile", "--target", target, source,
                ],
                capture_output=True,
                text=True,
                timeout=300,
            )  # fmt: skip
            self.assertEqual(done.returncode, 0, done.stderr)
            self.assertTrue(
                os.path.isfile(os.path.join(target, "twisted_echo", "py.typed"))
            )
            self.assertFalse(
                os.path.exists(os.path.join(target, "__editable__")),
            )
            out = run_python(
                "import twisted_echo; print(twisted_echo.__file__); "
                "print(twisted_echo.__version__)",
                target,
            )
            where, version = out.split()
            self.assertTrue(where.startswith(target), where)
            self.assertEqual(version, setup_cfg_version())
