# -*- test-case-name: tests.test_health -*-
"""
Readiness and health switched at run time (issue 21, "Misbehaving as a
backend"): a backend that fails its load balancer's checks on cue, for
testing load balancers and orchestrators. Changed over the admin API
(C{GET/PUT/DELETE /health} with C{--admin},
L{twisted_echo.operations.adminpage.HealthAdminPage}) or in-process by the
test helpers (L{twisted_echo.testing}).

The state, as the admin API reads and writes it (JSON)::

    {"readyz": "pass" | "fail", "healthz": "pass" | "fail",
     "listeners": "serve" | "pause"}

 - C{readyz}/C{healthz} C{fail}: that probe answers 503 C{failed by the
   admin API} until switched back to C{pass}. A lifecycle state wins on
   C{/readyz}: C{starting} and C{draining} stay 503 whatever the switch
   says (L{twisted_echo.operations.metrics.ReadyPage}).
 - C{listeners} C{pause}: every service listener stops accepting (TCP:
   new connections wait in the backlog; UDP: datagrams wait in the
   socket's buffer) until C{serve} again; open connections carry on
   (L{twisted_echo.listening.pause}). With C{--workers} the listening
   sockets are the workers': the supervisor sends the change to every
   worker (L{twisted_echo.app.forwarded.pause_workers}), and C{/health}
   answers once every one confirmed (a 504 naming those that did not).

Each change is logged on one line and exported as gauges
(L{HealthCollector}).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.logger import Logger

__all__ = [
    "ADMIN_FAILED",
    "DEFAULTS",
    "HealthCollector",
    "HealthSwitch",
    "UnsupportedChangeError",
    "changes_from_body",
]

_log = Logger()

#: The probes the switch can fail.
PROBES = ("readyz", "healthz")
#: Each field's values, the default first.
VALUES: Mapping[str, tuple[str, str]] = {
    "readyz": ("pass", "fail"),
    "healthz": ("pass", "fail"),
    "listeners": ("serve", "pause"),
}
#: The state at start-up, and after C{DELETE /health}.
DEFAULTS: Mapping[str, str] = {field: values[0] for field, values in VALUES.items()}
#: Why a probe switched to C{fail} answers 503 (its body).
ADMIN_FAILED = "failed by the admin API"
#: The longest C{PUT /health} body taken, in bytes.
MAX_BODY = 1024

WORKERS_PAUSE = (
    '"listeners": "pause" cannot be set with --workers: the listening '
    "sockets are the workers' (switch readyz or healthz instead, or run "
    "without --workers)"
)


class UnsupportedChangeError(Exception):
    """
    A change this server cannot make (C{pause} where nothing can pause
    the listeners); the message says why. Nothing was changed.
    """


def changes_from_body(body: bytes) -> dict[str, str]:
    """
    @param body: a C{PUT /health} body: a JSON object with one or more of
        C{readyz}, C{healthz}, C{listeners}.
    @return: the fields given, checked.
    @raise ValueError: not JSON, not an object, empty, an unknown field or
        a bad value (the message says which).
    """
    if len(body) > MAX_BODY:
        raise ValueError(f"a body of at most {MAX_BODY} bytes, not {len(body)}")
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"the body is not valid JSON: {e}") from None
    if not isinstance(document, dict):
        raise ValueError(
            'the body is a JSON object, e.g. {"readyz": "fail"}, not '
            f"{type(document).__name__}"
        )
    return check_changes(document)


def check_changes(changes: Mapping[str, object]) -> dict[str, str]:
    """
    @param changes: fields and values to set.
    @return: the same, checked.
    @raise ValueError: empty, an unknown field or a bad value.
    """
    if not changes:
        raise ValueError(f"nothing to change: give {', '.join(VALUES)}")
    checked: dict[str, str] = {}
    for field, value in changes.items():
        values = VALUES.get(field)
        if values is None:
            raise ValueError(
                f"unknown field {field!r}: the fields are {', '.join(VALUES)}"
            )
        if value not in values:
            raise ValueError(
                f"{field} is {values[0]!r} or {values[1]!r}, not {value!r}"
            )
        assert isinstance(value, str)
        checked[field] = value
    return checked


class HealthSwitch:
    """
    The run-time switch of C{/readyz}, C{/healthz} and the listeners.

    @ivar state: each field's value now (L{VALUES}).
    """

    def __init__(self, pause: Callable[[bool], object] | None) -> None:
        """
        @param pause: called with C{True} to stop the listeners accepting,
            C{False} to start again
            (L{twisted_echo.listening.pause.pause_listeners} on the
            server, L{twisted_echo.app.forwarded.pause_workers} on a
            supervisor of workers); L{None} where this process cannot
            (C{pause} is then refused: L{UnsupportedChangeError}).
        """
        self.pause = pause
        self.state: dict[str, str] = dict(DEFAULTS)
        #: What the last C{pause} call returned, until taken: with
        #: C{--workers}, a L{twisted.internet.defer.Deferred} of the
        #: workers' confirmations (C{/health} answers once it fires).
        self.confirming: object = None

    def failing(self, probe: str) -> bool:
        """
        @param probe: C{readyz} or C{healthz}.
        @return: whether it is switched to C{fail}.
        """
        return self.state[probe] == "fail"

    def describe(self) -> dict[str, str]:
        """
        @return: the state, as C{GET /health} answers it (a copy).
        """
        return dict(self.state)

    def change(self, changes: Mapping[str, object]) -> dict[str, str]:
        """
        Set the fields given (the others stay as they are); log one line
        if anything changed.

        @param changes: fields and values (L{VALUES}).
        @return: the new state (L{describe}).
        @raise ValueError: an unknown field or a bad value (nothing
            changes).
        @raise UnsupportedChangeError: C{pause} where the listeners cannot
            be paused (nothing changes).
        """
        checked = check_changes(changes)
        if checked.get("listeners") == "pause" and self.pause is None:
            raise UnsupportedChangeError(WORKERS_PAUSE)
        before = dict(self.state)
        self.state.update(checked)
        moved = [f for f in VALUES if before[f] != self.state[f]]
        if "listeners" in moved:
            assert self.pause is not None
            self.confirming = self.pause(self.state["listeners"] == "pause")
        if moved:
            _log.info(
                "health switched at run time: {changes}",
                changes=", ".join(f"{f} {before[f]} -> {self.state[f]}" for f in moved),
            )
        return self.describe()

    def reset(self) -> dict[str, str]:
        """
        Back to the defaults: both probes pass, the listeners serve.

        @return: the new state.
        """
        return self.change(DEFAULTS)


class HealthCollector(Collector):
    """
    The switch's state as gauges:

     - C{sockecho_admin_failing{probe}}: 1 while C{/readyz} or
       C{/healthz} is switched to C{fail}, else 0;
     - C{sockecho_admin_listeners_paused}: 1 while the listeners are
       paused, else 0.
    """

    def __init__(self, switch: HealthSwitch) -> None:
        self.switch = switch

    def collect(self) -> Iterable[Metric]:
        """
        @return: the gauges, read now.
        """
        failing = GaugeMetricFamily(
            "sockecho_admin_failing",
            "1 while the probe is failed on purpose (the admin API's /health).",
            labels=["probe"],
        )
        for probe in PROBES:
            failing.add_metric([probe], int(self.switch.failing(probe)))
        yield failing
        yield GaugeMetricFamily(
            "sockecho_admin_listeners_paused",
            "1 while the service listeners are paused on purpose "
            "(the admin API's /health).",
            value=int(self.switch.state["listeners"] == "pause"),
        )
