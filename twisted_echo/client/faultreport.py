# -*- test-case-name: tests.test_client_faultreport -*-
"""
C{sockecho-client faults ENDPOINT}: what a plain client meets at an echo
server that misbehaves (sockecho's C{--faults}, docs/faults.md, or any
other), one connection at a time, in the vocabulary of docs/faults.md.

Over 500 lines: the blocking connection (connect, TLS, send, read, the
half-close probe: one method each) and the command's options, each with
its bounds; what a connection met and its words are in
L{twisted_echo.client.faultseen}.

Each connection connects, sends a known payload (seeded bytes), reads
the reply with a plain blocking socket (C{TCP_NODELAY}, one C{recv} per
segment seen), compares it byte for byte with what was sent and tells how
the connection ended:

 - C{clean}: the whole reply, intact; then our half-close (C{SHUT_WR},
   RFC 9293 section 3.6) was answered with EOF (over TLS: we close once
   the reply is in);
 - C{eof}: EOF (FIN) before the whole reply (C{close-after}, C{truncate});
 - C{half-close}: EOF before the whole reply, while the server still
   takes what we send (our writes after its EOF are not reset:
   C{half-close-after});
 - C{reset}: C{ECONNRESET} (C{reset-after});
 - C{stall}: our own timeout, no byte for that long (C{blackhole} when no
   byte came at all);
 - C{connect-timeout}: the connect (or the TLS handshake) timed out
   (C{refuse} with the backlog full);
 - C{refused}: C{ECONNREFUSED}, nothing listens;
 - C{error}: another error, said in words.

The socket work is plain Python (C{socket}, C{ssl}), so errors are the
ones any client gets (C{ConnectionResetError}, C{ssl.SSLEOFError}); it
runs in a thread of the reactor's pool, one connection after another.
"""

from __future__ import annotations

import errno
import json
import math
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import IO, Any

from twisted.internet.threads import deferToThreadPool

from twisted_echo.client.endpoints import StreamTarget, parse_stream_target
from twisted_echo.client.errors import ClientUsageError
from twisted_echo.client.faultseen import (
    MAX_KEPT,
    Observation,
    classify,
    format_report,
)
from twisted_echo.client.tls import TLSSettings

#: The largest payload, bytes: the client writes it all before it reads,
#: so it must fit the sockets' buffers of both ends (a server that echoes
#: while we write would otherwise fill them and wait on us).
MAX_SIZE = 64 * 1024
#: The most connections one run makes.
MAX_COUNT = 10_000
#: Bytes read per C{recv}.
READ_SIZE = 65536
#: Seconds between two writes that test whether a server that sent EOF
#: still reads (the first write after a full close is taken by the
#: kernel; its RST makes a later one fail).
WRITE_PROBE_EVERY = 0.05


@dataclass(frozen=True)
class FaultRunConfig:
    """
    One run of C{faults}.

    @ivar count: connections, one after another.
    @ivar size: payload bytes per connection, 1 to L{MAX_SIZE}.
    @ivar timeout: seconds without a byte (or without progress sending)
        after which the client gives up: a stall.
    @ivar connect_timeout: seconds to connect (and to finish a TLS
        handshake).
    @ivar slow: seconds; a first byte later than this is reported as a
        C{delay}.
    @ivar half_close_wait: seconds an EOF before the whole reply is
        tested for a half-close (our writes must fail within it for a
        full close).
    """

    count: int = 1
    size: int = 4096
    timeout: float = 5.0
    connect_timeout: float = 5.0
    slow: float = 0.1
    half_close_wait: float = 0.5


def payload_of(size: int) -> bytes:
    """
    @return: the C{size} bytes every run sends (seeded: the same each run).
    """
    return random.Random(862).randbytes(size)


