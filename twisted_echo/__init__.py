"""
sockecho: the classic socket test services as a Twisted application.

Services (one module each):
 - L{twisted_echo.echo}: TCP echo, RFC 862.
 - L{twisted_echo.upper}: TCP echo of UTF-8 text, upper-cased.
 - L{twisted_echo.welcome}: a banner, then C{OK...} and each line received.
 - L{twisted_echo.udp}: UDP echo, RFC 862, with a loop guard (CVE-2024-2169).
 - L{twisted_echo.whoami}: how the server sees the client, as JSON (TCP, UDP).

Start them with C{twistd -n sockecho}; see L{twisted_echo.tap}.
"""

__version__ = "0.1.0"
