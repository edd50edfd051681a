"""
Tests for L{twisted_echo.client.records}: C{sockecho-client records}, run
as a process against a real sockecho, and its skipped-records count.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import unittest

from twisted.internet.task import Clock

from twisted_echo.client.errors import ClientUsageError
from twisted_echo.client.records import RecordsReader, describe, records_url
from twisted_echo.testing.spawn import start_sockecho

TIMEOUT = 30


def client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twisted_echo.client", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


class RecordsURLTests(unittest.TestCase):
    def test_forms(self) -> None:
        for given in ("http://127.0.0.1:9107", "tcp:127.0.0.1:9107", "127.0.0.1:9107"):
            self.assertEqual(records_url(given), "http://127.0.0.1:9107/records")
        self.assertEqual(
            records_url("http://localhost:9107/records"),
            "http://localhost:9107/records",
        )

    def test_bad(self) -> None:
        with self.assertRaises(ClientUsageError) as caught:
            records_url("udp:127.0.0.1:9107")
        self.assertIn("not 'udp:127.0.0.1:9107'", str(caught.exception))


def page(*ids: int) -> dict[str, object]:
    records = [
        {
            "id": i, "service": "echo", "client": "tcp:127.0.0.1:5000",
            "proxy": None, "tls": None, "cause": "client_fin", "limit": None,
            "bytes_in": 1, "bytes_out": 1, "duration": 0.001,
        }
        for i in ids
    ]  # fmt: skip
    return {"records": records, "next_since": ids[-1], "last_id": ids[-1]}


class SkippedTests(unittest.TestCase):
    def test_gap_counted(self) -> None:
        """
        Records numbered past the last one read, that the server no longer
        holds, are counted and said on standard error.
        """
        out, err = io.StringIO(), io.StringIO()
        reader = RecordsReader(Clock(), "http://x/records", out, err, False)
        reader.print_page(page(1, 2), 0)
        reader.print_page(page(6, 7), 2)
        reader.print_page(page(9), 7)
        self.assertEqual(reader.skipped, 4)
        self.assertEqual(
            err.getvalue().splitlines(),
            [
                "skipped 3 records (more closed than the server keeps between "
                "two reads; 3 in all)",
                "skipped 1 records (more closed than the server keeps between "
                "two reads; 4 in all)",
            ],
        )
        self.assertEqual(len(out.getvalue().splitlines()), 5)
        self.assertEqual(
            out.getvalue().splitlines()[0],
            "#1 echo tcp:127.0.0.1:5000: client_fin, 1 bytes in, 1 bytes out, 0.001 s",
        )


class ProcessTests(unittest.TestCase):
    def test_records_and_json(self) -> None:
        """
        C{records} prints each record in a line; with C{--json}, the
        server's objects, one a line; C{--service} filters.
        """
        with start_sockecho() as server:
            with socket.create_connection(server.echo, timeout=TIMEOUT) as sock:
                sock.sendall(b"abc")
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(10):
                    pass
            (record,) = server.wait_for(1)
            host, port = server.address("metrics")
            metrics = f"tcp:{host}:{port}"
            text = client("records", metrics)
            self.assertEqual((text.returncode, text.stderr), (0, ""))
            self.assertEqual(text.stdout, describe(record) + "\n")
            as_json = client("records", metrics, "--json")
            self.assertEqual(
                [json.loads(line) for line in as_json.stdout.splitlines()], [record]
            )
            none = client("records", metrics, "--service", "upper")
            self.assertEqual((none.returncode, none.stdout), (0, ""))

    def test_follow(self) -> None:
        """
        C{--follow} prints the records that close from now on, as they
        close.
        """
        with start_sockecho() as server:
            with socket.create_connection(server.echo, timeout=TIMEOUT):
                pass
            server.wait_for(1)
            host, port = server.address("metrics")
            follower = subprocess.Popen(
                [sys.executable, "-m", "twisted_echo.client", "records",
                 f"{host}:{port}", "--follow", "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            self.addCleanup(follower.wait)
            self.addCleanup(follower.kill)
            # Its first poll is answered with the first record that closes
            # after it started: keep closing connections until one is seen.
            assert follower.stdout is not None
            lines: list[str] = []
            out = follower.stdout
            thread = threading.Thread(target=lambda: lines.append(out.readline()))
            thread.start()
            for _ in range(100):
                with socket.create_connection(server.upper, timeout=TIMEOUT) as sock:
                    sock.shutdown(socket.SHUT_WR)
                    sock.recv(10)
                thread.join(0.2)
                if lines:
                    break
            thread.join(TIMEOUT)
            record = json.loads(lines[0])
            self.assertEqual(
                (record["service"], record["cause"]), ("upper", "client_fin")
            )
            self.assertGreater(record["id"], 1)

    def test_unreachable(self) -> None:
        """
        A listener that cannot be reached: one line, status 1.
        """
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        result = client("records", f"127.0.0.1:{port}")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn("cannot reach http://127.0.0.1:", result.stderr)