def _context(settings: TLSSettings | None) -> ssl.SSLContext:
    settings = settings or TLSSettings()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if settings.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif settings.ca_file is not None:
        try:
            context.load_verify_locations(cafile=settings.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise ClientUsageError(
                f"--ca {settings.ca_file!r}: cannot read certificates: {e}"
            ) from None
    else:
        context.load_default_certs()
    return context


def _error_name(error: BaseException) -> str:
    code = getattr(error, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return errno.errorcode[code]
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


#: Linux's C{TCP_CLOSE}: the first byte of C{struct tcp_info} once the
#: connection was reset (after a FIN alone it is C{TCP_CLOSE_WAIT}, 8).
_TCP_CLOSE = 7


def _was_reset(sock: socket.socket) -> bool:
    """
    @return: whether the kernel says C{sock}'s connection was reset (TCP
        state C{CLOSE}, read with C{TCP_INFO}; L{False} where that
        cannot be read).
    """
    option = getattr(socket, "TCP_INFO", None)
    if option is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, option, 8)[0] == _TCP_CLOSE
    except OSError:
        return False


class _Connection:
    """
    One connection's exchange, blocking; fills an L{Observation}.
    """

    def __init__(
        self,
        target: StreamTarget,
        config: FaultRunConfig,
        payload: bytes,
        observation: Observation,
        context: ssl.SSLContext | None,
        server_name: str | None,
        preamble: bytes,
    ) -> None:
        self.target = target
        self.config = config
        self.payload = payload
        self.seen = observation
        self.context = context
        self.server_name = server_name
        self.preamble = preamble
        self.sock: Any = None
        self.last_segment: float | None = None

    def run(self) -> None:
        try:
            if not self._connect():
                return
            self._exchange()
        finally:
            if self.sock is not None:
                self.sock.close()

    def _connect(self) -> bool:
        seen, target = self.seen, self.target
        started = time.perf_counter()
        try:
            if target.kind == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock = sock
                sock.settimeout(self.config.connect_timeout)
                sock.connect(target.path)
            else:
                sock = socket.create_connection(
                    (target.host, target.port), timeout=self.config.connect_timeout
                )
                self.sock = sock
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError:
            seen.ending, seen.error = "connect-timeout", "timed out"
            return False
        except ConnectionRefusedError:
            seen.ending, seen.error = "refused", "ECONNREFUSED"
            return False
        except OSError as e:
            seen.ending, seen.error = "error", f"cannot connect: {_error_name(e)}"
            return False
        seen.connect = time.perf_counter() - started
        if self.preamble:
            try:
                self.sock.sendall(self.preamble)
            except OSError as e:
                seen.ending, seen.error = "error", f"cannot send: {_error_name(e)}"
                return False
        if self.context is None:
            return True
        started = time.perf_counter()
        try:
            self.sock = self.context.wrap_socket(
                self.sock,
                server_hostname=self.server_name,
                suppress_ragged_eofs=False,
            )
        except TimeoutError:
            seen.ending, seen.error = "connect-timeout", "TLS handshake timed out"
            return False
        except ConnectionResetError:
            seen.ending, seen.error = "reset", "ECONNRESET in the TLS handshake"
            return False
        except (OSError, ssl.SSLError) as e:
            seen.ending, seen.error = "error", f"TLS handshake: {_error_name(e)}"
            return False
        seen.handshake = time.perf_counter() - started
        return True

    def _exchange(self) -> None:
        seen, sock = self.seen, self.sock
        sock.settimeout(self.config.timeout)
        try:
            sock.sendall(self.payload)
        except TimeoutError:
            seen.ending, seen.error = "stall", "timed out sending"
            return
        except ConnectionResetError:
            seen.ending, seen.error = "reset", "ECONNRESET"
            return
        except OSError as e:
            seen.ending, seen.error = "error", f"cannot send: {_error_name(e)}"
            return
        seen.sent = len(self.payload)
        sent_at = time.perf_counter()
        half_closed = False
        while True:
            try:
                data = sock.recv(READ_SIZE)
            except TimeoutError:
                seen.ending = "stall"
                seen.error = f"no byte for {self.config.timeout:g} s"
                return
            except ConnectionResetError:
                seen.ending, seen.error = "reset", "ECONNRESET"
                return
            except ssl.SSLEOFError:
                # Python's ssl says EOF for a TCP RST under TLS too (its
                # SSL_read_ex's 0 is taken for an EOF): ask the kernel.
                if _was_reset(sock):
                    seen.ending, seen.error = "reset", "ECONNRESET"
                    return
                seen.close_notify = False
                data = b""
            except (OSError, ssl.SSLError) as e:
                seen.ending, seen.error = "error", _error_name(e)
                return
            if not data:
                break
            self._segment(data, sent_at)
            if self.context is not None and seen.received >= seen.sent:
                seen.ending = "clean"
                return
            if not half_closed and seen.received >= seen.sent:
                sock.shutdown(socket.SHUT_WR)
                half_closed = True
        if self.context is not None and seen.close_notify is None:
            seen.close_notify = True
        if half_closed:
            seen.ending = "clean"
            return
        seen.ending = "half-close" if self._still_reads() else "eof"

    def _segment(self, data: bytes, sent_at: float) -> None:
        seen = self.seen
        now = time.perf_counter()
        if seen.first_byte is None:
            seen.first_byte = now - sent_at
        elif len(seen.gaps) < MAX_KEPT and self.last_segment is not None:
            seen.gaps.append(now - self.last_segment)
        self.last_segment = now
        if len(seen.segments) < MAX_KEPT:
            seen.segments.append(len(data))
        start = seen.received
        expected = self.payload[start : start + len(data)]
        if data[: len(expected)] != expected:
            for index, (got, want) in enumerate(zip(data, expected, strict=False)):
                if got != want:
                    seen.corrupted_count += 1
                    if len(seen.corrupted) < MAX_KEPT:
                        seen.corrupted.append(start + index)
        seen.received += len(data)

    def _still_reads(self) -> bool:
        """
        After an early EOF: write a byte now and then for
        C{half_close_wait} seconds. A server that closed both ways answers
        the first with a RST, and a later write fails; one that only shut
        its sending side takes them.

        @return: whether every write was taken.
        """
        deadline = time.monotonic() + self.config.half_close_wait
        while True:
            try:
                self.sock.send(b"\0")
            except OSError:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(WRITE_PROBE_EVERY, left))


