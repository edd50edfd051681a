"""
Readiness, health and the listeners switched at run time (issue 21,
"Misbehaving as a backend"): the switch
(L{twisted_echo.operations.health}), C{/health} on the C{--metrics}
listener with C{--admin} (L{twisted_echo.operations.adminpage}), the probes
that obey it (L{twisted_echo.operations.metrics}), in memory; then a real
C{twistd}: the probes, a paused listener whose connect waits in the backlog
and is served once resumed while an open connection carries on, UDP, and
C{--workers}.
"""

from __future__ import annotations

import io
import json
import socket
from typing import Any

from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.test.requesthelper import DummyRequest

from tests.process import IO_TIMEOUT, start_server, tcp_exchange, wait_until
from tests.process import http_call as call
from twisted_echo.operations.health import (
    DEFAULTS,
    HealthSwitch,
    UnsupportedChangeError,
    changes_from_body,
)
from twisted_echo.operations.metrics import (
    Readiness,
    SockechoCollector,
    iter_samples,
    metrics_registry,
    metrics_site,
)

HOST = "127.0.0.1"
#: Seconds a test waits to see that nothing comes (a paused listener).
QUIET = 0.5


class Pauses:
    """
    Records what a L{HealthSwitch} asks of the listeners.
    """

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def __call__(self, paused: bool) -> None:
        self.calls.append(paused)


def render(
    site: Any, path: bytes, method: bytes = b"GET", body: bytes = b""
) -> tuple[int, str]:
    request = DummyRequest([path])
    request.method = method
    request.content = io.BytesIO(body)
    resource = site.getResourceFor(request)
    text = resource.render(request)
    return request.responseCode or 200, text.decode()


class SwitchTests(SynchronousTestCase):
    def test_defaults_and_change(self) -> None:
        pauses = Pauses()
        switch = HealthSwitch(pauses)
        self.assertEqual(
            switch.describe(),
            {"readyz": "pass", "healthz": "pass", "listeners": "serve"},
        )
        self.assertEqual(
            switch.change({"readyz": "fail"}),
            {"readyz": "fail", "healthz": "pass", "listeners": "serve"},
        )
        self.assertTrue(switch.failing("readyz"))
        self.assertFalse(switch.failing("healthz"))
        self.assertEqual(pauses.calls, [])
        switch.change({"listeners": "pause"})
        switch.change({"listeners": "pause"})  # no change: not paused twice
        self.assertEqual(pauses.calls, [True])
        self.assertEqual(switch.reset(), dict(DEFAULTS))
        self.assertEqual(pauses.calls, [True, False])

    def test_bad_changes_change_nothing(self) -> None:
        switch = HealthSwitch(Pauses())
        switch.change({"healthz": "fail"})
        for changes, reason in (
            ({}, "nothing to change"),
            ({"readyz": "fail", "nope": "x"}, "unknown field 'nope'"),
            ({"readyz": "down"}, "readyz is 'pass' or 'fail', not 'down'"),
            ({"listeners": True}, "listeners is 'serve' or 'pause', not True"),
        ):
            error = self.assertRaises(ValueError, switch.change, changes)
            self.assertIn(reason, str(error))
        self.assertEqual(switch.state["readyz"], "pass")
        self.assertEqual(switch.state["healthz"], "fail")

    def test_no_pause_without_listeners(self) -> None:
        """
        With no way to pause (the supervisor of C{--workers}): C{pause} is
        refused and nothing else in the same change is made; the probes
        switch.
        """
        switch = HealthSwitch(None)
        error = self.assertRaises(
            UnsupportedChangeError,
            switch.change,
            {"readyz": "fail", "listeners": "pause"},
        )
        self.assertIn("cannot be set with --workers", str(error))
        self.assertEqual(switch.describe(), dict(DEFAULTS))
        switch.change({"readyz": "fail", "listeners": "serve"})
        self.assertTrue(switch.failing("readyz"))

    def test_body(self) -> None:
        self.assertEqual(
            changes_from_body(b'{"readyz": "fail", "listeners": "pause"}'),
            {"readyz": "fail", "listeners": "pause"},
        )
        for body, reason in (
            (b"readyz=fail", "not valid JSON"),
            (b'["readyz"]', "the body is a JSON object"),
            (b"\xff", "not valid JSON"),
            (b'{"x": "' + b"y" * 2000 + b'"}', "at most 1024 bytes"),
        ):
            error = self.assertRaises(ValueError, changes_from_body, body)
            self.assertIn(reason, str(error))

    def test_logged_once_per_change(self) -> None:
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        switch = HealthSwitch(Pauses())
        switch.change({"readyz": "fail", "listeners": "pause"})
        switch.change({"readyz": "fail"})
        from twisted.logger import formatEvent

        lines = [formatEvent(e) for e in events if "health switched" in formatEvent(e)]
        self.assertEqual(
            lines,
            [
                "health switched at run time: readyz pass -> fail, "
                "listeners serve -> pause"
            ],
        )


