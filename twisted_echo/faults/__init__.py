"""
Fault injection (issue 21): sockecho misbehaving on purpose, reproducibly.

A fault profile (L{twisted_echo.faults.profile}) is attached to a service's
TCP listeners (C{--faults SERVICE=PROFILE}); the service's factory holds
the L{twisted_echo.faults.engine.ListenerFaults} and, at each connection's
open, the stream base asks it for a per-connection plan
(L{twisted_echo.faults.engine.ConnectionPlan}) that every byte sent and
received goes through. A UDP listener's profile
(C{--faults udp=PROFILE}) is a L{twisted_echo.faults.datagrams.DatagramFaults}
its replies go through. Services know nothing of either. See
docs/faults.md.
"""
