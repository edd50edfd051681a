"""
Tests for L{twisted_echo.services.upper}: Unicode upper-casing of UTF-8 streams.
"""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.loopback import exchange, listen_tcp
from tests.memory import connect, cut
from tests.socketpair import TRANSPORTS, clock_for, converse
from twisted_echo.services.upper import Upper, UpperFactory, upper_bytes


def upper_of_chunks(chunks: list[bytes], half_close: bool = True) -> bytes:
    """
    Feed C{chunks} to an in-memory L{Upper} and return what it sent.
    """
    protocol, transport = connect(UpperFactory(Clock()), Upper)
    for chunk in chunks:
        protocol.dataReceived(chunk)
    if half_close:
        protocol.readConnectionLost()
    return transport.value()


class UpperProtocolTests(TestCase):
    """
    The upper protocol, in memory.
    """

    def test_reference_examples(self) -> None:
        """
        The examples users rely on: ASCII, German sharp s, accented Latin,
        CJK (no case: unchanged).
        """
        for text, expected in [
            ("hello", "HELLO"),
            ("straße", "STRASSE"),
            ("héllo", "HÉLLO"),
            ("你好", "你好"),
        ]:
            self.assertEqual(upper_of_chunks([text.encode()]).decode(), expected, text)

    def test_character_split_byte_by_byte(self) -> None:
        """
        A multi-byte character arriving one byte at a time is held until it
        is whole, then sent upper-cased once.
        """
        protocol, transport = connect(UpperFactory(Clock()), Upper)
        encoded = "é".encode()
        protocol.dataReceived(encoded[:1])
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(encoded[1:])
        self.assertEqual(transport.value(), "É".encode())

    def test_ascii_read_after_an_unfinished_character(self) -> None:
        """
        A read of plain ASCII after a read that ended inside a character
        comes back after that character's bytes, not before: the bytes held
        are sent first, unchanged when the ASCII shows they were not UTF-8.
        """
        self.assertEqual(upper_of_chunks([b"a\xc3", b"bc"]), b"A\xc3BC")
        self.assertEqual(
            upper_of_chunks(["xé".encode()[:2], "é".encode()[1:] + b"y", b"z"]),
            "XÉYZ".encode(),
        )

    @given(
        st.lists(st.sampled_from(["a", "B", " ", "é", "ß", "你", "\U0001f600"])),
        st.lists(st.integers(0, 60), max_size=12),
    )
    def test_text_cut_inside_characters(
        self, letters: list[str], cuts: list[int]
    ) -> None:
        """
        Text of ASCII and multi-byte characters, cut anywhere (also inside
        a character), comes back as C{str.upper} of the whole text.
        """
        text = "".join(letters)
        self.assertEqual(
            upper_of_chunks(cut(text.encode(), cuts)), text.upper().encode()
        )

    def test_invalid_utf8_comes_back_unchanged_in_place(self) -> None:
        """
        Bytes that are not UTF-8 are neither dropped nor replaced.
        """
        self.assertEqual(
            upper_of_chunks([b"\xff\xfeab", b"\x80c\x00d"]),
            b"\xff\xfeAB\x80C\x00D",
        )

    def test_unfinished_character_at_end_of_input(self) -> None:
        """
        The start of a character that never finishes comes back unchanged
        when the peer half-closes.
        """
        self.assertEqual(upper_of_chunks([b"ab\xc3"]), b"AB\xc3")

    @given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=12))
    def test_any_chunking_gives_the_whole_stream_transform(
        self, data: bytes, cuts: list[int]
    ) -> None:
        """
        For any bytes cut anywhere, what comes back is the reference
        transform of the whole stream.
        """
        self.assertEqual(upper_of_chunks(cut(data, cuts)), upper_bytes(data))

    @given(st.text(max_size=100))
    def test_text_is_upper_cased(self, text: str) -> None:
        """
        Any valid UTF-8 text comes back as Python's C{str.upper} of it.
        """
        self.assertEqual(upper_of_chunks([text.encode()]), text.upper().encode())


class UpperLoopbackTests(TestCase):
    """
    The upper service on a real loopback socket.
    """

    async def test_half_close(self) -> None:
        """
        Mixed text sent with a half-close comes back whole, upper-cased.
        """
        port = listen_tcp(self, UpperFactory(reactor))  # type: ignore[arg-type]
        payload = ("straße héllo 你好 ".encode() + b"\xff ") * 50_000
        client = await exchange(port, payload)
        self.assertEqual(client.count, len(upper_bytes(payload)))
        self.assertEqual(
            client.digest.digest(), hashlib.sha256(upper_bytes(payload)).digest()
        )


class UpperRealPathsTests(TestCase):
    """
    Upper's key protocol tests over L{StringTransport} and over a real
    socketpair adopted by the reactor (L{tests.socketpair}).
    """

    async def test_utf8_split_across_reads(self) -> None:
        """
        Characters split between reads (C{ß}: 2 bytes, C{你}: 3) are
        upper-cased once whole; an unfinished one at the half-close comes
        back unchanged; then the connection closes and gives back all it
        held.
        """
        text = "straße héllo 你好".encode()
        sharp, ni = text.index("ß".encode()), text.index("你".encode())
        chunks = [
            text[: sharp + 1],
            text[sharp + 1 : ni + 2],
            text[ni + 2 :],
            b"\xe4\xbd",
        ]
        expected = "STRASSE HÉLLO 你好".encode() + b"\xe4\xbd"
        for over in TRANSPORTS:
            conversation = await converse(over, UpperFactory(clock_for(over)), chunks)
            self.assertEqual(conversation.received, expected, over)
            self.assertTrue(conversation.closed, over)
            conversation.assert_released(self)