def observe(
    target: StreamTarget,
    config: FaultRunConfig,
    number: int = 1,
    tls: TLSSettings | None = None,
    preamble: bytes = b"",
) -> Observation:
    """
    Make one connection and say what it met (blocking: run it in a
    thread).

    @param target: where to connect.
    @param number: the connection's number in the run.
    @param tls: how an C{ssl} target's certificate is checked.
    @param preamble: bytes sent before the TLS handshake and the payload,
        not counted (a PROXY protocol header, for tests).
    @return: the observation, with C{seen} filled by L{classify}.
    @raise ClientUsageError: the C{--ca} file cannot be read.
    """
    observation = Observation(number)
    context = _context(tls) if target.kind == "ssl" else None
    server_name = None
    if context is not None:
        server_name = (tls and tls.server_name) or target.server_name or target.host
    _Connection(
        target,
        config,
        payload_of(config.size),
        observation,
        context,
        server_name,
        preamble,
    ).run()
    observation.seen = classify(observation, config.slow)
    return observation


def run_observations(
    target: StreamTarget,
    config: FaultRunConfig,
    tls: TLSSettings | None = None,
    preamble: bytes = b"",
) -> list[Observation]:
    """
    Make C{config.count} connections, one after another (blocking).

    @return: one L{Observation} each.
    """
    return [
        observe(target, config, number, tls, preamble)
        for number in range(1, config.count + 1)
    ]


async def run_faults(
    reactor: Any,
    description: str,
    config: FaultRunConfig,
    stdout: IO[str],
    json_output: bool = False,
    tls: TLSSettings | None = None,
) -> int:
    """
    Run C{faults} against C{description} and print the report.

    @param reactor: the running reactor (its thread pool runs the
        blocking sockets).
    @param description: C{tcp:}, C{tcp6:}, C{unix:} or C{ssl:} endpoint.
    @param stdout: where the report (or JSON) goes.
    @param json_output: print one JSON object instead of the text.
    @param tls: how an C{ssl:} server's certificate is checked.
    @return: the exit status: 0 when every connection was clean, 1 when
        any met a fault (or could not connect).
    @raise ClientUsageError: a bad endpoint or C{--ca} file.
    """
    target = parse_stream_target(description)
    if target.kind == "ssl":
        _context(tls)  # a bad --ca is a usage error before any connection
    results: list[Observation] = await deferToThreadPool(
        reactor,
        reactor.getThreadPool(),
        run_observations,
        target,
        config,
        tls,
    )
    faulted = sum(bool(seen.seen) for seen in results)
    if json_output:
        report = {
            "endpoint": description,
            "size": config.size,
            "timeout": config.timeout,
            "connections": [asdict(seen) for seen in results],
            "faulted": faulted,
        }
        print(json.dumps(report), file=stdout, flush=True)
    else:
        print(
            format_report(description, config.size, config.timeout, results),
            file=stdout,
            flush=True,
        )
    return 1 if faulted else 0


