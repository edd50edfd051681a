# -*- test-case-name: tests.test_control -*-
"""
The supervisor -> worker control channel of C{--workers N}
(L{twisted_echo.app.supervisor}, L{twisted_echo.app.worker}).

Each worker gets two pipes besides its log: its standard input carries the
supervisor's commands, and one more descriptor (L{CONTROL_FD_ORDER} in its
orders) carries its answers and its events (connection records) back. Both
carry JSON objects, one per line (UTF-8, C{\\n}-terminated), each line at
most L{MAX_LINE} bytes: a longer line is dropped whole, with one error
reported, and the next line is read as usual (L{JsonLines}). One kind of
line is not JSON: a worker's connection records, gathered for
L{EVENT_DELAY} seconds (up to L{EVENT_DELAY_BUSY} under load), go in one
line that starts with L{RECORDS_TAG} (L{WorkerChannel.send_record}),
handed to the supervisor's
L{WorkerControl.records} as it came, without decoding: records are the
channel's bulk, one per connection.

A command is C{{"id": N, "command": NAME, "args": {...}}}; the worker
answers C{{"id": N, "ok": true, "result": ...}} or C{{"id": N, "ok": false,
"error": "one line"}}. An event is an object without C{id}: C{{"skipped":
N}}.

L{WorkerControl} is the supervisor's end: L{WorkerControl.broadcast} sends
one command to every live worker and fires with their answers once every
one has confirmed, or fails (L{NotConfirmedError}) naming the workers that
refused or did not answer within L{CONFIRM_TIMEOUT} seconds. A command sent
with C{keep=KEY} is also the state under C{KEY}: the last such command of
each key is given to every worker started later (a crash's replacement, a
SIGHUP reload) in its orders (L{WorkerControl.replay}), and the worker
applies it before it takes any connection (once its listeners are up,
before its reactor runs), so a replacement starts as its peers serve.

L{WorkerChannel} is the worker's end: it runs each command's handler (a
callable of the command's C{args} returning a JSON value, or raising
L{CommandError} with the reason) and answers; L{apply_state} runs the
replayed commands at start.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_echo.operations.adminpage import ChangeNotConfirmedError

#: The longest line either side sends or takes, in bytes (without its
#: newline). A connection record is about 600 bytes, plus four times its
#: C{--record-bytes} at most (escaped).
MAX_LINE = 1 << 20
#: Seconds L{WorkerControl.broadcast} waits for every worker's answer.
CONFIRM_TIMEOUT = 5.0
#: Bytes of events a worker queues beyond the pipe's own buffer (when the
#: supervisor reads slower than the worker writes) before it drops events
#: and counts them (C{{"skipped": N}}).
MAX_BACKLOG = 4 << 20
#: Seconds a worker gathers events before it writes them in one go: one
#: write and one wake-up of the supervisor for every record closed within
#: it, instead of one per record (the records' latency grows by at most
#: this, or L{EVENT_DELAY_BUSY} while records close fast).
EVENT_DELAY = 0.005
#: The longest a worker gathers while records close fast: a line of at
#: least L{BUSY_RECORDS} records doubles the next gathering, up to this
#: (seconds); a shorter line, or a quiet spell, brings it back to
#: L{EVENT_DELAY}. Fewer wake-ups of the supervisor under load, the
#: latency of a record closing alone unchanged.
EVENT_DELAY_BUSY = 0.025
#: Records in one line that make the worker gather longer (above).
BUSY_RECORDS = 4
#: Bytes of events gathered that are written at once, without waiting.
EVENT_BATCH = 64 << 10
#: The first byte of a line of connection records (not JSON): the rest of
#: the line is the records, each an item of L{twisted_echo.app.forwarded},
#: separated by L{RECORD_SEPARATOR}.
RECORDS_TAG = b"R"
#: Between two records of one line (a control character: JSON text never
#: holds one unescaped).
RECORD_SEPARATOR = "\x1e"
#: The key of a worker's orders giving the descriptor it answers on.
CONTROL_FD_ORDER = "control_fd"
#: The key of a worker's orders saying whether to send its connection
#: records (the supervisor keeps them only when something reads them).
RECORDS_ORDER = "records"
#: The key of a worker's orders giving the commands to apply at start.
STATE_ORDER = "state"

_log = Logger()

Message = dict[str, Any]
Handler = Callable[[Mapping[str, Any]], Any]


class CommandError(Exception):
    """
    A worker cannot carry out a command; the message says why (one line).
    """


class NotConfirmedError(ChangeNotConfirmedError):
    """
    Not every live worker confirmed a command.

    @ivar missing: the numbers of the workers that did not answer in time.
    @ivar refused: each refusing worker's reason, by worker number.
    @ivar confirmed: the numbers of the workers that did confirm.
    """

    def __init__(
        self,
        command: str,
        missing: Iterable[int],
        refused: Mapping[int, str],
        confirmed: Iterable[int],
        timeout: float,
    ) -> None:
        self.missing = sorted(missing)
        self.refused = dict(refused)
        self.confirmed = sorted(confirmed)
        parts = []
        if self.missing:
            parts.append(
                f"worker(s) {_numbers(self.missing)} did not confirm within "
                f"{timeout:g} s"
            )
        for number, reason in sorted(self.refused.items()):
            parts.append(f"worker {number} refused: {reason}")
        confirmed_text = _numbers(self.confirmed) or "none"
        super().__init__(
            f"{command}: {'; '.join(parts)} (confirmed by: {confirmed_text})"
        )


def _numbers(numbers: Iterable[int]) -> str:
    return ", ".join(str(n) for n in numbers)


def encode(message: Message, max_line: int = MAX_LINE) -> bytes:
    """
    @return: C{message} as one line of compact JSON, newline included.
    @raise ValueError: it is longer than C{max_line} bytes.
    """
    line = json.dumps(message, separators=(",", ":")).encode("utf-8")
    if len(line) > max_line:
        raise ValueError(f"a message of {len(line)} bytes, over {max_line}")
    return line + b"\n"


class JsonLines:
    """
    Cuts a byte stream into JSON objects, one per line, each line at most
    C{max_line} bytes: a longer line is dropped whole (its bytes are not
    kept while it lasts) and reported once to C{error}; so is a line that
    is not a JSON object. Empty lines are skipped. A line that starts with
    L{RECORDS_TAG} goes to C{records}, when given, undecoded.
    """

    def __init__(
        self,
        deliver: Callable[[Message], object],
        error: Callable[[str], object],
        max_line: int = MAX_LINE,
        records: Callable[[bytes], object] | None = None,
    ) -> None:
        """
        @param deliver: called with each object, in order.
        @param error: called with one line saying what was dropped.
        @param max_line: the longest line taken, bytes without its newline.
        @param records: called with each records line, its tag and newline
            taken off.
        """
        self.deliver = deliver
        self.error = error
        self.max_line = max_line
        self.records = records
        self._pending = b""
        self._skipping = False

    def feed(self, data: bytes) -> None:
        """
        Take the next bytes of the stream.
        """
        data = self._pending + data
        self._pending = b""
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            line = data[start:end]
            start = end + 1
            if self._skipping:
                self._skipping = False
                continue
            self._line(line)
        rest = data[start:]
        if self._skipping:
            return
        if len(rest) > self.max_line:
            self._skipping = True
            self.error(f"a line over {self.max_line} bytes; dropped")
            return
        self._pending = rest

    def _line(self, line: bytes) -> None:
        if len(line) > self.max_line:
            self.error(f"a line over {self.max_line} bytes; dropped")
            return
        if line[:1] == RECORDS_TAG and self.records is not None:
            self.records(line[1:])
            return
        if not line.strip():
            return
        try:
            message = json.loads(line)
        except ValueError as e:
            self.error(f"a line that is not JSON ({e}); dropped")
            return
        if not isinstance(message, dict):
            self.error("a line that is not a JSON object; dropped")
            return
        self.deliver(message)


class Worker(Protocol):
    """
    What L{WorkerControl} needs of a worker: its slot number and a way to
    send it bytes (the supervisor's L{twisted_echo.app.supervisor.WorkerProtocol}).
    """

    number: int

    def send_control(self, data: bytes) -> None: ...


class _Broadcast:
    """
    One command sent to several workers, waiting for their answers.
    """

    def __init__(self, command: str, waiting: list[Worker]) -> None:
        self.command = command
        self.waiting = waiting
        self.answers: dict[int, Any] = {}
        self.refused: dict[int, str] = {}
        self.done: Deferred[dict[int, Any]] = Deferred()
        self.timer: IDelayedCall | None = None


class WorkerControl:
    """
    The supervisor's end of every worker's channel (see the module's
    description).

    @ivar targets: gives the workers a command goes to: those alive and
        not told to drain (set by the supervisor).
    @ivar events: a handler for each event name (C{skipped}...), called
        with the worker and the event's value.
    @ivar records: called with the worker and each of its records lines
        (L{RECORDS_TAG}, taken off), or L{None}: they are dropped.
    @ivar timeout: seconds a broadcast waits for its answers.
    """

    def __init__(self, clock: IReactorTime, timeout: float = CONFIRM_TIMEOUT) -> None:
        self.clock = clock
        self.timeout = timeout
        self.targets: Callable[[], Iterable[Worker]] = list
        self.events: dict[str, Callable[[Worker, Any], object]] = {}
        self.records: Callable[[Worker, bytes], object] | None = None
        self._state: dict[str, Message] = {}
        self._pending: dict[int, _Broadcast] = {}
        self._next_id = 0

    def replay(self) -> list[Message]:
        """
        @return: the commands a worker started now applies before it takes
            any connection: the last one sent under each C{keep} key, in the order
            their keys were last set.
        """
        return list(self._state.values())

    def broadcast(
        self, command: str, args: Mapping[str, Any], keep: str | None = None
    ) -> Deferred[dict[int, Any]]:
        """
        Send C{command} to every worker of L{targets}.

        @param args: its arguments (JSON).
        @param keep: when given, the command is also the state under this
            key (L{replay}) from now on, whatever the workers answer.
        @return: fires with each worker's result, by worker number, once
            every one confirmed (at once when there is none); fails with
            L{NotConfirmedError} when one refused, or did not answer within
            L{timeout} seconds. A worker that ends meanwhile is not waited
            for (one started after it gets the state at start).
        @raise ValueError: the command is longer than L{MAX_LINE}.
        """
        self._next_id += 1
        number = self._next_id
        line = encode({"id": number, "command": command, "args": dict(args)})
        if keep is not None:
            self._state.pop(keep, None)
            self._state[keep] = {"command": command, "args": dict(args)}
        sent = _Broadcast(command, [])
        for worker in self.targets():
            try:
                worker.send_control(line)
            except Exception as e:  # its pipe is gone: it is ending
                _log.info(
                    "worker {number}: control pipe closed ({error})",
                    number=worker.number,
                    error=e,
                )
                continue
            sent.waiting.append(worker)
        if not sent.waiting:
            sent.done.callback({})
            return sent.done
        self._pending[number] = sent
        sent.timer = self.clock.callLater(self.timeout, self._expire, number)
        return sent.done

    def received(self, worker: Worker, message: Message) -> None:
        """
        A message from C{worker}: an answer, or an event.
        """
        number = message.get("id")
        if number is None:
            for name, value in message.items():
                handler = self.events.get(name)
                if handler is not None:
                    try:
                        handler(worker, value)
                    except Exception:
                        # One bad event is logged; the channel goes on.
                        _log.failure(
                            "worker {number}: its {name} event not taken",
                            number=worker.number,
                            name=name,
                        )
            return
        sent = self._pending.get(number) if isinstance(number, int) else None
        if sent is None or worker not in sent.waiting:
            return  # too late, or not asked
        sent.waiting.remove(worker)
        if message.get("ok"):
            sent.answers[worker.number] = message.get("result")
        else:
            sent.refused[worker.number] = str(message.get("error", "no reason given"))
        if not sent.waiting:
            self._finish(number)

    def received_records(self, worker: Worker, records: bytes) -> None:
        """
        A line of records from C{worker} (L{RECORDS_TAG} taken off).
        """
        if self.records is not None:
            self.records(worker, records)

    def worker_gone(self, worker: Worker) -> None:
        """
        C{worker} ended: stop waiting for its answers.
        """
        for number, sent in list(self._pending.items()):
            if worker in sent.waiting:
                sent.waiting.remove(worker)
                if not sent.waiting:
                    self._finish(number)

    def _expire(self, number: int) -> None:
        sent = self._pending.get(number)
        if sent is not None:
            sent.timer = None
            self._finish(number)

    def _finish(self, number: int) -> None:
        sent = self._pending.pop(number)
        if sent.timer is not None and sent.timer.active():
            sent.timer.cancel()
        if sent.waiting or sent.refused:
            sent.done.errback(
                NotConfirmedError(
                    sent.command,
                    [w.number for w in sent.waiting],
                    sent.refused,
                    sent.answers,
                    self.timeout,
                )
            )
        else:
            sent.done.callback(sent.answers)


def run_command(handlers: Mapping[str, Handler], message: Message) -> Message:
    """
    Carry out one command with its handler.

    @return: the answer (C{ok} with the result, or not with the error).
    """
    answer: Message = {"id": message.get("id")}
    handler = handlers.get(str(message.get("command")))
    args = message.get("args")
    try:
        if handler is None:
            raise CommandError(f"no command {message.get('command')!r}")
        if not isinstance(args, dict):
            raise CommandError("args is not a JSON object")
        answer["result"] = handler(args)
        answer["ok"] = True
    except CommandError as e:
        answer.update(ok=False, error=str(e))
    except Exception as e:
        _log.failure("control command {command!r} failed", command=message)
        answer.update(ok=False, error=f"{type(e).__name__}: {e}")
    return answer


def apply_state(handlers: Mapping[str, Handler], commands: Iterable[Message]) -> None:
    """
    Apply the commands a worker's orders replay (L{WorkerControl.replay}),
    before it takes any connection; one that fails is logged and the rest applied.
    """
    for message in commands:
        answer = run_command(handlers, message)
        if not answer["ok"]:
            _log.error(
                "could not apply {command} at start: {error}",
                command=message.get("command"),
                error=answer["error"],
            )


@implementer(IPushProducer)
class WorkerChannel(TwistedProtocol):
    """
    The worker's end: commands in on standard input, answers and events
    out on the control descriptor (run on a
    L{twisted.internet.stdio.StandardIO} with that C{stdout}).

    Events and records are gathered for L{EVENT_DELAY} seconds (up to
    L{EVENT_DELAY_BUSY} while records close fast; or L{EVENT_BATCH}
    bytes) and written together, the records in one line
    (L{send_record}). They are dropped, and counted, only when
    the supervisor reads so slowly that over L{MAX_BACKLOG} bytes wait
    beyond the pipe's buffer; the count is sent (C{{"skipped": N}}) once
    the pipe drains.

    @ivar skipped: events dropped so far.
    @ivar delay: seconds the next gathering lasts.
    """

    def __init__(self, handlers: Mapping[str, Handler], clock: IReactorTime) -> None:
        """
        @param handlers: each command's handler, by command name.
        @param clock: times the gathering of events.
        """
        self.handlers = handlers
        self.clock = clock
        self.lines = JsonLines(self._command, self._bad_line)
        self.skipped = 0
        self._paused = False
        self._backlog = 0
        self._unreported = 0
        self._events: list[bytes] = []
        self._events_size = 0
        self._records: list[str] = []
        self._records_size = 0
        self._flush_call: IDelayedCall | None = None
        self.delay = EVENT_DELAY
        self._flushed_at = clock.seconds()

    def connectionMade(self) -> None:  # noqa: N802
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.lines.feed(data)

    def _bad_line(self, reason: str) -> None:
        _log.error("control channel: {reason}", reason=reason)

    def _command(self, message: Message) -> None:
        self._write(encode(run_command(self.handlers, message)))

    def _write(self, line: bytes) -> None:
        if self.transport is not None:
            self.transport.write(line)

    def send_event(self, name: str, value: Any) -> bool:
        """
        Send the event C{{name: value}} to the supervisor.

        @return: whether it was sent (not dropped: too long, or over the
            backlog).
        """
        try:
            line = encode({name: value})
        except ValueError as e:
            _log.warn("{name} not sent to the supervisor: {error}", name=name, error=e)
            self.skipped += 1
            return False
        if self._paused:
            if self._backlog + len(line) > MAX_BACKLOG:
                self.skipped += 1
                self._unreported += 1
                return False
            self._backlog += len(line)
        self._events.append(line)
        self._events_size += len(line)
        self._gathered()
        return True

    def send_record(self, item: str) -> bool:
        """
        Send one connection record to the supervisor, in the next line of
        records.

        @param item: the record as L{twisted_echo.app.forwarded.record_item}
            makes it (ASCII, no control character but its field
            separators).
        @return: whether it was sent (not dropped: too long for a line, or
            over the backlog).
        """
        size = len(item) + 1
        if size > MAX_LINE - 1:
            _log.warn(
                "record not sent to the supervisor: {size} bytes, over {max}",
                size=size,
                max=MAX_LINE,
            )
            self.skipped += 1
            return False
        if self._paused:
            if self._backlog + size > MAX_BACKLOG:
                self.skipped += 1
                self._unreported += 1
                return False
            self._backlog += size
        if self._records_size + size > MAX_LINE:
            self.flush()
        self._records.append(item)
        self._records_size += size
        self._gathered()
        return True

    def _gathered(self) -> None:
        if self._events_size + self._records_size >= EVENT_BATCH:
            self.flush()
        elif self._flush_call is None:
            if self.clock.seconds() - self._flushed_at > 2 * self.delay:
                self.delay = EVENT_DELAY  # a quiet spell
            self._flush_call = self.clock.callLater(self.delay, self.flush)

    def flush(self) -> None:
        """
        Write the events gathered so far.
        """
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        data = b""
        if self._events:
            events, self._events, self._events_size = self._events, [], 0
            data = b"".join(events)
        if self._records:
            records, self._records, self._records_size = self._records, [], 0
            if len(records) >= BUSY_RECORDS:
                self.delay = min(self.delay * 2, EVENT_DELAY_BUSY)
            else:
                self.delay = EVENT_DELAY
            self._flushed_at = self.clock.seconds()
            text = RECORD_SEPARATOR.join(records)
            data += RECORDS_TAG + text.encode("ascii") + b"\n"
        if data:
            self._write(data)

    # IPushProducer: the pipe's buffer is full (paused) or drained again.

    def pauseProducing(self) -> None:  # noqa: N802
        self._paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self._paused = False
        self._backlog = 0
        if self._unreported:
            count, self._unreported = self._unreported, 0
            self._write(encode({"skipped": count}))

    def stopProducing(self) -> None:  # noqa: N802
        self._paused = True

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]  # noqa: N802
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        self._events = []
        self._records = []
        self.transport = None
