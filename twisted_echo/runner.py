# -*- test-case-name: tests.test_deprecated_paths -*-
"""
Deprecated path, kept until 0.4; use L{twisted_echo.tap} (twistd's options
and service maker) or L{twisted_echo.app.runner} (the rest).
"""

from twisted_echo.tap import Options as Options
from twisted_echo.tap import makeService as makeService
