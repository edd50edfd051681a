# -*- test-case-name: tests.test_fastpaths -*-
"""
The one line sockecho logs at start-up saying which of its Twisted fast
paths (the modules of L{twisted_echo._twisted}) are on and which fell back
to Twisted's own way, e.g.::

    Twisted fast paths: reactor on, write queue on, log publisher on,
    log flatten on, ...; fell back: none

Checks made once at import (write queue, log publisher, log flatten, line
buffer, HTTP channel) and cheap ones (telnet bound, exit signal, TLS
internals) are run by L{fast_paths}; checks made where the fast path is
taken (the lean TCP transport, per listener; the TLS half-close probe,
when a TLS listener opens; socket adoption, when a listening socket is
inherited) are reported by their module through L{note} and appear once
they ran.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

__all__ = ["fast_paths", "fast_paths_line", "log_fast_paths", "note"]

_log = Logger()

#: What L{note} was told: a fast path's name, and L{None} (on) or why it
#: fell back.
_noted: dict[str, str | None] = {}


def note(name: str, reason: str | None) -> None:
    """
    Record the outcome of a fast path's check made where it is taken
    (the first fall-back reason is kept).

    @param name: the fast path, as the start-up line names it.
    @param reason: L{None} when it is on, else why it fell back.
    """
    if _noted.get(name) is None:
        _noted[name] = reason


def _reactor_check(reactor: Any) -> str | None:
    from twisted_echo._twisted import reactor as event

    if event.fallback_reason is not None:
        return event.fallback_reason
    event_reactor = getattr(event, "EventReactor", None)
    if event_reactor is None or not isinstance(reactor, event_reactor):
        return f"{type(reactor).__name__} chosen (twistd -r, or another reactor)"
    return None


def fast_paths(reactor: Any) -> dict[str, str | None]:
    """
    Check every fast path of L{twisted_echo._twisted}.

    @param reactor: the running reactor.
    @return: each fast path's name, in the start-up line's order, and
        L{None} when it is on or why it fell back.
    """
    from twisted_echo._twisted import (
        exitsignal,
        httpchannel,
        linereceiver,
        logflatten,
        logpublisher,
        telnet,
        tlsmemorybio,
        writequeue,
    )

    results: dict[str, str | None] = {
        "reactor": _reactor_check(reactor),
        "write queue": writequeue.WRITE_QUEUE_MISFIT,
        "log publisher": logpublisher.LOG_PUBLISHER_MISFIT,
        "log flatten": logflatten.LOG_FLATTEN_MISFIT,
        "line buffer": linereceiver.LINE_BUFFER_MISFIT,
        "telnet bound": telnet.conch_bound_misfit(),
        "exit signal": exitsignal.exit_signal_misfit(reactor),
        "TLS internals": tlsmemorybio.twisted_tls_missing(),
        "HTTP channel": httpchannel.HTTP_CHANNEL_MISFIT,
    }
    for name, reason in _noted.items():
        results.setdefault(name, reason)
    return results


def fast_paths_line(results: dict[str, str | None]) -> str:
    """
    @param results: what L{fast_paths} returned.
    @return: C{"Twisted fast paths: NAME on|off, ...; fell back: none"}, or
        with C{"fell back: NAME (REASON); ..."}.
    """
    states = ", ".join(
        f"{name} {'on' if reason is None else 'off'}"
        for name, reason in results.items()
    )
    fell_back = "; ".join(
        f"{name} ({reason})" for name, reason in results.items() if reason is not None
    )
    return f"Twisted fast paths: {states}; fell back: {fell_back or 'none'}"


def log_fast_paths(reactor: Any = None) -> str:
    """
    Log L{fast_paths_line} once, at C{info} level (C{warn} if any fell
    back).

    @param reactor: the running reactor (L{None}: the global one).
    @return: the line logged.
    """
    if reactor is None:
        from twisted.internet import reactor as installed

        reactor = installed
    results = fast_paths(reactor)
    line = fast_paths_line(results)
    if any(reason is not None for reason in results.values()):
        _log.warn("{line}", line=line)
    else:
        _log.info("{line}", line=line)
    return line
