# -*- test-case-name: tests.test_client_main -*-
"""
C{sockecho-client} (also C{python -m twisted_echo.client}): argument parsing
and dispatch to L{chat}, L{load}, L{check}, L{whoami}, L{records},
L{probe} and L{faultreport} (C{faults}).

Exit status: 0 on success; 1 when a check or load run fails, the connection
fails or ends badly; 2 for a bad option or endpoint string. Errors are one
line on standard error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from twisted.internet.task import react

from twisted_echo.client.check import DEFAULT_TIMEOUT
from twisted_echo.client.contracts import SERVICES
from twisted_echo.client.errors import ClientError, ClientUsageError
from twisted_echo.client.faultreport import add_faults_command, run_faults_command
from twisted_echo.client.load import MAX_DATAGRAM, MODES, LoadConfig
from twisted_echo.client.probe import add_probe_command, run_probe_command
from twisted_echo.client.records import add_records_command, run_records_command
from twisted_echo.client.tls import TLSSettings, is_tls_endpoint
from twisted_echo.client.websocket import is_websocket_url
from twisted_echo.client.ws_check import DEFAULT_MAX_MESSAGE

PROG = "sockecho-client"


class _Parser(argparse.ArgumentParser):
    """
    An argument parser whose errors are one line, not a usage block.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, not {text!r}")
    return value


