# -*- test-case-name: tests.test_pytest_plugin -*-
"""
pytest fixtures giving a test a real sockecho on free ports of 127.0.0.1,
installed with the package (the C{pytest11} entry point C{sockecho}):

 - C{sockecho}: a server with every service, for one test;
 - C{sockecho_factory}: C{sockecho_factory(*options, startup_timeout=...,
   tls=..., **keywords)} starts servers with other options, each stopped
   after the test (L{twisted_echo.testing.spawn.start_sockecho} says which);
 - C{sockecho_session} and C{sockecho_session_factory}: the same, shared
   by every test of the session, stopped at its end.

Each server is a L{twisted_echo.testing.spawn.SockechoProcess}: C{.echo},
C{.upper}, C{.welcome}, C{.udp} are C{(host, port)}, C{.echo_endpoint}
and the others endpoint strings; C{.records()}, C{.wait_for(n)},
C{.assert_no_connections()} and C{.expect_close(cause)} assert on the
connections it saw during the current test
(L{twisted_echo.testing.records}): a session server's records are reset
before each test (the last record's number is remembered; no restart).
It runs in its own process, so blocking, asyncio and Twisted
(pytest-twisted, trial) tests can all use it. A server that does not
start within the start-up timeout (10 s, or the ini option
C{sockecho_startup_timeout}) fails the test with one message quoting its
last log lines.

Loading this module costs nothing when its fixtures are unused: it imports
no Twisted, installs no reactor and adds no hook but an ini option.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from twisted_echo.testing.spawn import (
    DEFAULT_STARTUP_TIMEOUT,
    SockechoProcess,
    StartError,
    start_sockecho,
)

#: The ini option giving the default start-up timeout, in seconds.
STARTUP_TIMEOUT_INI = "sockecho_startup_timeout"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        STARTUP_TIMEOUT_INI,
        "Seconds a sockecho fixture's server has to start listening "
        f"(default: {DEFAULT_STARTUP_TIMEOUT:g})",
        default=str(DEFAULT_STARTUP_TIMEOUT),
    )


#: The pools of session-scoped servers, whose records are reset before
#: each test (L{_sockecho_records_reset}).
_SESSION_POOLS: list[ServerPool] = []


class ServerPool:
    """
    Starts servers (L{start}) and stops them all (L{stop_all}).

    @ivar servers: the servers started and not yet stopped.
    """

    def __init__(self, startup_timeout: float) -> None:
        """
        @param startup_timeout: the default seconds each server has to
            start listening.
        """
        self.startup_timeout = startup_timeout
        self.servers: list[SockechoProcess] = []

    def reset_records(self) -> None:
        """
        Reset the records of every running server that serves them: the
        next test sees only its own connections.
        """
        for server in self.servers:
            if server.process.poll() is None and server.listeners.get("metrics"):
                try:
                    server.reset_records()
                except AssertionError:
                    # No records there (--records 0): the test
                    # that asks for them is told why; the others run.
                    pass

    def start(self, *options: str, **keywords: Any) -> SockechoProcess:
        """
        Start a server (L{start_sockecho}'s arguments); a start-up failure
        fails the calling test or fixture with the server's last log lines.

        @return: the running server.
        """
        keywords.setdefault("startup_timeout", self.startup_timeout)
        try:
            server = start_sockecho(*options, **keywords)
        except StartError as e:
            error = str(e)
        else:
            self.servers.append(server)
            return server
        # Outside the except clause: the report shows this one error alone.
        pytest.fail(error, pytrace=False)

    def stop_all(self) -> None:
        """
        Stop every server, with the drain, the last started first.
        """
        while self.servers:
            self.servers.pop().stop()


def _startup_timeout(config: pytest.Config) -> float:
    text = config.getini(STARTUP_TIMEOUT_INI)
    try:
        return float(text)
    except ValueError:
        raise pytest.UsageError(
            f"{STARTUP_TIMEOUT_INI} takes a number of seconds, not {text!r}"
        ) from None


@pytest.fixture
def sockecho_factory(
    pytestconfig: pytest.Config,
) -> Iterator[Callable[..., SockechoProcess]]:
    """
    Start sockecho servers with any options; each is stopped after the test.
    """
    pool = ServerPool(_startup_timeout(pytestconfig))
    yield pool.start
    pool.stop_all()


@pytest.fixture
def sockecho(
    sockecho_factory: Callable[..., SockechoProcess],
) -> SockechoProcess:
    """
    A sockecho with echo, upper, welcome and UDP echo on free ports of
    127.0.0.1, stopped after the test.
    """
    return sockecho_factory()


@pytest.fixture(scope="session")
def sockecho_session_factory(
    pytestconfig: pytest.Config,
) -> Iterator[Callable[..., SockechoProcess]]:
    """
    Start sockecho servers that live until the end of the session (for
    session-scoped fixtures of your own).
    """
    pool = ServerPool(_startup_timeout(pytestconfig))
    _SESSION_POOLS.append(pool)
    yield pool.start
    _SESSION_POOLS.remove(pool)
    pool.stop_all()


@pytest.fixture(autouse=True)
def _sockecho_records_reset() -> None:
    """
    Before each test, reset the records of the session's servers (one
    request to each; nothing when there are none).
    """
    for pool in _SESSION_POOLS:
        pool.reset_records()


@pytest.fixture(scope="session")
def sockecho_session(
    sockecho_session_factory: Callable[..., SockechoProcess],
) -> SockechoProcess:
    """
    One sockecho with every service, shared by every test of the session
    that asks for it.
    """
    return sockecho_session_factory()
