"""
C{--admin}: C{/faults} on the C{--metrics} listener
(L{twisted_echo.operations.adminpage}), the options that guard it, and a
real C{twistd} whose profiles change while it runs.
"""

from __future__ import annotations

import json
import socket

from twisted.python import usage
from twisted.trial.unittest import TestCase

from tests.process import (
    IO_TIMEOUT,
    any_port_args,
    run_twistd,
    start_server,
    tcp_exchange,
)
from tests.process import (
    http_call as call,
)
from twisted_echo.app.options import Options, is_loopback_description
from twisted_echo.operations.adminpage import profile_from_body

HOST = "127.0.0.1"


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options




class OptionTests(TestCase):
    def test_off_by_default(self) -> None:
        config = parse("--metrics", f"tcp:0:interface={HOST}")
        self.assertFalse(config["admin"])

    def test_needs_metrics(self) -> None:
        error = self.assertRaises(usage.UsageError, parse, "--admin")
        self.assertIn("--admin serves on the --metrics listener", str(error))

    def test_refuses_every_address(self) -> None:
        """
        C{tcp:PORT} without C{interface} listens on every address: refused.
        """
        error = self.assertRaises(
            usage.UsageError, parse, "--admin", "--metrics", "tcp:9107"
        )
        self.assertIn(
            "--admin refused: --metrics 'tcp:9107' is not a loopback", str(error)
        )

    def test_public_on_purpose(self) -> None:
        config = parse(
            "--admin", "--admin-public", "--metrics", "tcp:0:interface=0.0.0.0"
        )
        self.assertTrue(config["admin"])

    def test_public_alone(self) -> None:
        error = self.assertRaises(usage.UsageError, parse, "--admin-public")
        self.assertIn("--admin-public is given without --admin", str(error))

    def test_loopback_descriptions(self) -> None:
        for text in (
            "tcp:0:interface=127.0.0.1",
            "tcp:0:interface=127.0.0.2",
            r"tcp6:0:interface=\:\:1",
            "tcp:0:interface=localhost",
            "unix:/tmp/admin.sock",
        ):
            self.assertTrue(is_loopback_description(text), text)
        for text in (
            "tcp:9107",
            "tcp:0:interface=0.0.0.0",
            "tcp:0:interface=192.0.2.1",
            r"tcp6:0:interface=\:\:",
            "systemd:domain=INET:index=0",
        ):
            self.assertFalse(is_loopback_description(text), text)


class BodyTests(TestCase):
    def test_json_or_text(self) -> None:
        self.assertEqual(profile_from_body(b'{"profile": "delay=1s"}'), "delay=1s")
        self.assertEqual(profile_from_body(b"delay=1s\n"), "delay=1s")

    def test_bad_bodies(self) -> None:
        for body, reason in (
            (b"", "an empty profile"),
            (b'{"profile": 3}', '{"profile": "TEXT"}'),
            (b"{nope", "not valid JSON"),
            (b"\xff", "not UTF-8"),
            (b"x" * 5000, "at most 4096 bytes"),
        ):
            error = self.assertRaises(ValueError, profile_from_body, body)
            self.assertIn(reason, str(error))


