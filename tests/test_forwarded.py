"""
What a C{--workers} supervisor serves for its workers
(L{twisted_echo.app.forwarded}): C{/faults} changes checked once and
applied by every worker, C{/records} from one ring fed by every worker. In
memory (a L{Clock}, L{DummyRequest}), then over real C{twistd --workers 2}
processes.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import threading
import tracemalloc
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.test.requesthelper import DummyRequest

from tests.process import IO_TIMEOUT, RunningServer, start_server, wait_until
from tests.process import http_call as call
from tests.test_control import FakeWorker
from tests.test_records import a_record
from twisted_echo.app.control import CommandError, WorkerControl
from twisted_echo.app.forwarded import (
    FORWARDED_RECORD_BYTES,
    ForwardedRecord,
    add_forwarded_records,
    forwarded_fault_slots,
    record_item,
    with_seed,
    worker_handlers,
)
from twisted_echo.faults.profile import ProfileError, parse_profile
from twisted_echo.faults.runtime import StreamFaultSlot
from twisted_echo.operations.adminpage import FaultsPage
from twisted_echo.policies.counters import ServiceCounters
from twisted_echo.records import causes
from twisted_echo.records.record import ConnectionRecord
from twisted_echo.records.ring import RecordRing, matcher
from twisted_echo.testing.spawn import start_sockecho

HOST = "127.0.0.1"


def record(
    service: str = "echo", client: str = "tcp:127.0.0.1:5000", **fields: Any
) -> ConnectionRecord:
    """
    @return: a typical TCP record closed in a worker (its worker's id 7).
    """
    made = a_record(service, client, **fields)
    made.id = 7
    return made


def line(*records: ConnectionRecord) -> bytes:
    """
    @return: the line of records a worker writes for C{records}, tag and
        newline taken off.
    """
    return "\x1e".join(record_item(r) for r in records).encode("ascii")


class SlotTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.control = WorkerControl(self.clock, timeout=3.0)
        self.workers = [FakeWorker(1), FakeWorker(2)]
        self.control.targets = lambda: self.workers
        self.slots = forwarded_fault_slots(
            ["udp", "echo", "upper", "echo"],
            {"upper": parse_profile("close-after=5")},
            self.control,
        )

    def test_listed_as_one_process(self) -> None:
        self.assertEqual(list(self.slots), ["echo", "upper", "udp"])
        self.assertEqual(
            self.slots["upper"].describe(),
            {"listener": "upper", "profile": "close-after=5", "seed": None},
        )
        self.assertTrue(self.slots["udp"].datagram)

    def test_bad_profile_sends_nothing(self) -> None:
        """
        A profile that does not parse is refused in the supervisor: nothing
        is sent, the state stays.
        """
        with self.assertRaises(ProfileError):
            self.slots["echo"].replace("close-after=5,p=2")
        with self.assertRaises(ProfileError):
            self.slots["udp"].replace("reset-after=5")
        self.assertEqual([w.sent for w in self.workers], [[], []])
        self.assertIsNone(self.slots["echo"].describe()["profile"])
        self.assertEqual(self.control.replay(), [])

    def test_seed_pinned_once_for_all(self) -> None:
        """
        A profile without a seed gets one, the same for every worker and
        for those started later; the answer names the workers.
        """
        answers: list[Any] = []
        self.slots["echo"].replace("reset-after=10").addCallback(answers.append)
        seed = self.slots["echo"].seed
        assert seed is not None
        sent = [w.sent[0]["args"] for w in self.workers]
        self.assertEqual(
            sent, [{"listener": "echo", "profile": f"reset-after=10;seed={seed}"}] * 2
        )
        self.assertEqual(self.control.replay()[0]["args"], sent[0])
        for worker in self.workers:
            worker.answer(self.control, result={})
        self.assertEqual(
            answers,
            [
                {
                    "listener": "echo",
                    "profile": "reset-after=10",
                    "seed": seed,
                    "workers": [1, 2],
                }
            ],
        )
        self.slots["echo"].clear()
        self.assertEqual(
            self.control.replay(),
            [{"command": "faults", "args": {"listener": "echo", "profile": None}}],
        )
        self.assertEqual(with_seed("delay=1s;seed=3", 9), "delay=1s;seed=3")

    def test_not_confirmed_is_504(self) -> None:
        """
        Over C{/faults}: the answer waits for the workers; one that does
        not confirm in time makes a 504 naming it.
        """
        page = FaultsPage(self.slots)
        request = DummyRequest([b"echo"])
        request.method = b"PUT"
        request.content = _Body(b"delay=1s;seed=4")
        child = page.getChild(b"echo", request)
        request.postpath = []
        result = child.render(request)
        self.assertIsInstance(result, int)  # NOT_DONE_YET
        self.workers[0].answer(self.control, result={})
        self.assertEqual(request.finished, 0)
        self.clock.advance(3.0)
        self.assertEqual(request.responseCode, 504)
        self.assertEqual(
            b"".join(request.written),
            b"echo: faults: worker(s) 2 did not confirm within 3 s (confirmed by: 1)\n",
        )
        # The state changed all the same: GET answers from it.
        self.assertEqual(self.slots["echo"].describe()["profile"], "delay=1s;seed=4")


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data


class RecordTests(SynchronousTestCase):
    def test_numbered_filtered_waited_for(self) -> None:
        """
        Workers' records are numbered by the supervisor's ring, filtered as
        any record, and end a long-poll's wait; an item that is not a
        record is dropped and counted.
        """
        ring = RecordRing(10, Clock())
        waited: list[Any] = []
        ring.wait(0, matcher("upper"), 10.0).addCallback(waited.append)
        bad = add_forwarded_records(
            ring,
            line(record(), record("upper", "tcp:127.0.0.1:5001")) + b"\x1enot a record",
        )
        self.assertEqual(bad, 1)
        self.assertEqual([r.as_dict()["id"] for r in ring.since(0)], [1, 2])
        [[found]] = waited
        self.assertEqual(found.as_dict()["client"], "tcp:127.0.0.1:5001")
        self.assertEqual(len(ring.since(0, matcher(client="127.0.0.1:5000"))), 1)
        self.assertIsInstance(found, ForwardedRecord)
        self.assertIn("upper", repr(found))

    def test_as_the_worker_made_it(self) -> None:
        """
        A record read back from the supervisor's ring is the worker's,
        field for field, but its id; client addresses with quotes,
        backslashes and control characters included.
        """
        ring = RecordRing(10, Clock())
        sent = [
            record(),
            record(client='unix:/tmp/a"b\\c\n\x1e\x1f\u00e9', first_bytes=b"\x1e\x1f"),
            record(cause=causes.LIMIT_REFUSAL, limit="max-connections"),
        ]
        self.assertEqual(add_forwarded_records(ring, line(*sent)), 0)
        kept = ring.since(0)
        for number, (made, forwarded) in enumerate(zip(sent, kept, strict=True), 1):
            expected = {**made.as_dict(), "id": number}
            self.assertEqual(forwarded.as_dict(), expected)
            self.assertEqual(json.loads(forwarded.as_json()), expected)
            self.assertEqual(
                (forwarded.service, forwarded.client, forwarded.cause),
                (made.service, made.client, made.cause),
            )
        self.assertEqual(len(ring.since(0, matcher(client=sent[1].client))), 1)

    def test_not_decoded(self) -> None:
        """
        The supervisor keeps a record without decoding its JSON text: a
        record whose text is not JSON is kept all the same (the worker's
        text is trusted: it made it with L{fields_json}).
        """
        ring = RecordRing(10, Clock())
        item = b'"echo"\x1f"tcp:127.0.0.1:5000"\x1f"client_fin"\x1fNOT JSON'
        self.assertEqual(add_forwarded_records(ring, item), 0)
        [kept] = ring.since(0)
        self.assertEqual(kept.as_json(), b'{"schema":1,"id":1,NOT JSON')

    def test_memory_held(self) -> None:
        """
        A worker's record held in the supervisor's ring costs at most
        L{FORWARDED_RECORD_BYTES} (measured with C{tracemalloc}, a typical
        TCP record as a worker sends it).
        """
        ring = RecordRing(2000, Clock())
        for _ in range(10):  # shared strings kept once, before
            add_forwarded_records(ring, line(record()))
        lines = [
            line(record(client=f"tcp:127.0.0.1:{10000 + n}", start=1765143000.123456))
            for n in range(2000)
        ]
        tracemalloc.start()
        try:
            for each in lines:
                add_forwarded_records(ring, each)
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLessEqual(held / 2000, FORWARDED_RECORD_BYTES)
        last = ring.since(ring.last_id - 1)[0].as_dict()
        self.assertEqual((last["id"], last["client"]), (2010, "tcp:127.0.0.1:11999"))


class _Factory:
    faults = None


class WorkerHandlerTests(SynchronousTestCase):
    def test_faults_command(self) -> None:
        factory = _Factory()
        slot = StreamFaultSlot(factory, "echo", Clock(), ServiceCounters().faults)
        handle = worker_handlers({"echo": slot})["faults"]
        answer = handle({"listener": "echo", "profile": "close-after=5;seed=3"})
        self.assertEqual(answer["seed"], 3)
        self.assertIsNotNone(factory.faults)
        handle({"listener": "echo", "profile": None})
        self.assertIsNone(factory.faults)
        with self.assertRaises(CommandError):
            handle({"listener": "nope", "profile": None})
        with self.assertRaises(CommandError):
            handle({"listener": "echo", "profile": "nope"})


# Over real processes.




def exchange(port: int, data: bytes = b"x" * 100) -> tuple[bytes, str, int]:
    """
    Send C{data}, half-close, read until the server ends.

    @return: what was read, how it ended (C{eof}, or C{reset} when any
        step met the server's reset) and the client's port.
    """
    ended = "eof"
    with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as sock:
        client_port = sock.getsockname()[1]
        read = b""
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            ended = "reset"
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # ENOTCONN: reset already
            ended = "reset"
        try:
            while chunk := sock.recv(65536):
                read += chunk
        except ConnectionResetError:
            ended = "reset"
    return read, ended, client_port


class WorkersTests(TestCase):
    """
    A real C{twistd --workers 2} with C{--admin}.
    """

    def start(self, *args: str) -> tuple[RunningServer, str]:
        server = start_server(
            self,
            [
                "--metrics",
                f"tcp:0:interface={HOST}",
                "--admin",
                "--workers",
                "2",
                *args,
            ],
        )
        match = server.wait_for(r"\] metrics listening on tcp:127\.0\.0\.1:(\d+)$")
        for number in (1, 2):
            server.wait_for(rf"\] worker {number} ready \(pid \d+\)$")
        return server, f"http://{HOST}:{match.group(1)}"

    def served_by(self, server: RunningServer, start: int) -> dict[int, int]:
        """
        @return: how many echo connections each worker logged from line
            C{start} on.
        """
        counts = {1: 0, 2: 0}
        for line in server.output[start:]:
            found = re.search(r"\[worker (\d) \S+\] echo connection from", line)
            if found:
                counts[int(found.group(1))] += 1
        return counts

    def connect_until_both(
        self, server: RunningServer, port: int, start: int, limit: int = 300
    ) -> list[tuple[bytes, str, int]]:
        """
        Make connections until both workers served some (at most
        C{limit}), and at least 40.
        """
        results = []
        for count in range(limit):
            results.append(exchange(port))
            if count >= 40 and wait_until(
                lambda: all(self.served_by(server, start).values()), 0.0
            ):
                break
        self.assertTrue(
            wait_until(lambda: all(self.served_by(server, start).values())),
            self.served_by(server, start),
        )
        return results

    def test_profile_on_every_worker_then_delete(self) -> None:
        """
        PUT reset-after: every connection, on both workers, is reset after
        exactly 10 bytes; a bad profile is a 400 and reaches no worker;
        DELETE restores clean echo everywhere.
        """
        server, url = self.start()
        port = server.ports["echo"]
        status, text = call(url + "/faults/echo", "PUT", b"reset-after=10")
        self.assertEqual(status, 200, text)
        answer = json.loads(text)
        self.assertEqual(
            (answer["profile"], answer["workers"]), ("reset-after=10", [1, 2])
        )
        seed = answer["seed"]
        for number in (1, 2):
            server.wait_for(
                rf"\[worker {number} twisted_echo.faults#info\] faults of echo set at "
                rf"run time: reset-after=10;seed={seed} \(seed {seed}\)$"
            )
        start = len(server.output)
        results = self.connect_until_both(server, port, start)
        self.assertEqual({(r[0], r[1]) for r in results}, {(b"x" * 10, "reset")})

        status, text = call(url + "/faults/echo", "PUT", b"reset-after=10,p=2")
        self.assertEqual(status, 400)
        self.assertIn("bad profile for echo: 'reset-after=10,p=2': p takes", text)
        status, text = call(url + "/faults/echo")
        self.assertEqual(json.loads(text)["profile"], "reset-after=10")

        status, text = call(url + "/faults/echo", "DELETE")
        self.assertEqual((status, json.loads(text)["workers"]), (200, [1, 2]))
        self.assertFalse(
            any("set at run time: reset-after=10,p=2" in line for line in server.output)
        )
        start = len(server.output)
        results = self.connect_until_both(server, port, start)
        self.assertEqual({(r[0], r[1]) for r in results}, {(b"x" * 100, "eof")})

    def test_replacement_worker_applies_profile(self) -> None:
        """
        A worker killed with SIGKILL is replaced; the replacement applies
        the profile set at run time before it serves; so do the workers a
        reload (SIGHUP) starts.
        """
        server, url = self.start()
        port = server.ports["echo"]
        status, _ = call(url + "/faults/echo", "PUT", b"close-after=7;seed=5")
        self.assertEqual(status, 200)
        pid = int(server.wait_for(r"\] worker 1 ready \(pid (\d+)\)$").group(1))
        start = len(server.output)
        os.kill(pid, signal.SIGKILL)
        new = server.wait_for(
            r"\] worker 1 ready \(pid (\d+)\)$", timeout=20.0, start=start
        )
        self.assertNotEqual(int(new.group(1)), pid)
        server.wait_for(
            r"\[worker 1 twisted_echo.faults#info\] faults of echo set at run "
            r"time: close-after=7;seed=5 \(seed 5\)$",
            start=start,
        )
        start = len(server.output)
        results = self.connect_until_both(server, port, start)
        self.assertEqual({(r[0], r[1]) for r in results}, {(b"x" * 7, "eof")})
        # Its connections are numbered from 1 with the same seed.
        server.wait_for(
            r"\[worker 1 twisted_echo.faults#info\] echo connection from "
            r"\S+: faults close-after=7 \(connection 1, seed 5\)$",
            start=start,
        )

        # A reload (SIGHUP) replaces both: each new worker starts with it.
        start = len(server.output)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for(r"\] reload done: 2 worker\(s\) serve$", 30.0, start)
        for number in (1, 2):
            server.wait_for(
                rf"\[worker {number} twisted_echo.faults#info\] faults of echo set "
                r"at run time: close-after=7;seed=5 \(seed 5\)$",
                start=start,
            )
        start = len(server.output)
        results = self.connect_until_both(server, port, start)
        self.assertEqual({(r[0], r[1]) for r in results}, {(b"x" * 7, "eof")})

    def test_refuse_on_every_worker(self) -> None:
        """
        A C{refuse} window set at run time starts on every worker's
        listening port (connects wait in the backlog); DELETE ends it and
        they are answered.
        """
        server, url = self.start()
        status, text = call(url + "/faults/echo", "PUT", b"refuse=60s")
        self.assertEqual((status, json.loads(text)["workers"]), (200, [1, 2]), text)
        for number in (1, 2):
            server.wait_for(
                rf"\[worker {number} \S+\] echo listener tcp:\S+: fault refuse: "
                r"not accepting for 60 s$"
            )
        held = []
        for _ in range(20):
            sock = socket.create_connection((HOST, server.ports["echo"]), IO_TIMEOUT)
            self.addCleanup(sock.close)
            sock.sendall(b"held")
            held.append(sock)
        for sock in held:
            sock.settimeout(0.2)
            self.assertRaises(TimeoutError, sock.recv, 10)
        self.assertEqual(call(url + "/faults/echo", "DELETE")[0], 200)
        for sock in held:
            sock.settimeout(IO_TIMEOUT)
            self.assertEqual(sock.recv(10), b"held")

    def test_pause_every_worker_and_replacement(self) -> None:
        """
        C{/health}'s C{"listeners": "pause"} pauses every worker's
        listeners (answered once all confirmed): new connections wait in
        the backlog, also through a worker replaced meanwhile (it starts
        paused); C{serve} answers them all.
        """
        server, url = self.start()
        port = server.ports["echo"]
        body = json.dumps({"listeners": "pause"}).encode()
        status, text = call(url + "/health", "PUT", body)
        self.assertEqual((status, json.loads(text)["listeners"]), (200, "pause"))
        for number in (1, 2):
            server.wait_for(
                rf"\[worker {number} \S+\] health switched at run time: "
                r"listeners serve -> pause$"
            )
        pid = int(server.wait_for(r"\] worker 2 ready \(pid (\d+)\)$").group(1))
        start = len(server.output)
        os.kill(pid, signal.SIGKILL)
        server.wait_for(r"\] worker 2 ready \(pid \d+\)$", 20.0, start)
        server.wait_for(
            r"\[worker 2 \S+\] health switched at run time: "
            r"listeners serve -> pause$",
            start=start,
        )
        held = []
        for _ in range(20):
            sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
            self.addCleanup(sock.close)
            sock.sendall(b"held")
            held.append(sock)
        for sock in held:
            sock.settimeout(0.2)
            self.assertRaises(TimeoutError, sock.recv, 10)
        body = json.dumps({"listeners": "serve"}).encode()
        self.assertEqual(call(url + "/health", "PUT", body)[0], 200)
        for sock in held:
            sock.settimeout(IO_TIMEOUT)
            self.assertEqual(sock.recv(10), b"held")

    def test_records_from_both_workers_once_each(self) -> None:
        """
        C{/records} lists the connections of both workers, each exactly
        once, numbered in one sequence; a long-poll wakes for the next.
        """
        server, url = self.start()
        port = server.ports["echo"]
        start = len(server.output)
        results = self.connect_until_both(server, port, start)
        ports = sorted(r[2] for r in results)

        def listed() -> list[dict[str, Any]]:
            status, text = call(url + "/records?service=echo&limit=5000")
            self.assertEqual(status, 200, text)
            records: list[dict[str, Any]] = json.loads(text)["records"]
            return records

        self.assertTrue(wait_until(lambda: len(listed()) >= len(ports)))
        records = listed()
        self.assertEqual(
            sorted(int(r["client"].rsplit(":", 1)[1]) for r in records), ports
        )
        ids = [r["id"] for r in records]
        self.assertEqual(ids, list(range(1, len(ports) + 1)))
        self.assertEqual({r["cause"] for r in records}, {"client_fin"})
        self.assertEqual({r["bytes_in"] for r in records}, {100})

        # The long-poll: asked while a connection is open, answered when it
        # closes (the client's 15 s timeout is below the 25 s wait, so
        # only a wake-up answers in time).
        held = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
        self.addCleanup(held.close)
        client_port = held.getsockname()[1]
        held.sendall(b"ping")
        self.assertEqual(held.recv(10), b"ping")
        answer: list[Any] = []
        asked = threading.Event()

        def wait() -> None:
            host, metrics_port = url.rsplit("/", 1)[1].split(":")
            connection = http.client.HTTPConnection(host, int(metrics_port), timeout=15)
            connection.request("GET", f"/records?since={ids[-1]}&wait=25")
            asked.set()
            answer.append(json.loads(connection.getresponse().read()))
            connection.close()

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        self.assertTrue(asked.wait(IO_TIMEOUT))
        held.close()
        waiter.join(20)
        [document] = answer
        self.assertEqual(
            [r["client"] for r in document["records"]], [f"tcp:{HOST}:{client_port}"]
        )
        self.assertEqual(document["records"][0]["id"], ids[-1] + 1)


class FixtureTests(SynchronousTestCase):
    def test_json_log_records_once_with_ids(self) -> None:
        """
        With C{--log-format json}, each connection's record event is logged
        once, by the supervisor, with the number C{/records} gives it.
        """
        with start_sockecho("--workers", "2", "--log-format", "json") as server:
            clients = sorted(exchange(server.echo[1])[2] for _ in range(20))
            listed = server.wait_for(20, "echo")

            def events() -> list[dict[str, Any]]:
                found = []
                for line in server.log_lines():
                    text = line.lstrip("\x1e").strip()
                    if '"record"' in text:
                        event = json.loads(text)
                        if "record" in event:
                            found.append(event)
                return found

            self.assertTrue(wait_until(lambda: len(events()) >= 20))
            logged = events()
        self.assertEqual(
            sorted(int(e["record"]["client"].rsplit(":", 1)[1]) for e in logged),
            clients,
        )
        self.assertEqual(
            sorted((e["record"]["id"], e["record"]["client"]) for e in logged),
            [(r["id"], r["client"]) for r in listed],
        )
        self.assertTrue(all(e["record_id"] == e["record"]["id"] for e in logged))

    def test_records_and_faults_helpers(self) -> None:
        """
        The fixtures' server with C{--workers 2}: C{faults()} applies on
        every worker for the block, C{wait_for()} and C{records()} see the
        connections of both.
        """
        with start_sockecho("--workers", "2") as server:
            with server.faults("echo", "close-after=3"):
                for _ in range(20):
                    self.assertEqual(exchange(server.echo[1])[0], b"xxx")
            for _ in range(20):
                self.assertEqual(exchange(server.echo[1])[0], b"x" * 100)
            found = server.wait_for(40, "echo")
            self.assertEqual(len(found), 40)
            self.assertEqual(
                sorted(r["bytes_out"] for r in server.records("echo")),
                [3] * 20 + [100] * 20,
            )
