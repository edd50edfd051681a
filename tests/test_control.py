"""
The C{--workers} control channel (L{twisted_echo.app.control}), in memory:
its framing and bounds, the supervisor's broadcast on a L{Clock}, the
worker's end on a L{StringTransport}; over real pipes in
C{tests.test_forwarded}.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_echo.app.control import (
    BUSY_RECORDS,
    EVENT_BATCH,
    EVENT_DELAY,
    EVENT_DELAY_BUSY,
    MAX_BACKLOG,
    MAX_LINE,
    RECORDS_TAG,
    CommandError,
    JsonLines,
    NotConfirmedError,
    WorkerChannel,
    WorkerControl,
    apply_state,
    encode,
    run_command,
)


class Lines:
    def __init__(self, max_line: int = 64) -> None:
        self.messages: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.lines = JsonLines(self.messages.append, self.errors.append, max_line)


class FramingTests(SynchronousTestCase):
    def test_split_and_joined(self) -> None:
        """
        Objects cut anywhere across reads, or several in one read, come
        out whole and in order; empty lines are skipped.
        """
        got = Lines()
        stream = b'{"a":1}\n\n{"b":"x y"}\n{"c":[1,2]}\n'
        for i in range(len(stream)):
            got.lines.feed(stream[i : i + 1])
        got.lines.feed(stream)
        expected = [{"a": 1}, {"b": "x y"}, {"c": [1, 2]}]
        self.assertEqual(got.messages, expected * 2)
        self.assertEqual(got.errors, [])

    def test_long_line_dropped_next_read(self) -> None:
        """
        A line over the bound is dropped whole, reported once, and not kept
        while it lasts (the bytes held stay under the bound); the next
        line is read as usual.
        """
        got = Lines(max_line=64)
        got.lines.feed(b'{"a":"' + b"x" * 50)
        for _ in range(100):
            got.lines.feed(b"x" * 50)
            self.assertLessEqual(len(got.lines._pending), 64)
        got.lines.feed(b'"}\n{"ok":1}\n')
        self.assertEqual(got.messages, [{"ok": 1}])
        self.assertEqual(got.errors, ["a line over 64 bytes; dropped"])

    def test_long_line_in_one_read(self) -> None:
        got = Lines(max_line=64)
        got.lines.feed(b'{"a":"' + b"x" * 80 + b'"}\n{"ok":1}\n')
        self.assertEqual(got.messages, [{"ok": 1}])
        self.assertEqual(len(got.errors), 1)

    def test_not_objects(self) -> None:
        got = Lines()
        got.lines.feed(b"nope\n[1]\n" + b'{"ok":1}\n')
        self.assertEqual(got.messages, [{"ok": 1}])
        self.assertEqual(len(got.errors), 2)
        self.assertIn("not JSON", got.errors[0])
        self.assertIn("not a JSON object", got.errors[1])

    def test_records_lines_not_decoded(self) -> None:
        """
        A line of records goes to the records handler as it came (tag and
        newline taken off), between objects, in order; without a handler
        it is a line that is not JSON.
        """
        got = Lines()
        lines: list[bytes] = []
        got.lines.records = lines.append
        got.lines.feed(b'{"a":1}\nRx\x1fy\x1e{not json\n{"b":2}\n')
        self.assertEqual(got.messages, [{"a": 1}, {"b": 2}])
        self.assertEqual(lines, [b"x\x1fy\x1e{not json"])
        self.assertEqual(got.errors, [])
        got.lines.feed(b"R" + b"x" * 80 + b"\n")
        self.assertEqual(len(lines), 1)
        self.assertEqual(got.errors, ["a line over 64 bytes; dropped"])
        got.lines.records = None
        got.lines.feed(b"Rx\n")
        self.assertIn("not JSON", got.errors[-1])

    def test_encode_bounded(self) -> None:
        self.assertEqual(encode({"a": 1}), b'{"a":1}\n')
        with self.assertRaises(ValueError):
            encode({"a": "x" * 100}, max_line=64)


class FakeWorker:
    def __init__(self, number: int) -> None:
        self.number = number
        self.sent: list[dict[str, Any]] = []
        self.closed = False

    def send_control(self, data: bytes) -> None:
        if self.closed:
            raise KeyError(0)
        self.sent.append(json.loads(data))

    def answer(self, control: WorkerControl, ok: bool = True, **fields: Any) -> None:
        message = {"id": self.sent[-1]["id"], "ok": ok, **fields}
        control.received(self, message)


class BroadcastTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.control = WorkerControl(self.clock, timeout=5.0)
        self.workers = [FakeWorker(1), FakeWorker(2)]
        self.control.targets = lambda: self.workers
        self.results: list[Any] = []

    def send(self, keep: str | None = None) -> None:
        done = self.control.broadcast("faults", {"listener": "echo"}, keep=keep)
        done.addBoth(self.results.append)

    def test_every_worker_confirms(self) -> None:
        """
        One call sends the command to every worker and fires, once all
        answered, with each one's result.
        """
        self.send()
        for worker in self.workers:
            self.assertEqual(worker.sent[0]["command"], "faults")
            self.assertEqual(worker.sent[0]["args"], {"listener": "echo"})
        self.workers[0].answer(self.control, result="one")
        self.assertEqual(self.results, [])
        self.workers[1].answer(self.control, result="two")
        self.assertEqual(self.results, [{1: "one", 2: "two"}])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeout_names_missing(self) -> None:
        self.send()
        self.workers[0].answer(self.control, result="one")
        self.clock.advance(4.9)
        self.assertEqual(self.results, [])
        self.clock.advance(0.1)
        [failure] = self.results
        assert isinstance(failure, Failure)
        error = failure.value
        assert isinstance(error, NotConfirmedError)
        self.assertEqual((error.missing, error.confirmed), ([2], [1]))
        self.assertEqual(
            str(error),
            "faults: worker(s) 2 did not confirm within 5 s (confirmed by: 1)",
        )
        # A late answer is ignored.
        self.workers[1].answer(self.control, result="two")

    def test_refusal_named(self) -> None:
        self.send()
        self.workers[0].answer(self.control, ok=False, error="bad")
        self.workers[1].answer(self.control, result="two")
        [failure] = self.results
        assert isinstance(failure, Failure)
        self.assertEqual(
            failure.getErrorMessage(),
            "faults: worker 1 refused: bad (confirmed by: 2)",
        )

    def test_worker_gone_not_waited_for(self) -> None:
        """
        A worker that ends while a command waits is not waited for; one
        whose pipe is already closed is not sent to.
        """
        self.send()
        self.workers[0].answer(self.control, result="one")
        self.control.worker_gone(self.workers[1])
        self.assertEqual(self.results, [{1: "one"}])
        self.workers[0].closed = True
        self.send()
        self.workers[1].answer(self.control, result="two")
        self.assertEqual(self.results[-1], {2: "two"})

    def test_no_worker(self) -> None:
        self.workers = []
        self.send()
        self.assertEqual(self.results, [{}])

    def test_kept_state_replayed(self) -> None:
        """
        The last command of each C{keep} key is what a worker started
        later applies, in the order the keys were last set.
        """
        self.control.broadcast("faults", {"p": 1}, keep="faults/echo")
        self.control.broadcast("faults", {"p": 2}, keep="faults/udp")
        self.control.broadcast("ping", {})
        self.control.broadcast("faults", {"p": 3}, keep="faults/echo")
        self.assertEqual(
            self.control.replay(),
            [
                {"command": "faults", "args": {"p": 2}},
                {"command": "faults", "args": {"p": 3}},
            ],
        )

    def test_events(self) -> None:
        seen: list[tuple[int, Any]] = []
        self.control.events["record"] = lambda w, v: seen.append((w.number, v))
        self.control.received(self.workers[1], {"record": {"id": 3}, "other": 1})
        self.assertEqual(seen, [(2, {"id": 3})])

    def test_event_handler_error_logged_channel_goes_on(self) -> None:
        """
        An event its handler cannot take is logged as an error naming the
        worker; the next events are still taken (a record the supervisor
        could not keep once took every later one with it).
        """
        seen: list[Any] = []

        def take(worker: Any, value: Any) -> None:
            if value == "bad":
                raise AttributeError("logged")
            seen.append(value)

        self.control.events["record"] = take
        self.control.received(self.workers[0], {"record": "bad"})
        self.control.received(self.workers[0], {"record": "good"})
        self.assertEqual(seen, ["good"])
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)


def handlers() -> dict[str, Any]:
    def echo(args: Mapping[str, Any]) -> Any:
        if args.get("refuse"):
            raise CommandError("refused on purpose")
        return dict(args)

    return {"echo": echo}


class WorkerChannelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.transport = StringTransport()
        self.clock = Clock()
        self.channel = WorkerChannel(handlers(), self.clock)
        self.channel.makeConnection(self.transport)

    def answers(self) -> list[dict[str, Any]]:
        lines = self.transport.value().splitlines()
        self.transport.clear()
        return [json.loads(line) for line in lines]

    def test_commands_answered(self) -> None:
        self.channel.dataReceived(
            b'{"id":1,"command":"echo","args":{"x":1}}\n'
            b'{"id":2,"command":"echo","args":{"refuse":true}}\n'
            b'{"id":3,"command":"nope","args":{}}\n'
            b'{"id":4,"command":"echo","args":[]}\n'
        )
        self.assertEqual(
            self.answers(),
            [
                {"id": 1, "ok": True, "result": {"x": 1}},
                {"id": 2, "ok": False, "error": "refused on purpose"},
                {"id": 3, "ok": False, "error": "no command 'nope'"},
                {"id": 4, "ok": False, "error": "args is not a JSON object"},
            ],
        )

    def test_events_bounded_when_paused(self) -> None:
        """
        While the pipe is full (paused), events queue up to
        L{MAX_BACKLOG} bytes, then are dropped and counted; the count is
        sent once it drains.
        """
        self.assertIs(self.transport.producer, self.channel)
        self.assertTrue(self.channel.send_event("record", {"n": 0}))
        self.channel.pauseProducing()
        value = "x" * 1000
        line = len(encode({"record": {"v": value}}))
        tries = MAX_BACKLOG // line + 100
        sent = 0
        for _ in range(tries):
            sent += self.channel.send_event("record", {"v": value})
        self.assertEqual(sent, MAX_BACKLOG // line)
        dropped = tries - sent
        self.assertEqual(self.channel.skipped, dropped)
        self.channel.resumeProducing()
        written = self.answers()
        self.assertEqual(written[-1], {"skipped": dropped})
        self.clock.advance(1)
        written += self.answers()
        records = [w for w in written if "record" in w]
        self.assertEqual(len(records), sent + 1)

    def test_events_gathered(self) -> None:
        """
        Events closed within L{EVENT_DELAY} are written together after
        it; L{EVENT_BATCH} bytes of them at once.
        """
        for n in range(3):
            self.channel.send_event("record", {"n": n})
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(EVENT_DELAY)
        self.assertEqual(self.answers(), [{"record": {"n": n}} for n in range(3)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        value = "x" * 1000
        while not self.transport.value():
            self.channel.send_event("record", {"v": value})
        self.assertGreaterEqual(len(self.transport.value()), EVENT_BATCH)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def records_lines(self) -> list[list[bytes]]:
        """
        @return: the lines of records written so far, each as its items.
        """
        lines = self.transport.value().splitlines()
        self.transport.clear()
        self.assertTrue(all(line[:1] == RECORDS_TAG for line in lines), lines)
        return [line[1:].split(b"\x1e") for line in lines]

    def test_records_one_line_per_batch(self) -> None:
        """
        Records closed within L{EVENT_DELAY} are written in one line, in
        order; with an event gathered meanwhile, the event's line first.
        """
        for n in range(5):
            self.assertTrue(self.channel.send_record(f"item{n}"))
        self.channel.send_event("skipped", 1)
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(EVENT_DELAY)
        written = self.transport.value().split(b"\n")
        self.assertEqual(written[0], b'{"skipped":1}')
        self.transport.clear()
        self.transport.write(written[1] + b"\n")
        self.assertEqual(
            self.records_lines(), [[f"item{n}".encode() for n in range(5)]]
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_gathers_longer_while_busy(self) -> None:
        """
        While every line carries L{BUSY_RECORDS} records or more, the
        worker gathers twice as long each time, up to L{EVENT_DELAY_BUSY}
        (fewer wake-ups of the supervisor); a record closing alone after
        a quiet spell, or a short line, waits L{EVENT_DELAY} again.
        """
        waits = []
        for _ in range(6):
            for _ in range(BUSY_RECORDS):
                self.channel.send_record("r")
            [call] = self.clock.getDelayedCalls()
            waits.append(round(call.getTime() - self.clock.seconds(), 6))
            self.clock.advance(waits[-1])
        self.assertEqual(waits[0], EVENT_DELAY)
        self.assertEqual(waits[1], 2 * EVENT_DELAY)
        self.assertEqual(waits[-1], EVENT_DELAY_BUSY)
        self.assertEqual(len(self.records_lines()), 6)
        # A short line brings the gathering back.
        self.channel.send_record("r")
        self.clock.advance(EVENT_DELAY_BUSY)
        self.channel.send_record("r")
        [call] = self.clock.getDelayedCalls()
        self.assertEqual(round(call.getTime() - self.clock.seconds(), 6), EVENT_DELAY)
        self.clock.advance(EVENT_DELAY)
        # So does a quiet spell after a busy one.
        for _ in range(3):
            for _ in range(BUSY_RECORDS):
                self.channel.send_record("r")
            self.clock.advance(EVENT_DELAY_BUSY)
        self.assertGreater(self.channel.delay, EVENT_DELAY)
        self.clock.advance(1.0)
        self.channel.send_record("r")
        [call] = self.clock.getDelayedCalls()
        self.assertEqual(round(call.getTime() - self.clock.seconds(), 6), EVENT_DELAY)

    def test_records_lines_bounded(self) -> None:
        """
        L{EVENT_BATCH} bytes of records are written at once; a line never
        grows over L{MAX_LINE}; a record longer than a line is not sent.
        """
        item = "x" * 1000
        while not self.transport.value():
            self.channel.send_record(item)
        [line] = self.records_lines()
        self.assertGreaterEqual(len(line) * 1001, EVENT_BATCH)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        big = "y" * (MAX_LINE // 2)
        for _ in range(3):
            self.assertTrue(self.channel.send_record(big))
        self.channel.flush()
        lines = self.transport.value().split(b"\n")[:-1]
        self.assertEqual(len(lines), 3)
        self.assertTrue(all(len(line) <= MAX_LINE for line in lines))
        self.transport.clear()
        self.assertFalse(self.channel.send_record("z" * MAX_LINE))
        self.assertEqual(self.channel.skipped, 1)
        self.channel.flush()
        self.assertEqual(self.transport.value(), b"")
        self.flushLoggedErrors()

    def test_records_bounded_when_paused(self) -> None:
        """
        While the pipe is full, records queue up to L{MAX_BACKLOG} bytes,
        then are dropped and counted, as events.
        """
        self.channel.pauseProducing()
        item = "x" * 999
        tries = MAX_BACKLOG // 1000 + 100
        sent = sum(self.channel.send_record(item) for _ in range(tries))
        self.assertEqual(sent, MAX_BACKLOG // 1000)
        self.channel.resumeProducing()
        self.clock.advance(EVENT_DELAY_BUSY)
        written = self.transport.value().split(b"\n")
        self.assertIn(b'{"skipped":' + str(tries - sent).encode() + b"}", written)
        items = sum(
            len(line[1:].split(b"\x1e")) for line in written if line[:1] == b"R"
        )
        self.assertEqual(items, sent)

    def test_too_long_event_not_sent(self) -> None:
        self.assertFalse(self.channel.send_event("record", {"v": "x" * (2 << 20)}))
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.channel.skipped, 1)
        self.flushLoggedErrors()

    def test_apply_state_and_run_command(self) -> None:
        applied: list[Any] = []

        def keep(args: Mapping[str, Any]) -> None:
            applied.append(dict(args))

        apply_state(
            {"keep": keep},
            [
                {"command": "keep", "args": {"n": 1}},
                {"command": "missing", "args": {}},
                {"command": "keep", "args": {"n": 2}},
            ],
        )
        self.assertEqual(applied, [{"n": 1}, {"n": 2}])
        answer = run_command({"keep": keep}, {"id": 7, "command": "keep", "args": {}})
        self.assertEqual(answer, {"id": 7, "ok": True, "result": None})
