# -*- test-case-name: tests.test_deprecated_paths -*-
"""
Deprecated path, kept until 0.4; use L{twisted_echo.testing.spawn}.
"""

from twisted_echo.testing.spawn import SockechoProcess as SockechoProcess
from twisted_echo.testing.spawn import StartError as StartError
from twisted_echo.testing.spawn import start_sockecho as start_sockecho