def _size(text: str) -> int:
    """
    @return: C{text} as bytes: a whole number, or with a suffix C{K} or
        C{M} (KiB, MiB).
    """
    units = {"K": 1024, "M": 1024 * 1024}
    number, unit = text.strip(), 1
    if number[-1:].upper() in units:
        number, unit = number[:-1], units[number[-1:].upper()]
    try:
        value = int(number) * unit
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a size in bytes (e.g. 1048576, 64K, 1M), not {text!r}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    """
    @return: the parser of C{sockecho-client}'s command line.
    """
    parser = _Parser(
        prog=PROG,
        description="Client for the sockecho services and any RFC 862 echo server. "
        "ENDPOINT is a Twisted client endpoint string (tcp:HOST:PORT, "
        "tcp6:..., unix:PATH), ssl:HOST:PORT (TLS), udp:HOST:PORT, or a "
        "WebSocket URL ws://HOST:PORT/PATH or wss://HOST:PORT/PATH (chat, "
        "load and check).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    tls = _Parser(add_help=False)
    tls_options = tls.add_argument_group(
        "TLS (ssl:HOST:PORT endpoints and wss:// URLs)",
        "The server's certificate is verified against the system's trust "
        "store and must name the host connected to.",
    )
    tls_options.add_argument(
        "--ca",
        metavar="FILE",
        default=None,
        help="trust the certificates of this PEM file instead of the system's",
    )
    tls_options.add_argument(
        "--insecure",
        action="store_true",
        help="accept any certificate, unverified (self-signed test certificates)",
    )
    tls_options.add_argument(
        "--servername",
        metavar="NAME",
        default=None,
        help="the name the certificate must be for, sent as SNI [the host]",
    )

    chat = commands.add_parser(
        "chat",
        parents=[tls],
        help="interactive, like telnet or nc",
        description="Send standard "
        "input, print replies; at end of input half-close and print what is "
        "still owed. With udp:, each line is one datagram; with ws:// or "
        "wss://, each line is one text message (--binary: binary) and each "
        "message received is printed.",
    )
    chat.add_argument("endpoint", metavar="ENDPOINT")
    chat.add_argument(
        "--binary",
        action="store_true",
        help="ws://, wss://: send each line (with its newline) as a binary "
        "message, not text",
    )
    chat.add_argument(
        "--wait",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="udp: seconds to wait at end of input for replies [%(default)s]",
    )
    chat.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="seconds to connect [%(default)s]",
    )

    load = commands.add_parser(
        "load",
        parents=[tls],
        help="many connections, every reply byte checked",
        description="Load a service and check every reply byte against its "
        "contract; exit 1 on any error, mismatch or lost byte.",
    )
    load.add_argument("endpoint", metavar="ENDPOINT")
    load.add_argument(
        "-c",
        "--connections",
        type=_positive_int,
        default=1,
        metavar="N",
        help="connections at once [%(default)s]",
    )
    load.add_argument(
        "-s",
        "--size",
        type=_positive_int,
        default=64,
        metavar="BYTES",
        help="request size [%(default)s]",
    )
    load.add_argument(
        "-d",
        "--duration",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="how long to start requests [%(default)s]",
    )
    load.add_argument(
        "-m",
        "--mode",
        choices=MODES,
        default="rr",
        help="rr, stream, connect or udp [%(default)s]",
    )
    load.add_argument(
        "--service",
        choices=SERVICES,
        default="echo",
        help="the contract replies are checked against [%(default)s]",
    )
    load.add_argument(
        "-n",
        "--requests",
        type=_positive_int,
        default=None,
        metavar="N",
        help="stop after N requests in all",
    )
    load.add_argument(
        "--banner",
        default=None,
        metavar="TEXT",
        help="welcome: the exact banner expected [any line]",
    )
    load.add_argument(
        "--timeout",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="to connect, and to wait for owed "
        "replies after the duration [%(default)s]",
    )
    load.add_argument(
        "--rate",
        type=_positive_float,
        default=None,
        metavar="MESSAGES",
        help="ws://, wss://: at most this many messages per second over all "
        "connections [as fast as echoes come]",
    )
    load.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object instead of the report",
    )

    check = commands.add_parser(
        "check",
        parents=[tls],
        help="RFC 862 conformance run",
        description="Check an RFC 862 echo server: binary transparency, "
        "concurrent clients, half-close with large payloads, and with --udp "
        "the largest datagram. Exit 1 on any FAIL.",
    )
    check.add_argument("endpoint", metavar="ENDPOINT")
    check.add_argument(
        "--udp",
        default=None,
        metavar="ENDPOINT",
        help="udp:HOST:PORT of a UDP echo server to check too",
    )
    check.add_argument(
        "--max-message",
        type=_size,
        default=DEFAULT_MAX_MESSAGE,
        metavar="BYTES",
        help="ws://, wss://: the server's message size limit; a message one "
        "byte longer must be refused with close 1009 (0: no limit, row left "
        "out) [%(default)s]",
    )
    check.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="per check [%(default)s]",
    )
    check.add_argument(
        "--json", action="store_true", help="print a JSON list instead of the table"
    )
    whoami = commands.add_parser(
        "whoami",
        parents=[tls],
        help="ask a sockecho whoami service how it sees you",
        description="Ask a whoami service (stream endpoint or udp:HOST:PORT) "
        "how it sees this client; with --count N, how a load balancer spreads "
        "N connections over its backends.",
    )
    whoami.add_argument("endpoint", metavar="ENDPOINT")
    whoami.add_argument(
        "--count",
        type=_positive_int,
        default=1,
        metavar="N",
        help="ask N times and count the answers per backend [%(default)s]",
    )
    whoami.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="seconds for each answer [%(default)s]",
    )
    whoami.add_argument(
        "--json", action="store_true", help="print the answers as a JSON list"
    )
    add_records_command(commands)
    add_probe_command(commands)
    add_faults_command(commands, [tls])
    return parser


def tls_settings(args: argparse.Namespace) -> TLSSettings | None:
    """
    @param args: parsed arguments of a command.
    @return: the TLS settings they give, or C{None} when they give none.
    @raise ClientUsageError: when they are given for an endpoint that is
        not C{ssl:}, or contradict each other.
    """
    if args.ca is None and not args.insecure and args.servername is None:
        return None
    secure_url = args.endpoint.strip().lower().startswith("wss://")
    if not is_tls_endpoint(args.endpoint) and not secure_url:
        raise ClientUsageError(
            "--ca, --insecure and --servername are for ssl: endpoints and "
            "wss:// URLs, not "
            f"{args.endpoint!r}"
        )
    if args.ca is not None and args.insecure:
        raise ClientUsageError("--ca and --insecure contradict each other")
    return TLSSettings(
        ca_file=args.ca, insecure=args.insecure, server_name=args.servername
    )


