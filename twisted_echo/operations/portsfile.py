# -*- test-case-name: tests.test_portsfile -*-
"""
The ports file (C{--ports-file PATH}): where a running sockecho listens, as
JSON, for tests, scripts and supervisors that start it on port 0.

Its format, one JSON object::

    {"pid": 4242,
     "listeners": {
       "echo": [{"address": "tcp:127.0.0.1:41873", "host": "127.0.0.1",
                 "port": 41873}],
       "udp": [{"address": "udp:127.0.0.1:50211", "host": "127.0.0.1",
                "port": 50211}],
       ...}}

C{listeners} has one key per running service (its name in the service
registry, L{twisted_echo.app.registry}: C{echo}, C{upper}, C{welcome},
C{udp}, C{whoami}, ...; C{metrics} with C{--metrics}), each a list
of that service's listeners in the order given on the command line. Each
C{address} is the address really bound as a client endpoint string
(C{tcp:}, C{tcp6:}, C{ssl:}, C{udp:}, C{unix:}); C{host} and C{port} are
L{None} for a UNIX socket. The file is written once, atomically (a
temporary file in the same directory, then a rename), when every listener
is listening, and removed when the drain starts.

This module imports nothing from Twisted: the pytest plugin reads the file
with it. L{twisted_echo.testing.addresses.Addresses} names what a file
says by service.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

#: A listener's entry: C{address}, C{host}, C{port}.
Listener = dict[str, Any]


def listener_entry(address: str, host: str | None, port: int | None) -> Listener:
    """
    @param address: the bound address as a client endpoint string.
    @param host: its host (an IP address), or L{None} (UNIX sockets).
    @param port: its port number, or L{None} (UNIX sockets).
    @return: the listener's entry in the ports file.
    """
    return {"address": address, "host": host, "port": port}


def ports_document(
    pid: int, listeners: Sequence[tuple[str, Listener]]
) -> dict[str, Any]:
    """
    @param pid: the process id of the server (the one to signal).
    @param listeners: C{(service, entry)} for each listener, in order.
    @return: the ports file's JSON object.
    """
    by_service: dict[str, list[Listener]] = {}
    for service, entry in listeners:
        by_service.setdefault(service, []).append(entry)
    return {"pid": pid, "listeners": by_service}


def write_ports_file(path: str, document: Mapping[str, Any]) -> None:
    """
    Write C{document} as JSON to C{path} atomically: readers see either no
    file or the whole of it.

    @param path: the file's path.
    @param document: the JSON object (L{ports_document}).
    @raise OSError: if the file cannot be written (its directory missing or
        not writable); no temporary file is left behind.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(
        prefix=".sockecho-ports-", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1)
            f.write("\n")
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except OSError:
            pass
        raise


def read_ports_file(path: str) -> dict[str, Any] | None:
    """
    @param path: a ports file's path.
    @return: its JSON object, or L{None} while there is no such file.
    @raise ValueError: if the file is there but not a ports file.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    document = json.loads(text)
    if not isinstance(document, dict) or not isinstance(
        document.get("listeners"), dict
    ):
        raise ValueError(f"{path} is not a sockecho ports file")
    return document


def remove_ports_file(path: str, written: os.stat_result | None) -> None:
    """
    Remove the ports file at C{path} if it is still the one written (a
    newer server may have replaced it).

    @param written: C{os.stat} of the file just after it was written, or
        L{None} to remove whatever is there.
    """
    try:
        now = os.stat(path)
        if written is None or (now.st_ino, now.st_dev) == (
            written.st_ino,
            written.st_dev,
        ):
            os.remove(path)
    except OSError:
        pass
