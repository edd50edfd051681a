"""
L{twisted_echo.faults.runtime}: a listener's profile replaced and cleared
while the server runs, on a L{task.Clock} and stand-in listeners.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_echo.faults.engine import ListenerFaults
from twisted_echo.faults.profile import ProfileError, parse_profile
from twisted_echo.faults.runtime import (
    DatagramFaultSlot,
    StreamFaultSlot,
    SwapRefusedError,
)
from twisted_echo.policies.counters import ServiceCounters


class Factory:
    faults: ListenerFaults | None = None


class Listener:
    """
    Stands in for a UDP listener's protocol: C{faults}, C{_sendto}.
    """

    faults: Any = None

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.source_limit = self.global_limit = None

    def start(self) -> None:
        self._sendto = lambda data, addr: self.sent.append(data)
        if self.faults is not None:
            self._sendto = self.faults.wrap(self._sendto, self)


class StreamSlotTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.factory = Factory()
        self.slot = StreamFaultSlot(self.factory, "echo", Clock(), Counter(), False)

    def test_replace_and_clear(self) -> None:
        self.assertEqual(
            self.slot.describe(), {"listener": "echo", "profile": None, "seed": None}
        )
        self.slot.replace("close-after=5;seed=4")
        faults = self.factory.faults
        assert faults is not None
        self.assertEqual(
            (faults.profile.text, faults.seed), ("close-after=5;seed=4", 4)
        )
        self.assertEqual(faults.ordinal, 0)
        self.slot.clear()
        self.assertIsNone(self.factory.faults)

    def test_bad_profile_unchanged(self) -> None:
        self.slot.replace("delay=1s")
        before = self.factory.faults
        self.assertRaises(ProfileError, self.slot.replace, "delay=1")
        self.assertRaises(ProfileError, self.slot.replace, "loss")  # UDP only
        self.assertIs(self.factory.faults, before)

    def test_refuse_refused(self) -> None:
        self.assertRaises(SwapRefusedError, self.slot.replace, "refuse=1s")
        self.assertIsNone(self.factory.faults)
        self.factory.faults = ListenerFaults(
            parse_profile("refuse=1s"), "echo", Clock(), Counter(), False
        )
        self.assertRaises(SwapRefusedError, self.slot.clear)
        self.assertRaises(SwapRefusedError, self.slot.replace, "delay=1s")


class DatagramSlotTests(SynchronousTestCase):
    def test_swap_running_listener(self) -> None:
        """
        A listening UDP protocol's replies go through the new profile, and
        back to the socket's own C{sendto} once cleared.
        """
        listener = Listener()
        listener.start()
        slot = DatagramFaultSlot([listener], "udp", Clock(), ServiceCounters(), False)
        self.assertRaises(ProfileError, slot.replace, "reset-after=1")  # TCP only
        slot.replace("truncate=2;seed=1")
        listener._sendto(b"hello", ("127.0.0.1", 1))
        slot.replace("truncate=3")
        listener._sendto(b"hello", ("127.0.0.1", 1))
        slot.clear()
        listener._sendto(b"hello", ("127.0.0.1", 1))
        self.assertEqual(listener.sent, [b"hel", b"he", b"hello"])
        self.assertIsNone(listener.faults)

    def test_before_listening(self) -> None:
        listener = Listener()
        slot = DatagramFaultSlot([listener], "udp", Clock(), ServiceCounters(), False)
        slot.replace("truncate=2")
        listener.start()
        listener._sendto(b"hello", ("127.0.0.1", 1))
        self.assertEqual(listener.sent, [b"hel"])
