"""
Connection records (issue 22): one record per TCP connection, saying who
connected, through which proxy and TLS, what went through and how the
connection ended (L{twisted_echo.records.causes}); kept in a bounded ring
(L{twisted_echo.records.ring}) served at the metrics listener's
C{/records} and logged with C{--log-format json}.

Below the services and the listening layer (both set close causes), above
the policies.
"""
