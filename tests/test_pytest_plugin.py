"""
Tests for L{twisted_echo.testing.pytest_plugin}, as its users meet it: pytest runs
(in a subprocess, by pytester) of test files that use the C{sockecho}
fixtures with nothing but the installed package, from blocking, asyncio and
pytest-twisted tests; start-up failures are one clear error within the
bounded time.

The tests are methods of a L{unittest.TestCase} given pytester by an
autouse fixture: a plain test function would make pytest-twisted start its
reactor for the rest of the session, which trial's test cases (most of this
suite) cannot share. Under trial, which has no pytester, they are skipped.
"""

from __future__ import annotations

import unittest

import pytest

pytest_plugins = ["pytester"]


def run(
    pytester: pytest.Pytester, *args: str, timeout: float = 120
) -> pytest.RunResult:
    """
    Run pytest in a subprocess, failing the test past C{timeout} seconds.
    """
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", *args, timeout=timeout
    )


class PluginTests(unittest.TestCase):
    _pytester: pytest.Pytester | None = None

    @pytest.fixture(autouse=True)
    def _use_pytester(self, pytester: pytest.Pytester) -> None:
        self._pytester = pytester

    def given_pytester(self) -> pytest.Pytester:
        """
        @return: pytest's pytester; under trial, the test is skipped.
        """
        if self._pytester is None:
            self.skipTest("pytest's pytester runs these: pytest " + __file__)
        assert self._pytester is not None
        return self._pytester

    def test_fixture(self) -> None:
        """
        C{sockecho}: every service on a free port of 127.0.0.1, as tuples and
        endpoint strings, answering a blocking-socket test and an asyncio one;
        stopped after the test.
        """
        pytester = self.given_pytester()
        pytester.makepyfile(
            """
            import asyncio, os, socket

            def exchange(address, data):
                with socket.create_connection(address, timeout=10) as sock:
                    sock.sendall(data)
                    sock.shutdown(socket.SHUT_WR)
                    return b"".join(iter(lambda: sock.recv(65536), b""))

            def test_blocking(sockecho):
                host, port = sockecho.echo
                assert host == "127.0.0.1" and port != 0
                assert sockecho.echo_endpoint == f"tcp:127.0.0.1:{port}"
                assert sockecho.udp_endpoint == f"udp:127.0.0.1:{sockecho.udp[1]}"
                assert exchange(sockecho.echo, b"Hello, world") == b"Hello, world"
                assert exchange(sockecho.upper, "straße".encode()) == b"STRASSE"
                assert exchange(sockecho.welcome, b"hi\\n").endswith(b"OK...hi\\r\\n")
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.settimeout(10)
                    sock.sendto(b"ping", sockecho.udp)
                    assert sock.recvfrom(10) == (b"ping", sockecho.udp)
                open("pid", "w").write(str(sockecho.pid))

            def test_asyncio(sockecho):
                async def main():
                    reader, writer = await asyncio.open_connection(*sockecho.echo)
                    writer.write(b"async")
                    writer.write_eof()
                    data = await reader.read()
                    writer.close()
                    return data
                assert asyncio.run(asyncio.wait_for(main(), 10)) == b"async"

            def test_stopped_after():
                os.kill(int(open("pid").read()), 0)
            """
        )
        result = run(pytester)
        result.assert_outcomes(passed=2, failed=1)
        result.stdout.fnmatch_lines(["*test_stopped_after*ProcessLookupError*"])

    def test_pytest_twisted(self) -> None:
        """
        A pytest-twisted test reaches the fixture's server with a Twisted
        client built from its endpoint string; the plugin does not disturb
        pytest-twisted's reactor.
        """
        pytester = self.given_pytester()
        pytest.importorskip("pytest_twisted")
        pytester.makepyfile(
            """
            import pytest_twisted
            from twisted.internet import reactor
            from twisted.internet.endpoints import clientFromString
            from twisted.internet.protocol import Protocol, Factory
            from twisted.internet.defer import Deferred

            class Once(Protocol):
                def connectionMade(self):
                    self.got = b""
                    self.done = Deferred()
                    self.transport.write(b"twisted")
                def dataReceived(self, data):
                    self.got += data
                    if len(self.got) == 7:
                        self.transport.loseConnection()
                        self.done.callback(self.got)

            @pytest_twisted.inlineCallbacks
            def test_twisted(sockecho):
                endpoint = clientFromString(reactor, sockecho.upper_endpoint)
                protocol = yield endpoint.connect(Factory.forProtocol(Once))
                got = yield protocol.done
                assert got == b"TWISTED"
            """
        )
        run(pytester).assert_outcomes(passed=1)

    def test_factory(self) -> None:
        """
        C{sockecho_factory}: options as arguments and keywords (banner, limits,
        whoami, TLS), several servers in one test.
        """
        pytester = self.given_pytester()
        pytester.makepyfile(
            """
            import json, socket, ssl

            def read_all(address):
                with socket.create_connection(address, timeout=10) as sock:
                    sock.shutdown(socket.SHUT_WR)
                    return b"".join(iter(lambda: sock.recv(65536), b""))

            def test_options(sockecho_factory):
                server = sockecho_factory("--max-line", "8", banner="Hey", whoami=True)
                other = sockecho_factory(no_upper=True)
                assert server.echo != other.echo
                assert "upper" not in other.listeners
                assert read_all(server.welcome) == b"Hey\\r\\n"
                assert json.loads(read_all(server.whoami))["service"] == "whoami"
                with socket.create_connection(server.welcome, timeout=10) as sock:
                    sock.sendall(b"x" * 20 + b"\\n")
                    reply = b"".join(iter(lambda: sock.recv(65536), b""))
                assert b"ERROR" in reply

            def test_tls(sockecho_factory):
                server = sockecho_factory(tls=True)
                assert server.echo_endpoint.startswith("ssl:127.0.0.1:")
                context = ssl.create_default_context(cafile=server.ca_file)
                with socket.create_connection(server.echo, timeout=10) as raw:
                    with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                        tls.sendall(b"secret")
                        assert tls.recv(10) == b"secret"
            """
        )
        run(pytester).assert_outcomes(passed=2)

    def test_session(self) -> None:
        """
        C{sockecho_session} is one server for every test of the session (in
        several modules); C{sockecho_session_factory} makes session-scoped
        fixtures of one's own.
        """
        pytester = self.given_pytester()
        pytester.makeconftest(
            """
            import pytest

            @pytest.fixture(scope="session")
            def quiet_server(sockecho_session_factory):
                return sockecho_session_factory(banner="shh")
            """
        )
        body = """
            def test_one(sockecho_session, quiet_server):
                open("pids", "a").write(f"{sockecho_session.pid} {quiet_server.pid}\\n")

            def test_two(sockecho_session, quiet_server):
                open("pids", "a").write(f"{sockecho_session.pid} {quiet_server.pid}\\n")
            """
        pytester.makepyfile(test_a=body, test_b=body)
        run(pytester).assert_outcomes(passed=4)
        pids = (pytester.path / "pids").read_text().splitlines()
        assert len(pids) == 4 and len(set(pids)) == 1, pids
        first, second = pids[0].split()
        assert first != second

    def test_session_records_reset(self) -> None:
        """
        A session server's records are reset before each test (each sees
        its own connection only); one without records (C{--records 0}:
        its C{/records} answers 501) does not fail the tests that do not
        ask for them, and tells the one that does why.
        """
        pytester = self.given_pytester()
        pytester.makeconftest(
            """
            import pytest

            @pytest.fixture(scope="session")
            def workers(sockecho_session_factory):
                return sockecho_session_factory(records=0)
            """
        )
        pytester.makepyfile(
            """
            import socket

            def connect(server):
                with socket.create_connection(server.echo, timeout=10) as sock:
                    sock.shutdown(socket.SHUT_WR)
                    sock.recv(10)

            def test_one(sockecho_session, workers):
                connect(sockecho_session)
                assert len(sockecho_session.wait_for(1)) == 1

            def test_two(sockecho_session, workers):
                connect(sockecho_session)
                connect(sockecho_session)
                assert len(sockecho_session.wait_for(2)) == 2
                assert len(sockecho_session.records()) == 2

            def test_workers(workers):
                workers.records()
            """
        )
        result = run(pytester)
        result.assert_outcomes(passed=2, failed=1)
        result.stdout.fnmatch_lines(["*answered 501: no connection records here*"])

    def test_busy_port(self) -> None:
        """
        A server that cannot start (a busy port) fails the test with one clear
        error: the server's own line and its last log lines, no traceback.
        """
        pytester = self.given_pytester()
        pytester.makepyfile(
            """
            import socket

            def test_busy(sockecho_factory):
                with socket.socket() as busy:
                    busy.bind(("127.0.0.1", 0))
                    busy.listen()
                    port = busy.getsockname()[1]
                    sockecho_factory("--echo", f"tcp:{port}:interface=127.0.0.1")
            """
        )
        result = run(pytester)
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(
            [
                "*sockecho exited with status 1 before listening: sockecho: cannot "
                "listen on tcp:*:interface=127.0.0.1: address already in use",
                "*its last log lines:",
                "*reactor class:*",
            ]
        )
        result.stdout.no_fnmatch_line("*Traceback*")
        result.stdout.no_fnmatch_line("*another exception occurred*")
        result.stdout.no_fnmatch_line("*spawn.py*")

    def test_bad_option_in_fixture(self) -> None:
        """
        A bad option in a fixture of one's own: an error at set-up naming it.
        """
        pytester = self.given_pytester()
        pytester.makepyfile(
            """
            import pytest

            @pytest.fixture
            def server(sockecho_factory):
                return sockecho_factory(max_line="many")

            def test_uses(server):
                pass
            """
        )
        result = run(pytester)
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(
            ["*--max-line takes a positive number of bytes, not 'many'"]
        )

    def test_startup_timeout(self) -> None:
        """
        The start-up timeout is bounded and configurable (ini option
        C{sockecho_startup_timeout}): past it, the test fails, quickly.
        """
        pytester = self.given_pytester()
        pytester.makeini("[pytest]\nsockecho_startup_timeout = 0.05\n")
        pytester.makepyfile(
            """
            def test_slow(sockecho):
                pass
            """
        )
        result = run(pytester, timeout=60)  # quickly: a deadline, not a timing
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(
            ["*sockecho did not start listening within 0.05 s*"]
        )

    def test_unused(self) -> None:
        """
        A session that uses no fixture of the plugin imports no Twisted.
        """
        pytester = self.given_pytester()
        pytester.makepyfile(
            """
            import sys

            def test_nothing():
                assert not [m for m in sys.modules if m.startswith("twisted.internet")]
            """
        )
        run(pytester, "-p", "no:twisted").assert_outcomes(passed=1)
