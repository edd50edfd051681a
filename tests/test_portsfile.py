"""
Tests for L{twisted_echo.operations.portsfile} and L{twisted_echo.operations.announce}:
C{--ports-file PATH} written atomically once every listener is up (port 0
as the port really bound), with one process and with C{--workers 2}, and
removed when the drain starts.
"""

from __future__ import annotations

import json
import os
import unittest as pyunit

from tests.process import (
    BANNER,
    CLEAN_SIGTERM_EXIT,
    HOST,
    STARTUP_TIMEOUT,
    RunningServer,
    any_port_args,
    run_twistd,
    tcp_exchange,
    temp_dir,
    udp_socket,
    wait_until,
)
from twisted_echo.operations.portsfile import (
    listener_entry,
    ports_document,
    read_ports_file,
    remove_ports_file,
    write_ports_file,
)


def wait_for_file(server: RunningServer, path: str) -> dict[str, object]:
    """
    Poll for the ports file (at most L{STARTUP_TIMEOUT} seconds).

    @return: its JSON object.
    """
    found: list[dict[str, object]] = []

    def written() -> bool:
        document = read_ports_file(path)
        if document is not None:
            found.append(document)
        return bool(found) or server.process.poll() is not None

    wait_until(written, STARTUP_TIMEOUT)
    if found:
        return found[0]
    raise AssertionError(
        f"no ports file at {path}; stdout:\n"
        + "\n".join(server.output[-20:])
        + "\nstderr:\n"
        + "\n".join(server.errors[-20:])
    )


class FormatTests(pyunit.TestCase):
    """
    The file's format, and writing, reading and removing it.
    """

    def test_document(self) -> None:
        """
        Listeners are grouped by service, in order, under C{listeners}.
        """
        document = ports_document(
            42,
            [
                ("echo", listener_entry("tcp:127.0.0.1:1", "127.0.0.1", 1)),
                ("udp", listener_entry("udp:127.0.0.1:2", "127.0.0.1", 2)),
                ("echo", listener_entry("unix:/s", None, None)),
            ],
        )
        self.assertEqual(
            document,
            {
                "pid": 42,
                "listeners": {
                    "echo": [
                        {"address": "tcp:127.0.0.1:1", "host": "127.0.0.1", "port": 1},
                        {"address": "unix:/s", "host": None, "port": None},
                    ],
                    "udp": [
                        {"address": "udp:127.0.0.1:2", "host": "127.0.0.1", "port": 2}
                    ],
                },
            },
        )

    def test_write_read_atomic(self) -> None:
        """
        The file is replaced whole (rename), no temporary file is left, and
        it reads back as written; a missing file reads as L{None}.
        """
        directory = temp_dir(self)
        path = os.path.join(directory, "ports.json")
        self.assertIsNone(read_ports_file(path))
        with open(path, "w") as f:
            f.write("old")
        document = ports_document(1, [("echo", listener_entry("tcp:h:1", "h", 1))])
        write_ports_file(path, document)
        self.assertEqual(read_ports_file(path), document)
        self.assertEqual(os.listdir(directory), ["ports.json"])

    def test_write_failure_leaves_nothing(self) -> None:
        """
        A path that cannot be replaced (a directory) raises L{OSError} and
        leaves no temporary file.
        """
        directory = temp_dir(self)
        os.mkdir(os.path.join(directory, "ports.json"))
        with self.assertRaises(OSError):
            write_ports_file(os.path.join(directory, "ports.json"), {"listeners": {}})
        self.assertEqual(os.listdir(directory), ["ports.json"])

    def test_not_a_ports_file(self) -> None:
        path = os.path.join(temp_dir(self), "x.json")
        with open(path, "w") as f:
            json.dump([1], f)
        with self.assertRaises(ValueError):
            read_ports_file(path)

    def test_remove_only_own(self) -> None:
        """
        Removal leaves a file some other server wrote since.
        """
        path = os.path.join(temp_dir(self), "ports.json")
        write_ports_file(path, ports_document(1, []))
        mine = os.stat(path)
        write_ports_file(path, ports_document(2, []))
        remove_ports_file(path, mine)
        self.assertEqual(read_ports_file(path), ports_document(2, []))
        remove_ports_file(path, os.stat(path))
        self.assertFalse(os.path.exists(path))


