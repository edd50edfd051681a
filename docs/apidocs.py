"""
Build sockecho's API documentation with pydoctor, from the epytext
docstrings of C{twisted_echo}, into C{build/apidocs/} (open
C{build/apidocs/index.html}); exit status 3 on any docstring error or
link that does not resolve, as CI wants::

    pip install -e '.[test]'      # or '.[docs]': pydoctor
    python docs/apidocs.py

Links to Twisted (C{L{twisted.internet.defer.Deferred}}) resolve against an
inventory of the Twisted installed here, made once per Twisted version with
C{pydoctor --make-intersphinx} (in C{build/intersphinx/}, about 20 s) and
pointing to Twisted's published API documentation; nothing is downloaded.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(REPO, "build")
OUTPUT = os.path.join(BUILD, "apidocs")
TWISTED_API = "https://docs.twistedmatrix.com/en/stable/api"
PYTHON_DOCS = "https://docs.python.org/3"
#: The Python names docstrings link to (C{L{None}}), by their page in
#: Python's documentation: add one here to link to it.
PYTHON_NAMES = {
    "None": ("py:data", "library/constants.html#None"),
    "True": ("py:data", "library/constants.html#True"),
    "False": ("py:data", "library/constants.html#False"),
    "os.getpid": ("py:function", "library/os.html#os.getpid"),
    "string.Formatter": ("py:class", "library/string.html#string.Formatter"),
}
#: Twisted's own tests are left out of its inventory: nothing links to them,
#: and they are a third of its source.
SKIPPED_DIRS = {"test", "newsfragments", "__pycache__"}


def pydoctor(*args: str) -> None:
    """
    Run pydoctor (the one installed beside this Python) with C{args}.

    @raise SystemExit: with pydoctor's status, if it failed.
    """
    command = [sys.executable, "-m", "pydoctor", *args]
    status = subprocess.run(command, cwd=REPO).returncode
    if status != 0:
        raise SystemExit(status)


def twisted_inventory() -> str:
    """
    @return: the path of an intersphinx inventory of the installed Twisted
        (made if missing), as C{PATH::BASE_URL} for C{--intersphinx-file}.
    """
    import twisted

    version = twisted.__version__
    home = os.path.join(BUILD, "intersphinx", f"twisted-{version}")
    inventory = os.path.join(home, "objects.inv")
    if not os.path.exists(inventory):
        source = os.path.dirname(os.path.abspath(twisted.__file__))
        copy = os.path.join(home, "src", "twisted")
        shutil.rmtree(home, ignore_errors=True)
        for directory, subdirectories, files in os.walk(source):
            subdirectories[:] = sorted(set(subdirectories) - SKIPPED_DIRS)
            target = os.path.join(copy, os.path.relpath(directory, source))
            os.makedirs(target, exist_ok=True)
            for name in files:
                if name.endswith(".py"):
                    shutil.copy(os.path.join(directory, name), target)
        partial = os.path.join(home, "partial")
        pydoctor(
            "--make-intersphinx",
            "--quiet",
            "--project-name=Twisted",
            f"--project-version={version}",
            f"--html-output={partial}",
            copy,
        )
        os.replace(os.path.join(partial, "objects.inv"), inventory)
        shutil.rmtree(os.path.join(home, "src"))
        shutil.rmtree(partial)
    return f"{inventory}::{TWISTED_API}"


def python_inventory() -> str:
    """
    @return: the path of an intersphinx inventory of L{PYTHON_NAMES} (made
        afresh), as C{PATH::BASE_URL} for C{--intersphinx-file}.
    """
    home = os.path.join(BUILD, "intersphinx", "python")
    os.makedirs(home, exist_ok=True)
    inventory = os.path.join(home, "objects.inv")
    entries = "".join(
        f"{name} {role} 1 {page} -\n" for name, (role, page) in PYTHON_NAMES.items()
    )
    with open(inventory, "wb") as f:
        f.write(
            b"# Sphinx inventory version 2\n# Project: Python\n# Version: 3\n"
            b"# The remainder of this file is compressed using zlib.\n"
        )
        f.write(zlib.compress(entries.encode()))
    return f"{inventory}::{PYTHON_DOCS}"


def main() -> None:
    """
    Build the documentation.

    @raise SystemExit: with pydoctor's status if it failed or warned.
    """
    pydoctor(
        "--project-name=sockecho",
        f"--project-version={importlib.metadata.version('sockecho')}",
        "--docformat=epytext",
        f"--project-base-dir={REPO}",
        f"--intersphinx-file={twisted_inventory()}",
        f"--intersphinx-file={python_inventory()}",
        f"--html-output={OUTPUT}",
        "--warnings-as-errors",
        "--quiet",
        os.path.join(REPO, "twisted_echo"),
    )
    print(f"API documentation: {os.path.join(OUTPUT, 'index.html')}")


if __name__ == "__main__":
    main()
