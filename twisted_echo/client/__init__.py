# -*- test-case-name: tests.test_client_main -*-
"""
C{sockecho-client}: a client for the sockecho services and any RFC 862 echo
server.

Commands (one module each):
 - L{twisted_echo.client.chat}: interactive, like telnet or netcat.
 - L{twisted_echo.client.load}: many connections, every reply byte checked.
 - L{twisted_echo.client.check}: an RFC 862 conformance run.

What a correct reply is, per service, lives in
L{twisted_echo.client.contracts}; where to connect is parsed by
L{twisted_echo.client.endpoints}.
"""
