# -*- test-case-name: tests.test_deprecated_paths -*-
"""
Deprecated path, kept until 0.4; use L{twisted_echo.app.runner}.
"""

from twisted_echo.app.runner import Options as Options
from twisted_echo.app.runner import makeService as makeService