class PagesTests(SynchronousTestCase):
    """
    The probes obey the switch; C{/health} changes it (with C{--admin}).
    """

    def setUp(self) -> None:
        self.readiness = Readiness()
        self.readiness.ready()
        self.pauses = Pauses()
        self.switch = HealthSwitch(self.pauses)
        self.registry = metrics_registry(SockechoCollector([]), process=False)
        from twisted.web.resource import Resource

        self.site = metrics_site(
            self.registry, self.readiness, admin=Resource(), health=self.switch
        )

    def test_probes(self) -> None:
        self.assertEqual(render(self.site, b"readyz"), (200, "ready\n"))
        self.assertEqual(render(self.site, b"healthz"), (200, "ok\n"))
        self.switch.change({"readyz": "fail"})
        self.assertEqual(
            render(self.site, b"readyz"), (503, "failed by the admin API\n")
        )
        self.assertEqual(render(self.site, b"healthz"), (200, "ok\n"))
        self.switch.change({"readyz": "pass", "healthz": "fail"})
        self.assertEqual(render(self.site, b"readyz"), (200, "ready\n"))
        self.assertEqual(
            render(self.site, b"healthz"), (503, "failed by the admin API\n")
        )

    def test_drain_wins(self) -> None:
        """
        A drain's C{/readyz} 503 C{draining} stays, whatever the switch.
        """
        self.switch.change({"readyz": "fail"})
        self.readiness.draining()
        self.assertEqual(render(self.site, b"readyz"), (503, "draining\n"))
        self.switch.change({"readyz": "pass"})
        self.assertEqual(render(self.site, b"readyz"), (503, "draining\n"))

    def test_admin_route(self) -> None:
        code, text = render(self.site, b"health")
        self.assertEqual((code, json.loads(text)), (200, dict(DEFAULTS)))
        code, text = render(
            self.site, b"health", b"PUT", b'{"healthz": "fail", "listeners": "pause"}'
        )
        self.assertEqual(code, 200)
        self.assertEqual(
            json.loads(text),
            {"readyz": "pass", "healthz": "fail", "listeners": "pause"},
        )
        self.assertEqual(self.pauses.calls, [True])
        code, text = render(self.site, b"health", b"PUT", b'{"healthz": "maybe"}')
        self.assertEqual(code, 400)
        self.assertEqual(
            text, "bad /health change: healthz is 'pass' or 'fail', not 'maybe'\n"
        )
        self.assertEqual(self.switch.state["healthz"], "fail")
        self.assertEqual(render(self.site, b"health", b"POST")[0], 405)
        code, text = render(self.site, b"health", b"DELETE")
        self.assertEqual((code, json.loads(text)), (200, dict(DEFAULTS)))
        self.assertEqual(self.pauses.calls, [True, False])

    def test_workers_501(self) -> None:
        from twisted.web.resource import Resource

        switch = HealthSwitch(None)
        site = metrics_site(
            self.registry, self.readiness, admin=Resource(), health=switch
        )
        code, text = render(site, b"health", b"PUT", b'{"listeners": "pause"}')
        self.assertEqual(code, 501)
        self.assertIn('"listeners": "pause" cannot be set with --workers', text)
        code, _ = render(site, b"health", b"PUT", b'{"readyz": "fail"}')
        self.assertEqual(code, 200)
        self.assertEqual(render(site, b"readyz"), (503, "failed by the admin API\n"))

    def test_index_lists_admin_routes(self) -> None:
        """
        C{/} names every route served: C{/faults} and C{/health} with
        C{--admin}, not without.
        """
        self.assertEqual(
            render(self.site, b""),
            (200, "sockecho: /metrics /healthz /readyz /records /faults /health\n"),
        )
        site = metrics_site(self.registry, self.readiness, health=self.switch)
        self.assertEqual(
            render(site, b""), (200, "sockecho: /metrics /healthz /readyz /records\n")
        )

    def test_no_admin_no_route(self) -> None:
        """
        Without C{--admin} there is no C{/health}, but the probes still
        obey the switch (the in-process test helpers set it).
        """
        site = metrics_site(self.registry, self.readiness, health=self.switch)
        self.assertEqual(render(site, b"health")[0], 404)
        self.switch.change({"readyz": "fail"})
        self.assertEqual(render(site, b"readyz")[0], 503)

    def test_gauges(self) -> None:
        from twisted_echo.operations.health import HealthCollector

        self.registry.register(HealthCollector(self.switch))
        self.switch.change({"healthz": "fail", "listeners": "pause"})
        found = {
            (name, tuple(sorted(labels.items()))): value
            for name, labels, value in iter_samples(self.registry)
        }
        self.assertEqual(found[("sockecho_admin_failing", (("probe", "readyz"),))], 0)
        self.assertEqual(found[("sockecho_admin_failing", (("probe", "healthz"),))], 1)
        self.assertEqual(found[("sockecho_admin_listeners_paused", ())], 1)




