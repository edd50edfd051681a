# -*- test-case-name: tests.test_metrics -*-
"""
C{--metrics ENDPOINT}: Prometheus metrics and health probes over HTTP
(L{twisted.web}), off by default.

Long until the service registry (issue 20) lets each service declare its own
metrics.

 - C{/metrics}: the Prometheus text exposition format
   (U{https://prometheus.io/docs/instrumenting/exposition_formats/}; the
   OpenMetrics form when the scraper asks for it), made by
   C{prometheus_client} from L{SockechoCollector}, which reads sockecho's
   existing counters (L{twisted_echo.policies.counters.ServiceCounters}) when
   scraped: serving a connection or a datagram costs nothing more. The
   standard process metrics (C{process_*}: CPU seconds, resident memory,
   open descriptors...) and C{python_*} ones come with it.
 - C{/healthz}: 200 while the process serves (it answers at all); 503
   C{failed by the admin API} while switched to fail
   (L{twisted_echo.operations.health}).
 - C{/readyz}: 200 while accepting new clients; 503 before every listener
   is up and from the moment a drain starts, so that a load balancer stops
   sending new clients before connections close; 503 C{failed by the
   admin API} while switched to fail (a drain still answers C{draining}).
 - C{/records}: the last connection records, as JSON, with filters and a
   long-poll (L{twisted_echo.operations.recordspage}).

The metrics listener is not one of the services: it is not counted in the
services' metrics, its requests are not logged, the services' connection
limits do not apply to it, and it keeps listening through the drain (so
C{/readyz} can answer 503) until the drain is over. It has bounds of its
own (L{twisted_echo.operations.httpbounds}: C{--metrics-max-connections},
C{--metrics-request-timeout}, one response in flight per connection) and
metrics of its own (C{sockecho_metrics_*}, L{ListenerCollector}).

Metric names follow Prometheus' naming conventions
(U{https://prometheus.io/docs/practices/naming/}): a C{sockecho_} prefix,
base units (bytes, seconds), C{_total} on counters; every sockecho metric
has a C{service} label (C{echo}, C{upper}, C{welcome}, C{udp}).

Figures come from a list of L{CounterSource}s (this process's:
L{LocalCounters}); a supervisor of worker processes adds one per worker.
Series with the same labels from several sources are summed; a source's
own C{labels} (e.g. C{worker="2"}) keep its series apart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.web.resource import Resource
from twisted.web.server import Request

from twisted_echo.listening.listen import ListenerService, listen_at_once
from twisted_echo.operations.adminpage import HealthAdminPage
from twisted_echo.operations.health import ADMIN_FAILED, HealthCollector, HealthSwitch
from twisted_echo.operations.httpbounds import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_TIMEOUT,
    IDLE_TIMEOUT,
    BoundedSite,
    ListenerCounters,
)
from twisted_echo.operations.httpbounds import (
    REFUSAL_REASONS as LISTENER_REFUSAL_REASONS,
)
from twisted_echo.operations.httpbounds import (
    TIMEOUT_REASONS as LISTENER_TIMEOUT_REASONS,
)
from twisted_echo.operations.recordspage import RecordsPage
from twisted_echo.policies.counters import (
    ServiceCounters,
    with_open_connections,
)
from twisted_echo.records.ring import RecordRing

if TYPE_CHECKING:
    from twisted_echo.app.server import SockechoService

#: Prefix of every sockecho metric.
NAMESPACE = "sockecho"
#: Services whose traffic is datagrams (the others are TCP connections), by
#: default (the app passes the service registry's,
#: L{twisted_echo.app.registry.datagram_only}).
DATAGRAM_SERVICES = frozenset({"udp"})
#: Reasons always exported (as 0 until they happen), so that rates and
#: alerts have a series to work on from the start.
REFUSAL_REASONS = (
    "max_connections",
    "max_per_peer",
    "proxy_missing",
    "proxy_malformed",
    "proxy_oversized",
    "proxy_timeout",
    "proxy_incomplete",
    "telnet_rate",
)
TIMEOUT_REASONS = ("idle", "stall", "line", "handshake", "drain")
DROP_REASONS = ("loop_port", "own_port", "rate_source", "rate_global", "send_error")
#: Seconds an HTTP connection to the metrics listener may stay idle.
HTTP_TIMEOUT = IDLE_TIMEOUT


class CounterSource(Protocol):
    """
    Where L{SockechoCollector} reads figures from, at scrape time.

    @ivar labels: labels added to every series of this source (e.g.
        C{{"worker": "2"}}); C{{}} to be summed with the other sources.
        Every source should use the same label names.
    """

    labels: Mapping[str, str]

    def snapshot(self) -> Mapping[str, ServiceCounters]:
        """
        @return: each service's counters as they are now, by service name,
            with C{bytes_in}, C{bytes_out} and C{held_bytes} including the
            connections still open. The caller must not change them.
        """


class LocalCounters:
    """
    This process's figures: a L{SockechoService}'s counters, plus, for the
    connections still open, the bytes they have carried (their counters are
    added to the service's when they close) and the bytes they hold.
    """

    labels: Mapping[str, str] = {}

    def __init__(self, server: SockechoService) -> None:
        """
        @param server: the server whose C{counters} and C{factories} to read.
        """
        self.server = server

    def snapshot(self) -> Mapping[str, ServiceCounters]:
        """
        @return: see L{CounterSource.snapshot}.
        """
        return with_open_connections(self.server.counters, self.server.factories)


_Kind = type[CounterMetricFamily] | type[GaugeMetricFamily]


class _Family:
    """
    One metric family being gathered: samples by label values, summed.
    """

    def __init__(
        self, kind: _Kind, name: str, documentation: str, labels: Sequence[str]
    ) -> None:
        self.kind = kind
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self.values: dict[tuple[str, ...], float] = defaultdict(float)

    def add(self, value: float, **labels: str) -> None:
        self.values[tuple(labels[name] for name in self.labels)] += value

    def metric(self) -> Metric:
        family = self.kind(self.name, self.documentation, labels=self.labels)
        for labels, value in sorted(self.values.items()):
            family.add_metric(list(labels), value)
        return family


class SockechoCollector(Collector):
    """
    A C{prometheus_client} collector of sockecho's counters, read from its
    L{CounterSource}s each time it is collected. The metrics (all with a
    C{service} label):

     - C{sockecho_connections_total}, C{sockecho_connections_open}: TCP
       connections accepted since start, open now;
     - C{sockecho_received_bytes_total}, C{sockecho_sent_bytes_total}:
       payload bytes from and to peers (TCP and UDP);
     - C{sockecho_received_datagrams_total},
       C{sockecho_sent_datagrams_total}: UDP datagrams;
     - C{sockecho_refused_connections_total{reason}}: connections closed at
       once by a limit (C{max_connections}, C{max_per_peer});
     - C{sockecho_connection_timeouts_total{reason}}: connections closed by
       a timeout (C{idle}, C{stall}, C{line}, C{drain});
     - C{sockecho_dropped_datagrams_total{reason}}: datagrams not answered
       (C{loop_port}, C{own_port}, C{rate_source}, C{rate_global},
       C{send_error});
     - C{sockecho_flow_control_pauses_total}: times a peer not reading its
       replies stopped being read from;
     - C{sockecho_held_bytes}: bytes held in user space for the service's
       connections now (queued replies, unfinished lines), which
       C{--max-buffer} bounds;
     - C{sockecho_max_buffer_bytes} (no label): C{--max-buffer}, 0 for no
       limit.
    """

    def __init__(
        self,
        sources: list[CounterSource],
        max_buffer: int | None = None,
        datagram_services: Collection[str] = DATAGRAM_SERVICES,
    ) -> None:
        """
        @param sources: where to read; a list the caller may add to later
            (one source per worker process).
        @param max_buffer: C{--max-buffer} in bytes (0: no limit), or
            L{None} not to export it.
        @param datagram_services: the services that take no connection
            (no connection metrics for them).
        """
        self.sources = sources
        self.max_buffer = max_buffer
        self.datagram_services = datagram_services

    def collect(self) -> Iterable[Metric]:
        """
        @return: the metric families, read now.
        """
        extra = sorted({key for s in self.sources for key in s.labels})
        base = ["service", *extra]

        def family(kind: _Kind, name: str, doc: str, *labels: str) -> _Family:
            return _Family(kind, f"{NAMESPACE}_{name}", doc, [*base, *labels])

        C, G = CounterMetricFamily, GaugeMetricFamily  # noqa: N806
        total = family(C, "connections", "TCP connections accepted.")
        open_now = family(G, "connections_open", "TCP connections open now.")
        received = family(C, "received_bytes", "Payload bytes received from peers.")
        sent = family(C, "sent_bytes", "Payload bytes sent to peers.")
        datagrams_in = family(C, "received_datagrams", "UDP datagrams received.")
        datagrams_out = family(C, "sent_datagrams", "UDP datagrams sent back.")
        refused = family(
            C, "refused_connections", "TCP connections refused by a limit.", "reason"
        )
        timeouts = family(
            C, "connection_timeouts", "TCP connections closed by a timeout.", "reason"
        )
        dropped = family(
            C, "dropped_datagrams", "UDP datagrams dropped unanswered.", "reason"
        )
        pauses = family(
            C,
            "flow_control_pauses",
            "Times flow control stopped reading from a peer not reading its replies.",
        )
        faults = family(
            C,
            "faults",
            "Faults injected (--faults): connections given each, refuse windows.",
            "fault",
        )
        held = family(
            G,
            "held_bytes",
            "Bytes held in user space for open TCP connections "
            "(bounded by --max-buffer).",
        )
        for source in self.sources:
            own = dict(source.labels)
            for service, c in source.snapshot().items():
                labels = {"service": service, **{k: own.get(k, "") for k in extra}}
                received.add(c.bytes_in, **labels)
                sent.add(c.bytes_out, **labels)
                datagram_only = service in self.datagram_services
                if datagram_only or c.datagrams_in:
                    # UDP echo, and whoami when it also listens on UDP.
                    datagrams_in.add(c.datagrams_in, **labels)
                    datagrams_out.add(c.datagrams_out, **labels)
                    _add_reasons(dropped, c.dropped, DROP_REASONS, labels)
                for fault, count in sorted(c.faults.items()):
                    faults.add(count, fault=fault, **labels)
                if datagram_only:
                    continue
                total.add(c.connections_total, **labels)
                open_now.add(c.connections_open, **labels)
                pauses.add(c.pauses, **labels)
                held.add(c.held_bytes, **labels)
                _add_reasons(refused, c.refused, REFUSAL_REASONS, labels)
                _add_reasons(timeouts, c.timeouts, TIMEOUT_REASONS, labels)
        families = [
            total,
            open_now,
            received,
            sent,
            datagrams_in,
            datagrams_out,
            refused,
            timeouts,
            dropped,
            pauses,
            held,
            faults,
        ]
        for gathered in families:
            if gathered.values:
                yield gathered.metric()
        if self.max_buffer is not None:
            yield GaugeMetricFamily(
                f"{NAMESPACE}_max_buffer_bytes",
                "Most bytes held for all TCP connections together "
                "(--max-buffer; 0: no limit).",
                value=self.max_buffer,
            )


def _add_reasons(
    family: _Family,
    counts: Mapping[str, int],
    known: Iterable[str],
    labels: Mapping[str, str],
) -> None:
    for reason in sorted(set(known) | set(counts)):
        family.add(counts.get(reason, 0), reason=reason, **labels)


class ListenerCollector(Collector):
    """
    The metrics listener's own figures (L{ListenerCounters}):

     - C{sockecho_metrics_connections_total}, C{sockecho_metrics_connections_open}:
       connections to the metrics listener accepted (refused ones
       included), open now;
     - C{sockecho_metrics_refused_connections_total{reason}}: closed at once
       (C{max_connections}: C{--metrics-max-connections} were open);
     - C{sockecho_metrics_connection_timeouts_total{reason}}: closed by a
       timeout (C{request}: not complete within C{--metrics-request-timeout}
       of its first byte; C{response}: not taken by the client within it;
       C{idle}: nothing for 30 s between requests).
    """

    def __init__(self, counters: ListenerCounters) -> None:
        self.counters = counters

    def collect(self) -> Iterable[Metric]:
        """
        @return: the metric families, read now.
        """
        c = self.counters
        prefix = f"{NAMESPACE}_metrics"
        yield CounterMetricFamily(
            f"{prefix}_connections",
            "Connections to the metrics listener accepted.",
            value=c.connections_total,
        )
        yield GaugeMetricFamily(
            f"{prefix}_connections_open",
            "Connections to the metrics listener open now.",
            value=c.connections_open,
        )
        for name, doc, counts, known in (
            (
                "refused_connections",
                "Connections to the metrics listener closed at once by its limit.",
                c.refused,
                LISTENER_REFUSAL_REASONS,
            ),
            (
                "connection_timeouts",
                "Connections to the metrics listener closed by a timeout.",
                c.timeouts,
                LISTENER_TIMEOUT_REASONS,
            ),
        ):
            family = CounterMetricFamily(f"{prefix}_{name}", doc, labels=["reason"])
            for reason in sorted(set(known) | set(counts)):
                family.add_metric([reason], counts.get(reason, 0))
            yield family


def metrics_registry(collector: Collector, process: bool = True) -> CollectorRegistry:
    """
    @param collector: sockecho's collector.
    @param process: whether to add C{prometheus_client}'s standard process,
        platform and garbage collector metrics.
    @return: a registry of its own (not C{prometheus_client}'s global one).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


class Readiness:
    """
    Whether new clients are welcome: C{"starting"} until every listener is
    up, C{"ready"} while accepting, C{"draining"} from the moment a drain
    starts.
    """

    state = "starting"

    def ready(self) -> None:
        if self.state == "starting":
            self.state = "ready"

    def draining(self) -> None:
        self.state = "draining"


class _Text(Resource):
    isLeaf = True

    def _reply(self, request: Request, code: int, text: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return text.encode("utf-8")


class MetricsPage(_Text):
    """
    C{/metrics}: the registry in the format the scraper's C{Accept} header
    asks for (Prometheus text by default, or OpenMetrics), made in the
    reactor thread (the counters are only ever touched there).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        Resource.__init__(self)
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        accept = request.getHeader(b"accept") or b""
        encoder, content_type = choose_encoder(accept.decode("latin-1"))
        body = encoder(self.registry)
        request.setHeader(b"content-type", content_type.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return body


class HealthPage(_Text):
    """
    C{/healthz}: 200 C{ok} while the process serves; 503 C{failed by the
    admin API} while the switch says so.
    """

    def __init__(self, switch: HealthSwitch | None = None) -> None:
        """
        @param switch: the run-time switch (L{None}: never failed on
            purpose).
        """
        Resource.__init__(self)
        self.switch = switch

    def render_GET(self, request: Request) -> bytes:
        if self.switch is not None and self.switch.failing("healthz"):
            return self._reply(request, 503, f"{ADMIN_FAILED}\n")
        return self._reply(request, 200, "ok\n")


class ReadyPage(_Text):
    """
    C{/readyz}: 200 C{ready} while accepting, else 503 with the state
    (C{starting}, C{draining}), or C{failed by the admin API} while ready
    but switched to fail: a lifecycle state wins over the switch.
    """

    def __init__(
        self, readiness: Readiness, switch: HealthSwitch | None = None
    ) -> None:
        """
        @param readiness: the lifecycle state.
        @param switch: the run-time switch (L{None}: never failed on
            purpose).
        """
        Resource.__init__(self)
        self.readiness = readiness
        self.switch = switch

    def render_GET(self, request: Request) -> bytes:
        state = self.readiness.state
        if state != "ready":
            return self._reply(request, 503, f"{state}\n")
        if self.switch is not None and self.switch.failing("readyz"):
            return self._reply(request, 503, f"{ADMIN_FAILED}\n")
        return self._reply(request, 200, "ready\n")


class IndexPage(_Text):
    """
    C{/}: what is served here, one line: C{sockecho: /metrics /healthz
    /readyz /records}, and C{/faults /health} with C{--admin}.
    """

    def __init__(self, root: Resource) -> None:
        """
        @param root: the site's root, whose other children are listed.
        """
        Resource.__init__(self)
        self.root = root

    def render_GET(self, request: Request) -> bytes:
        paths = " ".join("/" + name.decode() for name in self.root.children if name)
        return self._reply(request, 200, f"sockecho: {paths}\n")


class QuietSite(BoundedSite):
    """
    A L{BoundedSite} that logs no request: no access log, no factory start
    and stop.
    """

    noisy = False

    def log(self, request: Any) -> None:
        """
        Log nothing for C{request}.
        """


def metrics_site(
    registry: CollectorRegistry,
    readiness: Readiness,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    reactor: Any = None,
    records: RecordRing | None = None,
    admin: Resource | None = None,
    health: HealthSwitch | None = None,
) -> QuietSite:
    """
    @param registry: what C{/metrics} serves.
    @param readiness: what C{/readyz} answers.
    @param max_connections: most connections open at once (0: no limit).
    @param request_timeout: seconds a request may take to arrive and a
        response to be taken (0: no timeout).
    @param reactor: the clock for timeouts (the global reactor by default).
    @param records: what C{/records} serves (L{None}: it answers 501).
    @param admin: with C{--admin}, what C{/faults} serves
        (L{twisted_echo.operations.adminpage.FaultsPage}); L{None}: no
        C{/faults} (404).
    @param health: the run-time switch C{/readyz} and C{/healthz} obey
        (L{None}: none); with C{admin} too, C{/health} changes it
        (L{HealthAdminPage}).
    @return: the HTTP site serving C{/metrics}, C{/healthz}, C{/readyz},
        C{/records} (and C{/faults}, C{/health}), bounded
        (L{twisted_echo.operations.httpbounds}).
    """
    root = Resource()
    root.putChild(b"", IndexPage(root))
    root.putChild(b"metrics", MetricsPage(registry))
    root.putChild(b"healthz", HealthPage(health))
    root.putChild(b"readyz", ReadyPage(readiness, health))
    root.putChild(b"records", RecordsPage(records))
    if admin is not None:
        root.putChild(b"faults", admin)
        if health is not None:
            root.putChild(b"health", HealthAdminPage(health))
    return QuietSite(
        root,
        max_connections=max_connections,
        request_timeout=request_timeout,
        timeout=HTTP_TIMEOUT,
        reactor=reactor,
    )


class MetricsService(ListenerService):
    """
    The C{--metrics} listener. Started with the server's listeners (as its
    last child, so C{/readyz} turns 200 once they are all up); at shutdown
    C{/readyz} turns 503 at once (L{drain_started}, a hook of the server)
    and the listener stays up until the drain is over (L{drain_ended}).

    @ivar readiness: what C{/readyz} answers.
    @ivar sources: the collector's L{CounterSource}s (add to it).
    """

    def __init__(
        self,
        description: str,
        endpoint: IStreamServerEndpoint,
        sources: list[CounterSource],
        max_buffer: int | None = None,
        process_metrics: bool = True,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        datagram_services: Collection[str] = DATAGRAM_SERVICES,
        records: RecordRing | None = None,
        admin: Resource | None = None,
        health: HealthSwitch | None = None,
    ) -> None:
        """
        @param description: the listening address as given.
        @param endpoint: where to listen.
        @param sources: where the figures come from.
        @param max_buffer: C{--max-buffer}, for C{sockecho_max_buffer_bytes}.
        @param process_metrics: whether to export the C{process_*} and
            C{python_*} metrics.
        @param max_connections: C{--metrics-max-connections} (0: no limit).
        @param request_timeout: C{--metrics-request-timeout}, seconds.
        @param datagram_services: the services that take no connection.
        @param records: the connection records C{/records} serves (L{None}
            with C{--records 0}: it answers 501).
        @param admin: with C{--admin}, what C{/faults} serves (L{None}:
            no admin routes).
        @param health: the run-time switch of C{/readyz}, C{/healthz}
            and the listeners (changed at C{/health} with C{admin});
            exported as gauges (L{HealthCollector}).
        """
        super().__init__(description, "metrics")
        self.endpoint = endpoint
        self.sources = sources
        self.readiness = Readiness()
        self.collector = SockechoCollector(sources, max_buffer, datagram_services)
        self.registry = metrics_registry(self.collector, process_metrics)
        self.site = metrics_site(
            self.registry,
            self.readiness,
            max_connections,
            request_timeout,
            records=records,
            admin=admin,
            health=health,
        )
        self.registry.register(ListenerCollector(self.site.counters))
        if health is not None:
            self.registry.register(HealthCollector(health))

    def listen(self) -> IListeningPort:
        """
        Listen on the endpoint; its result must be there at once.
        """
        return listen_at_once(self.endpoint, self.site, self.description)

    def startService(self) -> None:
        """
        Listen (if not yet) and become ready.
        """
        super().startService()
        self.readiness.ready()

    def drain_started(self) -> None:
        """
        A drain has started: C{/readyz} answers 503 from now on.
        """
        self.readiness.draining()

    def drain_ended(self) -> None:
        """
        The drain is over: stop listening.
        """
        self._stop_listening()

    def stopService(self) -> Deferred[None] | None:
        """
        Stop: during a drain, keep listening until L{drain_ended}; else
        (a failed start-up) stop listening now.
        """
        if self.readiness.state == "draining":
            self.running = 0
            return None
        return self._stop_listening()

    def _stop_listening(self) -> Deferred[None] | None:
        self.running = 0
        port, self.port = self.port, None
        if port is None:
            return None
        d: Deferred[None] = maybeDeferred(port.stopListening)
        return d


def iter_samples(
    registry: CollectorRegistry,
) -> Iterator[tuple[str, dict[str, str], float]]:
    """
    @return: every sample of C{registry} as C{(name, labels, value)}, for
        code and tests.
    """
    for metric in registry.collect():
        for sample in metric.samples:
            yield sample.name, dict(sample.labels), sample.value
