# -*- test-case-name: tests.test_optionvalues -*-
"""
The values C{twistd sockecho}'s options take: coercers for
L{twisted_echo.app.options.Options}' option table (C{usage.Options} calls
one with the text given and stores what it returns; a C{ValueError}
becomes a usage error naming the option) and the size format
(L{parse_size}, L{format_size}).

Each coercer's C{coerceDoc} is what C{--help} adds to the option's line.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from typing import Any

from twisted_echo.policies.loopguard import (
    DEFAULT_NEVER_ANSWER,
    format_ports,
    parse_ports,
)
from twisted_echo.services.websocket_deflate import DEFLATE_MODES
from twisted_echo.services.websocket_http import check_path

__all__ = [
    "ANY_SUBPROTOCOL",
    "count",
    "deflate_mode",
    "format_size",
    "message_rate",
    "number",
    "parse_size",
    "ports_file",
    "rate",
    "seconds",
    "size",
    "subprotocols",
    "typed",
    "udp_ports",
    "websocket_path",
    "workers",
]


def number(
    option: str, kind: Callable[[str], Any], minimum: float, what: str
) -> Callable[[str], Any]:
    """
    A C{usage.Options} coercer whose error names the option.

    @param option: the option's name, without C{--}.
    @param kind: reads the number (C{int}, C{float}).
    @param minimum: the smallest value taken.
    @param what: what the option takes, in words, for the error and
        C{--help}.
    @return: the coercer; it raises C{ValueError} naming C{--option} and
        the value for text that is not a finite number of at least
        C{minimum}.
    """

    def coerce(value: str) -> Any:
        try:
            parsed = kind(value)
        except ValueError:
            parsed = None
        if parsed is None or not math.isfinite(parsed) or parsed < minimum:
            raise ValueError(f"--{option} takes {what}, not {value!r}")
        return parsed

    coerce.coerceDoc = what[0].upper() + what[1:] + "."  # type: ignore[attr-defined]
    return coerce


def seconds(option: str) -> Callable[[str], Any]:
    """
    @return: a coercer for a duration in seconds, 0 or more (0: never).
    """
    return number(option, float, 0, "a number of seconds (0: never)")


def count(option: str, what: str) -> Callable[[str], Any]:
    """
    @param what: what is counted, plural (C{"connections"}).
    @return: a coercer for a count, 0 or more (0: no limit).
    """
    return number(option, int, 0, f"a number of {what} (0: no limit)")


def workers(value: str) -> int:
    """
    A coercer for C{--workers}: a positive number, or C{auto} for the CPUs
    this process may run on.
    """
    if value.strip().lower() == "auto":
        return len(os.sched_getaffinity(0))
    try:
        processes = int(value)
    except ValueError:
        processes = 0
    if processes < 1:
        raise ValueError(
            f"--workers takes a positive number of processes or auto, not {value!r}"
        )
    return processes


workers.coerceDoc = "A positive number, or auto."  # type: ignore[attr-defined]


def ports_file(value: str) -> str:
    """
    A coercer for C{--ports-file}: the path made absolute (twistd may
    change directory), in a directory that exists.
    """
    path = os.path.abspath(value)
    if not value or not os.path.isdir(os.path.dirname(path)):
        raise ValueError(
            f"--ports-file takes a file in a directory that exists, not {value!r}"
        )
    return path


ports_file.coerceDoc = "A path; its directory must exist."  # type: ignore[attr-defined]


SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """
    @param text: a size in bytes, with an optional binary suffix: C{65536},
        C{64K}, C{64M}, C{1G} (K = 1024 bytes; C{KiB}, C{MB} and lower case
        are read the same).
    @return: the size in bytes.
    @raise ValueError: if C{text} is not such a size.
    """
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(I?B)?\s*", text.upper())
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    return int(match.group(1)) * SIZE_SUFFIXES[match.group(2)]


def format_size(size: int) -> str:
    """
    @param size: a number of bytes.
    @return: C{size} as L{parse_size} reads it, with the largest binary
        suffix that divides it: C{64M}, C{256K}, C{1000}.
    """
    for suffix in ("G", "M", "K"):
        unit = SIZE_SUFFIXES[suffix]
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def typed(number: float) -> str:
    """
    @return: C{number} as a user would type it: C{300}, C{0.5}.
    """
    return f"{number:g}"


def size(option: str) -> Callable[[str], int]:
    """
    @return: a coercer for a size in bytes (L{parse_size}: C{64K},
        C{64M}; 0: no limit).
    """

    def coerce(value: str) -> int:
        try:
            return parse_size(value)
        except ValueError:
            raise ValueError(
                f"--{option} takes a size in bytes, with K, M or G "
                f"(0: no limit), not {value!r}"
            ) from None

    coerce.coerceDoc = "Bytes, or with K, M, G (binary); 0: no limit."  # type: ignore[attr-defined]
    return coerce


def rate(option: str) -> Callable[[str], Any]:
    """
    A coercer for C{RATE[/BURST]}: datagrams per second, and the burst in
    datagrams (default: one second's worth); C{0} for no limit.
    """

    def coerce(value: str) -> tuple[float, int]:
        rate_text, _, burst_text = value.partition("/")
        try:
            per_second = float(rate_text)
            burst = int(burst_text) if burst_text else max(1, math.ceil(per_second))
        except ValueError:
            per_second, burst = -1, 0
        if not (math.isfinite(per_second) and per_second >= 0 and burst >= 1):
            raise ValueError(
                f"--{option} takes RATE[/BURST] in datagrams per second "
                f"(0: no limit), not {value!r}"
            )
        return per_second, burst

    coerce.coerceDoc = "RATE[/BURST]: datagrams per second[/datagrams]; 0: none."  # type: ignore[attr-defined]
    return coerce


def udp_ports(option: str) -> Callable[[str], Any]:
    """
    A coercer for C{PORT[-PORT],...}: UDP ports and inclusive ranges
    (L{twisted_echo.policies.loopguard.parse_ports}); C{none} for none.
    """

    def coerce(value: str) -> frozenset[int]:
        try:
            return parse_ports(value)
        except ValueError as e:
            raise ValueError(
                f"--{option} takes comma-separated ports and ranges "
                f"(PORT[-PORT],...) or none, not {value!r}: {e}"
            ) from None

    default = format_ports(DEFAULT_NEVER_ANSWER)
    coerce.coerceDoc = f"PORT[-PORT],... or none [default: {default}]"  # type: ignore[attr-defined]
    return coerce


def websocket_path(value: str) -> str:
    """
    A coercer for C{--websocket-path} (L{check_path}).
    """
    return check_path(value)


websocket_path.coerceDoc = "An absolute URL path."  # type: ignore[attr-defined]


#: C{--websocket-subprotocols}' value for "accept the first offered".
ANY_SUBPROTOCOL = "*"

#: An HTTP token (RFC 9110 section 5.6.2).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def subprotocols(value: str) -> tuple[str, ...] | None:
    """
    A coercer for C{--websocket-subprotocols}: comma-separated tokens
    (RFC 6455 section 4.1: RFC 7230 tokens), or L{ANY_SUBPROTOCOL} for
    L{None} (any).
    """
    if value.strip() == ANY_SUBPROTOCOL:
        return None
    names = tuple(name.strip() for name in value.split(","))
    if not names or any(not _TOKEN.fullmatch(name) for name in names):
        raise ValueError(
            "--websocket-subprotocols takes comma-separated names (HTTP tokens), "
            f"not {value!r}"
        )
    return names


subprotocols.coerceDoc = "Names, comma-separated, or *."  # type: ignore[attr-defined]


def deflate_mode(value: str) -> str:
    """
    A coercer for C{--websocket-deflate}.
    """
    if value not in DEFLATE_MODES:
        raise ValueError(
            f"--websocket-deflate takes {', '.join(DEFLATE_MODES)}, not {value!r}"
        )
    return value


deflate_mode.coerceDoc = "receive, both or off."  # type: ignore[attr-defined]


def message_rate(value: str) -> tuple[float, int]:
    """
    A coercer for C{--websocket-max-messages-per-second}: C{RATE[/BURST]},
    messages per second and the burst in messages (default: one second's
    worth); C{0}: no limit.
    """
    rate_text, _, burst_text = value.partition("/")
    try:
        rate = float(rate_text)
        burst = int(burst_text) if burst_text else max(1, math.ceil(rate))
    except (ValueError, OverflowError):
        rate, burst = -1, 0
    if not (math.isfinite(rate) and rate >= 0 and burst >= 1):
        raise ValueError(
            "--websocket-max-messages-per-second takes RATE[/BURST] in messages "
            f"per second (0: no limit), not {value!r}"
        )
    return rate, burst


message_rate.coerceDoc = "RATE[/BURST]: messages per second[/messages]; 0: none."  # type: ignore[attr-defined]