def load_config(args: argparse.Namespace) -> LoadConfig:
    """
    @param args: parsed C{load} arguments.
    @return: the run they describe.
    @raise ClientUsageError: for options that do not go together.
    """
    if is_websocket_url(args.endpoint):
        return _websocket_load_config(args)
    if args.rate is not None:
        raise ClientUsageError("--rate is for ws:// and wss:// loads")
    is_udp = args.endpoint.strip().lower().startswith("udp:")
    if (args.mode == "udp") != is_udp:
        raise ClientUsageError(
            "--mode udp needs a udp:HOST:PORT endpoint, and a udp: endpoint "
            f"needs --mode udp (got --mode {args.mode} {args.endpoint!r})"
        )
    if args.mode == "udp" and args.service != "echo":
        raise ClientUsageError("--mode udp checks UDP echo only (--service echo)")
    if args.mode == "udp" and args.size > MAX_DATAGRAM:
        raise ClientUsageError(
            f"--size {args.size} is over a datagram's {MAX_DATAGRAM}"
        )
    return LoadConfig(
        endpoint=args.endpoint,
        connections=args.connections,
        size=args.size,
        duration=args.duration,
        mode=args.mode,
        service=args.service,
        max_requests=args.requests,
        timeout=args.timeout,
        banner=args.banner.encode("utf-8") if args.banner is not None else None,
        tls=tls_settings(args),
    )


def _websocket_load_config(args: argparse.Namespace) -> LoadConfig:
    if args.mode != "rr" or args.service != "echo" or args.banner is not None:
        raise ClientUsageError(
            "a ws:// or wss:// load is its own mode (one message in flight "
            "per connection, echo): leave out --mode, --service and --banner"
        )
    return LoadConfig(
        endpoint=args.endpoint,
        connections=args.connections,
        size=args.size,
        duration=args.duration,
        mode="websocket",
        service="echo",
        max_requests=args.requests,
        timeout=args.timeout,
        tls=tls_settings(args),
    )


async def dispatch(reactor: Any, args: argparse.Namespace) -> int:
    """
    Run the command C{args} names.

    @return: the exit status.
    @raise ClientError: for errors the user caused.
    """
    websocket = is_websocket_url(args.endpoint)
    if args.command == "chat" and websocket:
        from twisted_echo.client.ws_chat import run_websocket_chat

        return await run_websocket_chat(
            reactor, args.endpoint, args.timeout, args.binary, tls=tls_settings(args)
        )
    if args.command == "chat":
        if args.binary:
            raise ClientUsageError("--binary is for ws:// and wss:// chats")
        from twisted_echo.client.chat import run_chat

        return await run_chat(
            reactor, args.endpoint, args.wait, args.timeout, tls=tls_settings(args)
        )
    if args.command == "whoami":
        from twisted_echo.client.whoami import run_whoami

        return await run_whoami(
            reactor,
            args.endpoint,
            args.count,
            args.timeout,
            sys.stdout,
            args.json,
            tls=tls_settings(args),
        )
    if args.command == "records":
        return await run_records_command(reactor, args)
    if args.command == "probe":
        return await run_probe_command(reactor, args)
    if args.command == "faults":
        return await run_faults_command(reactor, args, tls_settings(args))
    if args.command == "load":
        from twisted_echo.client.load import run_load

        return await run_load(
            reactor, load_config(args), args.json, sys.stdout, rate=args.rate
        )
    if websocket:
        if args.udp:
            raise ClientUsageError("--udp goes with a stream endpoint, not a ws:// URL")
        from twisted_echo.client.ws_check import run_websocket_check

        return await run_websocket_check(
            reactor,
            args.endpoint,
            args.timeout,
            sys.stdout,
            args.json,
            tls=tls_settings(args),
            max_message=args.max_message,
        )
    from twisted_echo.client.check import run_check

    return await run_check(
        reactor,
        args.endpoint,
        args.udp,
        args.timeout,
        sys.stdout,
        args.json,
        tls=tls_settings(args),
    )


async def _main(reactor: Any, args: argparse.Namespace) -> None:
    try:
        status = await dispatch(reactor, args)
    except ClientError as e:
        print(f"{PROG}: {e}", file=sys.stderr, flush=True)
        status = e.exit_status
    raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    The C{sockecho-client} console script.

    @param argv: the arguments (without the program name); C{sys.argv[1:]}
        if C{None}.
    @raise SystemExit: always, with the exit status.
    """
    args = build_parser().parse_args(argv)
    react(_main, (args,))


if __name__ == "__main__":
    main()