class TwistdTests(TestCase):
    def start(self, *args: str) -> tuple[dict[str, int], str]:
        server = start_server(
            self, ["--metrics", f"tcp:0:interface={HOST}", "--admin", *args]
        )
        self.server = server
        match = server.wait_for(r"\] metrics listening on tcp:127\.0\.0\.1:(\d+)$")
        return server.ports, f"http://{HOST}:{match.group(1)}/faults"

    def test_put_next_connection_then_delete(self) -> None:
        """
        A real twistd: PUT applies to the next connection (the client
        meets the fault), a bad profile is a 400 and the one in force still
        applies, DELETE restores clean echo.
        """
        ports, url = self.start()
        self.assertEqual(tcp_exchange(ports["echo"], b"hello world"), b"hello world")
        status, text = call(url)
        self.assertEqual(status, 200)
        listeners = {e["listener"]: e for e in json.loads(text)["listeners"]}
        self.assertEqual(sorted(listeners), ["echo", "udp", "upper", "welcome"])
        self.assertIsNone(listeners["echo"]["profile"])

        body = json.dumps({"profile": "close-after=5;seed=9"}).encode()
        status, text = call(url + "/echo", "PUT", body)
        self.assertEqual((status, json.loads(text)["seed"]), (200, 9))
        self.assertEqual(tcp_exchange(ports["echo"], b"hello world"), b"hello")
        self.assertEqual(tcp_exchange(ports["upper"], b"hello world"), b"HELLO WORLD")
        self.server.wait_for(
            r"\] faults of echo set at run time: close-after=5;seed=9 \(seed 9\)$"
        )
        self.server.wait_for(r"faults close-after=5 \(connection 1, seed 9\)$")

        status, text = call(url + "/echo", "PUT", b"close-after=5,p=2")
        self.assertEqual(status, 400)
        self.assertIn("bad profile for echo: 'close-after=5,p=2': p takes", text)
        self.assertEqual(tcp_exchange(ports["echo"], b"hello world"), b"hello")
        status, text = call(url + "/echo")
        self.assertEqual(json.loads(text)["profile"], "close-after=5;seed=9")

        status, text = call(url + "/echo", "DELETE")
        self.assertEqual((status, json.loads(text)["profile"]), (200, None))
        self.server.wait_for(r"\] faults of echo cleared at run time$")
        self.assertEqual(tcp_exchange(ports["echo"], b"hello world"), b"hello world")

    def test_udp_and_errors(self) -> None:
        """
        A UDP listener's profile changes too (text body); an unknown
        listener is a 404, another method a 405; a refuse fault is taken
        (tests/test_faults_refuse.py: it applies from the change on).
        """
        ports, url = self.start()
        status, _ = call(url + "/udp", "PUT", b"truncate=3")
        self.assertEqual(status, 200)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(IO_TIMEOUT)
            sock.sendto(b"hello", (HOST, ports["udp"]))
            self.assertEqual(sock.recv(100), b"he")
        status, text = call(url + "/nope", "PUT", b"delay=1s")
        self.assertEqual(status, 404)
        self.assertIn("no listener 'nope'", text)
        status, text = call(url + "/echo", "PUT", b"refuse=1s")
        self.assertEqual((status, json.loads(text)["profile"]), (200, "refuse=1s"))
        status, _ = call(url + "/echo", "POST", b"delay=1s")
        self.assertEqual(status, 405)

    def test_bounded(self) -> None:
        """
        A profile over 4 KiB is a 400; a body over the listener's 8 KiB
        bound loses its connection (httpbounds); neither changes anything.
        """
        ports, url = self.start()
        status, text = call(url + "/echo", "PUT", b"delay=1s;" * 560)
        self.assertEqual(status, 400)
        self.assertIn("at most 4096 bytes", text)
        with self.assertRaises(OSError):  # URLError, reset or closed
            call(url + "/echo", "PUT", b"x" * 9000)
        status, text = call(url + "/echo")
        self.assertIsNone(json.loads(text)["profile"])
        self.assertEqual(tcp_exchange(ports["echo"], b"hi"), b"hi")

    def test_non_loopback_refused(self) -> None:
        """
        A real twistd with C{--admin} on every address: one clear line,
        exit 1, no traceback.
        """
        result = run_twistd(self, *any_port_args(), "--admin", "--metrics", "tcp:0")
        self.assertEqual(result.returncode, 1)
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        self.assertTrue(
            result.stdout.strip()
            .splitlines()[-1]
            .endswith(
                "twistd -n: --admin refused: --metrics 'tcp:0' is not a "
                "loopback address (give interface=127.0.0.1 or ::1, or a unix: "
                "socket; or --admin-public to serve it there on purpose)"
            ),
            result.stdout,
        )
