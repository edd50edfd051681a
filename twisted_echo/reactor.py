# -*- test-case-name: tests.test_deprecated_paths -*-
"""
Deprecated path, kept until 0.4; use L{twisted_echo._twisted.reactor}.
"""

from twisted_echo._twisted.reactor import REACTOR_NAME as REACTOR_NAME
from twisted_echo._twisted.reactor import EventReactor as EventReactor
