"""
Tests for L{twisted_echo.client.contracts}: what each service owes.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from twisted_echo.client.contracts import (
    SERVICES,
    ReplyChecker,
    UpperChecker,
    WelcomeChecker,
    checker_for,
    request_payload,
)
from twisted_echo.services.upper import upper_bytes


class EchoContractTests(TestCase):
    def test_identical_reply_in_pieces(self) -> None:
        checker = ReplyChecker()
        checker.sent(b"hello, world")
        self.assertEqual(checker.outstanding, 12)
        self.assertTrue(checker.received(b"hello"))
        self.assertTrue(checker.received(b", world"))
        self.assertEqual(checker.outstanding, 0)
        self.assertIsNone(checker.mismatch)

    def test_differing_byte_is_located(self) -> None:
        checker = ReplyChecker()
        checker.sent(b"abcdef")
        self.assertTrue(checker.received(b"ab"))
        self.assertFalse(checker.received(b"cX"))
        assert checker.mismatch is not None
        self.assertIn("reply byte 3 differs", checker.mismatch)
        # Later replies are ignored once a mismatch is found.
        self.assertFalse(checker.received(b"ef"))

    def test_extra_bytes_are_a_mismatch(self) -> None:
        checker = ReplyChecker()
        checker.sent(b"ab")
        self.assertFalse(checker.received(b"abc"))
        assert checker.mismatch is not None
        self.assertIn("beyond what was owed", checker.mismatch)

    def test_unsent_reply_is_a_mismatch(self) -> None:
        checker = ReplyChecker()
        self.assertFalse(checker.received(b"x"))

    @given(st.binary(max_size=300), st.lists(st.integers(1, 50), max_size=20))
    def test_any_split_of_an_echo_is_accepted(
        self, data: bytes, cuts: list[int]
    ) -> None:
        checker = ReplyChecker()
        checker.sent(data)
        rest = data
        for cut in cuts:
            self.assertTrue(checker.received(rest[:cut]))
            rest = rest[cut:]
        self.assertTrue(checker.received(rest))
        self.assertEqual(checker.outstanding, 0)


class UpperContractTests(TestCase):
    def test_examples(self) -> None:
        for sent, owed in [
            (b"hello", b"HELLO"),
            ("straße".encode(), b"STRASSE"),
            ("héllo".encode(), "HÉLLO".encode()),
            ("你好".encode(), "你好".encode()),
            (b"\xff\xfeab", b"\xff\xfeAB"),
        ]:
            checker = UpperChecker()
            checker.sent(sent)
            checker.end_of_input()
            self.assertTrue(checker.received(owed), checker.mismatch)
            self.assertEqual(checker.outstanding, 0)

    def test_split_character_is_owed_once_whole(self) -> None:
        checker = UpperChecker()
        e_acute = "é".encode()
        checker.sent(b"x" + e_acute[:1])
        self.assertEqual(checker.owed_total, 1)
        checker.sent(e_acute[1:])
        self.assertTrue(checker.received("XÉ".encode()))
        self.assertEqual(checker.outstanding, 0)

    def test_unfinished_character_owed_unchanged_at_end(self) -> None:
        checker = UpperChecker()
        checker.sent(b"a\xc3")
        checker.end_of_input()
        self.assertTrue(checker.received(b"A\xc3"))
        self.assertEqual(checker.outstanding, 0)

    def test_lowercase_echo_is_a_mismatch(self) -> None:
        checker = UpperChecker()
        checker.sent(b"abc")
        self.assertFalse(checker.received(b"abc"))

    @given(st.binary(max_size=200), st.lists(st.integers(1, 7), max_size=40))
    def test_matches_upper_bytes_for_any_split(
        self, data: bytes, cuts: list[int]
    ) -> None:
        checker = UpperChecker()
        rest = data
        for cut in cuts:
            checker.sent(rest[:cut])
            rest = rest[cut:]
        checker.sent(rest)
        checker.end_of_input()
        self.assertTrue(checker.received(upper_bytes(data)), checker.mismatch)
        self.assertEqual(checker.outstanding, 0)


class WelcomeContractTests(TestCase):
    def test_banner_then_ok_lines(self) -> None:
        checker = WelcomeChecker()
        self.assertFalse(checker.ready)
        self.assertTrue(checker.received(b"Welcome to the ser"))
        self.assertTrue(checker.received(b"ver\r\n"))
        self.assertEqual(checker.banner, b"Welcome to the server")
        self.assertTrue(checker.ready)
        checker.sent(b"hi\n")
        self.assertTrue(checker.received(b"OK...hi\r\n"))
        self.assertEqual(checker.outstanding, 0)
        # A reply before its line was sent is a mismatch.
        self.assertFalse(checker.received(b"OK"))
        self.assertIsNotNone(checker.mismatch)

    def test_lines_with_lf_and_crlf(self) -> None:
        checker = WelcomeChecker(expected_banner=b"hi")
        checker.sent(b"one\ntwo\r\nthr")
        checker.sent(b"ee")
        self.assertEqual(checker.outstanding, len(b"OK...one\r\nOK...two\r\n"))
        checker.end_of_input()
        self.assertTrue(
            checker.received(b"hi\r\nOK...one\r\nOK...two\r\nOK...three\r\n"),
            checker.mismatch,
        )
        self.assertEqual(checker.outstanding, 0)

    def test_wrong_banner(self) -> None:
        checker = WelcomeChecker(expected_banner=b"hello")
        self.assertFalse(checker.received(b"bye\r\n"))
        assert checker.mismatch is not None
        self.assertIn("banner", checker.mismatch)

    def test_no_banner_line(self) -> None:
        checker = WelcomeChecker()
        self.assertFalse(checker.received(b"x" * 5000))

    def test_echo_instead_of_ok(self) -> None:
        checker = WelcomeChecker()
        checker.received(b"banner\r\n")
        checker.sent(b"hi\n")
        self.assertFalse(checker.received(b"hi\n"))


class PayloadTests(TestCase):
    def test_sizes_and_whole_replies(self) -> None:
        for service in SERVICES:
            for size in (1, 2, 7, 64, 1000, 70000):
                payload = request_payload(service, size, seed=size)
                self.assertEqual(len(payload), size)
                checker = checker_for(service)
                if service == "welcome":
                    checker.received(b"banner\r\n")
                checker.sent(payload)
                owed = checker.owed_total
                # The whole reply is owed at once, without end of input.
                checker.end_of_input()
                self.assertEqual(checker.owed_total, owed, (service, size))

    def test_echo_payload_covers_all_byte_values(self) -> None:
        self.assertEqual(len(set(request_payload("echo", 8192))), 256)

    def test_bad_arguments(self) -> None:
        self.assertRaises(ValueError, request_payload, "echo", 0)
        self.assertRaises(ValueError, request_payload, "chargen", 10)
        self.assertRaises(ValueError, checker_for, "chargen")
