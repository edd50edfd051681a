# -*- test-case-name: tests.test_faults_profile -*-
"""
The fault profile grammar (docs/faults.md).

A profile is clauses separated by C{;}. A clause is a fault, its value and
its options, separated by C{,}; C{seed=N} is a clause of its own::

    latency=200ms,jitter=20ms;reset-after=1000,p=0.5;seed=42

Units: durations take C{ms} or C{s} (C{200ms}, C{1.5s}); sizes are bytes,
with an optional binary C{K} or C{M} (C{1000}, C{4K}); rates are bytes per
second, with decimal C{KB/s}, C{MB/s} or bits in C{kbit/s}, C{Mbit/s}
(C{100KB/s}, C{56kbit/s}); C{p=} is a probability, C{0.25} or C{25%}.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class ProfileError(ValueError):
    """
    A profile that does not parse; the message names the bad part.
    """


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s)")
_SIZE = re.compile(r"(\d+)([KM]?)", re.IGNORECASE)
_RATE = re.compile(
    r"(\d+(?:\.\d*)?|\.\d+)(?:(B|KB|MB)/s|(kbit|Mbit)/s)?", re.IGNORECASE
)
_RATE_UNITS = {"b": 1, "kb": 1000, "mb": 1_000_000, "kbit": 125, "mbit": 125_000}


def parse_duration(text: str) -> float:
    """
    @param text: C{200ms}, C{2s}, C{1.5s}.
    @return: seconds.
    @raise ValueError: if C{text} is not such a duration.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"a duration (200ms, 2s), not {text!r}")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def parse_bytes(text: str) -> int:
    """
    @param text: C{1000}, C{4K} (4096), C{1M}.
    @return: bytes.
    @raise ValueError: if C{text} is not such a size.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"a number of bytes (1000, 4K), not {text!r}")
    unit = {"": 1, "K": 1024, "M": 1 << 20}[match.group(2).upper()]
    return int(match.group(1)) * unit


def parse_rate(text: str) -> float:
    """
    @param text: C{7000} (bytes/s), C{100KB/s} (100,000 bytes/s),
        C{56kbit/s} (7,000 bytes/s), C{1MB/s}.
    @return: bytes per second, more than 0.
    @raise ValueError: if C{text} is not such a rate.
    """
    match = _RATE.fullmatch(text.strip())
    if match is None or not float(match.group(1)) > 0:
        raise ValueError(f"a rate (7000, 100KB/s, 56kbit/s), not {text!r}")
    unit = (match.group(2) or match.group(3) or "b").lower()
    return float(match.group(1)) * _RATE_UNITS[unit]


def parse_probability(text: str) -> float:
    """
    @param text: C{0.5} or C{50%}.
    @return: a probability, 0 to 1.
    @raise ValueError: if C{text} is not one.
    """
    given = text.strip()
    try:
        value = float(given[:-1]) / 100 if given.endswith("%") else float(given)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise ValueError(f"a probability (0.5, 50%), not {text!r}")
    return value


def parse_after(text: str) -> float | int:
    """
    @param text: a number of bytes (C{1000}) or a duration (C{2s}).
    @return: the bytes (C{int}) or seconds (C{float}).
    @raise ValueError: if C{text} is neither.
    """
    try:
        return parse_duration(text)
    except ValueError:
        pass
    try:
        return parse_bytes(text)
    except ValueError:
        raise ValueError(f"bytes (1000) or a duration (2s), not {text!r}") from None


def _positive(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def check(text: str) -> Any:
        value = parse(text)
        if not value > 0:
            raise ValueError(f"more than 0, not {text!r}")
        return value

    return check


def _direction(text: str) -> str:
    if text not in ("down", "up", "both"):
        raise ValueError(f"down, up or both, not {text!r}")
    return text


@dataclass(frozen=True)
class FaultKind:
    """
    What a fault takes.

    @ivar name: the fault's name in a profile.
    @ivar value: parses its value, or L{None} when it takes none.
    @ivar value_optional: whether the value may be left out.
    @ivar options: its options besides C{p=}, by name, with their parsers.
    @ivar per_connection: whether it is drawn per connection (C{p=}
        applies); L{False} for a listener's own fault (C{refuse}).
    """

    name: str
    value: Callable[[str], Any] | None
    value_optional: bool = False
    options: Mapping[str, Callable[[str], Any]] = field(default_factory=dict)
    per_connection: bool = True


#: Every fault a profile may name, by name.
KINDS: dict[str, FaultKind] = {
    kind.name: kind
    for kind in (
        FaultKind("delay", parse_duration),
        FaultKind("latency", parse_duration, options={"jitter": parse_duration}),
        FaultKind("bandwidth", parse_rate, options={"direction": _direction}),
        FaultKind("slice", _positive(parse_bytes), options={"gap": parse_duration}),
        FaultKind("close-after", parse_after),
        FaultKind("reset-after", parse_after),
        FaultKind("half-close-after", parse_bytes),
        FaultKind("blackhole", _positive(parse_duration), value_optional=True),
        FaultKind(
            "refuse",
            _positive(parse_duration),
            options={"every": _positive(parse_duration)},
            per_connection=False,
        ),
        FaultKind("corrupt", _positive(parse_bytes)),
        FaultKind("truncate", parse_bytes),
    )
}
#: Every fault a UDP listener's profile may name (each drawn per
#: datagram), by name.
DATAGRAM_KINDS: dict[str, FaultKind] = {
    kind.name: kind
    for kind in (
        FaultKind("loss", None),
        FaultKind("duplicate", _positive(parse_bytes), value_optional=True),
        FaultKind("reorder", _positive(parse_bytes)),
        FaultKind("latency", parse_duration, options={"jitter": parse_duration}),
        FaultKind("truncate", parse_bytes),
        FaultKind("corrupt", _positive(parse_bytes), value_optional=True),
    )
}


@dataclass(frozen=True)
class Fault:
    """
    One fault of a profile.

    @ivar name: its name (a key of L{KINDS}).
    @ivar value: its parsed value (seconds, bytes, bytes/s), or L{None}.
    @ivar options: its parsed options besides C{p}.
    @ivar p: the probability a connection gets it (1: every one).
    @ivar text: the clause as given, for log lines.
    """

    name: str
    value: Any
    options: Mapping[str, Any]
    p: float
    text: str

    def option(self, name: str, default: Any = None) -> Any:
        """
        @return: option C{name}'s value, or C{default}.
        """
        return self.options.get(name, default)


@dataclass(frozen=True)
class FaultProfile:
    """
    A parsed profile.

    @ivar faults: its faults, in the order given.
    @ivar seed: C{seed=}, or L{None} (then each listener picks one at
        random and logs it).
    @ivar text: the profile as given.
    @ivar datagram: whether it is a UDP listener's (L{DATAGRAM_KINDS}).
    """

    faults: tuple[Fault, ...]
    seed: int | None
    text: str
    datagram: bool = False

    def connection_faults(self) -> tuple[Fault, ...]:
        """
        @return: the faults drawn per connection (all but C{refuse}).
        """
        kinds = DATAGRAM_KINDS if self.datagram else KINDS
        return tuple(f for f in self.faults if kinds[f.name].per_connection)

    def listener_fault(self, name: str) -> Fault | None:
        """
        @return: the listener's fault C{name} (C{refuse}), or L{None}.
        """
        for fault in self.faults:
            if fault.name == name:
                return fault
        return None


def parse_profile(text: str, datagram: bool = False) -> FaultProfile:
    """
    Read a fault profile.

    @param text: e.g. C{latency=200ms,jitter=20ms;reset-after=1000,p=0.5;seed=42}.
    @param datagram: whether it is for a UDP listener (L{DATAGRAM_KINDS};
        C{p=} is then per datagram), else a TCP one (L{KINDS}).
    @return: the L{FaultProfile}.
    @raise ProfileError: naming the clause and the part at fault.
    """
    faults: list[Fault] = []
    seed: int | None = None
    seen: set[str] = set()
    for clause in text.split(";"):
        clause = clause.strip()
        if not clause:
            raise ProfileError("an empty clause (two ';' in a row, or one at an end)")
        head, *rest = [part.strip() for part in clause.split(",")]
        name, has_value, value_text = head.partition("=")
        name = name.strip()
        if name == "seed":
            if rest or not value_text.strip().isdigit():
                raise ProfileError(f"{clause!r}: seed takes a whole number (seed=42)")
            seed = int(value_text)
            continue
        kinds = DATAGRAM_KINDS if datagram else KINDS
        kind = kinds.get(name)
        if kind is None:
            where = "a UDP" if datagram else "a TCP"
            raise ProfileError(
                f"{clause!r}: unknown fault {name!r} for {where} listener "
                f"(one of {', '.join(kinds)}, seed)"
            )
        if name in seen:
            raise ProfileError(f"{clause!r}: {name} given twice")
        seen.add(name)
        value = None
        if kind.value is not None and (has_value or not kind.value_optional):
            value = _parse_part(clause, name, value_text, kind.value)
        elif kind.value is None and has_value:
            raise ProfileError(f"{clause!r}: {name} takes no value")
        options: dict[str, Any] = {}
        p = 1.0
        for part in rest:
            key, has, option_text = (s.strip() for s in part.partition("="))
            if not has:
                raise ProfileError(f"{clause!r}: {part!r} is not KEY=VALUE")
            if key == "p" and kind.per_connection:
                p = _parse_part(clause, "p", option_text, parse_probability)
            elif key in kind.options:
                options[key] = _parse_part(clause, key, option_text, kind.options[key])
            else:
                allowed = [*kind.options, *(["p"] if kind.per_connection else [])]
                raise ProfileError(
                    f"{clause!r}: {name} takes no {key}= "
                    f"(it takes {', '.join(allowed) or 'no options'})"
                )
        faults.append(Fault(name, value, options, p, clause))
    if not faults:
        raise ProfileError("no fault given (only seed=)")
    return FaultProfile(tuple(faults), seed, text, datagram)


def _parse_part(clause: str, name: str, text: str, parse: Callable[[str], Any]) -> Any:
    try:
        return parse(text)
    except ValueError as e:
        raise ProfileError(f"{clause!r}: {name} takes {e}") from None


__all__ = [
    "DATAGRAM_KINDS",
    "KINDS",
    "Fault",
    "FaultProfile",
    "ProfileError",
    "parse_profile",
]
