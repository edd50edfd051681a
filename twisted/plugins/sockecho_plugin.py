# -*- test-case-name: tests.test_plugin -*-
"""
The C{twistd sockecho} plugin: echo, upper, welcome and UDP echo services.

Kept to one line of work so that listing plugins (C{twistd --help}) stays
cheap and never imports a reactor.
"""

from twisted.application.service import ServiceMaker

sockecho = ServiceMaker(
    "sockecho",
    "twisted_echo.tap",
    "Socket test services: TCP echo (RFC 862), upper, welcome, UDP echo.",
    "sockecho",
)
