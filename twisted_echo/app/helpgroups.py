# -*- test-case-name: tests.test_helpgroups -*-
"""
How C{twistd sockecho --help} lists its options: under headings, listeners
first (L{help_groups}, L{HELP_GROUPS}), regrouping what
C{usage.Options.getUsage} writes (L{regroup}). The options themselves are
L{twisted_echo.app.options.Options}'.
"""

from __future__ import annotations

import re

from twisted_echo.app import registry

__all__ = ["HELP_GROUPS", "help_groups", "regroup"]


#: How C{--help} lists the options: C{(heading, options)} in order, listeners
#: first; an option named in none (C{--help}, C{--version}) comes last
#: under "Other", and a name that is no option is passed over.
def help_groups() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """
    @return: L{HELP_GROUPS} for the services registered now.
    """
    return (
        (
            "Listeners (endpoint strings; giving one replaces that service's "
            "default)",
            (
                *(s.name for s in registry.SERVICES),
                *(f"no-{s.name}" for s in registry.SERVICES if s.default is not None),
                "metrics",
                "ports-file",
            ),
        ),
        *_OTHER_HELP_GROUPS,
    )


_OTHER_HELP_GROUPS = (
    ("The welcome service", ("banner", "max-line")),
    (
        "The WebSocket service",
        (
            "websocket-path",
            "websocket-subprotocols",
            "websocket-max-message",
            "websocket-deflate",
            "websocket-handshake-timeout",
            "websocket-max-messages-per-second",
        ),
    ),
    (
        "Limits",
        (
            "max-connections",
            "max-per-peer",
            "max-buffer",
            "backlog",
            "udp-rate",
            "udp-global-rate",
            "udp-never-answer",
            "udp-flow-window",
            "udp-flows",
            "metrics-max-connections",
        ),
    ),
    (
        "Timeouts, in seconds",
        (
            "idle-timeout",
            "stall-timeout",
            "line-timeout",
            "handshake-timeout",
            "drain-timeout",
            "drain-delay",
            "metrics-request-timeout",
        ),
    ),
    ("Running", ("workers", "log-format", "log-level", "records", "record-bytes")),
    ("Faults, on purpose (docs/faults.md)", ("faults", "admin", "admin-public")),
)
HELP_GROUPS = help_groups()
#: The first line of an option's entry in C{usage.Options}' help.
_HELP_ENTRY = re.compile(r"^(?:  -\w, |      )--([\w-]+)")


def regroup(text: str) -> str:
    """
    Group C{usage.Options}' help as L{help_groups} says, listeners first;
    options in no group come last under "Other".

    @param text: the help C{usage.Options.getUsage} wrote (C{"Options:"},
        then one entry per option, then a blank line and the rest).
    @return: the same entries under their headings, then the rest; C{text}
        unchanged if it does not start with C{"Options:"}.
    """
    if not text.startswith("Options:\n"):
        return text
    listing, _, rest = text[len("Options:\n") :].partition("\n\n")
    entries: dict[str, list[str]] = {}
    for line in (listing + "\n").splitlines(keepends=True):
        entry = _HELP_ENTRY.match(line)
        if entry is not None:
            current = entries.setdefault(entry.group(1), [])
        current.append(line)
    groups = []
    for heading, names in (*help_groups(), ("Other", tuple(entries))):
        listed = [line for name in names for line in entries.pop(name, [])]
        if listed:
            groups.append(f"{heading}:\n" + "".join(listed))
    return "\n".join(groups) + ("\n" + rest if rest else "")

