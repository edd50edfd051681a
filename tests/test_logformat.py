"""
Tests for L{twisted_echo.log.setup}: twistd's log through sockecho's
buffered observer, text or JSON, with nothing lost when the server stops.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import textwrap
import unittest as pyunit

from twisted.logger import LogLevel, jsonFileLogObserver
from twisted.trial.unittest import TestCase

from tests.process import IO_TIMEOUT, STARTUP_TIMEOUT, RunningServer
from twisted_echo.log import setup as logformat

CONNECTIONS = 50


class JSONRecordTests(TestCase):
    def test_same_record_as_twisteds_json_observer(self) -> None:
        """
        A record is what L{jsonFileLogObserver} writes for the same event.
        """
        event = {
            "log_format": "{service} connection from {peer}{via}",
            "log_level": LogLevel.info,
            "log_namespace": "twisted_echo.services.echo.Echo",
            "log_time": 1796000000.5,
            "service": "echo",
            "peer": "tcp:127.0.0.1:1",
            "via": "",
        }
        twisteds = io.StringIO()
        jsonFileLogObserver(twisteds)(dict(event))
        self.assertEqual(logformat.json_record(dict(event)), twisteds.getvalue())


class NothingLostTests(pyunit.TestCase):
    """
    Lines still waiting for their batch when the server is told to stop are
    written before it exits.
    """

    def connect_and_stop(self, *args: str) -> list[str]:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = RunningServer(
            self,
            [f"--echo=tcp:{port}:interface=127.0.0.1", "--no-upper", "--no-welcome"]
            + ["--no-udp", *args],
        )
        server.wait_for("listening on", STARTUP_TIMEOUT)
        for n in range(CONNECTIONS):
            with socket.create_connection(("127.0.0.1", port), IO_TIMEOUT) as s:
                s.sendall(b"%d" % n)
                s.shutdown(socket.SHUT_WR)
                while s.recv(4096):
                    pass
        server.stop()
        return server.output

    def test_text(self) -> None:
        output = self.connect_and_stop()
        connections = [line for line in output if "] echo connection from " in line]
        closed = [line for line in connections if " closed: " in line]
        opened = [line for line in connections if " closed: " not in line]
        self.assertEqual(len(closed), CONNECTIONS, output[-5:])
        self.assertEqual(len(opened), CONNECTIONS, output[-5:])
        self.assertRegex(output[-1], r"\] Server Shut Down\.$")
        self.assertTrue(
            any(f"echo: connections={CONNECTIONS} " in line for line in output)
        )

    def test_json(self) -> None:
        output = self.connect_and_stop("--log-format", "json")
        records = [json.loads(line.lstrip("\x1e")) for line in output]
        closed = [
            r for r in records if r.get("log_format", "").endswith("{duration:.3f} s")
        ]
        self.assertEqual(len(closed), CONNECTIONS)
        self.assertEqual(records[-1]["log_format"], "Server Shut Down.")
        # Each close line carries its connection's record (one event, not
        # two): the same client and bytes, numbered 1, 2, ...
        self.assertEqual(
            [r["record"]["id"] for r in closed], list(range(1, CONNECTIONS + 1))
        )
        for line in closed:
            self.assertEqual(line["record"]["client"], line["peer"])
            self.assertEqual(line["record"]["bytes_in"], line["bytes_in"])
            self.assertEqual(line["record"]["cause"], "client_fin")
        self.assertEqual([r for r in records if "record" in r], closed)


class CrashTests(pyunit.TestCase):
    def test_lines_waiting_when_the_process_dies_of_an_exception(self) -> None:
        """
        A process whose reactor loop dies of an exception still writes the
        lines waiting for their batch (at exit).
        """
        script = textwrap.dedent(
            """
            import sys
            from twisted.internet.task import Clock
            from twisted.logger import LogLevel
            from twisted_echo.log.buffer import BufferedLogObserver
            clock = Clock()
            clock.running = True
            clock.addSystemEventTrigger = lambda *a: None
            observer = BufferedLogObserver(
                sys.stdout, lambda e: e["text"] + "\\n", lambda: clock
            )
            observer({"text": "waiting line", "log_level": LogLevel.info})
            raise RuntimeError("the loop died")
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=IO_TIMEOUT,
        )
        self.assertEqual(result.stdout, "waiting line\n")
        self.assertIn("RuntimeError: the loop died", result.stderr)
