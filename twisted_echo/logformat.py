# -*- test-case-name: tests.test_deprecated_paths -*-
"""
Deprecated path, kept until 0.4; use L{twisted_echo.log.setup}.
"""

from twisted_echo.log.setup import json_observer as json_observer
from twisted_echo.log.setup import text_observer as text_observer
