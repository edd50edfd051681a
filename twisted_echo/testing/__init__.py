# -*- test-case-name: tests.test_testing -*-
"""
sockecho for other projects' tests: the trial helper
(L{twisted_echo.testing.trial}), the pytest plugin
(L{twisted_echo.testing.pytest_plugin}) and test processes
(L{twisted_echo.testing.spawn}). From here:
C{RunningServices}, C{start_services}.

The trial helper's names are imported from here on first use (PEP 562):
the pytest plugin, a module of this package, must import no Twisted while
its fixtures are unused.
"""

from __future__ import annotations

import importlib

#: C{typing.TYPE_CHECKING}, without importing C{typing}.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from twisted_echo.testing.trial import RunningServices as RunningServices
    from twisted_echo.testing.trial import start_services as start_services

#: The names imported on first use, and their module in this package.
_LAZY = {
    "RunningServices": "trial",
    "start_services": "trial",
}


def __getattr__(name: str) -> object:
    """
    Import a name of the trial helper on first use (PEP 562).

    @raise AttributeError: for a name this package does not have.
    """
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