def put(url: str, **changes: str) -> tuple[int, str]:
    return call(url + "/health", "PUT", json.dumps(changes).encode())


class TwistdTests(TestCase):
    """
    A real C{twistd --metrics ... --admin}.
    """

    def start(self, *args: str) -> str:
        self.server = start_server(
            self, ["--metrics", f"tcp:0:interface={HOST}", "--admin", *args]
        )
        match = self.server.wait_for(r"\] metrics listening on tcp:127\.0\.0\.1:(\d+)$")
        return f"http://{HOST}:{match.group(1)}"

    def test_probes_switched_and_back(self) -> None:
        url = self.start()
        self.assertEqual(call(url + "/readyz"), (200, "ready\n"))
        status, text = put(url, readyz="fail", healthz="fail")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(text)["readyz"], "fail")
        self.server.wait_for(
            r"\] health switched at run time: readyz pass -> fail, "
            r"healthz pass -> fail$"
        )
        self.assertEqual(call(url + "/readyz"), (503, "failed by the admin API\n"))
        self.assertEqual(call(url + "/healthz"), (503, "failed by the admin API\n"))
        # The services keep serving (listeners: serve).
        self.assertEqual(tcp_exchange(self.server.ports["echo"], b"hi"), b"hi")
        status, text = call(url + "/metrics")
        self.assertIn('sockecho_admin_failing{probe="readyz"} 1.0', text)
        status, text = put(url, readyz="nope")
        self.assertEqual(status, 400)
        self.assertIn("readyz is 'pass' or 'fail', not 'nope'", text)
        status, text = call(url + "/health", "PUT", b"{not json")
        self.assertEqual(status, 400)
        self.assertEqual(call(url + "/readyz")[0], 503)
        status, text = call(url + "/health", "DELETE")
        self.assertEqual(json.loads(text), dict(DEFAULTS))
        self.assertEqual(call(url + "/readyz"), (200, "ready\n"))
        self.assertEqual(call(url + "/healthz"), (200, "ok\n"))

    def test_pause_then_serve(self) -> None:
        """
        Paused: an open connection carries on; a new connect completes in
        the kernel's backlog but is not served; UDP is not answered. Back
        to serve: both are answered, nothing lost.
        """
        url = self.start()
        ports = self.server.ports
        opened = socket.create_connection((HOST, ports["echo"]), timeout=IO_TIMEOUT)
        self.addCleanup(opened.close)
        opened.sendall(b"before")
        self.assertEqual(opened.recv(100), b"before")

        self.assertEqual(put(url, listeners="pause")[0], 200)
        self.server.wait_for(r"health switched at run time: listeners serve -> pause$")
        opened.sendall(b"during")
        self.assertEqual(opened.recv(100), b"during")

        waiting = socket.create_connection((HOST, ports["echo"]), timeout=IO_TIMEOUT)
        self.addCleanup(waiting.close)
        waiting.sendall(b"waiting")
        datagram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(datagram.close)
        datagram.sendto(b"queued", (HOST, ports["udp"]))
        waiting.settimeout(QUIET)
        datagram.settimeout(QUIET)
        self.assertRaises(TimeoutError, waiting.recv, 100)
        self.assertRaises(TimeoutError, datagram.recv, 100)
        self.assertEqual(call(url + "/readyz")[0], 200)  # independent switches

        self.assertEqual(put(url, listeners="serve")[0], 200)
        waiting.settimeout(IO_TIMEOUT)
        datagram.settimeout(IO_TIMEOUT)
        self.assertEqual(waiting.recv(100), b"waiting")
        self.assertEqual(datagram.recv(100), b"queued")
        self.assertEqual(tcp_exchange(ports["upper"], b"after"), b"AFTER")
        opened.sendall(b"still")
        self.assertEqual(opened.recv(100), b"still")

    def test_backlog_full_connects_wait(self) -> None:
        """
        With C{--backlog 1}, once paused the backlog fills and further
        connects do not complete (the kernel drops their SYNs) until the
        listener serves again.
        """
        url = self.start("--backlog", "1")
        port = self.server.ports["echo"]
        self.assertEqual(put(url, listeners="pause")[0], 200)
        held = []
        refused = 0
        for _ in range(6):
            sock = socket.socket()
            self.addCleanup(sock.close)
            sock.settimeout(QUIET)
            try:
                sock.connect((HOST, port))
            except (TimeoutError, OSError):
                refused += 1
                continue
            held.append(sock)
        self.assertGreater(refused, 0, "every connect completed while paused")
        self.assertEqual(put(url, listeners="serve")[0], 200)
        self.assertTrue(
            wait_until(lambda: tcp_exchange(port, b"back") == b"back"),
            "not served again",
        )
        for sock in held:
            sock.settimeout(IO_TIMEOUT)
            sock.sendall(b"held")
            self.assertEqual(sock.recv(100), b"held")

    def test_workers(self) -> None:
        """
        With C{--workers} the supervisor serves the probes: their switch
        works; pausing reaches every worker (tests.test_forwarded pauses
        and resumes them).
        """
        url = self.start("--workers", "2")
        self.assertTrue(wait_until(lambda: call(url + "/readyz")[0] == 200))
        status, text = put(url, listeners="pause")
        self.assertEqual((status, json.loads(text)["listeners"]), (200, "pause"))
        self.assertEqual(call(url + "/readyz")[0], 200)
        self.assertEqual(put(url, listeners="serve")[0], 200)
        self.assertEqual(put(url, readyz="fail")[0], 200)
        self.assertEqual(call(url + "/readyz"), (503, "failed by the admin API\n"))
        self.assertEqual(tcp_exchange(self.server.ports["echo"], b"hi"), b"hi")

    def test_drain_wins(self) -> None:
        """
        Switched to pass during a drain delay, C{/readyz} stays 503
        C{draining}.
        """
        import signal

        url = self.start("--drain-delay", "30")
        self.assertEqual(put(url, readyz="fail")[0], 200)
        self.server.process.send_signal(signal.SIGTERM)
        self.server.wait_for(r"shutting down in \S+ s \(--drain-delay\)")
        self.assertEqual(call(url + "/readyz"), (503, "draining\n"))
        self.assertEqual(put(url, readyz="pass")[0], 200)
        self.assertEqual(call(url + "/readyz"), (503, "draining\n"))

    def test_stop_while_paused(self) -> None:
        """
        SIGTERM while paused: the server drains and exits cleanly, no
        traceback; a connect left in the backlog is closed, not hung.
        """
        from tests.process import CLEAN_SIGTERM_EXIT

        url = self.start()
        self.assertEqual(put(url, listeners="pause")[0], 200)
        waiting = socket.create_connection(
            (HOST, self.server.ports["echo"]), timeout=IO_TIMEOUT
        )
        self.addCleanup(waiting.close)
        self.assertIn(self.server.stop(), CLEAN_SIGTERM_EXIT)
        try:
            self.assertEqual(waiting.recv(100), b"")
        except ConnectionResetError:
            pass  # the kernel resets what was never accepted
        self.assertNotIn("Traceback", "\n".join(self.server.output))
