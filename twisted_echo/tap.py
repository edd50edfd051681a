# -*- test-case-name: tests.test_plugin -*-
"""
The twistd face of sockecho, where the C{twistd sockecho} plugin points (as
Twisted's own plugins point at their C{tap} modules): L{Options}, twistd's
options for C{twistd sockecho}, and L{makeService}, the service twistd runs.

Both live in L{twisted_echo.app.runner} for now (moving them here is a later
slice of issue 20); embedding sockecho without twistd uses
L{twisted_echo.app.options} (or C{twisted_echo.Options} and
C{twisted_echo.makeService}).
"""

from twisted_echo.app.runner import Options as Options
from twisted_echo.app.runner import makeService as makeService
