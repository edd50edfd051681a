"""
sockecho: the classic socket test services as a Twisted application.

Services (one module each):
 - L{twisted_echo.echo}: TCP echo, RFC 862.
 - L{twisted_echo.upper}: TCP echo of UTF-8 text, upper-cased.
 - L{twisted_echo.welcome}: a banner, then C{OK...} and each line received.
 - L{twisted_echo.udp}: UDP echo, RFC 862, with BSD inetd's loop guard.

Start them with C{twistd -n sockecho}; see L{twisted_echo.tap}.
"""

__version__ = "0.1.0"
