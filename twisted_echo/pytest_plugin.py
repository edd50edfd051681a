# -*- test-case-name: tests.test_deprecated_paths -*-
"""
Deprecated path, kept until 0.4; use L{twisted_echo.testing.pytest_plugin}.
"""

from twisted_echo.testing.pytest_plugin import pytest_addoption as pytest_addoption
from twisted_echo.testing.pytest_plugin import sockecho as sockecho
from twisted_echo.testing.pytest_plugin import sockecho_factory as sockecho_factory
from twisted_echo.testing.pytest_plugin import sockecho_session as sockecho_session
from twisted_echo.testing.pytest_plugin import (
    sockecho_session_factory as sockecho_session_factory,
)