def _number(kind: type, low: float, high: float, what: str) -> Callable[[str], Any]:
    import argparse

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high or value == math.inf:
            raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}")
        return value

    return parse


def add_faults_command(commands: Any, parents: list[Any]) -> None:
    """
    Add C{faults} to C{sockecho-client}'s subcommands (an C{argparse}
    subparsers object).

    @param parents: parsers whose options it shares (the TLS options).
    """
    faults = commands.add_parser(
        "faults",
        parents=parents,
        help="report the faults a plain client meets (reset, stall, ...)",
        description="Connect to an echo server (tcp:, tcp6:, unix:, ssl:) "
        "COUNT times, one after another; each time send a known payload, "
        "read the reply and report what was met in docs/faults.md's terms: "
        "time to connect and to the first byte, bytes back of sent, segment "
        "sizes and gaps, corrupted offsets, and how it ended (clean, EOF, "
        "half-close, ECONNRESET, stall on our timeout, connect timeout, "
        "refused). Exit 0 when every connection was clean, 1 when a fault "
        "was met, 2 for a bad option.",
    )
    faults.add_argument("endpoint", metavar="ENDPOINT")
    faults.add_argument(
        "--count",
        type=_number(int, 1, MAX_COUNT, f"1 to {MAX_COUNT}"),
        default=1,
        metavar="N",
        help="connections, one after another [%(default)s]",
    )
    faults.add_argument(
        "--size",
        type=_number(int, 1, MAX_SIZE, f"1 to {MAX_SIZE} bytes"),
        default=FaultRunConfig.size,
        metavar="BYTES",
        help=f"payload per connection, at most {MAX_SIZE} [%(default)s]",
    )
    faults.add_argument(
        "--timeout",
        type=_number(float, 1e-3, 3600, "0.001 to 3600 seconds"),
        default=FaultRunConfig.timeout,
        metavar="SECONDS",
        help="our own timeout: no byte for this long is a stall [%(default)s]",
    )
    faults.add_argument(
        "--connect-timeout",
        type=_number(float, 1e-3, 3600, "0.001 to 3600 seconds"),
        default=FaultRunConfig.connect_timeout,
        metavar="SECONDS",
        help="seconds to connect and finish a TLS handshake [%(default)s]",
    )
    faults.add_argument(
        "--slow",
        type=_number(float, 0, 3600, "0 to 3600 seconds"),
        default=FaultRunConfig.slow,
        metavar="SECONDS",
        help="a first byte later than this is reported as a delay [%(default)s]",
    )
    faults.add_argument(
        "--half-close-wait",
        type=_number(float, 0, 60, "0 to 60 seconds"),
        default=FaultRunConfig.half_close_wait,
        metavar="SECONDS",
        help="after an early EOF, how long our writes must keep being "
        "taken for a half-close [%(default)s]",
    )
    faults.add_argument(
        "--json", action="store_true", help="print one JSON object instead"
    )


async def run_faults_command(reactor: Any, args: Any, tls: TLSSettings | None) -> int:
    """
    Run C{faults} with its parsed C{args}.

    @return: the exit status.
    @raise ClientUsageError: for a bad endpoint.
    """
    import sys

    config = FaultRunConfig(
        count=args.count,
        size=args.size,
        timeout=args.timeout,
        connect_timeout=args.connect_timeout,
        slow=args.slow,
        half_close_wait=args.half_close_wait,
    )
    return await run_faults(reactor, args.endpoint, config, sys.stdout, args.json, tls)