class ProcessTests(pyunit.TestCase):
    """
    C{twistd -n sockecho --ports-file PATH}.
    """

    def check_serves(self, document: dict[str, object]) -> None:
        listeners = document["listeners"]
        assert isinstance(listeners, dict)
        ports = {}
        for service in ("echo", "upper", "welcome", "udp"):
            [entry] = listeners[service]
            self.assertEqual(entry["host"], HOST)
            self.assertNotEqual(entry["port"], 0)
            kind = "udp" if service == "udp" else "tcp"
            self.assertEqual(entry["address"], f"{kind}:{HOST}:{entry['port']}")
            ports[service] = entry["port"]
        self.assertEqual(tcp_exchange(ports["echo"], b"hello"), b"hello")
        self.assertEqual(tcp_exchange(ports["upper"], b"stra\xc3\x9fe"), b"STRASSE")
        self.assertEqual(
            tcp_exchange(ports["welcome"], b"hi\n"), BANNER + b"\r\nOK...hi\r\n"
        )
        sock = udp_socket(self)
        sock.sendto(b"ping", (HOST, ports["udp"]))
        self.assertEqual(sock.recv(100), b"ping")

    def test_port_zero(self) -> None:
        """
        Every listener on port 0: the file names the ports really bound (the
        ones the log names), the server's pid, and whoami's and the metrics
        listener's too; the server answers on those ports; the file is gone
        once the server has stopped.
        """
        directory = temp_dir(self)
        path = os.path.join(directory, "ports.json")
        server = RunningServer(
            self,
            [
                *any_port_args(),
                "--whoami",
                f"tcp:0:interface={HOST}",
                "--metrics",
                f"tcp:0:interface={HOST}",
                "--ports-file",
                path,
            ],
        )
        document = wait_for_file(server, path)
        self.assertEqual(document["pid"], server.pid)
        self.check_serves(document)
        logged = server.wait_listening()
        listeners = document["listeners"]
        assert isinstance(listeners, dict)
        self.assertEqual({s: listeners[s][0]["port"] for s in logged}, logged)
        self.assertEqual(
            sorted(listeners), ["echo", "metrics", "udp", "upper", "welcome", "whoami"]
        )
        self.assertIn(server.stop(), CLEAN_SIGTERM_EXIT, server.errors)
        self.assertEqual(os.listdir(directory), [])

    def test_workers(self) -> None:
        """
        With C{--workers 2} the supervisor writes the file: its pid, the
        ports it bound, which both workers serve.
        """
        directory = temp_dir(self)
        path = os.path.join(directory, "ports.json")
        server = RunningServer(
            self, [*any_port_args(), "--workers", "2", "--ports-file", path]
        )
        document = wait_for_file(server, path)
        self.assertEqual(document["pid"], server.pid)
        self.check_serves(document)
        self.assertIn(server.stop(), CLEAN_SIGTERM_EXIT, server.errors)
        self.assertEqual(os.listdir(directory), [])

    def test_not_written_when_start_fails(self) -> None:
        """
        A listener that cannot listen: exit status 1, and no ports file.
        """
        directory = temp_dir(self)
        path = os.path.join(directory, "ports.json")
        result = run_twistd(
            self, "--echo", "unix:/nonexistent-dir/sock", "--ports-file", path
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(os.listdir(directory), [])

    def test_unwritable(self) -> None:
        """
        A ports file that cannot be written is one line naming it, exit
        status 1.
        """
        directory = temp_dir(self)
        os.mkdir(os.path.join(directory, "taken"))
        result = run_twistd(
            self, *any_port_args(), "--ports-file", os.path.join(directory, "taken")
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        [line] = result.stderr.strip().splitlines()
        self.assertRegex(line, r"^sockecho: cannot write the ports file .*/taken: ")
        self.assertNotIn("Traceback", result.stdout + result.stderr)

    def test_missing_directory(self) -> None:
        """
        A ports file in a directory that does not exist is a usage error
        naming the option.
        """
        result = run_twistd(self, "--ports-file", "/nonexistent-dir/ports.json")
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn(
            "--ports-file takes a file in a directory that exists, not "
            "'/nonexistent-dir/ports.json'",
            result.stderr + result.stdout,
        )
