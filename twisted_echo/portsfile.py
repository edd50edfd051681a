# -*- test-case-name: tests.test_deprecated_paths -*-
"""
Deprecated path, kept until 0.4; use L{twisted_echo.operations.portsfile}.
"""

from twisted_echo.operations.portsfile import Addresses as Addresses
from twisted_echo.operations.portsfile import read_ports_file as read_ports_file
