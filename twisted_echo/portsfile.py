# -*- test-case-name: tests.test_deprecated_paths -*-
"""
Deprecated path, kept until 0.4; use L{twisted_echo.testing.addresses}
(L{twisted_echo.operations.portsfile} for the file's format).
"""

from twisted_echo.testing.addresses import Addresses as Addresses
from twisted_echo.testing.addresses import read_ports_file as read_ports_file
