"""
Tests for L{twisted_echo.stream}: flow control, timeouts, graceful drain.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.memory import connect, run_clock
from twisted_echo.echo import Echo, EchoFactory
from twisted_echo.limits import DRAIN_QUIET, Timeouts


class StreamTimeoutTests(TestCase):
    """
    Idle and stall timeouts on a L{task.Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.factory = EchoFactory(self.clock, timeouts=Timeouts(idle=30, stall=10))
        self.protocol, self.transport = connect(self.factory, Echo)

    def test_registers_itself_as_streaming_producer(self) -> None:
        """
        Flow control: the protocol is its transport's push producer, and
        pausing it stops reading from the peer.
        """
        self.assertIs(self.transport.producer, self.protocol)
        self.assertTrue(self.transport.streaming)
        self.protocol.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.protocol.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")

    def test_idle_connection_is_closed(self) -> None:
        """
        No traffic for the idle timeout: the connection closes, within a
        quarter of the timeout after it; traffic restarts the count down.
        """
        run_clock(self.clock, 29)
        self.protocol.dataReceived(b"still here")
        run_clock(self.clock, 29.75)
        self.assertFalse(self.transport.disconnecting)
        run_clock(self.clock, 30 / 4 + 0.25)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.factory.counters.timeouts["idle"], 1)
        run_clock(self.clock, 60)
        self.assertEqual(self.factory.counters.timeouts["idle"], 1)

    def test_one_timer_for_all_connections(self) -> None:
        """
        However many connections are open, one timer watches them; none is
        left once they have all closed.
        """
        protocols = [connect(self.factory, Echo)[0] for _ in range(100)]
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        for protocol in [self.protocol, *protocols]:
            protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idle_timeout_zero_means_never(self) -> None:
        factory = EchoFactory(self.clock, timeouts=Timeouts(idle=0))
        _, transport = connect(factory, Echo)
        self.clock.advance(10**6)
        self.assertFalse(transport.disconnecting)

    def test_stalled_reader_is_aborted(self) -> None:
        """
        A peer that reads nothing of what it is owed for the stall timeout
        (flow control keeps us paused) is aborted; one that reads in time is
        not.
        """
        self.protocol.pauseProducing()
        self.clock.advance(9)
        self.protocol.resumeProducing()
        self.protocol.pauseProducing()
        self.clock.advance(9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1.5)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.factory.counters.timeouts["stall"], 1)

    def test_peer_that_never_reads_after_half_close_is_aborted(self) -> None:
        """
        Closing waits for the peer to read what it is owed, but not beyond
        the stall timeout.
        """
        aborted = []
        self.transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        self.protocol.readConnectionLost()
        self.clock.advance(10.5)
        self.assertEqual(aborted, [True])


class DrainTests(TestCase):
    """
    Graceful shutdown of one factory's connections.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.factory = EchoFactory(self.clock)

    def test_no_connections_drains_at_once(self) -> None:
        d = self.factory.drain(10)
        self.assertIsNone(self.successResultOf(d))

    def test_busy_connection_finishes_quiet_one_closes(self) -> None:
        """
        At shutdown a quiet connection closes after L{DRAIN_QUIET} seconds
        (within a quarter of it);
        a busy one keeps being served until it is quiet, and the drain
        completes when the last one has closed.
        """
        quiet, quiet_transport = connect(self.factory, Echo)
        busy, busy_transport = connect(self.factory, Echo)
        d = self.factory.drain(10)
        for _ in range(5):
            run_clock(self.clock, DRAIN_QUIET / 2)
            busy.dataReceived(b"more")
        self.assertTrue(quiet_transport.disconnecting)
        quiet.connectionLost(None)
        self.assertFalse(busy_transport.disconnecting)
        self.assertEqual(busy_transport.value(), b"more" * 5)
        self.assertNoResult(d)
        run_clock(self.clock, DRAIN_QUIET * 1.5)
        self.assertTrue(busy_transport.disconnecting)
        busy.connectionLost(None)
        self.successResultOf(d)

    def test_drain_timeout_aborts_the_rest(self) -> None:
        protocol, transport = connect(self.factory, Echo)
        aborted = []
        transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        d = self.factory.drain(3)
        for _ in range(8):
            self.clock.advance(0.5)
            protocol.dataReceived(b"x")
        self.assertEqual(aborted, [True])
        self.successResultOf(d)
        self.assertEqual(self.factory.counters.timeouts["drain"], 1)

    def test_connection_accepted_while_draining_drains_too(self) -> None:
        connect(self.factory, Echo)
        self.factory.drain(10)
        _, late = connect(self.factory, Echo)
        run_clock(self.clock, DRAIN_QUIET * 1.5)
        self.assertTrue(late.disconnecting)
