# -*- test-case-name: tests.test_optionvalues -*-
"""
Tests for L{twisted_echo.app.optionvalues}: the values C{twistd sockecho}'s
options take, and errors that name the option and the value. How
L{twisted_echo.app.options.Options} uses them: L{tests.test_tap}.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from twisted_echo.app.optionvalues import (
    count,
    format_size,
    parse_size,
    rate,
    seconds,
    size,
    udp_ports,
)


class SizeTests(TestCase):
    """
    L{parse_size} and L{format_size}: bytes with binary K, M, G suffixes.
    """

    def test_format_size(self) -> None:
        """
        L{format_size} writes a size as L{parse_size} reads it, with the
        largest suffix that divides it.
        """
        for size_, text in [
            (0, "0"), (1000, "1000"), (1024, "1K"), (256 << 10, "256K"),
            (64 << 20, "64M"), (3 << 30, "3G"), ((1 << 20) + 1, "1048577"),
        ]:  # fmt: skip
            self.assertEqual(format_size(size_), text)
            self.assertEqual(parse_size(text), size_)

    def test_parse_size_forms(self) -> None:
        for text, expected in [
            ("64k", 64 << 10),
            (" 2MiB ", 2 << 20),
            ("1GB", 1 << 30),
        ]:
            self.assertEqual(parse_size(text), expected, text)
        for text in ("", "1T", "-1", "1.5M", "K"):
            with self.assertRaises(ValueError):
                parse_size(text)


class CoercerTests(TestCase):
    """
    Each coercer returns the value, or raises C{ValueError} naming the
    option and the text given.
    """

    def test_values(self) -> None:
        self.assertEqual(seconds("idle-timeout")("2.5"), 2.5)
        self.assertEqual(count("max-connections", "connections")("0"), 0)
        self.assertEqual(size("max-buffer")("64K"), 65536)
        self.assertEqual(rate("udp-rate")("50/10"), (50.0, 10))
        self.assertEqual(rate("udp-rate")("2.5"), (2.5, 3))
        self.assertEqual(udp_ports("udp-never-answer")("53,7-9"), {7, 8, 9, 53})

    def test_errors_name_option_and_value(self) -> None:
        for coerce, text, words in [
            (seconds("idle-timeout"), "-1", "--idle-timeout takes a number of seconds"),
            (seconds("idle-timeout"), "nan", "not 'nan'"),
            (count("backlog", "connections"), "1.5", "--backlog takes a number of"),
            (size("max-buffer"), "lots", "--max-buffer takes a size in bytes"),
            (rate("udp-rate"), "5/0", "--udp-rate takes RATE[/BURST]"),
            (udp_ports("udp-never-answer"), "dns", "--udp-never-answer takes"),
        ]:
            with self.assertRaises(ValueError) as caught:
                coerce(text)
            self.assertIn(words, str(caught.exception), text)
